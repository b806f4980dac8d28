/* ctrattach.c — see ctrattach.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuse/idbind.h"
#include "iscsi/log.h"
#include "tools/ctl.h"
#include "tools/ctrattach.h"

void lf_ctr_close(struct lf_ctr_view *v)
{
	if (v->ct_ns >= 0)
		close(v->ct_ns);
	if (v->d_ns >= 0)
		close(v->d_ns);
	v->ct_ns = v->d_ns = -1;
}

static bool same_ns(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The host id that id 0 inside pid's user namespace maps to (0 without
 * one). */
static unsigned host_root(pid_t pid, const char *which)
{
	unsigned in, out, count, r = 0;
	char p[64];
	FILE *f;

	snprintf(p, sizeof(p), "/proc/%d/%s", (int)pid, which);
	f = fopen(p, "re");
	if (!f)
		return 0;
	while (fscanf(f, "%u %u %u", &in, &out, &count) == 3)
		if (in == 0) {
			r = out;
			break;
		}
	fclose(f);
	return r;
}

int lf_ctr_open(const struct lf_client *c, pid_t pid, const char *root,
		struct lf_ctr_view *v, char *err, size_t errlen)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char p[PATH_MAX + 32];
	struct stat st;
	int fd, self, r;

	memset(v, 0, sizeof(*v));
	v->pid = pid;
	v->ct_ns = v->d_ns = -1;
	snprintf(v->root, sizeof(v->root), "%s", root);
	snprintf(p, sizeof(p), "/proc/%d/ns/mnt", (int)pid);
	v->ct_ns = open(p, O_RDONLY | O_CLOEXEC);
	if (v->ct_ns < 0) {
		r = -errno;
		snprintf(err, errlen, "container process %d: %s: %s", (int)pid,
			 p, strerror(errno));
		return r;
	}
	r = lf_ctl_connect(c->sock, &fd);
	if (r) {
		snprintf(err, errlen, "cannot connect to lunfsd at %s: %s",
			 c->sock, strerror(-r));
		goto fail;
	}
	r = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) ? -errno : 0;
	close(fd);
	if (!r && cred.pid <= 0)
		r = -ESRCH; /* lunfsd runs in a PID namespace we cannot see */
	if (r) {
		snprintf(err, errlen,
			 "cannot find lunfsd's process behind %s: %s", c->sock,
			 strerror(-r));
		goto fail;
	}
	snprintf(p, sizeof(p), "/proc/%d/ns/mnt", (int)cred.pid);
	v->d_ns = open(p, O_RDONLY | O_CLOEXEC);
	self = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
	if (v->d_ns < 0 || self < 0) {
		r = -errno;
		snprintf(err, errlen, "lunfsd (pid %d): %s: %s", (int)cred.pid,
			 p, strerror(errno));
		if (self >= 0)
			close(self);
		goto fail;
	}
	if (same_ns(v->d_ns, self)) {
		close(v->d_ns); /* ours: no setns (a rootless hook cannot) */
		v->d_ns = -1;
	}
	close(self);
	/* createRuntime runs before pivot_root, where the rootfs is still
	 * reached by its path; a runtime that changed the root first has
	 * the rootfs at its "/". */
	snprintf(p, sizeof(p), "/proc/%d/root%s", (int)pid, root);
	v->pivoted = stat(p, &st) != 0;
	v->root_uid = host_root(pid, "uid_map");
	v->root_gid = host_root(pid, "gid_map");
	return 0;
fail:
	lf_ctr_close(v);
	return r;
}

/* dst as the container will resolve it after pivot_root, seen from here:
 * through its process's root, the topmost mount at the rootfs path (the
 * one pivot_root takes) and whatever is mounted on the way. */
static void container_path(const struct lf_ctr_view *v, const char *dst,
			   char *buf, size_t len)
{
	snprintf(buf, len, "/proc/%d/root%s%s", (int)v->pid,
		 v->pivoted ? "" : v->root, dst);
}

/* Runs fn(arg) in a child (setns(CLONE_NEWNS) changes the caller's root
 * and cwd, and needs an unshared fs); returns its result (0 or -errno). */
static int in_child(int (*fn)(void *), void *arg)
{
	int status;
	pid_t child = fork();

	if (child < 0)
		return -errno;
	if (child == 0)
		_exit((-fn(arg)) & 0xff);
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? -WEXITSTATUS(status) : -EIO;
}

static int enter(int ns)
{
	return ns >= 0 && setns(ns, CLONE_NEWNS) ? -errno : 0;
}

struct job {
	const struct lf_ctr_view *v;
	const char *path; /* the daemon's mount point */
	const char *dst;  /* in the container */
	bool block;
	int pipe; /* identity: write end */
	int tree; /* attach: a detached tree lunfsd handed over, or -1 */
};

/* The identity (st_dev, st_ino) of the daemon's mount, in its namespace. */
static int identity_job(void *arg)
{
	struct job *j = arg;
	struct stat st;
	dev_t id[2];
	int r = enter(j->v->d_ns);

	if (r)
		return r;
	if (stat(j->path, &st))
		return -errno;
	id[0] = st.st_dev;
	id[1] = (dev_t)st.st_ino;
	return write(j->pipe, id, sizeof(id)) == sizeof(id) ? 0 : -EIO;
}

static int mount_identity(const struct lf_ctr_view *v, const char *path,
			  struct stat *out)
{
	struct job j = {.v = v, .path = path, .tree = -1};
	dev_t id[2];
	int p[2], r;

	if (pipe2(p, O_CLOEXEC))
		return -errno;
	j.pipe = p[1];
	r = in_child(identity_job, &j);
	close(p[1]);
	if (!r && read(p[0], id, sizeof(id)) != sizeof(id))
		r = -EIO;
	close(p[0]);
	if (!r) {
		out->st_dev = id[0];
		out->st_ino = (ino_t)id[1];
	}
	return r;
}

/* True if dst, as the container will see it, is the daemon's mount. */
static bool visible_in(const struct lf_ctr_view *v, const char *dst,
		       const struct stat *mnt)
{
	char cpath[2 * PATH_MAX + 32];
	struct stat st;

	container_path(v, dst, cpath, sizeof(cpath));
	return stat(cpath, &st) == 0 && st.st_dev == mnt->st_dev &&
	       st.st_ino == mnt->st_ino;
}

/* The detached mount tree to attach in the container, made from the
 * daemon's mount at path in the caller's (the daemon's) namespace. A
 * clone shares the FUSE connection, so lunfsd serves it unchanged. */
static int detached_tree(const char *path)
{
	int tree =
		open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);

	return tree < 0 ? -errno : tree;
}

/* In the container's namespace, the child's half of attaching tree at
 * path: a destination under a mount that only the container has (its
 * /dev tmpfs) has no mount point yet, so it is made here, and it must
 * still resolve inside root (a real path). */
static int attach_here(int tree, const char *path, const char *root, bool block,
		       const struct lf_ctr_view *v)
{
	char real[PATH_MAX];
	size_t n = strcmp(root, "/") ? strlen(root) : 0;
	int r = 0;

	/* As the container's root: a mount that belongs to its user
	 * namespace (its /dev) refuses files owned by ids unmapped there
	 * (EOVERFLOW). */
	setfsgid(v->root_gid);
	setfsuid(v->root_uid);
	if (block) {
		int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
			      0600);
		if (fd < 0)
			r = -errno;
		else
			close(fd);
	} else if (mkdir(path, 0755) && errno != EEXIST) {
		r = -errno;
	}
	setfsuid(0);
	setfsgid(0);
	if (r)
		return r;
	if (!realpath(path, real) || strncmp(real, root, n) != 0 ||
	    (real[n] != '/' && real[n] != 0))
		return -EXDEV;
	if (move_mount(tree, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH))
		return -errno;
	return 0;
}

static int attach_job(void *arg)
{
	struct job *j = arg;
	char cpath[2 * PATH_MAX];
	int tree = j->tree, r = 0;

	if (tree < 0) {
		r = enter(j->v->d_ns);
		if (r)
			return r;
		tree = detached_tree(j->path);
		if (tree < 0)
			return tree;
	}
	r = enter(j->v->ct_ns);
	snprintf(cpath, sizeof(cpath), "%s%s", j->v->pivoted ? "" : j->v->root,
		 j->dst);
	if (!r)
		r = attach_here(tree, cpath, j->v->pivoted ? "/" : j->v->root,
				j->block, j->v);
	close(tree);
	return r;
}

static int detach_job(void *arg)
{
	struct job *j = arg;
	char cpath[2 * PATH_MAX];
	int r = enter(j->v->ct_ns);

	snprintf(cpath, sizeof(cpath), "%s%s", j->v->pivoted ? "" : j->v->root,
		 j->dst);
	return r ? r : umount2(cpath, MNT_DETACH) ? -errno : 0;
}

/* Undoes an attach (a clone or a direct bind): lunfsd cannot end a FUSE
 * connection that a live mount namespace still holds. */
void lf_ctr_detach(const struct lf_ctr_view *v, const char *dst)
{
	struct job j = {.v = v, .dst = dst, .tree = -1};
	int r = in_child(detach_job, &j);

	if (r)
		lf_warn("hook",
			"%s: detaching in the mount namespace of pid %d: %s",
			dst, (int)v->pid, strerror(-r));
}

/* The container starts only if dst, as it will see it after pivot_root,
 * is the daemon's mount at path. If the mount did not propagate there
 * (the rootfs on a private mount, the hook and lunfsd in different mount
 * namespaces, a destination under a mount only the container has, like
 * its /dev), the hook attaches a clone of it in the container's
 * namespace: open_tree() in the daemon's, move_mount() in the
 * container's. Returns 1 when it attached a clone, 0 when the mount was
 * visible already. */
int lf_ctr_make_visible(const struct lf_ctr_view *v, const char *path,
			const char *dst, bool block, char *err, size_t errlen)
{
	struct job j = {
		.v = v, .path = path, .dst = dst, .block = block, .tree = -1};
	struct stat mnt;
	int r;

	r = mount_identity(v, path, &mnt);
	if (r) {
		snprintf(err, errlen, "%s: in lunfsd's mount namespace: %s",
			 path, strerror(-r));
		return r;
	}
	if (visible_in(v, dst, &mnt))
		return 0;
	r = in_child(attach_job, &j);
	if (r) {
		snprintf(err, errlen,
			 "%s does not reach the container and attaching it in "
			 "the container's mount namespace failed: %s",
			 path, strerror(-r));
		return r;
	}
	if (!visible_in(v, dst, &mnt)) {
		lf_ctr_detach(v, dst);
		snprintf(err, errlen,
			 "%s is not what the container would see at %s even "
			 "after attaching it in its mount namespace",
			 path, dst);
		return -EXDEV;
	}
	lf_dbg("hook", "%s: attached in the mount namespace of pid %d", path,
	       (int)v->pid);
	return 1;
}

/* The direct path: lunfsd handed over a detached bind of the volume's
 * view (ids as on disk); the hook idmaps it and moves it onto dst in the
 * container's mount namespace. Nothing is mounted on the host, so
 * neither propagation nor lunfsd's namespace matters. The rule stays:
 * dst, as the container will see it, must then be this tree. */
int lf_ctr_attach_tree(const struct lf_ctr_view *v, int tree, int userns,
		       const char *dst, char *err, size_t errlen)
{
	struct job j = {.v = v, .dst = dst, .tree = tree};
	struct stat mnt;
	char e2[512];
	int r;

	if (fstat(tree, &mnt)) {
		r = -errno;
		snprintf(err, errlen, "the tree lunfsd handed over: %s",
			 strerror(errno));
		return r;
	}
	r = userns >= 0 ? lf_idbind_idmap(tree, userns, e2, sizeof(e2)) : 0;
	if (r) {
		snprintf(err, errlen,
			 "idmapping the volume for the container: %s", e2);
		return r;
	}
	r = in_child(attach_job, &j);
	if (r) {
		snprintf(err, errlen,
			 "the volume does not reach the container: attaching "
			 "it at %s in the container's mount namespace failed: "
			 "%s",
			 dst, strerror(-r));
		return r;
	}
	if (!visible_in(v, dst, &mnt)) {
		lf_ctr_detach(v, dst);
		snprintf(err, errlen,
			 "the volume is not what the container would see at %s "
			 "even after attaching it in its mount namespace",
			 dst);
		return -EXDEV;
	}
	lf_dbg("hook", "%s: attached directly in the mount namespace of pid %d",
	       dst, (int)v->pid);
	return 1;
}