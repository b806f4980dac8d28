/* daemon.c — volumes, mounts and requests of lunfsd. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsimage/resize.h"
#include "fsimage/trim.h"
#include "fsimage/mmp.h"
#include "fsimage/volume.h"
#include "fuse/mount.h"
#include "iscsi/log.h"
#include "iscsi/registry.h"
#include "iscsi/spec.h"
#include "tools/ctl.h"
#include "tools/deadline.h"
#include "tools/daemon.h"
#include "tools/grow.h"
#include "tools/recover.h"
#include "tools/request.h"
#include "tools/voltable.h"

#define MOD "daemon"

struct lf_daemon {
	struct lf_daemon_opts o;
	char state_dir[PATH_MAX];
	/* Shared FUSE views of volumes (fuse/view.c); "" = none. */
	char view_dir[PATH_MAX + 8];
	char node_initiator[LF_NAME_MAX];
	struct lf_registry *reg;
	struct lf_voltable
		vt; /* volumes and mounts; voltable.h has its locks */
	struct lf_bufpool *pool; /* reply buffers, shared by every mount */
	uint64_t salt;		 /* for credential digests, random per daemon */

	/* Mounts that ended from outside (fusermount3 -u) are released by
	 * this thread: the FUSE thread that noticed cannot join itself. */
	pthread_t reaper;
	pthread_t recoverer;
	bool recovering;
	struct lf_recovery *rec;  /* a dead daemon's attach records */
	pthread_cond_t reap_cond; /* with vt.lock */
	bool reap_pending;	  /* vt.lock */
	int workers;   /* mounts running on a deadline's worker; vt.lock */
	bool stopping; /* vt.lock */
};

static struct json_object *answer_err(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static const char *jstr(struct json_object *o, const char *key);
struct lf_deadline;
static void *recover_main(void *arg);
static struct json_object *op_mount(struct lf_daemon *d,
				    struct json_object *req,
				    struct lf_deadline *dl, bool recovery);

static struct json_object *answer_err(int err, const char *fmt, ...)
{
	struct json_object *a = json_object_new_object();
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(a, "ok", json_object_new_boolean(0));
	json_object_object_add(a, "errno",
			       json_object_new_int(err < 0 ? -err : err));
	json_object_object_add(a, "error", json_object_new_string(msg));
	return a;
}

static struct json_object *answer_ok(void)
{
	struct json_object *a = json_object_new_object();

	json_object_object_add(a, "ok", json_object_new_boolean(1));
	return a;
}

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/* Who may use an attached volume: a second mount must present the same
 * CHAP identity as the first, or anyone could skip authentication by
 * mounting a LUN someone else attached. Salted, so the digest says
 * nothing about the secret. */
static uint64_t cred_digest(const struct lf_daemon *d,
			    const struct lf_secrets *sec)
{
	const struct lf_chap *c[2] = {&sec->session, &sec->discovery};
	uint64_t h = d->salt ^ 1469598103934665603ULL;

	for (int i = 0; i < 2; i++) {
		const char *f[4] = {c[i]->user, c[i]->secret, c[i]->user_in,
				    c[i]->secret_in};
		for (int k = 0; k < 4; k++) {
			for (const char *p = f[k]; *p; p++)
				h = (h ^ (unsigned char)*p) * 1099511628211ULL;
			h = (h ^ 0xff) * 1099511628211ULL;
		}
	}
	return h;
}

/* Writes text to path atomically: temp file, fsync, rename, fsync dir. */
static int write_atomic(const char *path, const char *text)
{
	char tmp[PATH_MAX + 8], dir[PATH_MAX];
	int fd, r = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (lf_ctl_write_all(fd, text, strlen(text)) || fsync(fd))
		r = -errno;
	close(fd);
	if (!r && rename(tmp, path))
		r = -errno;
	if (r) {
		unlink(tmp);
		return r;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = 0;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

/* Caller holds v's claim. The volume's attach record (the in-tree
 * plugin's iscsi.json): its spec and every mount of it but skip, never a
 * secret. Removed when the volume has no mount left. */
static void record_update(struct lf_daemon *d, struct lf_vt_volume *v,
			  const struct lf_vt_mount *skip)
{
	struct json_object *rec, *mounts;
	int n = 0, r;

	if (!v->record_path[0])
		return;
	rec = json_object_new_object();
	mounts = json_object_new_array();
	json_object_object_add(rec, "version", json_object_new_int(1));
	json_object_object_add(rec, "volume", json_object_new_string(v->key));
	json_object_object_add(
		rec, "mode",
		json_object_new_string(v->block ? "Block" : "Filesystem"));
	/* A mount's record is set, under v's claim, once it is mounted. */
	pthread_mutex_lock(&d->vt.lock);
	for (struct lf_vt_mount *m = d->vt.mounts; m; m = m->next) {
		if (m->v != v || !m->record || m == skip)
			continue;
		json_object_array_add(mounts, json_object_get(m->record));
		n++;
	}
	pthread_mutex_unlock(&d->vt.lock);
	json_object_object_add(rec, "mounts", mounts);
	if (n == 0) {
		if (unlink(v->record_path) && errno != ENOENT)
			lf_warn(MOD, "%s: cannot remove: %m", v->record_path);
	} else {
		r = write_atomic(v->record_path,
				 json_object_to_json_string_ext(
					 rec, JSON_C_TO_STRING_PRETTY));
		if (r)
			lf_err(MOD, "%s: cannot write the attach record: %s",
			       v->record_path, strerror(-r));
	}
	json_object_put(rec);
}

/* Caller holds v's claim: closes an open volume (its last mount is
 * gone). Status stops reading its objects before they are freed. */
static void volume_close(struct lf_daemon *d, struct lf_vt_volume *v)
{
	lf_vt_volume_set_state(&d->vt, v, LF_VT_DETACHING);
	lf_vt_volume_set_open(&d->vt, v, false);
	if (v->served)
		lf_served_free(v->served);
	if (v->vol) {
		int r = lf_vol_close(v->vol);
		if (r)
			lf_err(MOD, "%s: closing the filesystem failed: %s",
			       v->key, strerror(-r));
	}
	lf_fence_release(v->bdev, &v->fence);
	lf_bdev_unref(v->bdev); /* the volume held its own reference */
	v->served = NULL;
	v->vol = NULL;
	v->bdev = NULL;
	lf_info(MOD, "%s: closed", v->key);
}

/* Caller holds v's claim: gives it back, closing the volume first if no
 * mount of it is left. */
static void volume_put(struct lf_daemon *d, struct lf_vt_volume *v)
{
	if (v->open && lf_vt_volume_nmounts(&d->vt, v) == 0)
		volume_close(d, v);
	lf_vt_volume_done(&d->vt, v);
}

/* Caller holds m's path claim (state detaching): unmounts it, drops its
 * volume and the entry. Waits for the volume's claim (path before
 * volume, as voltable.h orders them). */
static void mount_release(struct lf_daemon *d, struct lf_vt_mount *m)
{
	struct lf_vt_volume *v = NULL;
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s", m->path);
	if (m->v && lf_vt_volume_claim(&d->vt, m->v->key, m->v->record_path, 0,
				       LF_VT_DETACHING, &v)) {
		lf_err(MOD, "%s: cannot claim its volume", path);
		lf_vt_mount_unclaim(&d->vt, m);
		return;
	}
	if (m->m)
		lf_mount_stop(m->m);
	if (v)
		record_update(d, v, m);
	lf_vt_mount_remove(&d->vt, m);
	if (v)
		volume_put(d, v);
	lf_info(MOD, "%s: unmounted", path);
}

static void on_mount_exit(void *ctx, struct lf_mount *lm)
{
	struct lf_daemon *d = ctx;
	const char *path = lf_mount_path(lm);

	pthread_mutex_lock(&d->vt.lock);
	for (struct lf_vt_mount *m = d->vt.mounts; m; m = m->next) {
		/* Still attaching: its request has not stored lm yet. */
		if (m->m == lm || (!m->m && m->state == LF_VT_ATTACHING &&
				   path && strcmp(m->path, path) == 0)) {
			m->gone = true;
			d->reap_pending = true;
			pthread_cond_signal(&d->reap_cond);
		}
	}
	pthread_mutex_unlock(&d->vt.lock);
}

static bool match_gone(void *ctx, const struct lf_vt_mount *m)
{
	(void)ctx;
	return m->gone;
}

static void *reaper_main(void *arg)
{
	struct lf_daemon *d = arg;
	struct lf_vt_mount *m;

	pthread_mutex_lock(&d->vt.lock);
	while (!d->stopping) {
		while (!d->reap_pending && !d->stopping)
			pthread_cond_wait(&d->reap_cond, &d->vt.lock);
		d->reap_pending = false;
		pthread_mutex_unlock(&d->vt.lock);
		while (!lf_vt_mount_claim_next(&d->vt, match_gone, NULL, 0,
					       &m)) {
			lf_info(MOD, "%s: unmounted from outside lunfs",
				m->path);
			mount_release(d, m);
		}
		pthread_mutex_lock(&d->vt.lock);
	}
	pthread_mutex_unlock(&d->vt.lock);
	return NULL;
}

/* A killed daemon's views are dead FUSE mounts (ENOTCONN): take them
 * away before the attach records are replayed. */
static void clean_views(const char *dir)
{
	char p[PATH_MAX * 2];
	struct dirent *de;
	DIR *dp = opendir(dir);

	if (!dp)
		return;
	while ((de = readdir(dp))) {
		if (strncmp(de->d_name, "view", 4))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (umount2(p, MNT_DETACH) == 0)
			lf_info(MOD, "%s: removed a dead view", p);
		if (rmdir(p) < 0)
			lf_warn(MOD, "%s: cannot remove: %m", p);
	}
	closedir(dp);
}

int lf_daemon_new(const struct lf_daemon_opts *o, struct lf_daemon **out)
{
	struct lf_daemon *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->o = *o;
	snprintf(d->state_dir, sizeof(d->state_dir), "%s", o->state_dir);
	d->o.state_dir = d->state_dir;
	if (lf_vt_init(&d->vt)) {
		free(d);
		return -ENOMEM;
	}
	if (getrandom(&d->salt, sizeof(d->salt), 0) != sizeof(d->salt))
		d->salt = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	pthread_cond_init(&d->reap_cond, NULL);
	lf_session_default_initiator(d->node_initiator,
				     sizeof(d->node_initiator));
	{
		char dir[PATH_MAX + 16];
		snprintf(dir, sizeof(dir), "%s/volumes", d->state_dir);
		int r = lf_ctl_mkdirs(dir, 0700);
		if (r) {
			lf_err(MOD, "%s: cannot create: %s", dir, strerror(-r));
			free(d);
			return r;
		}
	}
	if (geteuid() == 0) {
		snprintf(d->view_dir, sizeof(d->view_dir), "%s/views",
			 d->state_dir);
		clean_views(d->view_dir); /* a killed daemon's, either way */
		if (o->per_mount_views)
			d->view_dir[0] = '\0';
	}
	d->reg = lf_registry_new_iscsi();
	d->pool = lf_bufpool_new();
	if (!d->reg || !d->pool) {
		lf_registry_free(d->reg);
		lf_bufpool_free(d->pool);
		free(d);
		return -ENOMEM;
	}
	if (pthread_create(&d->reaper, NULL, reaper_main, d)) {
		lf_registry_free(d->reg);
		lf_bufpool_free(d->pool);
		free(d);
		return -EAGAIN;
	}
	d->rec = lf_recovery_load(d->state_dir, &d->vt);
	d->recovering = d->rec && pthread_create(&d->recoverer, NULL,
						 recover_main, d) == 0;
	*out = d;
	return 0;
}

static struct json_object *recover_mount(void *ctx, struct json_object *req)
{
	return op_mount(ctx, req, NULL, true);
}

/* A daemon that died (kill -9, OOM) left attach records: serve those
 * mounts again, or release them. */
static void *recover_main(void *arg)
{
	struct lf_daemon *d = arg;

	lf_recovery_run(d->rec, recover_mount, d);
	return NULL;
}

static bool no_workers(void *ctx)
{
	return ((struct lf_daemon *)ctx)->workers == 0;
}

static bool match_all(void *ctx, const struct lf_vt_mount *m)
{
	(void)ctx;
	(void)m;
	return true;
}

void lf_daemon_free(struct lf_daemon *d)
{
	struct lf_vt_mount *m;

	if (d->recovering)
		pthread_join(d->recoverer, NULL);
	lf_recovery_free(d->rec);
	/* Mounts abandoned at their deadline finish (and undo) first. */
	lf_vt_wait(&d->vt, no_workers, d, 0);
	while (!lf_vt_mount_claim_next(&d->vt, match_all, NULL, 0, &m))
		mount_release(d, m);
	pthread_mutex_lock(&d->vt.lock);
	d->stopping = true;
	pthread_cond_signal(&d->reap_cond);
	pthread_mutex_unlock(&d->vt.lock);
	pthread_join(d->reaper, NULL);
	lf_registry_free(d->reg);
	lf_bufpool_free(d->pool); /* every mount is gone */
	pthread_cond_destroy(&d->reap_cond);
	lf_vt_destroy(&d->vt);
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

/* The LUN (through the session registry) or the image file of a spec. */
static int open_bdev(struct lf_daemon *d, const struct lf_spec *spec,
		     const struct lf_secrets *sec, const char *key,
		     bool read_only, int64_t deadline_ms, struct lf_bdev **out,
		     char *err, size_t errlen)
{
	struct lf_session_params p;
	int r;

	if (spec->kind == LF_SPEC_FILE) {
		r = lf_bdev_open_file(spec->path, read_only, out);
		if (r)
			snprintf(err, errlen, "%s: cannot open: %s", key,
				 strerror(-r));
		return r;
	}
	lf_registry_params(spec, sec, d->node_initiator, &p);
	if (d->o.replacement_timeout > 0)
		p.replacement_timeout = d->o.replacement_timeout;
	if (deadline_ms) {
		/* A login the request cannot wait for must end soon after
		 * its deadline, even though nobody waits for its answer; a
		 * second later than it, so that the caller hears "timed out"
		 * from the deadline, not a login error libiscsi words
		 * otherwise ("Can not reconnect"). */
		int64_t left = deadline_ms - lf_vt_now_ms();
		p.login_timeout = left < 0 ? 1 : (int)((left + 999) / 1000) + 1;
	}
	r = lf_registry_open_lun(d->reg, &p, spec->lun, read_only, out, err,
				 errlen);
	explicit_bzero(&p, sizeof(p));
	return r;
}

/* Where run_on_view() puts the view's path in a tool's argv. */
static const char VIEW[] = "<view>";

/* Runs an e2fsprogs tool (e2fsck, resize2fs) on a volume's bytes, through
 * a private block-file mount of the device: argv[0] is the tool, argv[]
 * (at most 7) ends with NULL and its VIEW entry becomes the view's path.
 * Returns the tool's exit status or -errno; out gets the last line it
 * printed. */
static int run_on_view(struct lf_daemon *d, struct lf_bdev *b, bool read_only,
		       const char *const *argv, char *out, size_t outlen)
{
	static atomic_uint seq;
	struct lf_mount_opts mo;
	struct lf_mount *m = NULL;
	struct lf_served *sv = NULL;
	char path[PATH_MAX + 64], err[512] = "out of memory", buf[4096];
	int fd, pfd[2], status = 0, r;
	size_t len = 0;
	pid_t pid;

	*out = 0;
	snprintf(path, sizeof(path), "%s/fsck.%d.%u", d->state_dir,
		 (int)getpid(), atomic_fetch_add(&seq, 1));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	close(fd);
	lf_mount_opts_init(&mo);
	mo.fsgroup = -1;
	mo.read_only = read_only;
	mo.pool = d->pool;
	sv = lf_served_new_block(b);
	r = sv ? lf_mount_block(sv, path, &mo, &m, err, sizeof(err)) : -ENOMEM;
	if (r) {
		lf_err(MOD, "fsck: %s", err);
		goto out;
	}
	if (pipe2(pfd, O_CLOEXEC)) {
		r = -errno;
		goto out;
	}
	pid = fork();
	if (pid == 0) {
		const char *av[8];
		char sbin[64];
		int n;

		for (n = 0; argv[n] && n < 7; n++)
			av[n] = argv[n] == VIEW ? path : argv[n];
		av[n] = NULL;
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		snprintf(sbin, sizeof(sbin), "/usr/sbin/%s", argv[0]);
		execv(sbin, (char *const *)av);
		execvp(argv[0], (char *const *)av);
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		ssize_t n = read(pfd[0], buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len >= sizeof(buf) - 1) { /* keep the tail */
			memmove(buf, buf + len / 2, len - len / 2);
			len -= len / 2;
		}
	}
	close(pfd[0]);
	buf[len] = 0;
	if (pid < 0 || waitpid(pid, &status, 0) < 0) {
		r = -ECHILD;
		goto out;
	}
	while (len && buf[len - 1] == '\n')
		buf[--len] = 0;
	snprintf(out, outlen, "%s",
		 strrchr(buf, '\n') ? strrchr(buf, '\n') + 1 : buf);
	lf_info(MOD, "%s %s on %s:\n%s", argv[0], argv[1] ? argv[1] : "",
		lf_bdev_desc(b), buf);
	r = WIFEXITED(status) ? WEXITSTATUS(status) : 8;
out:
	if (m)
		lf_mount_stop(m);
	lf_served_free(sv);
	unlink(path);
	return r;
}

/* e2fsck -f MODE: the shared libext2fs has no journal replay, e2fsck
 * has. Exit status 0 clean, 1 fixed, 4 errors left … or -errno. */
static int run_e2fsck(struct lf_daemon *d, struct lf_bdev *b, const char *mode,
		      char *out, size_t outlen)
{
	const char *argv[] = {"e2fsck", "-f", mode, VIEW, NULL};

	return run_on_view(d, b, strcmp(mode, "-n") == 0, argv, out, outlen);
}

/* Claims and opens (or finds open) the volume of a resolved spec; on
 * success the caller holds its claim (volume_put gives it back). */
static int volume_get(struct lf_daemon *d, const struct lf_spec *spec,
		      const char *key, struct lf_secrets *sec, bool block,
		      bool read_only, bool takeover, int64_t deadline_ms,
		      struct lf_vt_volume **out, char *err, size_t errlen)
{
	const char *initiator = spec->initiator_name[0] ? spec->initiator_name
							: d->node_initiator;
	struct lf_vt_volume *v;
	char record_path[PATH_MAX];
	int r;

	snprintf(record_path, sizeof(record_path), "%s/volumes/%016llx.json",
		 d->state_dir, (unsigned long long)fnv1a(key));
	r = lf_vt_volume_claim(&d->vt, key, record_path, deadline_ms,
			       LF_VT_ATTACHING, &v);
	if (r) {
		snprintf(err, errlen,
			 "%s: timed out waiting for another request on this "
			 "volume",
			 key);
		return r;
	}
	if (v->open) {
		if (v->block != block) {
			snprintf(err, errlen,
				 "%s is already mounted as a %s volume", key,
				 v->block ? "block" : "filesystem");
			r = -EBUSY;
		} else if (v->read_only && !read_only) {
			snprintf(err, errlen,
				 "%s is already open read-only; unmount its "
				 "read-only mounts before mounting it "
				 "read-write",
				 key);
			r = -EBUSY;
		} else if (spec->kind == LF_SPEC_ISCSI &&
			   v->cred != cred_digest(d, sec)) {
			snprintf(err, errlen,
				 "%s is already attached with other CHAP "
				 "credentials: refusing to share it",
				 key);
			r = -EACCES;
		}
		if (r) {
			lf_vt_volume_done(&d->vt, v);
			return r;
		}
		*out = v;
		return 0;
	}

	v->block = block;
	v->read_only = read_only;
	v->cred = cred_digest(d, sec);
	memset(&v->fence, 0, sizeof(v->fence));
	r = open_bdev(d, spec, sec, key, read_only, deadline_ms, &v->bdev, err,
		      errlen);
	if (r)
		goto fail;
	/* One writer per LUN, before anything is written (fence.h). */
	if (!read_only && spec->kind == LF_SPEC_ISCSI) {
		r = lf_fence_acquire(v->bdev, initiator, takeover, &v->fence,
				     err, errlen);
		if (r)
			goto fail;
	}
	if (!block) {
		struct lf_vol_opts vo = {
			.cache_bytes = d->o.cache_bytes,
			.flush_interval_ms = d->o.commit_ms,
			.read_only = read_only,
			.allow_format = !read_only,
			.mmp_node = initiator,
			.reserved = v->fence.pr,
			.mmp_stale_known = v->fence.mmp_stale_known,
			.mmp_stale_seq = v->fence.mmp_stale_seq,
		};
		char holder[128];

		if (read_only && spec->kind == LF_SPEC_ISCSI &&
		    lf_fence_held_elsewhere(v->bdev, holder, sizeof(holder))) {
			vo.held_elsewhere = true;
			lf_info(MOD,
				"%s: read-only attach; held read-write by %s",
				key, holder);
		}
		r = lf_vol_open(v->bdev, &vo, &v->vol, err, errlen);
		if (r == -EUCLEAN && !read_only) {
			/* The plugin's mount would replay the journal; so do
			 * we, with e2fsck's own replay and preen. */
			char fsck_out[512];
			int rc;
			lf_warn(MOD,
				"%s: %s: replaying and checking with "
				"e2fsck -p",
				key, err);
			lf_vt_volume_set_state(&d->vt, v, LF_VT_RECOVERING);
			rc = run_e2fsck(d, v->bdev, "-p", fsck_out,
					sizeof(fsck_out));
			lf_vt_volume_set_state(&d->vt, v, LF_VT_ATTACHING);
			if (rc < 0 || rc > 2) {
				snprintf(err, errlen,
					 "%s was not unmounted cleanly and "
					 "automatic repair failed (e2fsck -p: "
					 "%s): run 'lunfs fsck --repair SPEC'",
					 key,
					 rc < 0 ? strerror(-rc) : fsck_out);
				r = -EUCLEAN;
				goto fail;
			}
			lf_info(MOD, "%s: recovered (e2fsck exit %d)", key, rc);
			r = lf_vol_open(v->bdev, &vo, &v->vol, err, errlen);
		}
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
	} else if (!(v->served = lf_served_new_block(v->bdev))) {
		r = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	lf_vt_volume_set_open(&d->vt, v, true);
	lf_info(MOD, "%s: opened (%s%s)", key, block ? "block" : "filesystem",
		read_only ? ", read-only" : "");
	*out = v;
	return 0;
fail:
	if (v->served)
		lf_served_free(v->served);
	if (v->vol)
		lf_vol_close(v->vol);
	if (v->bdev) {
		lf_fence_release(v->bdev, &v->fence);
		lf_bdev_unref(v->bdev);
	}
	v->served = NULL;
	v->vol = NULL;
	v->bdev = NULL;
	lf_vt_volume_done(&d->vt, v);
	return r;
}

/* What makes two mount requests for one path the same: the answer to a
 * repeated request is "done already" only if all of it matches. */
struct mount_want {
	const char *key;
	bool block, read_only;
	const char *uidmap, *gidmap;
	long long fsgroup;
	const char *container;
	uint64_t cred;
};

/* Caller holds m's path claim; m is attached. 0 if m is what w asks for,
 * else -EBUSY with the difference in err. */
static int mount_compare(const struct lf_vt_mount *m,
			 const struct mount_want *w, char *err, size_t errlen)
{
	const char *what = NULL;

	if (strcmp(m->v->key, w->key))
		what = "another volume";
	else if (m->v->block != w->block)
		what = m->v->block ? "a block volume" : "a filesystem volume";
	else if (m->read_only != w->read_only)
		what = m->read_only ? "read-only" : "read-write";
	else if (strcmp(m->uidmap, w->uidmap) || strcmp(m->gidmap, w->gidmap))
		what = "other uid/gid maps";
	else if (m->fsgroup != w->fsgroup)
		what = "another fsGroup";
	else if (strcmp(m->container, w->container))
		what = "for another container";
	if (what) {
		snprintf(err, errlen,
			 "%s is already a lunfs mount (%s, %s): unmount it "
			 "first",
			 m->path, m->v->key, what);
		return -EBUSY;
	}
	return 0;
}

static void *recover_main(void *arg);
static struct json_object *op_mount(struct lf_daemon *d,
				    struct json_object *req,
				    struct lf_deadline *dl, bool recovery)
{
	int64_t deadline_ms = lf_deadline_ms(dl);
	struct lf_mount_opts mo;
	struct lf_secrets sec;
	struct lf_spec spec;
	struct lf_vt_volume *v = NULL;
	struct lf_vt_mount *m = NULL;
	struct lf_mount *lm = NULL;
	struct json_object *j, *ans;
	struct {
		struct mount_want w;
		char uidmap_buf[256], gidmap_buf[256];
	} want;
	char err[1024] = "", path[PATH_MAX], key[600], warn[700] = "";
	const char *p;
	bool block, ro, existing, takeover;
	struct stat st;
	int r;

	memset(&sec, 0, sizeof(sec));
	lf_mount_opts_init(&mo);
	mo.pool = d->pool;
	mo.no_fuse_uring = d->o.no_fuse_uring;
	mo.view_dir = d->view_dir[0] ? d->view_dir : NULL;
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
		snprintf(spec.initiator_name, sizeof(spec.initiator_name), "%s",
			 p);
	}
	/* Types and bounds (container id, fsgroup, paths) were checked by
	 * lf_request_check() before any request gets here. */
	block = jbool(req, "block") || spec.mode == LF_MODE_BLOCK;
	ro = jbool(req, "read_only") || spec.read_only;
	takeover = jbool(req, "takeover");
	r = parse_idmaps(req, "uidmap", &mo.uidmap, err, sizeof(err));
	if (!r)
		r = parse_idmaps(req, "gidmap", &mo.gidmap, err, sizeof(err));
	if (r)
		goto out_err;
	mo.fsgroup = -1;
	if (json_object_object_get_ex(req, "fsgroup", &j))
		mo.fsgroup = json_object_get_int64(j);
	mo.read_only = ro;
	mo.allow_other = d->o.allow_other;
	mo.on_exit = on_mount_exit;
	mo.on_exit_ctx = d;
	mo.detached = jbool(req, "detached") && !block;

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

	if (spec.kind == LF_SPEC_ISCSI) {
		r = lf_spec_resolve(&spec, err, sizeof(err));
		if (r)
			goto out_err;
	}
	lf_spec_url(&spec, key, sizeof(key));
	lf_idmap_format(&mo.uidmap, want.uidmap_buf, sizeof(want.uidmap_buf));
	lf_idmap_format(&mo.gidmap, want.gidmap_buf, sizeof(want.gidmap_buf));
	want.w = (struct mount_want){
		.key = key,
		.block = block,
		.read_only = ro,
		.uidmap = want.uidmap_buf,
		.gidmap = want.gidmap_buf,
		.fsgroup = mo.fsgroup,
		.container =
			jstr(req, "container") ? jstr(req, "container") : "",
	};

	/* Right after a restart, the recorded mount of path comes first. */
	r = recovery ? 0 : lf_recovery_wait(d->rec, path, deadline_ms);
claim:
	if (!r)
		r = lf_vt_mount_claim(&d->vt, path, key, want.w.container,
				      deadline_ms, &m, &existing);
	if (!r && existing &&
	    (lf_vt_mount_gone(&d->vt, m) || !lf_mount_point_at(path))) {
		/* Unmounted from outside (a lazy umount ends the FUSE
		 * session only once nothing uses it, so the daemon may not
		 * know yet): not a mount to keep. Release it here and mount
		 * afresh. */
		mount_release(d, m);
		goto claim;
	}
	if (r) {
		snprintf(err, sizeof(err),
			 "%s: timed out waiting for another request on this "
			 "path",
			 path);
		goto out_err;
	}
	if (existing) {
		/* Idempotent: the same request again (a retry, or after a
		 * restart re-served it) is done already. */
		/* A direct bind's tree went to the first request: say so,
		 * so that the hook does not judge the empty path. */
		const char *attach = m->m ? lf_mount_attach(m->m) : "path";

		r = mount_compare(m, &want.w, err, sizeof(err));
		if (!r && spec.kind == LF_SPEC_ISCSI &&
		    m->v->cred != cred_digest(d, &sec)) {
			snprintf(err, sizeof(err),
				 "%s is already attached with other CHAP "
				 "credentials: refusing to share it",
				 key);
			r = -EACCES;
		}
		lf_vt_mount_unclaim(&d->vt, m);
		if (r)
			goto out_err;
		lf_secrets_wipe(&sec);
		lf_info(MOD, "%s: already mounted as asked", path);
		ans = answer_ok();
		json_object_object_add(ans, "path",
				       json_object_new_string(path));
		json_object_object_add(ans, "spec",
				       json_object_new_string(key));
		json_object_object_add(ans, "changed",
				       json_object_new_boolean(0));
		json_object_object_add(ans, "attach",
				       json_object_new_string(attach));
		return ans;
	}
	if (lf_mount_point_at(path)) {
		r = -EBUSY;
		snprintf(err, sizeof(err),
			 "%s is already a mount point; refusing to mount over "
			 "it",
			 path);
		goto out_remove;
	}
	r = volume_get(d, &spec, key, &sec, block, ro, takeover, deadline_ms,
		       &v, err, sizeof(err));
	lf_secrets_wipe(&sec);
	if (r)
		goto out_remove;
	/* As ext4's -o discard on a device without it: a warning, and the
	 * mount goes on. */
	if (jbool(req, "discard") && v->vol && !ro &&
	    lf_vol_set_discard(v->vol, true) == -EOPNOTSUPP)
		snprintf(warn, sizeof(warn),
			 "%s: the LUN does not support UNMAP: --discard has "
			 "no effect",
			 key);
	lf_vt_mount_bind(&d->vt, m, v);
	m->read_only = ro;
	m->fsgroup = mo.fsgroup;
	snprintf(m->uidmap, sizeof(m->uidmap), "%s", want.uidmap_buf);
	snprintf(m->gidmap, sizeof(m->gidmap), "%s", want.gidmap_buf);
	if (block)
		r = lf_mount_block(v->served, path, &mo, &lm, err, sizeof(err));
	else
		r = lf_mount_fs(v->served, path, &mo, &lm, err, sizeof(err));
	if (r) {
		lf_vt_mount_remove(&d->vt, m);
		volume_put(d, v);
		goto out_err;
	}
	pthread_mutex_lock(&d->vt.lock); /* on_mount_exit looks for it */
	m->m = lm;
	pthread_mutex_unlock(&d->vt.lock);
	if (!lf_deadline_commit(dl)) {
		/* The caller was told "timed out": take it all back. */
		lf_mount_stop(lm);
		lf_vt_mount_remove(&d->vt, m);
		volume_put(d, v);
		r = -ETIMEDOUT;
		snprintf(err, sizeof(err),
			 "%s: finished after the request's deadline: undone",
			 path);
		goto out_err;
	}
	m->record = json_object_new_object();
	json_object_object_foreach(req, k, val)
	{
		/* Copies: json-c's reference counts are not atomic, and the
		 * request is freed on another thread than the one that
		 * frees the record. A takeover is a one-time decision: a
		 * restarted daemon re-attaches with its own key, never
		 * preempting. */
		struct json_object *copy = NULL;
		if (strcmp(k, "secrets") && strcmp(k, "op") &&
		    strcmp(k, "path") && strcmp(k, "timeout_ms") &&
		    strcmp(k, "takeover") &&
		    !json_object_deep_copy(val, &copy, NULL))
			json_object_object_add(m->record, k, copy);
	}
	json_object_object_add(m->record, "path", json_object_new_string(path));
	record_update(d, v, NULL);
	lf_vt_mount_attached(&d->vt, m);
	volume_put(d, v);
	lf_info(MOD, "%s: mounted %s%s", path, key, ro ? " read-only" : "");
	ans = answer_ok();
	json_object_object_add(ans, "path", json_object_new_string(path));
	json_object_object_add(ans, "spec", json_object_new_string(key));
	json_object_object_add(ans, "attach",
			       json_object_new_string(lf_mount_attach(lm)));
	{
		/* A direct bind's tree goes to the caller with the answer
		 * (lf_daemon_answer_fd); after a restart no one waits for
		 * it: the container's old bind died with the old daemon. */
		int tree = lf_mount_take_tree(lm);

		if (tree >= 0 && recovery)
			close(tree);
		else if (tree >= 0)
			json_object_object_add(ans, LF_ANSWER_FD,
					       json_object_new_int(tree));
	}
	if (*warn)
		json_object_object_add(ans, "warning",
				       json_object_new_string(warn));
	return ans;

out_remove:
	lf_vt_mount_remove(&d->vt, m);
out_err:
	lf_secrets_wipe(&sec);
	lf_err(MOD, "mount failed: %s", err);
	return answer_err(r, "%s", err);
}

static struct json_object *
op_umount(struct lf_daemon *d, struct json_object *req, int64_t deadline_ms)
{
	const char *p = jstr(req, "path");
	char path[PATH_MAX];
	struct lf_vt_mount *m;
	struct json_object *ans;
	int r;

	if (!p || !*p)
		return answer_err(EINVAL, "umount: no path");
	/* A path whose mount died may not resolve: fall back to the text. */
	if (!realpath(p, path))
		snprintf(path, sizeof(path), "%s", p);
	r = lf_recovery_wait(d->rec, path, deadline_ms);
	if (!r)
		r = lf_vt_mount_claim_detach(&d->vt, path, deadline_ms, &m);
	if (r == -ENOENT) {
		/* Idempotent: what the caller wants is already so. */
		ans = answer_ok();
		json_object_object_add(ans, "changed",
				       json_object_new_boolean(0));
		return ans;
	}
	if (r)
		return answer_err(r,
				  "%s: timed out waiting for another request "
				  "on this path",
				  path);
	mount_release(d, m);
	return answer_ok();
}

/* e2fsck on a volume that is not being served: check (-n) or repair (-y,
 * journal replay included). */
static struct json_object *op_fsck(struct lf_daemon *d, struct json_object *req)
{
	struct lf_secrets sec;
	struct lf_spec spec;
	struct lf_bdev *b = NULL;
	struct lf_vt_volume *v;
	struct json_object *j, *ans;
	const char *mode = jstr(req, "mode") ? jstr(req, "mode") : "preen";
	bool enable_mmp = !strcmp(mode, "enable-mmp");
	const char *flag = !strcmp(mode, "repair")  ? "-y"
			   : !strcmp(mode, "check") ? "-n"
			   : !strcmp(mode, "preen") ? "-p"
			   : enable_mmp		    ? ""
						    : NULL;
	bool repair = flag && strcmp(flag, "-n");
	struct lf_fence fence = {0};
	char err[1024] = "", key[600], out[512], record_path[PATH_MAX];
	int r, rc;

	memset(&sec, 0, sizeof(sec));
	if (!flag)
		return answer_err(EINVAL, "fsck: mode must be check, preen, "
					  "repair or enable-mmp");
	if (!json_object_object_get_ex(req, "spec", &j))
		return answer_err(EINVAL, "fsck: no spec");
	r = lf_spec_parse_json(json_object_to_json_string(j), &spec, err,
			       sizeof(err));
	if (!r && json_object_object_get_ex(req, "secrets", &j))
		r = lf_secrets_parse_json(json_object_to_json_string(j), &sec,
					  err, sizeof(err));
	if (!r && spec.kind == LF_SPEC_ISCSI)
		r = lf_spec_resolve(&spec, err, sizeof(err));
	if (r) {
		lf_secrets_wipe(&sec);
		return answer_err(r, "%s", err);
	}
	lf_spec_url(&spec, key, sizeof(key));
	snprintf(record_path, sizeof(record_path), "%s/volumes/%016llx.json",
		 d->state_dir, (unsigned long long)fnv1a(key));
	/* The claim keeps a mount of this volume out while e2fsck runs. */
	r = lf_vt_volume_claim(&d->vt, key, record_path, 0, LF_VT_CHECKING, &v);
	if (r) {
		lf_secrets_wipe(&sec);
		return answer_err(r, "%s: %s", key, strerror(-r));
	}
	if (v->open) {
		lf_vt_volume_done(&d->vt, v);
		lf_secrets_wipe(&sec);
		return answer_err(EBUSY,
				  "%s is mounted: unmount it before "
				  "checking it",
				  key);
	}
	r = open_bdev(d, &spec, &sec, key, !repair, 0, &b, err, sizeof(err));
	lf_secrets_wipe(&sec);
	/* A repair writes: it needs the LUN to itself (fence.h). */
	if (!r && repair && spec.kind == LF_SPEC_ISCSI)
		r = lf_fence_acquire(b,
				     spec.initiator_name[0]
					     ? spec.initiator_name
					     : d->node_initiator,
				     false, &fence, err, sizeof(err));
	if (r) {
		if (b)
			lf_bdev_unref(b);
		lf_vt_volume_done(&d->vt, v);
		return answer_err(r, "%s", err);
	}
	if (enable_mmp) {
		rc = lf_mmp_enable(b, err, sizeof(err));
		snprintf(out, sizeof(out), "%s: %s", key,
			 rc == 1 ? "already has the mmp feature"
				 : "mmp feature enabled");
	} else {
		rc = run_e2fsck(d, b, flag, out, sizeof(out));
	}
	lf_fence_release(b, &fence);
	lf_bdev_unref(b);
	lf_vt_volume_done(&d->vt, v);
	if (enable_mmp && rc < 0)
		return answer_err(rc, "%s", err);
	if (enable_mmp)
		rc = 0;
	if (rc < 0)
		return answer_err(rc, "%s: cannot run e2fsck: %s", key,
				  strerror(-rc));
	ans = answer_ok();
	json_object_object_add(ans, "exit", json_object_new_int(rc));
	json_object_object_add(ans, "summary", json_object_new_string(out));
	return ans;
}

/* What lf_grow's callbacks need. */
struct grow_ctx {
	struct lf_daemon *d;
	struct lf_bdev *b;
	const struct lf_spec *spec; /* offline only */
	struct lf_fence *fence;	    /* offline only */
};

/* lf_grow's resize2fs: on a private block view of the LUN. -f: a served
 * volume is "not clean" by design, and grow.c checked a closed one. */
static int resize2fs_on_view(void *ctx, struct lf_bdev *b, uint64_t new_bytes,
			     char *out, size_t outlen)
{
	struct grow_ctx *gc = ctx;
	char size[32];
	const char *argv[] = {"resize2fs", "-f", VIEW, size, NULL};

	snprintf(size, sizeof(size), "%lluK",
		 (unsigned long long)(new_bytes >> 10));
	return run_on_view(gc->d, b, false, argv, out, outlen);
}

/* Offline, before resize2fs writes: it needs the LUN to itself
 * (fence.h). */
static int take_lun(void *ctx, char *err, size_t errlen)
{
	struct grow_ctx *gc = ctx;

	if (gc->spec->kind != LF_SPEC_ISCSI)
		return 0;
	return lf_fence_acquire(gc->b,
				gc->spec->initiator_name[0]
					? gc->spec->initiator_name
					: gc->d->node_initiator,
				false, gc->fence, err, errlen);
}

/* A volume that is not open: grown offline, under its claim (which keeps
 * mounts of it out meanwhile). */
static int resize_offline(struct lf_daemon *d, struct json_object *req,
			  uint64_t size, uint64_t *lun, uint64_t *fsb,
			  char *err, size_t errlen)
{
	struct lf_secrets sec;
	struct lf_spec spec;
	struct lf_bdev *b = NULL;
	struct lf_vt_volume *v = NULL;
	struct json_object *j;
	char key[600], record_path[PATH_MAX];
	struct lf_fence fence = {0};
	int r;

	memset(&sec, 0, sizeof(sec));
	json_object_object_get_ex(req, "spec", &j);
	r = lf_spec_parse_json(json_object_to_json_string(j), &spec, err,
			       errlen);
	if (!r && json_object_object_get_ex(req, "secrets", &j))
		r = lf_secrets_parse_json(json_object_to_json_string(j), &sec,
					  err, errlen);
	if (!r && spec.kind == LF_SPEC_ISCSI)
		r = lf_spec_resolve(&spec, err, errlen);
	if (r)
		goto out;
	lf_spec_url(&spec, key, sizeof(key));
	snprintf(record_path, sizeof(record_path), "%s/volumes/%016llx.json",
		 d->state_dir, (unsigned long long)fnv1a(key));
	r = lf_vt_volume_claim(&d->vt, key, record_path, 0, LF_VT_RESIZING, &v);
	if (r) {
		snprintf(err, errlen, "%s: %s", key, strerror(-r));
		v = NULL;
		goto out;
	}
	if (v->open) {
		snprintf(err, errlen,
			 "%s is mounted: resize it by a mount's path", key);
		r = -EBUSY;
		goto out;
	}
	if (spec.read_only) {
		snprintf(err, errlen, "%s is read-only: cannot resize it", key);
		r = -EROFS;
		goto out;
	}
	r = open_bdev(d, &spec, &sec, key, false, 0, &b, err, errlen);
	if (r == 0) {
		struct grow_ctx gc = {d, b, &spec, &fence};
		struct lf_grow g = {.bdev = b,
				    .key = key,
				    .size = size,
				    .resize2fs = resize2fs_on_view,
				    .ctx = &gc,
				    .before_write = take_lun};

		r = lf_grow_closed(&g, spec.mode == LF_MODE_BLOCK, lun, fsb,
				   err, errlen);
	}
out:
	lf_secrets_wipe(&sec);
	if (b) {
		lf_fence_release(b, &fence);
		lf_bdev_unref(b);
	}
	if (v)
		lf_vt_volume_done(&d->vt, v);
	return r;
}

/* lunfs resize: grow a volume to its LUN's current size (or "size"),
 * online through a mount's path (under the volume's claim: one request
 * works on a volume at a time), or offline by spec. */
static struct json_object *op_resize(struct lf_daemon *d,
				     struct json_object *req)
{
	const char *p = jstr(req, "path");
	struct json_object *j, *ans;
	struct lf_vt_volume *v = NULL;
	char path[PATH_MAX], key[600] = "", record_path[PATH_MAX];
	char err[1024] = "";
	uint64_t size = 0, lun = 0, fsb = 0;
	bool ro = false;
	int r;

	if (json_object_object_get_ex(req, "size", &j))
		size = (uint64_t)json_object_get_int64(j);
	if (p && *p && realpath(p, path)) {
		pthread_mutex_lock(&d->vt.lock);
		for (struct lf_vt_mount *m = d->vt.mounts; m; m = m->next) {
			if (strcmp(m->path, path) == 0 &&
			    m->state == LF_VT_ATTACHED) {
				snprintf(key, sizeof(key), "%s", m->spec_key);
				ro = m->read_only;
				break;
			}
		}
		pthread_mutex_unlock(&d->vt.lock);
	}
	if (*key && ro)
		return answer_err(EROFS,
				  "%s is mounted read-only: resize it through "
				  "a read-write mount",
				  path);
	if (!*key) {
		if (!json_object_object_get_ex(req, "spec", &j))
			return answer_err(EINVAL, "%s is not a lunfs mount",
					  p ? p : "");
		r = resize_offline(d, req, size, &lun, &fsb, err, sizeof(err));
		goto answer;
	}
	snprintf(record_path, sizeof(record_path), "%s/volumes/%016llx.json",
		 d->state_dir, (unsigned long long)fnv1a(key));
	r = lf_vt_volume_claim(&d->vt, key, record_path, 0, LF_VT_RESIZING, &v);
	if (r)
		return answer_err(r, "%s: %s", key, strerror(-r));
	if (!v->open) {
		snprintf(err, sizeof(err), "%s is not mounted any more", path);
		r = -ENOENT;
	} else if (v->read_only) {
		snprintf(err, sizeof(err),
			 "%s is open read-only: cannot resize it", key);
		r = -EROFS;
	} else {
		struct grow_ctx gc = {d, v->bdev, NULL, NULL};
		struct lf_grow g = {.bdev = v->bdev,
				    .key = v->key,
				    .size = size,
				    .resize2fs = resize2fs_on_view,
				    .ctx = &gc};

		lf_vt_volume_set_state(&d->vt, v, LF_VT_RESIZING);
		r = lf_grow_open(&g, v->vol, v->served, &lun, &fsb, err,
				 sizeof(err));
	}
	lf_vt_volume_done(&d->vt, v);
answer:
	if (r) {
		lf_err(MOD, "resize failed: %s", err);
		return answer_err(r, "%s", err);
	}
	ans = answer_ok();
	json_object_object_add(ans, "lun_bytes", json_object_new_int64(lun));
	json_object_object_add(ans, "fs_bytes", json_object_new_int64(fsb));
	return ans;
}

static bool match_container(void *ctx, const struct lf_vt_mount *m)
{
	return strcmp(m->container, ctx) == 0;
}

/* Releases every mount of an OCI container. Idempotent: no mount left is
 * success, which is what poststop needs. */
static struct json_object *
op_release(struct lf_daemon *d, struct json_object *req, int64_t deadline_ms)
{
	const char *id = jstr(req, "container");
	struct lf_vt_mount *m;
	int n = 0, r;

	if (!id || !lf_request_valid_container_id(id))
		return answer_err(EINVAL, "release: invalid container id");
	/* The container's recorded mounts are re-served first. */
	r = lf_recovery_wait(d->rec, NULL, deadline_ms);
	while (!r &&
	       (r = lf_vt_mount_claim_next(&d->vt, match_container, (void *)id,
					   deadline_ms, &m)) == 0) {
		mount_release(d, m);
		n++;
	}
	if (r == -ETIMEDOUT)
		return answer_err(ETIMEDOUT,
				  "release of container %s: timed out with "
				  "mounts still being attached or detached "
				  "(%d released)",
				  id, n);
	struct json_object *a = answer_ok();
	json_object_object_add(a, "released", json_object_new_int(n));
	return a;
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

/* {"LOOKUP": n, ...}: what the kernel has asked of one mount so far. */
static struct json_object *requests_of(struct lf_mount *lm)
{
	struct json_object *o = json_object_new_object();
	const char *names[LF_MOUNT_REQUEST_KINDS];
	uint64_t counts[LF_MOUNT_REQUEST_KINDS];
	size_t n = lf_mount_requests(lm, names, counts, LF_MOUNT_REQUEST_KINDS);

	for (size_t i = 0; i < n; i++)
		json_object_object_add(
			o, names[i], json_object_new_int64((int64_t)counts[i]));
	return o;
}

/* "state", "since" (UTC) and "elapsed_ms" of a table entry. */
static void add_state(struct json_object *o, enum lf_vt_state s,
		      int64_t since_ms, time_t since_wall, int64_t now_ms)
{
	char when[32];
	struct tm tm;

	gmtime_r(&since_wall, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_object_object_add(o, "state",
			       json_object_new_string(lf_vt_state_name(s)));
	json_object_object_add(o, "since", json_object_new_string(when));
	json_object_object_add(o, "elapsed_ms",
			       json_object_new_int64(now_ms - since_ms));
}

/* Sizes and thin provisioning of an open volume; none of it waits for
 * the volume's lock (a resize holds it for seconds). */
static void add_sizes(struct json_object *o, struct lf_vt_volume *v)
{
	struct lf_trim_stats ts;
	uint64_t lun = lf_bdev_size(v->bdev);

	json_object_object_add(o, "lun_bytes",
			       json_object_new_int64((int64_t)lun));
	json_object_object_add(
		o, "fs_bytes",
		json_object_new_int64(
			(int64_t)(v->vol ? lf_vol_fs_bytes(v->vol) : lun)));
	json_object_object_add(
		o, "can_unmap",
		json_object_new_boolean(lf_bdev_info(v->bdev)->can_unmap));
	if (!v->vol)
		return;
	lf_vol_trim_stats(v->vol, &ts);
	json_object_object_add(o, "discard",
			       json_object_new_boolean(lf_vol_discard(v->vol)));
	json_object_object_add(
		o, "trimmed_bytes",
		json_object_new_int64((int64_t)ts.trimmed_bytes));
	json_object_object_add(
		o, "discarded_bytes",
		json_object_new_int64((int64_t)ts.discarded_bytes));
	json_object_object_add(
		o, "discard_queued",
		json_object_new_int64((int64_t)ts.queued_extents));
}

/* A snapshot of the table under its lock, which no slow work holds: a
 * login, format, fsck or unmount in progress shows as its state. */
/* "fencing": how the volume is kept to one writer; "fenced": by whom,
 * once another node took it over. Caller holds t->lock, v is open. */
static void add_fencing(struct json_object *o, struct lf_vt_volume *v)
{
	char why[256];

	if (!v->read_only)
		json_object_object_add(
			o, "fencing",
			json_object_new_string(lf_fence_mode(
				&v->fence, v->vol && lf_vol_mmp(v->vol))));
	if (lf_bdev_fenced(v->bdev, why, sizeof(why)))
		json_object_object_add(o, "fenced",
				       json_object_new_string(why));
}

static struct json_object *op_status(struct lf_daemon *d)
{
	struct json_object *a = answer_ok();
	struct json_object *sessions = json_object_new_array();
	struct json_object *vols = json_object_new_array();
	struct json_object *mounts = json_object_new_array();
	int64_t now = lf_vt_now_ms();

	pthread_mutex_lock(&d->vt.lock);
	for (struct lf_vt_volume *v = d->vt.volumes; v; v = v->next) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "spec",
				       json_object_new_string(v->key));
		add_state(o, v->state, v->since_ms, v->since_wall, now);
		json_object_object_add(o, "mounts",
				       json_object_new_int(v->nmounts));
		if (v->open) {
			json_object_object_add(
				o, "mode",
				json_object_new_string(
					v->block ? "block" : "filesystem"));
			json_object_object_add(
				o, "read_only",
				json_object_new_boolean(v->read_only));
			json_object_object_add(
				o, "size",
				json_object_new_int64(
					(int64_t)lf_bdev_size(v->bdev)));
			add_sizes(o, v);
			add_fencing(o, v);
		}
		json_object_array_add(vols, o);
	}
	for (struct lf_vt_mount *m = d->vt.mounts; m; m = m->next) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "path",
				       json_object_new_string(m->path));
		json_object_object_add(o, "spec",
				       json_object_new_string(m->spec_key));
		add_state(o, m->state, m->since_ms, m->since_wall, now);
		if (m->container[0])
			json_object_object_add(
				o, "container",
				json_object_new_string(m->container));
		if (m->claimed) { /* its other fields are being written */
			json_object_array_add(mounts, o);
			continue;
		}
		json_object_object_add(
			o, "mode",
			json_object_new_string(m->v->block ? "block"
							   : "filesystem"));
		json_object_object_add(o, "read_only",
				       json_object_new_boolean(m->read_only));
		json_object_object_add(o, "uidmap",
				       json_object_new_string(m->uidmap));
		json_object_object_add(o, "gidmap",
				       json_object_new_string(m->gidmap));
		if (m->fsgroup >= 0)
			json_object_object_add(
				o, "fsgroup",
				json_object_new_int64(m->fsgroup));
		json_object_object_add(
			o, "view", json_object_new_string(lf_mount_view(m->m)));
		json_object_object_add(
			o, "attach",
			json_object_new_string(lf_mount_attach(m->m)));
		json_object_object_add(
			o, "fuse_transport",
			json_object_new_string(lf_mount_transport(m->m)));
		json_object_object_add(o, "fuse_requests", requests_of(m->m));
		json_object_array_add(mounts, o);
	}
	pthread_mutex_unlock(&d->vt.lock);
	/* The registry never holds its table lock across a login either. */
	lf_registry_foreach(d->reg, add_session, sessions);
	json_object_object_add(a, "sessions", sessions);
	json_object_object_add(a, "volumes", vols);
	json_object_object_add(a, "mounts", mounts);
	json_object_object_add(a, "pid", json_object_new_int((int)getpid()));
	json_object_object_add(a, "initiator",
			       json_object_new_string(d->node_initiator));
	return a;
}

static struct json_object *mount_fn(void *ctx, struct json_object *req,
				    struct lf_deadline *dl)
{
	struct lf_daemon *d = ctx;
	struct json_object *ans = op_mount(d, req, dl, false);

	pthread_mutex_lock(&d->vt.lock);
	d->workers--;
	lf_vt_changed(&d->vt);
	pthread_mutex_unlock(&d->vt.lock);
	return ans;
}

struct json_object *lf_daemon_handle(struct lf_daemon *d,
				     struct json_object *req)
{
	const char *op = jstr(req, "op");
	struct json_object *j, *ans;
	int64_t ms = 0, deadline_ms = 0;

	if (!op)
		return answer_err(EINVAL, "request without \"op\"");
	if (json_object_object_get_ex(req, "timeout_ms", &j)) {
		ms = json_object_get_int64(j);
		deadline_ms = lf_vt_now_ms() + ms;
	}
	if (strcmp(op, "mount") == 0) {
		if (!deadline_ms)
			return op_mount(d, req, NULL, false);
		pthread_mutex_lock(&d->vt.lock);
		d->workers++; /* lf_daemon_free waits for abandoned ones */
		pthread_mutex_unlock(&d->vt.lock);
		ans = lf_deadline_run(mount_fn, d, req, deadline_ms);
		if (!ans) {
			lf_err(MOD,
			       "mount of %s: no answer within %lld ms: "
			       "abandoned (what it started is undone when it "
			       "ends)",
			       jstr(req, "path"), (long long)ms);
			ans = answer_err(ETIMEDOUT,
					 "%s: timed out after %lld ms: nothing "
					 "was mounted",
					 jstr(req, "path"), (long long)ms);
		}
		return ans;
	}
	if (strcmp(op, "umount") == 0)
		return op_umount(d, req, deadline_ms);
	if (strcmp(op, "fsck") == 0)
		return op_fsck(d, req);
	if (strcmp(op, "resize") == 0)
		return op_resize(d, req);
	if (strcmp(op, "release") == 0)
		return op_release(d, req, deadline_ms);
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
