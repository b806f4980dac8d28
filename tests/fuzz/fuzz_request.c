/* fuzz_request.c — the control socket's request parser and checker, fed
 * what a hostile local client could send. */
#include <stddef.h>
#include <stdint.h>

#include "tools/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *req = NULL;
	char err[512];

	if (lf_request_parse((const char *)data, size, &req, err,
			     sizeof(err)) == 0)
		json_object_put(req);
	return 0;
}
