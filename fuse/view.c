/* view.c — one kernel view per volume: a FUSE mount with identity maps
 * that allows idmapped mounts (FUSE_ALLOW_IDMAP), at a private directory,
 * and each mount asked for an idmapped bind of it.
 *
 * Every bind shows the same kernel inodes, so page cache, POSIX and flock
 * locks and shared mappings are the kernel's, as with a kernel filesystem
 * bind-mounted into several containers; lunfs serves each request once.
 * A view exists while it has binds. Its FUSE mount ending from outside (a
 * fusectl abort) ends every bind: each one's on_exit is called, from a
 * thread of its own, since the owner's handler may wait for a lock held
 * by someone stopping a bind, which would join the view's thread.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuse/idbind.h"
#include "fuse/mount_int.h"
#include "iscsi/log.h"

#define MOD "fuse"

const char *lf_mount_view(const struct lf_mount *m)
{
	return m->kind == LF_MOUNT_BIND ? "idmapped" : "fuse-map";
}

const char *lf_mount_attach(const struct lf_mount *m)
{
	return m->direct ? "direct" : "path";
}

int lf_mount_take_tree(struct lf_mount *m)
{
	int t = m->tree;

	m->tree = -1;
	return t;
}

/* Caller holds sv->vlock; takes the view away from sv->views. */
static void view_unlink(struct lf_view *v)
{
	for (struct lf_view **pp = &v->sv->views; *pp; pp = &(*pp)->next) {
		if (*pp == v) {
			*pp = v->next;
			return;
		}
	}
}

/* Without sv->vlock: the view is no longer findable. */
static void view_free(struct lf_view *v)
{
	if (v->fuse)
		lf_mount_stop(v->fuse);
	if (v->dir && rmdir(v->dir) < 0 && errno != ENOENT)
		lf_warn(MOD, "%s: cannot remove the view's directory: %m",
			v->dir);
	free(v->dir);
	pthread_mutex_destroy(&v->mlock);
	free(v);
}

/* Drop one reference; the last frees the view. Caller holds vlock, which
 * this releases. */
static void view_put_unlock(struct lf_view *v)
{
	struct lf_served *sv = v->sv;
	bool last = --v->refs == 0;

	if (last)
		view_unlink(v);
	pthread_mutex_unlock(&sv->vlock);
	if (last)
		view_free(v);
}

static void *notify_main(void *arg)
{
	struct lf_view *v = arg;
	struct lf_served *sv = v->sv;
	struct lf_mount **held = NULL;
	size_t n = 0, cap = 0;

	pthread_mutex_lock(&sv->vlock);
	for (struct lf_mount *b = v->binds; b; b = b->bnext) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct lf_mount **nh =
				realloc(held, ncap * sizeof(*nh));

			if (!nh)
				break;
			held = nh;
			cap = ncap;
		}
		b->holds++;
		held[n++] = b;
	}
	pthread_mutex_unlock(&sv->vlock);

	for (size_t i = 0; i < n; i++) {
		struct lf_mount *b = held[i];

		if (!atomic_exchange(&b->claimed, true)) {
			lf_info(MOD, "%s: its view %s ended from outside",
				b->path, v->dir);
			if (b->opts.on_exit)
				b->opts.on_exit(b->opts.on_exit_ctx, b);
		}
	}

	pthread_mutex_lock(&sv->vlock);
	for (size_t i = 0; i < n; i++) {
		if (--held[i]->holds == 0 && held[i]->stopped)
			lf_mount_free(held[i]);
	}
	free(held);
	view_put_unlock(v); /* the notifier's own reference */
	return NULL;
}

/* The view's FUSE mount ended by itself: on its own thread. */
static void view_on_exit(void *ctx, struct lf_mount *fuse)
{
	struct lf_view *v = ctx;
	pthread_attr_t attr;
	pthread_t t;
	sigset_t all, old;
	int ret;

	(void)fuse;
	pthread_mutex_lock(&v->sv->vlock);
	if (v->refs == 0) {
		/* Its last bind is gone and view_free() waits to join
		 * this thread: nothing left to tell. */
		pthread_mutex_unlock(&v->sv->vlock);
		return;
	}
	v->refs++;
	pthread_mutex_unlock(&v->sv->vlock);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(&t, &attr, notify_main, v);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (ret != 0) {
		lf_err(MOD, "%s: cannot start a thread to end its binds: %s",
		       v->dir, strerror(ret));
		pthread_mutex_lock(&v->sv->vlock);
		view_put_unlock(v);
	}
}

/* Caller holds sv->vlock. The view for (fsgroup, read_only), made if
 * missing, with one more reference; -EOPNOTSUPP where the kernel does not
 * allow idmapped FUSE mounts. */
static int view_get(struct lf_served *sv, const struct lf_mount_opts *o,
		    int64_t fsgroup, struct lf_view **out, char *err,
		    size_t errlen)
{
	struct lf_mount_opts vo;
	struct lf_view *v;
	char tmpl[PATH_MAX];
	int ret;

	for (v = sv->views; v; v = v->next) {
		if (v->fsgroup == fsgroup && v->read_only == o->read_only) {
			v->refs++;
			*out = v;
			return 0;
		}
	}
	if (mkdir(o->view_dir, 0700) < 0 && errno != EEXIST) {
		ret = -errno;
		snprintf(err, errlen, "%s: cannot make the views directory: %s",
			 o->view_dir, strerror(-ret));
		return ret;
	}
	if (snprintf(tmpl, sizeof(tmpl), "%s/viewXXXXXX", o->view_dir) >=
	    (int)sizeof(tmpl)) {
		snprintf(err, errlen, "%s: path too long", o->view_dir);
		return -ENAMETOOLONG;
	}
	v = calloc(1, sizeof(*v));
	if (!v || !mkdtemp(tmpl) || !(v->dir = strdup(tmpl))) {
		ret = v ? -errno : -ENOMEM;
		snprintf(err, errlen, "%s: cannot make a view directory: %s",
			 o->view_dir, strerror(-ret));
		if (v && tmpl[strlen(tmpl) - 1] != 'X')
			rmdir(tmpl);
		free(v);
		return ret;
	}
	pthread_mutex_init(&v->mlock, NULL);
	v->sv = sv;
	v->fsgroup = fsgroup;
	v->read_only = o->read_only;
	vo = *o;
	lf_idmap_init(&vo.uidmap);
	lf_idmap_init(&vo.gidmap);
	vo.fsgroup = fsgroup;
	vo.allow_idmap = true;
	vo.view_dir = NULL;
	vo.on_exit = view_on_exit;
	vo.on_exit_ctx = v;
	ret = lf_mount_fs_fuse(sv, v->dir, &vo, &v->fuse, err, errlen);
	if (ret == 0 && !atomic_load(&v->fuse->idmap)) {
		snprintf(err, errlen,
			 "the kernel does not offer idmapped FUSE mounts "
			 "(FUSE_ALLOW_IDMAP, Linux 6.12)");
		ret = -EOPNOTSUPP;
	}
	if (ret < 0) {
		view_free(v);
		return ret;
	}
	v->fuse->view = v; /* before any bind: no request reads it yet */
	v->refs = 1;
	v->next = sv->views;
	sv->views = v;
	lf_info(MOD, "%s: view of %s (fsGroup %lld%s)", v->dir,
		lf_vol_desc(sv->vol), (long long)fsgroup,
		o->read_only ? ", read-only" : "");
	*out = v;
	return 0;
}

/* Errors that mean "no idmapped mounts here" rather than a bad request. */
static bool unsupported(int ret)
{
	return ret == -EOPNOTSUPP || ret == -EPERM || ret == -EINVAL ||
	       ret == -ENOSYS;
}

int lf_view_bind(struct lf_served *sv, const char *path,
		 const struct lf_mount_opts *o, struct lf_mount **out,
		 char *err, size_t errlen)
{
	struct lf_mount *m = NULL;
	struct lf_view *v = NULL;
	int64_t fsgroup = -1;
	int ret, userns = -1, tree = -1;
	char canon[PATH_MAX];
	struct stat st;

	*out = NULL;
	if (!realpath(path, canon) || stat(canon, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
		return ret;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s is not a directory", canon);
		return -ENOTDIR;
	}
	if (o->fsgroup >= 0) {
		uint32_t g;

		/* The view holds the group as the disk has it; the bind's
		 * map shows it as asked. */
		if (!lf_idmap_to_disk(&o->gidmap, (uint32_t)o->fsgroup, &g)) {
			snprintf(err, errlen,
				 "fsGroup %lld is outside the gid map",
				 (long long)o->fsgroup);
			return -EOPNOTSUPP;
		}
		fsgroup = g;
	}
	m = lf_mount_alloc(LF_MOUNT_BIND, o);
	if (!m || !(m->path = strdup(canon))) {
		lf_mount_free(m);
		snprintf(err, errlen, "%s: out of memory", canon);
		return -ENOMEM;
	}

	pthread_mutex_lock(&sv->vlock);
	if (sv->no_views) {
		pthread_mutex_unlock(&sv->vlock);
		snprintf(err, errlen, "idmapped mounts failed before");
		lf_mount_free(m);
		return -EOPNOTSUPP;
	}
	ret = view_get(sv, o, fsgroup, &v, err, errlen);
	if (ret < 0)
		goto fail_locked;
	/* A detached tree is idmapped by whoever attaches it: the hook
	 * uses the container's own user namespace. */
	if (!o->detached && (o->uidmap.n || o->gidmap.n)) {
		userns = lf_userns_new(&o->uidmap, &o->gidmap, err, errlen);
		if (userns < 0) {
			ret = userns;
			goto fail_view;
		}
	}
	tree = lf_idbind_tree(v->dir, userns, o->read_only, err, errlen);
	if (tree < 0) {
		ret = tree;
		goto fail_view;
	}
	if (o->detached) {
		m->tree = tree;
		m->direct = true;
		tree = -1;
	} else {
		ret = lf_idbind_attach(tree, canon, err, errlen);
		if (ret < 0)
			goto fail_view;
		close(tree);
	}
	if (userns >= 0)
		close(userns);
	m->view = v;
	pthread_mutex_lock(&v->mlock);
	m->bnext = v->binds;
	v->binds = m;
	pthread_mutex_unlock(&v->mlock);
	pthread_mutex_unlock(&sv->vlock);
	lf_info(MOD, "%s: mounted lunfs:%s as an idmapped bind of %s%s", canon,
		lf_vol_desc(sv->vol), v->dir,
		m->direct ? " (detached, for the caller to attach)" : "");
	*out = m;
	return 0;

fail_view:
	if (tree >= 0)
		close(tree);
	if (userns >= 0)
		close(userns);
	if (unsupported(ret))
		sv->no_views = true;
	view_put_unlock(v);
	lf_mount_free(m);
	return unsupported(ret) ? -EOPNOTSUPP : ret;
fail_locked:
	if (ret == -EOPNOTSUPP)
		sv->no_views = true;
	pthread_mutex_unlock(&sv->vlock);
	lf_mount_free(m);
	return ret;
}

void lf_view_unbind(struct lf_mount *m)
{
	struct lf_view *v = m->view;
	struct lf_served *sv = v->sv;
	bool free_now;

	atomic_store(&m->claimed, true);
	if (m->tree >= 0)
		close(m->tree);
	m->tree = -1;
	/* Lazily, as the FUSE mounts are: open files keep working until
	 * closed, and a busy path does not keep the unmount waiting. A
	 * direct bind lives in its container's namespace: it ends with the
	 * view's connection, or with the container. */
	if (!m->direct && umount2(m->path, MNT_DETACH) < 0 && errno != EINVAL &&
	    errno != ENOENT)
		lf_warn(MOD, "%s: umount: %m", m->path);
	lf_info(MOD, "%s: %s", m->path, m->direct ? "released" : "unmounted");
	pthread_mutex_lock(&sv->vlock);
	pthread_mutex_lock(&v->mlock);
	for (struct lf_mount **pp = &v->binds; *pp; pp = &(*pp)->bnext) {
		if (*pp == m) {
			*pp = m->bnext;
			break;
		}
	}
	pthread_mutex_unlock(&v->mlock);
	m->stopped = true;
	free_now = m->holds == 0;
	view_put_unlock(v);
	if (free_now)
		lf_mount_free(m);
}

/* The fsuid, fsgid and groups of pid, as /proc shows them (host ids). */
static int proc_ids(pid_t pid, uint32_t *uid, uint32_t *gid, uint32_t *groups,
		    int max)
{
	char p[64], line[4096];
	unsigned a, b, c, d;
	int n = 0;
	FILE *f;

	snprintf(p, sizeof(p), "/proc/%d/status", (int)pid);
	f = fopen(p, "re");
	if (!f)
		return -errno;
	*uid = *gid = UINT32_MAX;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Uid: %u %u %u %u", &a, &b, &c, &d) == 4)
			*uid = d;
		else if (sscanf(line, "Gid: %u %u %u %u", &a, &b, &c, &d) == 4)
			*gid = d;
		else if (strncmp(line, "Groups:", 7) == 0) {
			char *s = line + 7, *end;

			for (;;) {
				unsigned long g = strtoul(s, &end, 10);

				if (end == s || n == max)
					break;
				groups[n++] = (uint32_t)g;
				s = end;
			}
		}
	}
	fclose(f);
	return n;
}

bool lf_view_caller(struct lf_mount *m, pid_t pid, bool root_only, uint32_t gid)
{
	struct lf_view *v = m->view;
	uint32_t uid, fsgid, groups[64], d;
	bool yes = false;
	int n;

	if (!v || pid <= 0)
		return false;
	n = proc_ids(pid, &uid, &fsgid, groups, 64);
	if (n < 0)
		return false;
	pthread_mutex_lock(&v->mlock);
	for (struct lf_mount *b = v->binds; b && !yes; b = b->bnext) {
		if (root_only) {
			yes = lf_idmap_to_disk(&b->opts.uidmap, uid, &d) &&
			      d == 0;
			continue;
		}
		yes = lf_idmap_to_disk(&b->opts.gidmap, fsgid, &d) && d == gid;
		for (int i = 0; i < n && !yes; i++)
			yes = lf_idmap_to_disk(&b->opts.gidmap, groups[i],
					       &d) &&
			      d == gid;
	}
	pthread_mutex_unlock(&v->mlock);
	return yes;
}

int lf_mount_fs(struct lf_served *sv, const char *path,
		const struct lf_mount_opts *o, struct lf_mount **out, char *err,
		size_t errlen)
{
	int ret;

	if (o->view_dir && sv->vol) {
		ret = lf_view_bind(sv, path, o, out, err, errlen);
		if (ret != -EOPNOTSUPP)
			return ret;
		lf_info(MOD,
			"%s: %s: serving it through a FUSE mount of its own "
			"(id maps by lunfs)",
			path, err);
		err[0] = '\0';
	}
	return lf_mount_fs_fuse(sv, path, o, out, err, errlen);
}
