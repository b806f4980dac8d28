/* spec.c — see spec.h.
 *
 * Two lunfs extensions to the ISCSIVolumeSource names exist only so that
 * lf_spec_to_json() can carry every spec across the control socket:
 * "path" (a file:// spec) and "chapUser" (the "user@" of a URL). */
#include "iscsi/spec.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPEC_FILE_MAX	(1 << 20)
#define SECRET_FILE_MAX (64 << 10)

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* Copies src into a fixed field; false when it does not fit. */
static bool copy_field(char *dst, size_t dstlen, const char *src, size_t n)
{
	if (n >= dstlen)
		return false;
	memcpy(dst, src, n);
	dst[n] = 0;
	return true;
}

void lf_spec_init(struct lf_spec *spec)
{
	memset(spec, 0, sizeof(*spec));
	spec->kind = LF_SPEC_ISCSI;
	strcpy(spec->iface, "default");
	strcpy(spec->fs_type, "ext4");
	spec->mode = LF_MODE_FILESYSTEM;
}

/* ---- names ---------------------------------------------------------- */

static bool all_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!isxdigit((unsigned char)s[i]))
			return false;
	}
	return true;
}

static bool all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
	}
	return n > 0;
}

/* iqn.YYYY-MM.reverse.domain[:anything], the Kubernetes regex
 * iqn\.\d{4}-\d{2}\.([[:alnum:]-.]+)(:[^,;*&$|\s]+) with the ":…" part
 * optional (RFC 3720 allows a bare naming authority). */
static bool iqn_ok(const char *s)
{
	const char *p = s + 4, *dom;

	if (!all_digits(p, 4) || p[4] != '-' || !all_digits(p + 5, 2) ||
	    p[7] != '.')
		return false;
	p += 8;
	dom = p;
	while (isalnum((unsigned char)*p) || *p == '-' || *p == '.')
		p++;
	if (p == dom)
		return false;
	if (!*p)
		return true;
	if (*p++ != ':' || !*p)
		return false;
	for (; *p; p++) {
		if (strchr(",;*&$|", *p) || isspace((unsigned char)*p))
			return false;
	}
	return true;
}

int lf_spec_check_name(const char *name, const char *what, char *err,
		       size_t errlen)
{
	size_t n = strlen(name);

	if (!n)
		return fail(err, errlen, -EINVAL, "%s must not be empty", what);
	if (n >= LF_NAME_MAX)
		return fail(err, errlen, -EINVAL,
			    "%s is %zu bytes long: iSCSI names are at most %d",
			    what, n, LF_NAME_MAX - 1);
	if (!strncmp(name, "iqn.", 4)) {
		if (iqn_ok(name))
			return 0;
		return fail(err, errlen, -EINVAL,
			    "%s \"%s\" is not a valid iSCSI name: expected "
			    "iqn.YYYY-MM.reverse.domain[:identifier]",
			    what, name);
	}
	if (!strncmp(name, "eui.", 4)) {
		if (n == 20 && all_hex(name + 4, 16))
			return 0;
		return fail(err, errlen, -EINVAL,
			    "%s \"%s\" is not a valid iSCSI name: expected "
			    "eui. followed by 16 hex digits",
			    what, name);
	}
	if (!strncmp(name, "naa.", 4)) {
		if ((n == 20 || n == 36) && all_hex(name + 4, n - 4))
			return 0;
		return fail(err, errlen, -EINVAL,
			    "%s \"%s\" is not a valid iSCSI name: expected "
			    "naa. followed by 16 or 32 hex digits",
			    what, name);
	}
	return fail(err, errlen, -EINVAL,
		    "%s \"%s\" is not a valid iSCSI name: it must start with "
		    "iqn., eui. or naa.",
		    what, name);
}

/* ---- portals -------------------------------------------------------- */

static bool hostname_ok(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];

		if (!isalnum(c) && c != '-' && c != '.' && c != '_')
			return false;
	}
	return n > 0;
}

static bool ipv6_ok(const char *s, size_t n)
{
	char buf[64];
	struct in6_addr a;
	const char *zone = memchr(s, '%', n);

	if (zone)
		n = zone - s; /* "fe80::1%eth0": the zone is for the kernel */
	if (!n || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = 0;
	return inet_pton(AF_INET6, buf, &a) == 1;
}

/* "host", "host:port", "[v6]" or "[v6]:port"; len bytes of s. */
static int parse_portal(const char *s, size_t len, struct lf_portal *p,
			const char *what, char *err, size_t errlen)
{
	const char *host = s, *port = NULL, *end = s + len;
	size_t hlen;
	unsigned long v = LF_DEFAULT_PORT;

	memset(p, 0, sizeof(*p));
	if (!len)
		return fail(err, errlen, -EINVAL, "%s must not be empty", what);
	if (*s == '[') {
		const char *rb = memchr(s, ']', len);

		if (!rb)
			return fail(err, errlen, -EINVAL,
				    "%s \"%.*s\": missing ']' after an IPv6 "
				    "address",
				    what, (int)len, s);
		host = s + 1;
		hlen = rb - host;
		if (!ipv6_ok(host, hlen))
			return fail(err, errlen, -EINVAL,
				    "%s \"%.*s\": not an IPv6 address in []",
				    what, (int)len, s);
		if (rb + 1 < end) {
			if (rb[1] != ':')
				return fail(
					err, errlen, -EINVAL,
					"%s \"%.*s\": expected \"[addr]:port\"",
					what, (int)len, s);
			port = rb + 2;
		}
	} else {
		const char *colon = memchr(s, ':', len);

		if (colon && memchr(colon + 1, ':', end - colon - 1))
			return fail(err, errlen, -EINVAL,
				    "%s \"%.*s\": write an IPv6 address in "
				    "brackets, as \"[addr]:port\"",
				    what, (int)len, s);
		hlen = colon ? (size_t)(colon - s) : len;
		if (!hostname_ok(host, hlen))
			return fail(err, errlen, -EINVAL,
				    "%s \"%.*s\": not a host name or address",
				    what, (int)len, s);
		if (colon)
			port = colon + 1;
	}
	if (port) {
		size_t plen = end - port;

		v = 0;
		if (all_digits(port, plen) && plen <= 5) {
			for (size_t i = 0; i < plen; i++)
				v = v * 10 + (port[i] - '0');
		}
		if (v < 1 || v > 65535)
			return fail(err, errlen, -EINVAL,
				    "%s \"%.*s\": port must be 1..65535", what,
				    (int)len, s);
	}
	if (!copy_field(p->host, sizeof(p->host), host, hlen))
		return fail(err, errlen, -EINVAL, "%s: host name too long",
			    what);
	p->port = v;
	return 0;
}

static void format_portal(const struct lf_portal *p, bool use_addr, char *buf,
			  size_t len)
{
	const char *h = use_addr && p->addr[0] ? p->addr : p->host;

	if (strchr(h, ':'))
		snprintf(buf, len, "[%s]:%u", h, p->port);
	else
		snprintf(buf, len, "%s:%u", h, p->port);
}

/* Same host and port as an earlier one: dropped, so that equal portal sets
 * give equal registry keys. */
static int add_portal(struct lf_spec *spec, const char *s, const char *what,
		      char *err, size_t errlen)
{
	struct lf_portal p;
	int rc = parse_portal(s, strlen(s), &p, what, err, errlen);

	if (rc)
		return rc;
	for (int i = 0; i < spec->nportals; i++) {
		if (!strcmp(spec->portals[i].host, p.host) &&
		    spec->portals[i].port == p.port)
			return 0;
	}
	if (spec->nportals >= LF_MAX_PORTALS)
		return fail(err, errlen, -EINVAL,
			    "too many portals: at most %d", LF_MAX_PORTALS);
	spec->portals[spec->nportals++] = p;
	return 0;
}

/* ---- validation ----------------------------------------------------- */

static int check_fs_type(const char *t, char *err, size_t errlen)
{
	if (!strcmp(t, "ext4") || !strcmp(t, "ext3") || !strcmp(t, "ext2"))
		return 0;
	return fail(err, errlen, -EINVAL,
		    "fsType %s is not supported: lunfs serves ext2/3/4", t);
}

static int validate(struct lf_spec *spec, char *err, size_t errlen)
{
	int rc;

	if (!spec->fs_type[0])
		strcpy(spec->fs_type, "ext4");
	if (!spec->iface[0])
		strcpy(spec->iface, "default");
	rc = check_fs_type(spec->fs_type, err, errlen);
	if (rc)
		return rc;
	if (spec->kind == LF_SPEC_FILE) {
		if (spec->path[0] != '/')
			return fail(err, errlen, -EINVAL,
				    "path \"%s\" must be absolute", spec->path);
		return 0;
	}
	if (!spec->nportals)
		return fail(err, errlen, -EINVAL, "targetPortal is required");
	if (!spec->iqn[0])
		return fail(err, errlen, -EINVAL, "iqn is required");
	rc = lf_spec_check_name(spec->iqn, "iqn", err, errlen);
	if (rc)
		return rc;
	if (spec->lun < 0 || spec->lun > 255)
		return fail(err, errlen, -EINVAL,
			    "lun %d is out of range: must be 0..255",
			    spec->lun);
	if (spec->initiator_name[0]) {
		rc = lf_spec_check_name(spec->initiator_name, "initiatorName",
					err, errlen);
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- URL ------------------------------------------------------------ */

static int parse_file_url(const char *rest, struct lf_spec *spec, char *err,
			  size_t errlen)
{
	if (rest[0] != '/')
		return fail(err, errlen, -EINVAL,
			    "file URL needs an absolute path: "
			    "file:///path/to/image");
	if (!copy_field(spec->path, sizeof(spec->path), rest, strlen(rest)))
		return fail(err, errlen, -ENAMETOOLONG,
			    "file URL: path too long");
	spec->kind = LF_SPEC_FILE;
	return validate(spec, err, errlen);
}

static int parse_iscsi_url(const char *rest, struct lf_spec *spec, char *err,
			   size_t errlen)
{
	static const char form[] =
		"expected iscsi://[user@]host[:port]/IQN/LUN";
	const char *slash = strchr(rest, '/'), *at, *host, *iqn, *lun, *p;
	size_t n;
	long v = 0;
	int rc;

	if (!slash)
		return fail(err, errlen, -EINVAL, "%s", form);
	at = memrchr(rest, '@', slash - rest);
	host = rest;
	if (at) {
		/* The URL is not echoed back: it may hold a password. */
		if (memchr(rest, ':', at - rest) ||
		    memchr(rest, '%', at - rest))
			return fail(err, errlen, -EINVAL,
				    "refusing a password in the URL "
				    "(\"user:pass@\" or \"user%%pass@\"): it "
				    "would be visible in the process list; "
				    "put the CHAP secret in a file "
				    "(--chap-secret-file) or in "
				    "LUNFS_CHAP_PASSWORD");
		if (at == rest)
			return fail(err, errlen, -EINVAL,
				    "empty user name before '@': %s", form);
		if (!copy_field(spec->url_user, sizeof(spec->url_user), rest,
				at - rest))
			return fail(err, errlen, -EINVAL,
				    "user name in URL too long");
		spec->chap_session = true;
		host = at + 1;
	}
	rc = parse_portal(host, slash - host, &spec->portals[0], "portal", err,
			  errlen);
	if (rc)
		return rc;
	spec->nportals = 1;

	iqn = slash + 1;
	p = strchr(iqn, '/');
	if (!p || p == iqn)
		return fail(err, errlen, -EINVAL, "missing %s: %s",
			    p ? "IQN" : "LUN", form);
	if (!copy_field(spec->iqn, sizeof(spec->iqn), iqn, p - iqn))
		return fail(err, errlen, -EINVAL,
			    "IQN too long: iSCSI names are at most %d bytes",
			    LF_NAME_MAX - 1);
	lun = p + 1;
	n = strlen(lun);
	if (strpbrk(lun, "?#"))
		return fail(err, errlen, -EINVAL,
			    "URL parameters are not supported: %s", form);
	if (!n)
		return fail(err, errlen, -EINVAL, "missing LUN: %s", form);
	if (!all_digits(lun, n))
		return fail(err, errlen, -EINVAL,
			    "LUN \"%s\" is not a number: %s", lun, form);
	for (size_t i = 0; i < n && v <= 255; i++)
		v = v * 10 + (lun[i] - '0');
	if (v > 255)
		return fail(err, errlen, -EINVAL,
			    "LUN %s is out of range: must be 0..255", lun);
	spec->lun = v;
	return validate(spec, err, errlen);
}

int lf_spec_parse_url(const char *url, struct lf_spec *spec, char *err,
		      size_t errlen)
{
	lf_spec_init(spec);
	if (!strncmp(url, "file://", 7))
		return parse_file_url(url + 7, spec, err, errlen);
	if (!strncmp(url, "iscsi://", 8))
		return parse_iscsi_url(url + 8, spec, err, errlen);
	return fail(
		err, errlen, -EINVAL,
		"unsupported URL: expected iscsi://[user@]host[:port]/IQN/LUN "
		"or file:///path");
}

/* ---- JSON ----------------------------------------------------------- */

/* Parses a whole document (trailing garbage is an error); NULL + err. */
static struct json_object *parse_json_doc(const char *text, const char *what,
					  char *err, size_t errlen)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *obj;
	enum json_tokener_error jerr;
	size_t len = strlen(text), off;

	if (!tok) {
		fail(err, errlen, -ENOMEM, "%s: out of memory", what);
		return NULL;
	}
	obj = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	off = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!obj || jerr != json_tokener_success) {
		if (jerr == json_tokener_continue)
			fail(err, errlen, -EINVAL, "%s: truncated JSON", what);
		else
			fail(err, errlen, -EINVAL,
			     "%s: invalid JSON at byte %zu: %s", what, off,
			     json_tokener_error_desc(jerr));
		json_object_put(obj);
		return NULL;
	}
	while (off < len && isspace((unsigned char)text[off]))
		off++;
	if (off < len) {
		fail(err, errlen, -EINVAL,
		     "%s: unexpected data after the JSON value at byte %zu",
		     what, off);
		json_object_put(obj);
		return NULL;
	}
	if (!json_object_is_type(obj, json_type_object)) {
		fail(err, errlen, -EINVAL, "%s: expected a JSON object", what);
		json_object_put(obj);
		return NULL;
	}
	return obj;
}

static int want_type(const char *key, struct json_object *v, json_type t,
		     const char *tname, char *err, size_t errlen)
{
	if (json_object_is_type(v, t))
		return 0;
	return fail(err, errlen, -EINVAL, "field \"%s\" must be %s", key,
		    tname);
}

static int get_string(const char *key, struct json_object *v, char *dst,
		      size_t dstlen, char *err, size_t errlen)
{
	int rc = want_type(key, v, json_type_string, "a string", err, errlen);

	if (rc)
		return rc;
	if (!copy_field(dst, dstlen, json_object_get_string(v),
			json_object_get_string_len(v)))
		return fail(err, errlen, -EINVAL,
			    "field \"%s\" is too long (at most %zu bytes)", key,
			    dstlen - 1);
	return 0;
}

static int get_bool(const char *key, struct json_object *v, bool *dst,
		    char *err, size_t errlen)
{
	int rc = want_type(key, v, json_type_boolean, "a boolean", err, errlen);

	if (!rc)
		*dst = json_object_get_boolean(v);
	return rc;
}

static int json_field(struct lf_spec *spec, const char *key,
		      struct json_object *v, char *err, size_t errlen)
{
	char buf[32];
	int rc;

	if (!strcmp(key, "iqn"))
		return get_string(key, v, spec->iqn, sizeof(spec->iqn), err,
				  errlen);
	if (!strcmp(key, "lun")) {
		int64_t lun;

		rc = want_type(key, v, json_type_int, "an integer", err,
			       errlen);
		if (rc)
			return rc;
		lun = json_object_get_int64(v);
		if (lun < 0 || lun > 255)
			return fail(err, errlen, -EINVAL,
				    "lun %lld is out of range: must be 0..255",
				    (long long)lun);
		spec->lun = (int)lun;
		return 0;
	}
	if (!strcmp(key, "iscsiInterface"))
		return get_string(key, v, spec->iface, sizeof(spec->iface), err,
				  errlen);
	if (!strcmp(key, "fsType"))
		return get_string(key, v, spec->fs_type, sizeof(spec->fs_type),
				  err, errlen)
			       ?: check_fs_type(spec->fs_type, err, errlen);
	if (!strcmp(key, "readOnly"))
		return get_bool(key, v, &spec->read_only, err, errlen);
	if (!strcmp(key, "chapAuthDiscovery"))
		return get_bool(key, v, &spec->chap_discovery, err, errlen);
	if (!strcmp(key, "chapAuthSession"))
		return get_bool(key, v, &spec->chap_session, err, errlen);
	if (!strcmp(key, "initiatorName"))
		return get_string(key, v, spec->initiator_name,
				  sizeof(spec->initiator_name), err, errlen);
	if (!strcmp(key, "chapUser"))
		return get_string(key, v, spec->url_user,
				  sizeof(spec->url_user), err, errlen);
	if (!strcmp(key, "volumeMode")) {
		rc = get_string(key, v, buf, sizeof(buf), err, errlen);
		if (rc)
			return rc;
		if (!strcmp(buf, "Filesystem"))
			spec->mode = LF_MODE_FILESYSTEM;
		else if (!strcmp(buf, "Block"))
			spec->mode = LF_MODE_BLOCK;
		else
			return fail(
				err, errlen, -EINVAL,
				"field \"volumeMode\" must be \"Filesystem\" "
				"or \"Block\", not \"%s\"",
				buf);
		return 0;
	}
	if (!strcmp(key, "secretRef"))
		return fail(err, errlen, -EINVAL,
			    "field \"secretRef\" is not supported: give the "
			    "CHAP secrets in a file (--chap-secret-file)");
	return fail(err, errlen, -EINVAL, "unknown field \"%s\"", key);
}

int lf_spec_parse_json(const char *text, struct lf_spec *spec, char *err,
		       size_t errlen)
{
	struct json_object *obj, *target = NULL, *portals = NULL, *path = NULL;
	int rc = 0;

	lf_spec_init(spec);
	obj = parse_json_doc(text, "volume spec", err, errlen);
	if (!obj)
		return -EINVAL;
	json_object_object_foreach(obj, key, v)
	{
		/* null is how Kubernetes writes an unset optional field */
		if (json_object_is_type(v, json_type_null))
			continue;
		if (!strcmp(key, "targetPortal"))
			rc = want_type(key, (target = v), json_type_string,
				       "a string", err, errlen);
		else if (!strcmp(key, "portals"))
			rc = want_type(key, (portals = v), json_type_array,
				       "an array of strings", err, errlen);
		else if (!strcmp(key, "path"))
			rc = want_type(key, (path = v), json_type_string,
				       "a string", err, errlen);
		else
			rc = json_field(spec, key, v, err, errlen);
		if (rc)
			goto out;
	}
	if (path) {
		if (target || portals || spec->iqn[0]) {
			rc = fail(err, errlen, -EINVAL,
				  "field \"path\" (a local image) excludes "
				  "targetPortal, portals and iqn");
			goto out;
		}
		spec->kind = LF_SPEC_FILE;
		if (!copy_field(spec->path, sizeof(spec->path),
				json_object_get_string(path),
				json_object_get_string_len(path))) {
			rc = fail(err, errlen, -ENAMETOOLONG,
				  "field \"path\" is too long");
			goto out;
		}
	}
	/* targetPortal first, whatever the key order: it is portals[0] */
	if (target) {
		rc = add_portal(spec, json_object_get_string(target),
				"targetPortal", err, errlen);
		if (rc)
			goto out;
	}
	if (portals) {
		size_t n = json_object_array_length(portals);

		if (!target && n) {
			rc = fail(err, errlen, -EINVAL,
				  "targetPortal is required");
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			struct json_object *e =
				json_object_array_get_idx(portals, i);

			if (!json_object_is_type(e, json_type_string)) {
				rc = fail(err, errlen, -EINVAL,
					  "field \"portals\" must be an array "
					  "of strings");
				goto out;
			}
			rc = add_portal(spec, json_object_get_string(e),
					"portals", err, errlen);
			if (rc)
				goto out;
		}
	}
	rc = validate(spec, err, errlen);
out:
	json_object_put(obj);
	return rc;
}

static int read_fd_all(int fd, size_t max, char **out, size_t *outlen)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap + 1), *nb;
	ssize_t n;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (len == cap) {
			if (cap > max)
				break;
			nb = malloc(cap * 2 + 1);
			if (!nb) {
				explicit_bzero(buf, len);
				free(buf);
				return -ENOMEM;
			}
			/* not realloc: the old copy may hold a secret */
			memcpy(nb, buf, len);
			explicit_bzero(buf, len);
			free(buf);
			buf = nb;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int rc = -errno;

			explicit_bzero(buf, len);
			free(buf);
			return rc;
		}
		if (n == 0)
			break;
		len += n;
	}
	if (len > max) {
		explicit_bzero(buf, len);
		free(buf);
		return -EFBIG;
	}
	buf[len] = 0;
	*out = buf;
	*outlen = len;
	return 0;
}

int lf_spec_load(const char *arg, struct lf_spec *spec, char *err,
		 size_t errlen)
{
	char *text;
	size_t len;
	int fd, rc;

	if (!strncmp(arg, "iscsi://", 8) || !strncmp(arg, "file://", 7))
		return lf_spec_parse_url(arg, spec, err, errlen);
	lf_spec_init(spec);
	fd = open(arg, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, errlen, -errno,
			    "%s: %m (a spec is iscsi://…, file://… or a JSON "
			    "file)",
			    arg);
	rc = read_fd_all(fd, SPEC_FILE_MAX, &text, &len);
	close(fd);
	if (rc)
		return fail(err, errlen, rc, "%s: %s", arg, strerror(-rc));
	rc = lf_spec_parse_json(text, spec, err, errlen);
	free(text);
	if (rc && err && errlen) {
		char msg[512];

		snprintf(msg, sizeof(msg), "%s", err);
		snprintf(err, errlen, "%s: %s", arg, msg);
	}
	return rc;
}

int lf_spec_resolve(struct lf_spec *spec, char *err, size_t errlen)
{
	if (spec->kind != LF_SPEC_ISCSI)
		return 0;
	for (int i = 0; i < spec->nportals; i++) {
		struct lf_portal *p = &spec->portals[i];
		struct addrinfo hints = {.ai_family = AF_UNSPEC,
					 .ai_socktype = SOCK_STREAM};
		struct addrinfo *res;
		int rc;

		rc = getaddrinfo(p->host, NULL, &hints, &res);
		if (rc)
			return fail(err, errlen,
				    rc == EAI_MEMORY ? -ENOMEM : -EHOSTUNREACH,
				    "portal %s:%u: cannot resolve the host "
				    "name: %s",
				    p->host, p->port,
				    rc == EAI_SYSTEM ? strerror(errno)
						     : gai_strerror(rc));
		rc = getnameinfo(res->ai_addr, res->ai_addrlen, p->addr,
				 sizeof(p->addr), NULL, 0, NI_NUMERICHOST);
		freeaddrinfo(res);
		if (rc)
			return fail(err, errlen, -EHOSTUNREACH, "portal %s: %s",
				    p->host, gai_strerror(rc));
	}
	return 0;
}

char *lf_spec_url(const struct lf_spec *spec, char *buf, size_t len)
{
	char portal[LF_HOST_MAX + 16];

	if (spec->kind == LF_SPEC_FILE) {
		snprintf(buf, len, "file://%s", spec->path);
		return buf;
	}
	if (spec->nportals)
		format_portal(&spec->portals[0], true, portal, sizeof(portal));
	else
		portal[0] = 0;
	snprintf(buf, len, "iscsi://%s/%s/%d", portal, spec->iqn, spec->lun);
	return buf;
}

char *lf_spec_to_json(const struct lf_spec *spec)
{
	struct json_object *o = json_object_new_object(), *arr;
	char portal[LF_HOST_MAX + 16];
	char *out = NULL;

	if (!o)
		return NULL;
	if (spec->kind == LF_SPEC_FILE) {
		json_object_object_add(o, "path",
				       json_object_new_string(spec->path));
	} else {
		if (spec->nportals) {
			format_portal(&spec->portals[0], false, portal,
				      sizeof(portal));
			json_object_object_add(o, "targetPortal",
					       json_object_new_string(portal));
		}
		if (spec->nportals > 1) {
			arr = json_object_new_array();
			for (int i = 1; i < spec->nportals; i++) {
				format_portal(&spec->portals[i], false, portal,
					      sizeof(portal));
				json_object_array_add(
					arr, json_object_new_string(portal));
			}
			json_object_object_add(o, "portals", arr);
		}
		json_object_object_add(o, "iqn",
				       json_object_new_string(spec->iqn));
		json_object_object_add(o, "lun",
				       json_object_new_int(spec->lun));
		json_object_object_add(o, "iscsiInterface",
				       json_object_new_string(spec->iface));
		json_object_object_add(
			o, "chapAuthDiscovery",
			json_object_new_boolean(spec->chap_discovery));
		json_object_object_add(
			o, "chapAuthSession",
			json_object_new_boolean(spec->chap_session));
		if (spec->initiator_name[0])
			json_object_object_add(
				o, "initiatorName",
				json_object_new_string(spec->initiator_name));
		if (spec->url_user[0])
			json_object_object_add(
				o, "chapUser",
				json_object_new_string(spec->url_user));
	}
	json_object_object_add(o, "fsType",
			       json_object_new_string(spec->fs_type));
	json_object_object_add(o, "readOnly",
			       json_object_new_boolean(spec->read_only));
	json_object_object_add(
		o, "volumeMode",
		json_object_new_string(
			spec->mode == LF_MODE_BLOCK ? "Block" : "Filesystem"));
	out = strdup(json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return out;
}

/* ---- secrets -------------------------------------------------------- */

static const char *const secret_ns[] = {"node.session.auth.",
					"discovery.sendtargets.auth."};

/* The field for a key; NULL (and *in_ns) for keys of our namespaces that
 * do not exist. Keys outside them belong to someone else: ignored. */
static char *secret_field(struct lf_secrets *sec, const char *key, bool *in_ns)
{
	for (int i = 0; i < 2; i++) {
		struct lf_chap *c = i ? &sec->discovery : &sec->session;
		size_t n = strlen(secret_ns[i]);
		const char *k = key + n;

		if (strncmp(key, secret_ns[i], n))
			continue;
		*in_ns = true;
		if (!strcmp(k, "username"))
			return c->user;
		if (!strcmp(k, "password"))
			return c->secret;
		if (!strcmp(k, "username_in"))
			return c->user_in;
		if (!strcmp(k, "password_in"))
			return c->secret_in;
		return NULL;
	}
	*in_ns = false;
	return NULL;
}

static bool secret_key_known(const char *key)
{
	for (int i = 0; i < 2; i++) {
		if (!strncmp(key, secret_ns[i], strlen(secret_ns[i])))
			return true;
	}
	return false;
}

/* Never put val into a message. */
static int secret_set(struct lf_secrets *sec, const char *src, const char *key,
		      const char *val, size_t len, char *err, size_t errlen)
{
	bool in_ns;
	char *f = secret_field(sec, key, &in_ns);

	if (!in_ns)
		return 0;
	if (!f)
		return fail(err, errlen, -EINVAL, "%s: unknown key \"%s\"", src,
			    key);
	if (len >= LF_SECRET_MAX)
		return fail(
			err, errlen, -EINVAL,
			"%s: value of \"%s\" is too long (at most %d bytes)",
			src, key, LF_SECRET_MAX - 1);
	if (memchr(val, 0, len))
		return fail(err, errlen, -EINVAL,
			    "%s: value of \"%s\" contains a NUL byte", src,
			    key);
	explicit_bzero(f, LF_SECRET_MAX);
	memcpy(f, val, len);
	return 0;
}

static int secrets_check(const struct lf_secrets *sec, const char *src,
			 bool need_user, char *err, size_t errlen)
{
	for (int i = 0; i < 2; i++) {
		const struct lf_chap *c = i ? &sec->discovery : &sec->session;
		const char *ns = secret_ns[i];

		if (need_user && c->secret[0] && !c->user[0])
			return fail(err, errlen, -EINVAL,
				    "%s: %spassword is set without "
				    "%susername",
				    src, ns, ns);
		if (c->secret_in[0] && !c->user_in[0])
			return fail(err, errlen, -EINVAL,
				    "%s: %spassword_in is set without "
				    "%susername_in",
				    src, ns, ns);
		if (c->user_in[0] && !c->user[0] && need_user)
			return fail(err, errlen, -EINVAL,
				    "%s: mutual CHAP (%susername_in) needs "
				    "one-way CHAP (%susername) too",
				    src, ns, ns);
	}
	return 0;
}

/* json-c frees its strings without clearing them. */
static void json_wipe_put(struct json_object *o)
{
	if (!o)
		return;
	if (json_object_is_type(o, json_type_string)) {
		explicit_bzero((char *)json_object_get_string(o),
			       json_object_get_string_len(o));
	} else if (json_object_is_type(o, json_type_object)) {
		json_object_object_foreach(o, k, v)
		{
			(void)k;
			json_wipe_put(json_object_get(v));
		}
	} else if (json_object_is_type(o, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(o); i++)
			json_wipe_put(json_object_get(
				json_object_array_get_idx(o, i)));
	}
	json_object_put(o);
}

static int b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Standard base64, padding optional; false on bad input or overflow. */
static bool b64_decode(const char *in, size_t inlen, char *out, size_t outcap,
		       size_t *outlen)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;

	while (inlen && in[inlen - 1] == '=')
		inlen--;
	for (size_t i = 0; i < inlen; i++) {
		int v = b64_val(in[i]);

		if (v < 0)
			return false;
		acc = acc << 6 | v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n >= outcap)
				return false;
			out[n++] = acc >> bits & 0xff;
		}
	}
	*outlen = n;
	return bits < 6;
}

static int secrets_from_object(struct lf_secrets *sec, const char *src,
			       struct json_object *obj, bool base64, char *err,
			       size_t errlen)
{
	char buf[LF_SECRET_MAX + 4];
	size_t n;
	int rc = 0;

	json_object_object_foreach(obj, key, v)
	{
		if (!secret_key_known(key))
			continue;
		if (!json_object_is_type(v, json_type_string)) {
			rc = fail(err, errlen, -EINVAL,
				  "%s: key \"%s\" must be a string", src, key);
			break;
		}
		if (!base64) {
			rc = secret_set(
				sec, src, key, json_object_get_string(v),
				json_object_get_string_len(v), err, errlen);
		} else if (!b64_decode(json_object_get_string(v),
				       json_object_get_string_len(v), buf,
				       sizeof(buf), &n)) {
			rc = fail(err, errlen, -EINVAL,
				  "%s: data.\"%s\" is not valid base64 or is "
				  "too long",
				  src, key);
		} else {
			rc = secret_set(sec, src, key, buf, n, err, errlen);
		}
		if (rc)
			break;
	}
	explicit_bzero(buf, sizeof(buf));
	return rc;
}

static int secrets_from_json(struct lf_secrets *sec, const char *src,
			     const char *text, bool manifest_ok, char *err,
			     size_t errlen)
{
	struct json_object *obj, *data = NULL, *sdata = NULL, *kind = NULL;
	int rc = 0;

	obj = parse_json_doc(text, src, err, errlen);
	if (!obj)
		return -EINVAL;
	if (manifest_ok) {
		json_object_object_get_ex(obj, "data", &data);
		json_object_object_get_ex(obj, "stringData", &sdata);
		json_object_object_get_ex(obj, "kind", &kind);
	}
	if (data || sdata || kind) {
		if ((data && !json_object_is_type(data, json_type_object)) ||
		    (sdata && !json_object_is_type(sdata, json_type_object))) {
			rc = fail(err, errlen, -EINVAL,
				  "%s: \"data\" and \"stringData\" of a Secret "
				  "must be objects",
				  src);
			goto out;
		}
		/* stringData wins over data, as the API server merges them */
		if (data)
			rc = secrets_from_object(sec, src, data, true, err,
						 errlen);
		if (!rc && sdata)
			rc = secrets_from_object(sec, src, sdata, false, err,
						 errlen);
	} else {
		rc = secrets_from_object(sec, src, obj, false, err, errlen);
	}
out:
	json_wipe_put(obj);
	return rc;
}

static int secrets_from_lines(struct lf_secrets *sec, const char *src,
			      char *text, char *err, size_t errlen)
{
	char *line = text, *next, *eq, *k, *v, *end;
	int lineno = 0, rc;

	for (; line && *line; line = next) {
		lineno++;
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		while (isspace((unsigned char)*line))
			line++;
		if (!*line || *line == '#')
			continue;
		eq = strchr(line, '=');
		if (!eq)
			return fail(err, errlen, -EINVAL,
				    "%s: line %d: expected key=value", src,
				    lineno);
		/* "key = value" as in iscsid.conf: blanks around both go */
		k = line;
		for (end = eq; end > k && isspace((unsigned char)end[-1]);)
			end--;
		*end = 0;
		v = eq + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		end = v + strlen(v);
		while (end > v && isspace((unsigned char)end[-1]))
			end--;
		rc = secret_set(sec, src, k, v, end - v, err, errlen);
		if (rc)
			return rc;
	}
	return 0;
}

static int check_mode(int fd, const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (fstat(fd, &st))
		return fail(err, errlen, -errno, "%s: %m", path);
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) && st.st_uid != 0)
		return fail(err, errlen, -EPERM,
			    "%s: CHAP secret file is accessible by group or "
			    "others: chmod 600 %s",
			    path, path);
	return 0;
}

static int secrets_from_dir(struct lf_secrets *sec, const char *dirpath,
			    int dfd, char *err, size_t errlen)
{
	DIR *d = fdopendir(dfd);
	struct dirent *de;
	char path[PATH_MAX];
	int rc = 0;

	if (!d) {
		rc = fail(err, errlen, -errno, "%s: %m", dirpath);
		close(dfd);
		return rc;
	}
	while (!rc && (de = readdir(d))) {
		char *val = NULL;
		size_t len = 0;
		int fd;

		/* "..data" and friends: the Secret volume's own plumbing */
		if (de->d_name[0] == '.' || !secret_key_known(de->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dirpath, de->d_name);
		fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			rc = fail(err, errlen, -errno, "%s: %m", path);
			break;
		}
		rc = check_mode(fd, path, err, errlen);
		if (!rc) {
			rc = read_fd_all(fd, LF_SECRET_MAX + 2, &val, &len);
			if (rc == -EFBIG)
				rc = fail(err, errlen, -EINVAL,
					  "%s: value is too long (at most %d "
					  "bytes)",
					  path, LF_SECRET_MAX - 1);
			else if (rc)
				rc = fail(err, errlen, rc, "%s: %s", path,
					  strerror(-rc));
		}
		close(fd);
		if (rc)
			break;
		if (len && val[len - 1] == '\n')
			len--;
		if (len && val[len - 1] == '\r')
			len--;
		rc = secret_set(sec, path, de->d_name, val, len, err, errlen);
		explicit_bzero(val, len);
		free(val);
	}
	closedir(d);
	return rc;
}

int lf_secrets_load_file(const char *path, struct lf_secrets *sec, char *err,
			 size_t errlen)
{
	struct stat st;
	char *text = NULL, *p;
	size_t len = 0;
	int fd, rc;

	memset(sec, 0, sizeof(*sec));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, errlen, -errno, "%s: %m", path);
	if (fstat(fd, &st)) {
		rc = fail(err, errlen, -errno, "%s: %m", path);
		close(fd);
		return rc;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = secrets_from_dir(sec, path, fd, err, errlen);
		goto out;
	}
	rc = check_mode(fd, path, err, errlen);
	if (!rc) {
		rc = read_fd_all(fd, SECRET_FILE_MAX, &text, &len);
		if (rc)
			rc = fail(err, errlen, rc, "%s: %s", path,
				  strerror(-rc));
	}
	close(fd);
	if (rc)
		goto out;
	for (p = text; isspace((unsigned char)*p); p++)
		;
	if (*p == '{')
		rc = secrets_from_json(sec, path, text, true, err, errlen);
	else
		rc = secrets_from_lines(sec, path, text, err, errlen);
	explicit_bzero(text, len);
	free(text);
out:
	if (!rc)
		rc = secrets_check(sec, path, true, err, errlen);
	if (rc)
		lf_secrets_wipe(sec);
	return rc;
}

int lf_secrets_from_env(struct lf_secrets *sec, char *err, size_t errlen)
{
	static const struct {
		const char *env, *key;
	} map[] = {
		{"LUNFS_CHAP_USERNAME", "node.session.auth.username"},
		{"LUNFS_CHAP_PASSWORD", "node.session.auth.password"},
		{"LUNFS_CHAP_USERNAME_IN", "node.session.auth.username_in"},
		{"LUNFS_CHAP_PASSWORD_IN", "node.session.auth.password_in"},
		{"LUNFS_DISCOVERY_CHAP_USERNAME",
		 "discovery.sendtargets.auth.username"},
		{"LUNFS_DISCOVERY_CHAP_PASSWORD",
		 "discovery.sendtargets.auth.password"},
		{"LUNFS_DISCOVERY_CHAP_USERNAME_IN",
		 "discovery.sendtargets.auth.username_in"},
		{"LUNFS_DISCOVERY_CHAP_PASSWORD_IN",
		 "discovery.sendtargets.auth.password_in"},
	};
	int rc = 0;

	memset(sec, 0, sizeof(*sec));
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]) && !rc; i++) {
		const char *v = getenv(map[i].env);

		if (v)
			rc = secret_set(sec, map[i].env, map[i].key, v,
					strlen(v), err, errlen);
	}
	/* A password alone is fine here: it pairs with a URL's "user@". */
	if (!rc)
		rc = secrets_check(sec, "environment", false, err, errlen);
	if (rc)
		lf_secrets_wipe(sec);
	return rc;
}

char *lf_secrets_to_json(const struct lf_secrets *sec)
{
	struct json_object *o = json_object_new_object();
	char key[64];
	const char *s;
	char *out;

	if (!o)
		return NULL;
	for (int i = 0; i < 2; i++) {
		const struct lf_chap *c = i ? &sec->discovery : &sec->session;
		const char *const names[] = {"username", "password",
					     "username_in", "password_in"};
		const char *const vals[] = {c->user, c->secret, c->user_in,
					    c->secret_in};

		for (int j = 0; j < 4; j++) {
			if (!vals[j][0])
				continue;
			snprintf(key, sizeof(key), "%s%s", secret_ns[i],
				 names[j]);
			json_object_object_add(o, key,
					       json_object_new_string(vals[j]));
		}
	}
	s = json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	out = s ? strdup(s) : NULL;
	/* the serialised copy lives in the object's buffer until it is put */
	if (s)
		explicit_bzero((char *)s, strlen(s));
	json_wipe_put(o);
	return out;
}

int lf_secrets_parse_json(const char *text, struct lf_secrets *sec, char *err,
			  size_t errlen)
{
	int rc;

	memset(sec, 0, sizeof(*sec));
	rc = secrets_from_json(sec, "secrets", text, false, err, errlen);
	if (!rc)
		rc = secrets_check(sec, "secrets", false, err, errlen);
	if (rc)
		lf_secrets_wipe(sec);
	return rc;
}

bool lf_secrets_empty(const struct lf_secrets *sec)
{
	const struct lf_chap *c[] = {&sec->session, &sec->discovery};

	for (int i = 0; i < 2; i++) {
		if (c[i]->user[0] || c[i]->secret[0] || c[i]->user_in[0] ||
		    c[i]->secret_in[0])
			return false;
	}
	return true;
}

static bool chap_given(const struct lf_chap *c)
{
	return c->user[0] || c->secret[0] || c->user_in[0] || c->secret_in[0];
}

int lf_spec_check_secrets(const struct lf_spec *spec,
			  const struct lf_secrets *sec, char *err,
			  size_t errlen)
{
	if (chap_given(&sec->session) && !spec->chap_session &&
	    !spec->url_user[0]) {
		snprintf(err, errlen,
			 "CHAP secrets were given but the spec does not use "
			 "CHAP, so they would be ignored: name the CHAP user "
			 "in the URL (iscsi://USER@host/IQN/LUN) or set "
			 "\"chapAuthSession\": true in a JSON spec");
		return -EINVAL;
	}
	if (chap_given(&sec->discovery) && !spec->chap_discovery) {
		snprintf(err, errlen,
			 "discovery CHAP secrets were given but the spec does "
			 "not use discovery CHAP, so they would be ignored: "
			 "set \"chapAuthDiscovery\": true in a JSON spec");
		return -EINVAL;
	}
	return 0;
}

void lf_secrets_wipe(struct lf_secrets *sec)
{
	explicit_bzero(sec, sizeof(*sec));
}
