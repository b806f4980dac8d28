/* daemon.c — volumes, mounts and requests of lunfsd. */
#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsimage/volume.h"
#include "fuse/mount.h"
#include "iscsi/log.h"
#include "iscsi/registry.h"
#include "iscsi/spec.h"
#include "tools/daemon.h"

#define MOD "daemon"

struct volume {
	struct volume *next;
	char key[600];		/* canonical URL: one open volume per LUN */
	bool block;
	bool read_only;		/* how the volume itself was opened */
	struct lf_bdev *bdev;
	struct lf_vol *vol;	/* filesystem volumes */
	struct lf_served *served;
	int nmounts;
};

struct mount {
	struct mount *next;
	char path[PATH_MAX];
	struct volume *v;
	struct lf_mount *m;
	bool read_only;
	bool gone;		/* unmounted from outside; reaper cleans up */
	char uidmap[256], gidmap[256];
	long long fsgroup;
};

struct lf_daemon {
	pthread_mutex_t lock;
	struct lf_daemon_opts o;
	char state_dir[PATH_MAX];
	char node_initiator[LF_NAME_MAX];
	struct lf_registry *reg;
	struct volume *volumes;
	struct mount *mounts;

	/* Mounts that ended from outside (fusermount3 -u) are released by
	 * this thread: the FUSE thread that noticed cannot join itself. */
	pthread_t reaper;
	pthread_cond_t reap_cond;
	bool reap_pending;
	bool stopping;
};

static struct json_object *answer_err(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static struct json_object *answer_err(int err, const char *fmt, ...)
{
	struct json_object *a = json_object_new_object();
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(a, "ok", json_object_new_boolean(0));
	json_object_object_add(a, "errno", json_object_new_int(err < 0 ? -err : err));
	json_object_object_add(a, "error", json_object_new_string(msg));
	return a;
}

static struct json_object *answer_ok(void)
{
	struct json_object *a = json_object_new_object();

	json_object_object_add(a, "ok", json_object_new_boolean(1));
	return a;
}

/* Caller holds d->lock. Drops one mount of v; the last closes it. */
static void volume_put(struct lf_daemon *d, struct volume *v)
{
	if (--v->nmounts > 0)
		return;
	for (struct volume **pp = &d->volumes; *pp; pp = &(*pp)->next) {
		if (*pp == v) {
			*pp = v->next;
			break;
		}
	}
	if (v->served)
		lf_served_free(v->served);
	if (v->vol) {
		int r = lf_vol_close(v->vol);
		if (r)
			lf_err(MOD, "%s: closing the filesystem failed: %s",
			       v->key, strerror(-r));
	}
	lf_bdev_unref(v->bdev); /* the volume held its own reference */
	lf_info(MOD, "%s: closed", v->key);
	free(v);
}

static void mount_unlink(struct lf_daemon *d, struct mount *m)
{
	for (struct mount **pp = &d->mounts; *pp; pp = &(*pp)->next) {
		if (*pp == m) {
			*pp = m->next;
			return;
		}
	}
}

/* Caller holds d->lock. */
static void mount_release(struct lf_daemon *d, struct mount *m)
{
	mount_unlink(d, m);
	lf_mount_stop(m->m);
	volume_put(d, m->v);
	lf_info(MOD, "%s: unmounted", m->path);
	free(m);
}

static void on_mount_exit(void *ctx, struct lf_mount *lm)
{
	struct lf_daemon *d = ctx;

	pthread_mutex_lock(&d->lock);
	for (struct mount *m = d->mounts; m; m = m->next) {
		if (m->m == lm) {
			m->gone = true;
			d->reap_pending = true;
			pthread_cond_signal(&d->reap_cond);
		}
	}
	pthread_mutex_unlock(&d->lock);
}

static void *reaper_main(void *arg)
{
	struct lf_daemon *d = arg;

	pthread_mutex_lock(&d->lock);
	while (!d->stopping) {
		while (!d->reap_pending && !d->stopping)
			pthread_cond_wait(&d->reap_cond, &d->lock);
		d->reap_pending = false;
		for (struct mount *m = d->mounts, *next; m; m = next) {
			next = m->next;
			if (m->gone) {
				lf_info(MOD, "%s: unmounted from outside lunfs",
					m->path);
				mount_release(d, m);
			}
		}
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

int lf_daemon_new(const struct lf_daemon_opts *o, struct lf_daemon **out)
{
	struct lf_daemon *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->o = *o;
	snprintf(d->state_dir, sizeof(d->state_dir), "%s", o->state_dir);
	d->o.state_dir = d->state_dir;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->reap_cond, NULL);
	lf_session_default_initiator(d->node_initiator,
				     sizeof(d->node_initiator));
	d->reg = lf_registry_new_iscsi();
	if (!d->reg) {
		free(d);
		return -ENOMEM;
	}
	if (pthread_create(&d->reaper, NULL, reaper_main, d)) {
		lf_registry_free(d->reg);
		free(d);
		return -EAGAIN;
	}
	*out = d;
	return 0;
}

void lf_daemon_free(struct lf_daemon *d)
{
	pthread_mutex_lock(&d->lock);
	while (d->mounts)
		mount_release(d, d->mounts);
	d->stopping = true;
	pthread_cond_signal(&d->reap_cond);
	pthread_mutex_unlock(&d->lock);
	pthread_join(d->reaper, NULL);
	lf_registry_free(d->reg);
	pthread_cond_destroy(&d->reap_cond);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static bool jbool(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) &&
	       json_object_get_boolean(v);
}

static int parse_idmaps(struct json_object *req, const char *key,
			struct lf_idmap *map, char *err, size_t errlen)
{
	struct json_object *arr;

	lf_idmap_init(map);
	if (!json_object_object_get_ex(req, key, &arr))
		return 0;
	if (!json_object_is_type(arr, json_type_array)) {
		snprintf(err, errlen, "%s must be an array of strings", key);
		return -EINVAL;
	}
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *e = json_object_array_get_idx(arr, i);
		int r;
		if (!json_object_is_type(e, json_type_string)) {
			snprintf(err, errlen, "%s must be an array of strings",
				 key);
			return -EINVAL;
		}
		r = lf_idmap_add(map, json_object_get_string(e), err, errlen);
		if (r)
			return r;
	}
	return 0;
}

/* True if some mount in /proc/self/mountinfo sits exactly at path. */
static bool is_mount_point(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[8192];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char mp[PATH_MAX];
		/* fields: id parent maj:min root mountpoint ... */
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1)
			continue;
		/* mountinfo escapes space, tab, newline and backslash */
		char un[PATH_MAX], *o = un;
		for (const char *p = mp; *p && o < un + sizeof(un) - 1; p++) {
			if (p[0] == '\\' && p[1] >= '0' && p[1] <= '7' &&
			    p[2] && p[3]) {
				*o++ = (char)((p[1] - '0') * 64 +
					      (p[2] - '0') * 8 + (p[3] - '0'));
				p += 3;
			} else {
				*o++ = *p;
			}
		}
		*o = 0;
		found = strcmp(un, path) == 0;
	}
	fclose(f);
	return found;
}

/* Caller holds d->lock. Opens (or finds) the volume for spec. */
static int volume_get(struct lf_daemon *d, struct lf_spec *spec,
		      struct lf_secrets *sec, bool block, bool read_only,
		      struct volume **out, char *err, size_t errlen)
{
	struct volume *v;
	char key[600];
	int r;

	if (spec->kind == LF_SPEC_ISCSI) {
		r = lf_spec_resolve(spec, err, errlen);
		if (r)
			return r;
	}
	lf_spec_url(spec, key, sizeof(key));
	for (v = d->volumes; v; v = v->next) {
		if (strcmp(v->key, key))
			continue;
		if (v->block != block) {
			snprintf(err, errlen,
				 "%s is already mounted as a %s volume", key,
				 v->block ? "block" : "filesystem");
			return -EBUSY;
		}
		if (v->read_only && !read_only) {
			snprintf(err, errlen,
				 "%s is already open read-only; unmount its "
				 "read-only mounts before mounting it "
				 "read-write",
				 key);
			return -EBUSY;
		}
		v->nmounts++;
		*out = v;
		return 0;
	}

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	snprintf(v->key, sizeof(v->key), "%s", key);
	v->block = block;
	v->read_only = read_only;
	if (spec->kind == LF_SPEC_FILE) {
		r = lf_bdev_open_file(spec->path, read_only, &v->bdev);
		if (r)
			snprintf(err, errlen, "%s: cannot open: %s", key,
				 strerror(-r));
	} else {
		struct lf_session_params p;
		lf_registry_params(spec, sec, d->node_initiator, &p);
		r = lf_registry_open_lun(d->reg, &p, spec->lun, read_only,
					 &v->bdev, err, errlen);
		explicit_bzero(&p, sizeof(p));
	}
	if (r)
		goto fail;
	if (!block) {
		struct lf_vol_opts vo = {
			.read_only = read_only,
			.allow_format = !read_only,
		};
		r = lf_vol_open(v->bdev, &vo, &v->vol, err, errlen);
		if (r)
			goto fail;
		v->served = lf_served_new(v->vol);
		if (!v->served) {
			r = -ENOMEM;
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		if (lf_vol_formatted(v->vol))
			lf_info(MOD, "%s: was empty: formatted ext4", key);
	}
	v->nmounts = 1;
	v->next = d->volumes;
	d->volumes = v;
	lf_info(MOD, "%s: opened (%s%s)", key, block ? "block" : "filesystem",
		read_only ? ", read-only" : "");
	*out = v;
	return 0;
fail:
	if (v->served)
		lf_served_free(v->served);
	if (v->vol)
		lf_vol_close(v->vol);
	if (v->bdev)
		lf_bdev_unref(v->bdev);
	free(v);
	return r;
}

static struct json_object *op_mount(struct lf_daemon *d,
				    struct json_object *req)
{
	struct lf_mount_opts mo;
	struct lf_secrets sec;
	struct lf_spec spec;
	struct volume *v = NULL;
	struct mount *m = NULL;
	struct json_object *j, *ans;
	char err[1024] = "", path[PATH_MAX];
	const char *p;
	bool block, ro;
	struct stat st;
	int r;

	memset(&sec, 0, sizeof(sec));
	lf_mount_opts_init(&mo);
	if (!json_object_object_get_ex(req, "spec", &j)) {
		return answer_err(EINVAL, "mount: no spec");
	}
	r = lf_spec_parse_json(json_object_to_json_string(j), &spec, err,
			       sizeof(err));
	if (r)
		return answer_err(r, "%s", err);
	if (json_object_object_get_ex(req, "secrets", &j)) {
		r = lf_secrets_parse_json(json_object_to_json_string(j), &sec,
					  err, sizeof(err));
		if (r)
			return answer_err(r, "%s", err);
	}
	if ((p = jstr(req, "initiator_name")) && *p) {
		r = lf_spec_check_name(p, "initiator name", err, sizeof(err));
		if (r)
			goto out_err;
		snprintf(spec.initiator_name, sizeof(spec.initiator_name),
			 "%s", p);
	}
	block = jbool(req, "block") || spec.mode == LF_MODE_BLOCK;
	ro = jbool(req, "read_only") || spec.read_only;
	r = parse_idmaps(req, "uidmap", &mo.uidmap, err, sizeof(err));
	if (!r)
		r = parse_idmaps(req, "gidmap", &mo.gidmap, err, sizeof(err));
	if (r)
		goto out_err;
	mo.fsgroup = -1;
	if (json_object_object_get_ex(req, "fsgroup", &j)) {
		int64_t g = json_object_get_int64(j);
		if (!json_object_is_type(j, json_type_int) || g < 0 ||
		    g > 0xfffffffeLL) {
			r = -EINVAL;
			snprintf(err, sizeof(err),
				 "fsgroup must be a group id (0-4294967294)");
			goto out_err;
		}
		mo.fsgroup = g;
	}
	mo.read_only = ro;
	mo.allow_other = d->o.allow_other;
	mo.on_exit = on_mount_exit;
	mo.on_exit_ctx = d;

	p = jstr(req, "path");
	if (!p || !*p) {
		r = -EINVAL;
		snprintf(err, sizeof(err), "mount: no path");
		goto out_err;
	}
	if (!realpath(p, path)) {
		r = -errno;
		snprintf(err, sizeof(err), "%s: %s", p, strerror(errno));
		goto out_err;
	}
	if (stat(path, &st)) {
		r = -errno;
		snprintf(err, sizeof(err), "%s: %s", path, strerror(errno));
		goto out_err;
	}
	if (block && !S_ISREG(st.st_mode)) {
		r = -EINVAL;
		snprintf(err, sizeof(err),
			 "%s: a block volume is mounted on a regular file "
			 "(create it with: touch %s)",
			 path, path);
		goto out_err;
	}
	if (!block && !S_ISDIR(st.st_mode)) {
		r = -ENOTDIR;
		snprintf(err, sizeof(err), "%s: not a directory", path);
		goto out_err;
	}
	if (strcmp(path, "/") == 0 ||
	    strncmp(path, d->state_dir, strlen(d->state_dir)) == 0) {
		r = -EINVAL;
		snprintf(err, sizeof(err),
			 "%s: refusing to mount over / or lunfs's state "
			 "directory",
			 path);
		goto out_err;
	}

	pthread_mutex_lock(&d->lock);
	for (struct mount *o = d->mounts; o; o = o->next) {
		if (strcmp(o->path, path) == 0) {
			pthread_mutex_unlock(&d->lock);
			r = -EBUSY;
			snprintf(err, sizeof(err),
				 "%s is already a lunfs mount", path);
			goto out_err;
		}
	}
	if (is_mount_point(path)) {
		pthread_mutex_unlock(&d->lock);
		r = -EBUSY;
		snprintf(err, sizeof(err),
			 "%s is already a mount point; refusing to mount over "
			 "it",
			 path);
		goto out_err;
	}
	r = volume_get(d, &spec, &sec, block, ro, &v, err, sizeof(err));
	lf_secrets_wipe(&sec);
	if (r) {
		pthread_mutex_unlock(&d->lock);
		goto out_err;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		r = -ENOMEM;
		snprintf(err, sizeof(err), "out of memory");
		goto out_put;
	}
	snprintf(m->path, sizeof(m->path), "%s", path);
	m->v = v;
	m->read_only = ro;
	m->fsgroup = mo.fsgroup;
	lf_idmap_format(&mo.uidmap, m->uidmap, sizeof(m->uidmap));
	lf_idmap_format(&mo.gidmap, m->gidmap, sizeof(m->gidmap));
	if (block)
		r = lf_mount_block(v->bdev, path, &mo, &m->m, err, sizeof(err));
	else
		r = lf_mount_fs(v->served, path, &mo, &m->m, err, sizeof(err));
	if (r)
		goto out_put;
	m->next = d->mounts;
	d->mounts = m;
	lf_info(MOD, "%s: mounted %s%s", path, v->key, ro ? " read-only" : "");
	pthread_mutex_unlock(&d->lock);
	ans = answer_ok();
	json_object_object_add(ans, "path", json_object_new_string(path));
	json_object_object_add(ans, "spec", json_object_new_string(v->key));
	return ans;

out_put:
	free(m);
	volume_put(d, v);
	pthread_mutex_unlock(&d->lock);
out_err:
	lf_secrets_wipe(&sec);
	lf_err(MOD, "mount failed: %s", err);
	return answer_err(r, "%s", err);
}

static struct json_object *op_umount(struct lf_daemon *d,
				     struct json_object *req)
{
	const char *p = jstr(req, "path");
	char path[PATH_MAX];

	if (!p || !*p)
		return answer_err(EINVAL, "umount: no path");
	/* A path whose mount died may not resolve: fall back to the text. */
	if (!realpath(p, path))
		snprintf(path, sizeof(path), "%s", p);
	pthread_mutex_lock(&d->lock);
	for (struct mount *m = d->mounts; m; m = m->next) {
		if (strcmp(m->path, path) == 0) {
			mount_release(d, m);
			pthread_mutex_unlock(&d->lock);
			return answer_ok();
		}
	}
	pthread_mutex_unlock(&d->lock);
	return answer_err(EINVAL, "%s is not a lunfs mount", path);
}

static void add_session(void *ctx, const struct lf_registry_entry *e)
{
	struct json_object *arr = ctx, *o = json_object_new_object();

	json_object_object_add(o, "target", json_object_new_string(e->st.iqn));
	json_object_object_add(o, "portal",
			       json_object_new_string(e->st.portal));
	json_object_object_add(o, "initiator",
			       json_object_new_string(e->st.initiator));
	json_object_object_add(o, "refs", json_object_new_int(e->refs));
	json_object_object_add(o, "connected",
			       json_object_new_boolean(e->st.connected));
	json_object_object_add(o, "reconnects",
			       json_object_new_int((int)e->st.reconnects));
	json_object_array_add(arr, o);
}

static struct json_object *op_status(struct lf_daemon *d)
{
	struct json_object *a = answer_ok();
	struct json_object *sessions = json_object_new_array();
	struct json_object *vols = json_object_new_array();
	struct json_object *mounts = json_object_new_array();

	pthread_mutex_lock(&d->lock);
	lf_registry_foreach(d->reg, add_session, sessions);
	for (struct volume *v = d->volumes; v; v = v->next) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "spec", json_object_new_string(v->key));
		json_object_object_add(o, "mode", json_object_new_string(
			v->block ? "block" : "filesystem"));
		json_object_object_add(o, "read_only",
				       json_object_new_boolean(v->read_only));
		json_object_object_add(o, "mounts",
				       json_object_new_int(v->nmounts));
		json_object_object_add(o, "size", json_object_new_int64(
			(int64_t)lf_bdev_size(v->bdev)));
		json_object_array_add(vols, o);
	}
	for (struct mount *m = d->mounts; m; m = m->next) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "path", json_object_new_string(m->path));
		json_object_object_add(o, "spec",
				       json_object_new_string(m->v->key));
		json_object_object_add(o, "mode", json_object_new_string(
			m->v->block ? "block" : "filesystem"));
		json_object_object_add(o, "read_only",
				       json_object_new_boolean(m->read_only));
		json_object_object_add(o, "uidmap",
				       json_object_new_string(m->uidmap));
		json_object_object_add(o, "gidmap",
				       json_object_new_string(m->gidmap));
		if (m->fsgroup >= 0)
			json_object_object_add(o, "fsgroup",
					       json_object_new_int64(m->fsgroup));
		json_object_array_add(mounts, o);
	}
	pthread_mutex_unlock(&d->lock);
	json_object_object_add(a, "sessions", sessions);
	json_object_object_add(a, "volumes", vols);
	json_object_object_add(a, "mounts", mounts);
	json_object_object_add(a, "pid", json_object_new_int((int)getpid()));
	json_object_object_add(a, "initiator",
			       json_object_new_string(d->node_initiator));
	return a;
}

struct json_object *lf_daemon_handle(struct lf_daemon *d,
				     struct json_object *req)
{
	const char *op = jstr(req, "op");

	if (!op)
		return answer_err(EINVAL, "request without \"op\"");
	if (strcmp(op, "mount") == 0)
		return op_mount(d, req);
	if (strcmp(op, "umount") == 0)
		return op_umount(d, req);
	if (strcmp(op, "status") == 0)
		return op_status(d);
	if (strcmp(op, "ping") == 0)
		return answer_ok();
	if (strcmp(op, "shutdown") == 0) {
		if (d->o.on_shutdown)
			d->o.on_shutdown(d->o.ctx);
		return answer_ok();
	}
	return answer_err(EINVAL, "unknown request \"%.40s\"", op);
}
