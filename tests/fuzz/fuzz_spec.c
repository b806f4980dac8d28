/* fuzz_spec.c — the spec parsers (URL and JSON) and the secrets parser on
 * arbitrary bytes. The first byte picks the parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "iscsi/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lf_secrets sec;
	struct lf_spec spec;
	char err[256], *text;

	if (size < 1 || size > 65536)
		return 0;
	text = malloc(size);
	memcpy(text, data + 1, size - 1);
	text[size - 1] = 0;
	switch (data[0] % 3) {
	case 0:
		if (lf_spec_parse_url(text, &spec, err, sizeof(err)) == 0) {
			char url[1024], *j = lf_spec_to_json(&spec);
			struct lf_spec again;
			lf_spec_url(&spec, url, sizeof(url));
			/* What we print must parse back to the same spec. */
			if (j &&
			    lf_spec_parse_json(j, &again, err, sizeof(err)))
				abort();
			free(j);
		}
		break;
	case 1:
		if (lf_spec_parse_json(text, &spec, err, sizeof(err)) == 0) {
			char *j = lf_spec_to_json(&spec);
			struct lf_spec again;
			if (j &&
			    lf_spec_parse_json(j, &again, err, sizeof(err)))
				abort();
			free(j);
		}
		break;
	case 2:
		if (lf_secrets_parse_json(text, &sec, err, sizeof(err)) == 0)
			lf_secrets_wipe(&sec);
		break;
	}
	free(text);
	return 0;
}
