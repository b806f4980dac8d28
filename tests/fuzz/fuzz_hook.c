/* fuzz_hook.c — the OCI annotation parser (io.lunfs.volumes) with an
 * arbitrary config.json: bytes before the first NUL are the annotation,
 * the rest the config. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tools/hook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *config = NULL, *reqs = NULL;
	char err[1024], *text;
	size_t n;

	if (size > 65536)
		return 0;
	text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = 0;
	n = strlen(text);
	if (n < size)
		config = json_tokener_parse(text + n + 1);
	if (lf_hook_parse_volumes(text, "/nonexistent/rootfs", config, "fuzz",
				  &reqs, err, sizeof(err)) == 0)
		json_object_put(reqs);
	json_object_put(config);
	free(text);
	return 0;
}
