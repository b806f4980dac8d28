/* request.c — validation of control-socket requests. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "fuse/idmap.h"
#include "iscsi/spec.h"
#include "tools/request.h"

enum kind {
	K_STR,
	K_PATH,
	K_BOOL,
	K_GID,
	K_IDMAP,
	K_SPEC,
	K_SECRETS,
	K_ID,
	K_MS,
	K_SIZE,
};

struct key {
	const char *name;
	enum kind kind;
};

struct opdef {
	const char *op;
	const struct key *keys;
	const char *const *required;
};

static const struct key mount_keys[] = {
	{"spec", K_SPEC},	 {"secrets", K_SECRETS},
	{"secret_file", K_PATH}, {"path", K_PATH},
	{"block", K_BOOL},	 {"read_only", K_BOOL},
	{"uidmap", K_IDMAP},	 {"gidmap", K_IDMAP},
	{"fsgroup", K_GID},	 {"container", K_ID},
	{"destination", K_PATH}, {"initiator_name", K_STR},
	{"timeout_ms", K_MS},	 {"discard", K_BOOL},
	{"takeover", K_BOOL},	 {"detached", K_BOOL},
	{NULL, K_STR},
};
static const char *const mount_required[] = {"spec", "path", NULL};
static const struct key umount_keys[] = {
	{"path", K_PATH}, {"timeout_ms", K_MS}, {NULL, K_STR}};
static const char *const umount_required[] = {"path", NULL};
static const struct key release_keys[] = {
	{"container", K_ID}, {"timeout_ms", K_MS}, {NULL, K_STR}};
static const char *const release_required[] = {"container", NULL};
static const struct key fsck_keys[] = {
	{"spec", K_SPEC},      {"secrets", K_SECRETS}, {"secret_file", K_PATH},
	{"mode", K_STR},       {"path", K_STR},	       {"block", K_BOOL},
	{"read_only", K_BOOL}, {"uidmap", K_IDMAP},    {"gidmap", K_IDMAP},
	{NULL, K_STR},
};
static const char *const fsck_required[] = {"spec", NULL};
/* resize: a mounted PATH, or an unmounted volume's spec. */
static const struct key resize_keys[] = {
	{"spec", K_SPEC},    {"secrets", K_SECRETS}, {"secret_file", K_PATH},
	{"path", K_STR},     {"block", K_BOOL},	     {"read_only", K_BOOL},
	{"uidmap", K_IDMAP}, {"gidmap", K_IDMAP},    {"size", K_SIZE},
	{"discard", K_BOOL}, {"timeout_ms", K_MS},   {NULL, K_STR},
};
static const char *const resize_required[] = {"path", NULL};
static const struct key no_keys[] = {{NULL, K_STR}};
static const char *const none_required[] = {NULL};

static const struct opdef ops[] = {
	{"mount", mount_keys, mount_required},
	{"umount", umount_keys, umount_required},
	{"release", release_keys, release_required},
	{"fsck", fsck_keys, fsck_required},
	{"resize", resize_keys, resize_required},
	{"status", no_keys, none_required},
	{"ping", no_keys, none_required},
	{"shutdown", no_keys, none_required},
};

bool lf_request_valid_container_id(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > 128 || !isalnum((unsigned char)id[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)id[i]) && !strchr("_.-", id[i]))
			return false;
	return true;
}

static int check_value(const struct key *k, struct json_object *v, char *err,
		       size_t errlen)
{
	char e2[512];

	switch (k->kind) {
	case K_STR:
		if (!json_object_is_type(v, json_type_string) ||
		    json_object_get_string_len(v) >= PATH_MAX)
			goto bad_type;
		return 0;
	case K_PATH: {
		const char *s = json_object_get_string(v);
		if (!json_object_is_type(v, json_type_string) ||
		    json_object_get_string_len(v) >= PATH_MAX || s[0] != '/' ||
		    strlen(s) != (size_t)json_object_get_string_len(v)) {
			snprintf(err, errlen, "\"%s\" must be an absolute path",
				 k->name);
			return -EINVAL;
		}
		return 0;
	}
	case K_BOOL:
		if (!json_object_is_type(v, json_type_boolean))
			goto bad_type;
		return 0;
	case K_GID:
		if (!json_object_is_type(v, json_type_int) ||
		    json_object_get_int64(v) < 0 ||
		    json_object_get_int64(v) > 4294967294LL) {
			snprintf(err, errlen, "\"%s\" must be a group id",
				 k->name);
			return -EINVAL;
		}
		return 0;
	case K_IDMAP: {
		struct lf_idmap m;
		if (!json_object_is_type(v, json_type_array))
			goto bad_type;
		lf_idmap_init(&m);
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			struct json_object *e = json_object_array_get_idx(v, i);
			if (!json_object_is_type(e, json_type_string))
				goto bad_type;
			if (lf_idmap_add(&m, json_object_get_string(e), e2,
					 sizeof(e2))) {
				snprintf(err, errlen, "\"%s\": %s", k->name,
					 e2);
				return -EINVAL;
			}
		}
		return 0;
	}
	case K_SPEC: {
		struct lf_spec spec;
		if (!json_object_is_type(v, json_type_object))
			goto bad_type;
		if (lf_spec_parse_json(json_object_to_json_string(v), &spec, e2,
				       sizeof(e2))) {
			snprintf(err, errlen, "%s", e2);
			return -EINVAL;
		}
		return 0;
	}
	case K_SECRETS: {
		struct lf_secrets sec;
		int r;
		if (!json_object_is_type(v, json_type_object))
			goto bad_type;
		r = lf_secrets_parse_json(json_object_to_json_string(v), &sec,
					  e2, sizeof(e2));
		lf_secrets_wipe(&sec);
		if (r) {
			snprintf(err, errlen, "%s", e2);
			return -EINVAL;
		}
		return 0;
	}
	case K_MS:
		if (!json_object_is_type(v, json_type_int) ||
		    json_object_get_int64(v) < 1 ||
		    json_object_get_int64(v) > 86400000) {
			snprintf(err, errlen,
				 "\"%s\" must be milliseconds between 1 and "
				 "86400000",
				 k->name);
			return -EINVAL;
		}
		return 0;
	case K_SIZE:
		if (!json_object_is_type(v, json_type_int) ||
		    json_object_get_int64(v) <= 0) {
			snprintf(err, errlen,
				 "\"%s\" must be a positive number of bytes",
				 k->name);
			return -EINVAL;
		}
		return 0;
	case K_ID:
		if (!json_object_is_type(v, json_type_string) ||
		    !lf_request_valid_container_id(json_object_get_string(v))) {
			snprintf(err, errlen,
				 "\"%s\" must be a container id (letters, "
				 "digits, '_', '.', '-'; at most 128)",
				 k->name);
			return -EINVAL;
		}
		return 0;
	}
bad_type:
	snprintf(err, errlen, "\"%s\" has the wrong type", k->name);
	return -EINVAL;
}

/* Secrets next to a spec that would not use them: refused here too, for
 * clients other than ours (keys already checked). */
static int check_secrets_used(struct json_object *req, char *err, size_t errlen)
{
	struct json_object *js, *jsec;
	struct lf_spec spec;
	struct lf_secrets sec;
	int r;

	if (!json_object_object_get_ex(req, "spec", &js) ||
	    !json_object_object_get_ex(req, "secrets", &jsec))
		return 0;
	if (lf_spec_parse_json(json_object_to_json_string(js), &spec, err,
			       errlen))
		return -EINVAL;
	r = lf_secrets_parse_json(json_object_to_json_string(jsec), &sec, err,
				  errlen);
	if (!r)
		r = lf_spec_check_secrets(&spec, &sec, err, errlen);
	lf_secrets_wipe(&sec);
	return r;
}

int lf_request_check(struct json_object *req, char *err, size_t errlen)
{
	const struct opdef *def = NULL;
	struct json_object *op;
	int r;

	if (!json_object_is_type(req, json_type_object)) {
		snprintf(err, errlen, "a request must be a JSON object");
		return -EINVAL;
	}
	if (!json_object_object_get_ex(req, "op", &op) ||
	    !json_object_is_type(op, json_type_string)) {
		snprintf(err, errlen, "a request needs \"op\" (a string)");
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(json_object_get_string(op), ops[i].op) == 0)
			def = &ops[i];
	if (!def) {
		snprintf(err, errlen, "unknown request \"%.40s\"",
			 json_object_get_string(op));
		return -EINVAL;
	}
	json_object_object_foreach(req, key, val)
	{
		const struct key *k = NULL;
		if (strcmp(key, "op") == 0)
			continue;
		for (const struct key *c = def->keys; c->name; c++)
			if (strcmp(c->name, key) == 0)
				k = c;
		if (!k) {
			snprintf(err, errlen, "%s: unknown key \"%.64s\"",
				 def->op, key);
			return -EINVAL;
		}
		r = check_value(k, val, err, errlen);
		if (r)
			return r;
	}
	r = check_secrets_used(req, err, errlen);
	if (r)
		return r;
	for (const char *const *rq = def->required; *rq; rq++) {
		if (!json_object_object_get_ex(req, *rq, NULL)) {
			snprintf(err, errlen, "%s: \"%s\" is required", def->op,
				 *rq);
			return -EINVAL;
		}
	}
	return 0;
}

int lf_request_parse(const char *text, size_t len, struct json_object **out,
		     char *err, size_t errlen)
{
	struct json_tokener *tok;
	struct json_object *o;
	int r;

	if (len > (1u << 20)) {
		snprintf(err, errlen, "request too large");
		return -EMSGSIZE;
	}
	tok = json_tokener_new_ex(32); /* nesting depth: requests are flat */
	if (!tok)
		return -ENOMEM;
	o = json_tokener_parse_ex(tok, text, (int)len);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    (size_t)json_tokener_get_parse_end(tok) != len) {
		json_object_put(o);
		json_tokener_free(tok);
		snprintf(err, errlen, "malformed request: not one JSON object");
		return -EINVAL;
	}
	json_tokener_free(tok);
	r = lf_request_check(o, err, errlen);
	if (r) {
		json_object_put(o);
		return r;
	}
	*out = o;
	return 0;
}
