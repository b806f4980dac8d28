/* request.h — what a control-socket request may contain, checked before
 * the daemon acts on it.
 *
 * Every request is a JSON object with "op" and only the keys that op
 * takes, each of the right type and within bounds (paths absolute and
 * shorter than PATH_MAX, ids in range, specs and secrets valid, id maps
 * well formed, container ids safe). Anything else is -EINVAL with one line
 * in err[] that names the key; no secret is ever copied into err.
 * Pure: no I/O, no global state (the fuzz target drives it directly).
 */
#ifndef LUNFS_REQUEST_H
#define LUNFS_REQUEST_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

int lf_request_check(struct json_object *req, char *err, size_t errlen);
/* Parses text (not NUL-terminated, len bytes) and checks it; *out gets
 * the request on success. */
int lf_request_parse(const char *text, size_t len, struct json_object **out,
		     char *err, size_t errlen);
bool lf_request_valid_container_id(const char *id);

#endif
