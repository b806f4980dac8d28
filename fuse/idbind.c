/* idbind.c — user namespaces made for an id map, and idmapped bind mounts
 * of a mounted tree (open_tree + mount_setattr + move_mount). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuse/idbind.h"

/* "DISK HOST COUNT" lines: the namespace's inside is the tree's ids. */
static int format_map(const struct lf_idmap *m, char *buf, size_t len)
{
	size_t at = 0;

	if (m->n == 0)
		return snprintf(buf, len, "0 0 4294967295\n") < (int)len
			       ? 0
			       : -ENOSPC;
	for (int i = 0; i < m->n; i++) {
		int k = snprintf(buf + at, len - at, "%u %u %u\n", m->r[i].disk,
				 m->r[i].host, m->r[i].count);

		if (k < 0 || (size_t)k >= len - at)
			return -ENOSPC;
		at += (size_t)k;
	}
	return 0;
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;
	int ret = 0;

	if (fd < 0)
		return -errno;
	/* The kernel takes a map in one write only. */
	n = write(fd, text, strlen(text));
	if (n < 0)
		ret = -errno;
	else if ((size_t)n != strlen(text))
		ret = -EIO;
	close(fd);
	return ret;
}

int lf_userns_new(const struct lf_idmap *uidmap, const struct lf_idmap *gidmap,
		  char *err, size_t errlen)
{
	char umap[LF_IDMAP_MAX * 40], gmap[LF_IDMAP_MAX * 40], p[64];
	int ready[2] = {-1, -1}, hold[2] = {-1, -1};
	int ret, fd = -1, status;
	const char *step = "";
	pid_t pid;
	char c;

	if (format_map(uidmap, umap, sizeof(umap)) < 0 ||
	    format_map(gidmap, gmap, sizeof(gmap)) < 0) {
		snprintf(err, errlen, "id map too long for a user namespace");
		return -EINVAL;
	}
	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(hold, O_CLOEXEC) < 0) {
		ret = -errno;
		step = "pipe";
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		step = "fork";
		goto out;
	}
	if (pid == 0) {
		/* Async-signal-safe only: the parent has threads. The
		 * parent's ends closed, or the read below never ends. */
		char ok;

		close(hold[1]);
		close(ready[0]);
		ok = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';

		if (write(ready[1], &ok, 1) != 1)
			_exit(1);
		/* Until the parent has the namespace open. */
		while (read(hold[0], &ok, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	close(ready[1]);
	ready[1] = -1;
	close(hold[0]);
	hold[0] = -1;
	if (read(ready[0], &c, 1) != 1 || c != 'y') {
		ret = -EPERM;
		step = "unshare(CLONE_NEWUSER)";
		goto reap;
	}
	snprintf(p, sizeof(p), "/proc/%d/uid_map", (int)pid);
	ret = write_file(p, umap);
	step = "uid_map";
	if (ret == 0) {
		snprintf(p, sizeof(p), "/proc/%d/gid_map", (int)pid);
		ret = write_file(p, gmap);
		step = "gid_map";
	}
	if (ret == 0) {
		snprintf(p, sizeof(p), "/proc/%d/ns/user", (int)pid);
		fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			step = "open ns/user";
		}
	}
reap:
	close(hold[1]);
	hold[1] = -1;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
out:
	for (int i = 0; i < 2; i++) {
		if (ready[i] >= 0)
			close(ready[i]);
		if (hold[i] >= 0)
			close(hold[i]);
	}
	if (ret < 0) {
		snprintf(err, errlen, "cannot make a user namespace: %s: %s",
			 step, strerror(-ret));
		return ret;
	}
	return fd;
}

int lf_idbind_tree(const char *src, int userns_fd, bool read_only, char *err,
		   size_t errlen)
{
	struct mount_attr attr = {0};
	int fd, ret;

	fd = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: open_tree: %s", src, strerror(-ret));
		return ret;
	}
	if (userns_fd >= 0) {
		attr.attr_set |= MOUNT_ATTR_IDMAP;
		attr.userns_fd = (unsigned)userns_fd;
	}
	if (read_only)
		attr.attr_set |= MOUNT_ATTR_RDONLY;
	if (attr.attr_set &&
	    mount_setattr(fd, "", AT_EMPTY_PATH, &attr, sizeof(attr)) < 0) {
		ret = -errno;
		/* EINVAL: the filesystem does not allow idmapped mounts (a
		 * FUSE server without FUSE_ALLOW_IDMAP, a kernel < 6.12). */
		snprintf(err, errlen, "%s: mount_setattr(%s): %s", src,
			 userns_fd >= 0 ? "MOUNT_ATTR_IDMAP" : "RDONLY",
			 strerror(-ret));
		close(fd);
		return ret;
	}
	return fd;
}

int lf_idbind_idmap(int tree_fd, int userns_fd, char *err, size_t errlen)
{
	struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP,
				  .userns_fd = (unsigned)userns_fd};

	if (mount_setattr(tree_fd, "", AT_EMPTY_PATH, &attr, sizeof(attr)) <
	    0) {
		int ret = -errno;

		snprintf(err, errlen, "mount_setattr(MOUNT_ATTR_IDMAP): %s",
			 strerror(-ret));
		return ret;
	}
	return 0;
}

int lf_idbind_attach(int tree_fd, const char *dst, char *err, size_t errlen)
{
	if (move_mount(tree_fd, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) <
	    0) {
		int ret = -errno;

		snprintf(err, errlen, "%s: move_mount: %s", dst,
			 strerror(-ret));
		return ret;
	}
	return 0;
}
