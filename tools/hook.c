/* hook.c — the OCI runtime hook: container annotations → lunfs mounts. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuse/idbind.h"
#include "iscsi/log.h"
#include "iscsi/spec.h"
#include "tools/ctl.h"
#include "tools/ctrattach.h"
#include "tools/hook.h"

static struct json_object *get(struct json_object *o, const char *k)
{
	struct json_object *v = NULL;

	if (!o || !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, k, &v))
		return NULL;
	return v;
}

/* OCI [{containerID, hostID, size}] → ["c:h:s", …] (mount idmap form:
 * DISK = the container's id, HOST = the id outside). */
static int oci_mappings(struct json_object *arr, const char *what,
			struct json_object **out, char *err, size_t errlen)
{
	struct json_object *res;

	if (!json_object_is_type(arr, json_type_array)) {
		snprintf(err, errlen, "%s must be an array", what);
		return -EINVAL;
	}
	res = json_object_new_array();
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *m = json_object_array_get_idx(arr, i);
		struct json_object *c = get(m, "containerID"),
				   *h = get(m, "hostID"), *s = get(m, "size");
		char buf[64];

		if (!c || !h || !s || !json_object_is_type(c, json_type_int) ||
		    !json_object_is_type(h, json_type_int) ||
		    !json_object_is_type(s, json_type_int) ||
		    json_object_object_length(m) != 3 ||
		    json_object_get_int64(c) < 0 ||
		    json_object_get_int64(h) < 0 ||
		    json_object_get_int64(s) <= 0 ||
		    json_object_get_int64(c) > UINT32_MAX ||
		    json_object_get_int64(h) > UINT32_MAX ||
		    json_object_get_int64(s) > UINT32_MAX) {
			snprintf(err, errlen,
				 "%s[%zu] must be {\"containerID\": N, "
				 "\"hostID\": N, \"size\": N}",
				 what, i);
			json_object_put(res);
			return -EINVAL;
		}
		snprintf(buf, sizeof(buf), "%lld:%lld:%lld",
			 (long long)json_object_get_int64(c),
			 (long long)json_object_get_int64(h),
			 (long long)json_object_get_int64(s));
		json_object_array_add(res, json_object_new_string(buf));
	}
	*out = res;
	return 0;
}

/* An absolute container path without "." or ".." components. */
static bool clean_destination(const char *d)
{
	if (d[0] != '/' || strlen(d) >= PATH_MAX / 2)
		return false;
	for (const char *p = d; *p;) {
		const char *e;
		while (*p == '/')
			p++;
		e = strchrnul(p, '/');
		if ((e - p == 1 && p[0] == '.') ||
		    (e - p == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		p = e;
	}
	return true;
}

static const char *const volume_keys[] = {
	"source",	  "iscsi",   "destination", "readOnly",
	"volumeMode",	  "fsGroup", "uidMappings", "gidMappings",
	"chapSecretFile", "discard", "takeover",    NULL,
};

static int parse_one(struct json_object *item, size_t idx, const char *rootfs,
		     struct json_object *config, const char *container,
		     struct json_object **out, char *err, size_t errlen)
{
	struct json_object *src = get(item, "source"),
			   *isc = get(item, "iscsi");
	struct json_object *dst = get(item, "destination"), *v;
	struct json_object *req = NULL, *uidmap = NULL, *gidmap = NULL;
	char e2[512], path[PATH_MAX];
	struct lf_spec spec;
	char *sj;
	int r = -EINVAL;

	if (!json_object_is_type(item, json_type_object)) {
		snprintf(err, errlen, "volume %zu: must be a JSON object", idx);
		return -EINVAL;
	}
	json_object_object_foreach(item, key, val)
	{
		bool known = false;
		(void)val;
		for (int i = 0; volume_keys[i]; i++)
			known |= strcmp(key, volume_keys[i]) == 0;
		if (!known) {
			snprintf(err, errlen,
				 "volume %zu: unknown key \"%.64s\" (known: "
				 "source, iscsi, destination, readOnly, "
				 "volumeMode, fsGroup, uidMappings, "
				 "gidMappings, chapSecretFile, discard, "
				 "takeover)",
				 idx, key);
			return -EINVAL;
		}
	}
	if (!!src == !!isc) {
		snprintf(err, errlen,
			 "volume %zu: give exactly one of \"source\" (an "
			 "iscsi:// URL) and \"iscsi\" (an ISCSIVolumeSource)",
			 idx);
		return -EINVAL;
	}
	if (src && !json_object_is_type(src, json_type_string)) {
		snprintf(err, errlen, "volume %zu: \"source\" must be a string",
			 idx);
		return -EINVAL;
	}
	if (src)
		r = lf_spec_parse_url(json_object_get_string(src), &spec, e2,
				      sizeof(e2));
	else if (!json_object_is_type(isc, json_type_object))
		snprintf(e2, sizeof(e2), "\"iscsi\" must be an object");
	else
		r = lf_spec_parse_json(json_object_to_json_string(isc), &spec,
				       e2, sizeof(e2));
	if (r) {
		snprintf(err, errlen, "volume %zu: %s", idx, e2);
		return -EINVAL;
	}
	if (spec.kind != LF_SPEC_ISCSI) {
		snprintf(err, errlen, "volume %zu: only iscsi:// sources", idx);
		return -EINVAL;
	}
	if (!dst || !json_object_is_type(dst, json_type_string) ||
	    !clean_destination(json_object_get_string(dst))) {
		snprintf(err, errlen,
			 "volume %zu: \"destination\" must be an absolute path "
			 "inside the container without . or .. components",
			 idx);
		return -EINVAL;
	}
	if ((v = get(item, "readOnly"))) {
		if (!json_object_is_type(v, json_type_boolean)) {
			snprintf(err, errlen,
				 "volume %zu: \"readOnly\" must be a boolean",
				 idx);
			return -EINVAL;
		}
		spec.read_only = spec.read_only || json_object_get_boolean(v);
	}
	if ((v = get(item, "volumeMode"))) {
		const char *m = json_object_get_string(v);
		if (!json_object_is_type(v, json_type_string) ||
		    (strcmp(m, "Filesystem") && strcmp(m, "Block"))) {
			snprintf(err, errlen,
				 "volume %zu: \"volumeMode\" must be "
				 "\"Filesystem\" or \"Block\"",
				 idx);
			return -EINVAL;
		}
		spec.mode = strcmp(m, "Block") == 0 ? LF_MODE_BLOCK
						    : LF_MODE_FILESYSTEM;
	}
	req = json_object_new_object();
	if ((v = get(item, "takeover"))) { /* see lunfs mount --takeover */
		if (!json_object_is_type(v, json_type_boolean)) {
			snprintf(err, errlen,
				 "volume %zu: \"takeover\" must be a boolean",
				 idx);
			goto fail;
		}
		json_object_object_add(req, "takeover", json_object_get(v));
	}
	if ((v = get(item, "fsGroup"))) {
		if (!json_object_is_type(v, json_type_int) ||
		    json_object_get_int64(v) < 0 ||
		    json_object_get_int64(v) > 4294967294LL) {
			snprintf(err, errlen,
				 "volume %zu: \"fsGroup\" must be a group id",
				 idx);
			goto fail;
		}
		json_object_object_add(
			req, "fsgroup",
			json_object_new_int64(json_object_get_int64(v)));
	}
	if ((v = get(item, "discard"))) {
		if (!json_object_is_type(v, json_type_boolean)) {
			snprintf(err, errlen,
				 "volume %zu: \"discard\" must be a boolean",
				 idx);
			goto fail;
		}
		json_object_object_add(req, "discard", json_object_get(v));
	}
	/* Explicit mappings win; else the container's user namespace,
	 * which the hook then idmaps the volume with directly. */
	json_object_object_add(
		req, "own_maps",
		json_object_new_boolean(
			!get(item, "uidMappings") &&
			!get(item, "gidMappings") &&
			(get(get(config, "linux"), "uidMappings") ||
			 get(get(config, "linux"), "gidMappings"))));
	v = get(item, "uidMappings");
	if (!v)
		v = get(get(config, "linux"), "uidMappings");
	if (v && (r = oci_mappings(v, "uidMappings", &uidmap, e2, sizeof(e2))))
		goto fail_msg;
	v = get(item, "gidMappings");
	if (!v)
		v = get(get(config, "linux"), "gidMappings");
	if (v && (r = oci_mappings(v, "gidMappings", &gidmap, e2, sizeof(e2))))
		goto fail_msg;
	if ((v = get(item, "chapSecretFile"))) {
		if (!json_object_is_type(v, json_type_string) ||
		    json_object_get_string(v)[0] != '/') {
			snprintf(err, errlen,
				 "volume %zu: \"chapSecretFile\" must be an "
				 "absolute path on the host",
				 idx);
			goto fail;
		}
		json_object_object_add(req, "secret_file", json_object_get(v));
	}
	snprintf(path, sizeof(path), "%s%s", rootfs,
		 json_object_get_string(dst));
	sj = lf_spec_to_json(&spec);
	json_object_object_add(req, "op", json_object_new_string("mount"));
	json_object_object_add(req, "spec", json_tokener_parse(sj));
	free(sj);
	json_object_object_add(req, "path", json_object_new_string(path));
	json_object_object_add(req, "destination", json_object_get(dst));
	json_object_object_add(
		req, "block",
		json_object_new_boolean(spec.mode == LF_MODE_BLOCK));
	json_object_object_add(req, "read_only",
			       json_object_new_boolean(spec.read_only));
	json_object_object_add(req, "uidmap",
			       uidmap ? uidmap : json_object_new_array());
	json_object_object_add(req, "gidmap",
			       gidmap ? gidmap : json_object_new_array());
	json_object_object_add(req, "container",
			       json_object_new_string(container));
	*out = req;
	return 0;
fail_msg:
	snprintf(err, errlen, "volume %zu: %s", idx, e2);
fail:
	json_object_put(uidmap);
	json_object_put(gidmap);
	json_object_put(req);
	return -EINVAL;
}

int lf_hook_parse_volumes(const char *annotation, const char *rootfs,
			  struct json_object *config, const char *container,
			  struct json_object **reqs, char *err, size_t errlen)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *arr, *res;
	int r = 0;

	if (!tok)
		return -ENOMEM;
	arr = json_tokener_parse_ex(tok, annotation, (int)strlen(annotation));
	if (!arr || json_tokener_get_error(tok) != json_tokener_success ||
	    tok->char_offset != (int)strlen(annotation)) {
		snprintf(err, errlen,
			 "annotation " LF_HOOK_ANNOTATION " is not valid JSON");
		json_object_put(arr);
		json_tokener_free(tok);
		return -EINVAL;
	}
	json_tokener_free(tok);
	if (!json_object_is_type(arr, json_type_array)) {
		snprintf(err, errlen,
			 "annotation " LF_HOOK_ANNOTATION
			 " must be a JSON array of volumes");
		json_object_put(arr);
		return -EINVAL;
	}
	res = json_object_new_array();
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *req;
		r = parse_one(json_object_array_get_idx(arr, i), i, rootfs,
			      config, container, &req, err, errlen);
		if (r)
			break;
		json_object_array_add(res, req);
	}
	json_object_put(arr);
	if (r) {
		json_object_put(res);
		return r;
	}
	*reqs = res;
	return 0;
}

static struct json_object *read_json_file(const char *path, char *err,
					  size_t errlen)
{
	struct json_object *o;
	char *text = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	r = lf_ctl_read_all(fd, 16u << 20, &text);
	close(fd);
	if (r) {
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		return NULL;
	}
	o = json_tokener_parse(text);
	free(text);
	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		snprintf(err, errlen, "%s: not a JSON object", path);
		return NULL;
	}
	return o;
}

/* Creates the mount point inside the root filesystem the way runtimes do
 * for bind mounts, refusing a path that a symlink leads out of rootfs. */
static int make_mount_point(const char *rootfs, const char *path, bool block,
			    char *err, size_t errlen)
{
	char real_root[PATH_MAX], real[PATH_MAX], parent[PATH_MAX];
	int r;

	if (!realpath(rootfs, real_root)) {
		snprintf(err, errlen, "%s: %s", rootfs, strerror(errno));
		return -errno;
	}
	snprintf(parent, sizeof(parent), "%s", path);
	*strrchr(parent, '/') = 0;
	r = lf_ctl_mkdirs(block ? parent : path, 0755);
	if (r) {
		snprintf(err, errlen, "%s: cannot create: %s", path,
			 strerror(-r));
		return r;
	}
	if (block) {
		int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
			      0600);
		if (fd < 0) {
			snprintf(err, errlen, "%s: cannot create: %s", path,
				 strerror(errno));
			return -errno;
		}
		close(fd);
	}
	if (!realpath(path, real) ||
	    strncmp(real, real_root, strlen(real_root)) != 0 ||
	    (real[strlen(real_root)] != '/' && real[strlen(real_root)] != 0)) {
		snprintf(err, errlen,
			 "%s leads outside the container's root filesystem",
			 path);
		return -EINVAL;
	}
	return 0;
}

/* How much longer than its request's timeout_ms the hook waits for
 * lunfsd's answer, which comes at that deadline. */
#define ANSWER_SLACK_MS 250

/* timeout_ms: 0 = wait for the answer. */
static int release(const struct lf_client *c, const char *id, int timeout_ms,
		   char *err, size_t errlen)
{
	struct json_object *req, *ans;
	int r;

	if (!lf_client_daemon_running(c))
		return 0; /* no daemon, nothing mounted */
	req = json_object_new_object();
	json_object_object_add(req, "op", json_object_new_string("release"));
	json_object_object_add(req, "container", json_object_new_string(id));
	if (timeout_ms > 2 * ANSWER_SLACK_MS)
		json_object_object_add(
			req, "timeout_ms",
			json_object_new_int64(timeout_ms - ANSWER_SLACK_MS));
	r = lf_client_call_within(c, req, false, timeout_ms, &ans, err, errlen);
	if (!r)
		json_object_put(ans);
	return r;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The runtime kills a hook that overruns its entry's "timeout" (hooks.d
 * gives 120 s), and a killed hook cleans nothing up. So the hook reads
 * its own entry in config.json (same program, "hook" in its args) and
 * keeps a margin for the cleanup; without one it assumes hooks.d's. */
struct budget {
	int64_t end;   /* the runtime's limit */
	int64_t mount; /* mounting stops here; the rest is for cleanup */
	int timeout_s;
};

static int own_timeout_s(struct json_object *config)
{
	static const char *const stages[] = {"createRuntime", "prestart", NULL};
	char self[PATH_MAX], real[PATH_MAX];

	if (!realpath("/proc/self/exe", self))
		return 0;
	for (int s = 0; stages[s]; s++) {
		struct json_object *hooks =
			get(get(config, "hooks"), stages[s]);
		if (!hooks || !json_object_is_type(hooks, json_type_array))
			continue;
		for (size_t i = 0; i < json_object_array_length(hooks); i++) {
			struct json_object *h =
				json_object_array_get_idx(hooks, i);
			struct json_object *p = get(h, "path"),
					   *args = get(h, "args"),
					   *t = get(h, "timeout");
			bool ours = false;

			if (!p || !json_object_is_type(p, json_type_string) ||
			    !realpath(json_object_get_string(p), real) ||
			    strcmp(real, self))
				continue;
			for (size_t k = 0;
			     args &&
			     json_object_is_type(args, json_type_array) &&
			     k < json_object_array_length(args);
			     k++)
				ours |= !strcmp(
					json_object_get_string(
						json_object_array_get_idx(args,
									  k))
						?: "",
					"hook");
			if (ours && t &&
			    json_object_is_type(t, json_type_int) &&
			    json_object_get_int64(t) > 0)
				return json_object_get_int64(t) > 86400
					       ? 86400
					       : (int)json_object_get_int64(t);
		}
	}
	return 0;
}

static void budget_init(struct budget *b, struct json_object *config,
			int64_t start)
{
	int t = own_timeout_s(config), margin_ms;

	b->timeout_s = t > 0 ? t : LF_HOOK_TIMEOUT_S;
	/* A tenth for the cleanup, between 1 and 10 s (half of a tiny
	 * timeout). */
	margin_ms = b->timeout_s * 100;
	margin_ms = margin_ms < 1000	? 1000
		    : margin_ms > 10000 ? 10000
					: margin_ms;
	if (margin_ms > b->timeout_s * 500)
		margin_ms = b->timeout_s * 500;
	b->end = start + (int64_t)b->timeout_s * 1000;
	b->mount = b->end - margin_ms;
}

/* The user namespace a direct bind is idmapped with: the container's
 * own when the volume takes the container's maps (its ids then are
 * exactly the container's), else one made for the volume's maps; -1 for
 * identity maps (a plain bind). */
static int bind_userns(const struct lf_ctr_view *v, struct json_object *r0,
		       char *err, size_t errlen)
{
	struct json_object *um = get(r0, "uidmap"), *gm = get(r0, "gidmap");
	struct lf_idmap uidmap, gidmap;
	char p[64];
	int fd, r = 0;

	if (!json_object_array_length(um) && !json_object_array_length(gm))
		return -1;
	if (json_object_get_boolean(get(r0, "own_maps"))) {
		snprintf(p, sizeof(p), "/proc/%d/ns/user", (int)v->pid);
		fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
			snprintf(err, errlen, "%s: %s", p, strerror(errno));
		}
		return fd < 0 ? r : fd;
	}
	lf_idmap_init(&uidmap);
	lf_idmap_init(&gidmap);
	for (size_t i = 0; !r && i < json_object_array_length(um); i++)
		r = lf_idmap_add(&uidmap,
				 json_object_get_string(
					 json_object_array_get_idx(um, i)),
				 err, errlen);
	for (size_t i = 0; !r && i < json_object_array_length(gm); i++)
		r = lf_idmap_add(&gidmap,
				 json_object_get_string(
					 json_object_array_get_idx(gm, i)),
				 err, errlen);
	return r ? r : lf_userns_new(&uidmap, &gidmap, err, errlen);
}

/* The direct path: lunfsd handed over a detached bind of the volume's
 * view (ids as on disk), idmapped here for the container and attached
 * in its namespace. 1 when attached. */
static int attach_direct(const struct lf_ctr_view *v, struct json_object *r0,
			 int tree, const char *dst, char *err, size_t errlen)
{
	char e2[512];
	int userns = bind_userns(v, r0, e2, sizeof(e2)), r;

	if (userns < -1) {
		snprintf(err, errlen, "cannot make the id map: %s", e2);
		return userns;
	}
	r = lf_ctr_attach_tree(v, tree, userns, dst, err, errlen);
	if (userns >= 0)
		close(userns);
	return r;
}

/* view: the container's, opened once lunfsd answers (pid <= 0: no
 * container process to check, as when run by hand). */
static int mount_all(const struct lf_client *c, struct json_object *reqs,
		     const char *rootfs, const char *id, pid_t pid,
		     const struct budget *budget, struct lf_ctr_view *view,
		     struct json_object *cloned, char *err, size_t errlen)
{
	char real_root[PATH_MAX];

	if (!realpath(rootfs, real_root)) {
		snprintf(err, errlen, "%s: %s", rootfs, strerror(errno));
		return -ENOENT;
	}
	for (size_t i = 0; i < json_object_array_length(reqs); i++) {
		struct json_object *r0 = json_object_array_get_idx(reqs, i);
		struct json_object *ans, *req = NULL;
		const char *dst =
			json_object_get_string(get(r0, "destination"));
		const char *path = json_object_get_string(get(r0, "path"));
		bool block = json_object_get_boolean(get(r0, "block"));
		int64_t left = budget->mount - now_ms();
		struct lf_spec spec;
		char e2[1024], e3[768];
		int r = 0, tree = -1;

		if (left <= 0) {
			r = -ETIMEDOUT;
			snprintf(e2, sizeof(e2),
				 "the hook's time budget ran out (its timeout "
				 "is %d s)",
				 budget->timeout_s);
		}
		if (!r)
			r = lf_spec_parse_json(
				json_object_to_json_string(get(r0, "spec")),
				&spec, e2, sizeof(e2));
		if (!r)
			r = make_mount_point(rootfs, path, block, e2,
					     sizeof(e2));
		if (!r) {
			struct lf_mount_req mr = {
				.spec = &spec,
				.secret_file =
					get(r0, "secret_file")
						? json_object_get_string(get(
							  r0, "secret_file"))
						: NULL,
				.path = path,
				.block = block,
				.read_only = json_object_get_boolean(
					get(r0, "read_only")),
				.discard = json_object_get_boolean(
					get(r0, "discard")),
				.takeover = json_object_get_boolean(
					get(r0, "takeover")),
				.uidmap = json_object_get(get(r0, "uidmap")),
				.gidmap = json_object_get(get(r0, "gidmap")),
				.fsgroup = get(r0, "fsgroup")
						   ? json_object_get_int64(
							     get(r0, "fsgroup"))
						   : -1,
				.container = id,
				.timeout_ms = left,
				.detached = !block && pid > 0,
			};
			r = lf_client_mount_request(&mr, &req, e2, sizeof(e2));
		}
		if (!r) {
			/* lunfsd answers at the deadline; waiting a little
			 * longer covers a daemon that cannot. */
			r = lf_client_call_fd(c, req, true,
					      (int)left + ANSWER_SLACK_MS, &ans,
					      &tree, e3, sizeof(e3));
			if (!r && tree < 0 &&
			    !strcmp(json_object_get_string(get(ans, "attach"))
					    ?: "",
				    "direct")) {
				/* its tree went to an earlier request */
				r = -EBUSY;
				snprintf(e3, sizeof(e3),
					 "%s is attached already", path);
				json_object_put(ans);
			} else if (!r) {
				json_object_put(ans);
			}
			if (r == -ETIMEDOUT)
				snprintf(e2, sizeof(e2),
					 "not mounted within the hook's time "
					 "budget (%lld ms of its %d s timeout; "
					 "is the target answering?): %s",
					 (long long)left, budget->timeout_s,
					 e3);
			else if (r)
				snprintf(e2, sizeof(e2), "%s", e3);
		}
		if (!r && pid > 0 && view->ct_ns < 0)
			r = lf_ctr_open(c, pid, real_root, view, e2,
					sizeof(e2));
		if (!r && pid > 0 && tree >= 0)
			r = attach_direct(view, r0, tree, dst, e2, sizeof(e2));
		else if (!r && pid > 0)
			r = lf_ctr_make_visible(view, path, dst, block, e2,
						sizeof(e2));
		if (tree >= 0)
			close(tree);
		if (r == 1) {
			json_object_array_add(cloned,
					      json_object_new_string(dst));
			r = 0;
		}
		if (r) {
			snprintf(err, errlen, "volume %zu (%s): %s", i, dst,
				 e2);
			return r;
		}
	}
	return 0;
}

/* "@NAME": the volumes are in LF_HOOK_VOLUMES_DIR/NAME.json on this node
 * ($LUNFS_VOLUMES_DIR overrides the directory). podman before 5.0 refuses a
 * Pod manifest's annotation values over 63 characters (its bug #21663),
 * and a JSON list of volumes never fits. */
static int named_volumes(const char *name, char **out, char *err, size_t errlen)
{
	const char *dir = getenv("LUNFS_VOLUMES_DIR");
	char path[PATH_MAX];
	size_t n = strlen(name);
	int fd, r;

	if (n == 0 || n > 64 || name[0] == '.' ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			 "0123456789._-") != n) {
		snprintf(err, errlen,
			 "annotation " LF_HOOK_ANNOTATION " \"@%.64s\": a "
			 "name of letters, digits, '.', '_' and '-' must "
			 "follow '@'",
			 name);
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "%s/%s.json",
		 dir && *dir ? dir : LF_HOOK_VOLUMES_DIR, name);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen,
			 "annotation " LF_HOOK_ANNOTATION " \"@%s\": %s: %s",
			 name, path, strerror(errno));
		return r;
	}
	r = lf_ctl_read_all(fd, LF_CTL_MAX, out);
	close(fd);
	if (r)
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
	return r;
}

/* crun sends a hook's stdout and stderr to /dev/null (unless the container
 * has its run.oci.hooks.stderr annotation), so the reason a container did
 * not start would reach no one: in that case the hook writes to the
 * runtime's own stderr, which the runtime's caller shows. */
static void stderr_to_runtime(void)
{
	struct stat st, null;
	char p[64];
	int fd;

	if (fstat(2, &st) || stat("/dev/null", &null) ||
	    st.st_rdev != null.st_rdev || !S_ISCHR(st.st_mode))
		return;
	snprintf(p, sizeof(p), "/proc/%d/fd/2", (int)getppid());
	fd = open(p, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 &&
	    !(S_ISCHR(st.st_mode) && st.st_rdev == null.st_rdev))
		dup2(fd, 2);
	close(fd);
}

int lf_hook_run(const struct lf_client *c, const char *stage, FILE *in)
{
	struct json_object *state = NULL, *config = NULL, *reqs = NULL, *v;
	struct json_object *cloned = json_object_new_array();
	struct lf_ctr_view view = {.ct_ns = -1, .d_ns = -1};
	struct budget budget;
	int64_t start = now_ms();
	pid_t pid;
	const char *id, *bundle, *status, *ann = NULL;
	char err[1536] = "", path[PATH_MAX + 16], rootfs[PATH_MAX + 8];
	char *text = NULL, *named = NULL;
	bool mount;
	int r, rc = 1;

	stderr_to_runtime();
	r = lf_ctl_read_all(fileno(in), LF_CTL_MAX, &text);
	if (r) {
		fprintf(stderr, "lunfs hook: reading the container state: %s\n",
			strerror(-r));
		return 1;
	}
	state = json_tokener_parse(text);
	free(text);
	id = json_object_get_string(get(state, "id"));
	bundle = json_object_get_string(get(state, "bundle"));
	status = json_object_get_string(get(state, "status"));
	pid = (pid_t)json_object_get_int(get(state, "pid"));
	if (!state ||
	    !json_object_is_type(get(state, "id"), json_type_string) ||
	    !json_object_is_type(get(state, "bundle"), json_type_string)) {
		fprintf(stderr, "lunfs hook: stdin is not an OCI container "
				"state (needs \"id\" and \"bundle\")\n");
		goto out;
	}
	if (stage &&
	    (!strcmp(stage, "createRuntime") || !strcmp(stage, "prestart")))
		mount = true;
	else if (stage && !strcmp(stage, "poststop"))
		mount = false;
	else if (stage) {
		fprintf(stderr,
			"lunfs hook: unknown stage '%s' (createRuntime, "
			"prestart or poststop)\n",
			stage);
		rc = 2;
		goto out;
	} else if (status &&
		   (!strcmp(status, "creating") || !strcmp(status, "created")))
		mount = true;
	else if (status && !strcmp(status, "stopped"))
		mount = false;
	else {
		fprintf(stderr,
			"lunfs hook: container status '%s' does not say "
			"whether to mount or release; give the stage\n",
			status ? status : "(none)");
		rc = 2;
		goto out;
	}

	if (!mount) {
		/* poststop never fails the runtime over a volume that is
		 * already gone; it does report a daemon that refused. */
		r = release(c, id, 0, err, sizeof(err));
		if (r && r != -ENOENT && r != -ECONNREFUSED) {
			fprintf(stderr, "lunfs hook: releasing %s: %s\n", id,
				err);
			goto out;
		}
		rc = 0;
		goto out;
	}

	snprintf(path, sizeof(path), "%s/config.json", bundle);
	config = read_json_file(path, err, sizeof(err));
	if (!config) {
		fprintf(stderr, "lunfs hook: %s\n", err);
		goto out;
	}
	if ((v = get(get(state, "annotations"), LF_HOOK_ANNOTATION)) ||
	    (v = get(get(config, "annotations"), LF_HOOK_ANNOTATION)))
		ann = json_object_get_string(v);
	if (!ann) {
		rc = 0; /* not our container */
		goto out;
	}
	if (ann[0] == '@') {
		r = named_volumes(ann + 1, &named, err, sizeof(err));
		if (r) {
			fprintf(stderr, "lunfs hook: container %s: %s\n", id,
				err);
			goto out;
		}
		ann = named;
	}
	v = get(get(config, "root"), "path");
	if (!v || !json_object_is_type(v, json_type_string)) {
		fprintf(stderr, "lunfs hook: %s has no root.path\n", path);
		goto out;
	}
	if (json_object_get_string(v)[0] == '/')
		snprintf(rootfs, sizeof(rootfs), "%s",
			 json_object_get_string(v));
	else
		snprintf(rootfs, sizeof(rootfs), "%s/%s", bundle,
			 json_object_get_string(v));

	budget_init(&budget, config, start);
	r = lf_hook_parse_volumes(ann, rootfs, config, id, &reqs, err,
				  sizeof(err));
	if (!r)
		r = mount_all(c, reqs, rootfs, id, pid, &budget, &view, cloned,
			      err, sizeof(err));
	if (r) {
		char e2[512];
		fprintf(stderr, "lunfs hook: container %s: %s\n", id, err);
		for (size_t i = 0; i < json_object_array_length(cloned); i++)
			lf_ctr_detach(&view, json_object_get_string(
						     json_object_array_get_idx(
							     cloned, i)));
		int64_t left = budget.end - 500 - now_ms();
		if (release(c, id, left > 0 ? (int)left : 1, e2, sizeof(e2)))
			fprintf(stderr, "lunfs hook: cleaning up: %s\n", e2);
		goto out;
	}
	rc = 0;
out:
	free(named);
	lf_ctr_close(&view);
	json_object_put(cloned);
	json_object_put(reqs);
	json_object_put(config);
	json_object_put(state);
	return rc;
}
