/* fsops.h — POSIX operations on an open volume, by inode number.
 *
 * This is what fuse/ calls; it never sees libext2fs. Semantics follow ext4
 * on Linux, including its errors (ENOENT, EEXIST, ENOTEMPTY, ENOTDIR,
 * EISDIR, ENAMETOOLONG, ENOSPC, EMLINK, EXDEV, ELOOP, EINVAL, ENODATA,
 * ERANGE, EFBIG, EROFS on a read-only volume).
 *
 * Contract:
 *  - Inode numbers are ext2 inode numbers; the root is LF_ROOT_INO (2).
 *  - Ids are DISK ids; id mapping and permission checks are the caller's
 *    (the kernel checks with default_permissions). Nothing here checks
 *    permissions except sticky-directory and immutable rules ext4 applies.
 *  - Every call takes the volume lock itself; callers hold no lock. File
 *    data of lf_fs_read/lf_fs_write moves outside the lock, contiguous
 *    blocks merged into large device commands.
 *  - Names are looked up through an in-memory index per directory (built
 *    on first use, kept up to date by every change, bounded in memory),
 *    not by a linear scan per lookup.
 *  - Inode lifetime: lf_fs_iget()/lf_fs_iput() count users of an inode
 *    (FUSE lookup counts of every mount, open files). An inode unlinked to
 *    nlink 0 is freed when its last user drops, or at lf_vol_close().
 *  - Returns 0 (or a byte count) on success, -errno on failure.
 */
#ifndef LUNFS_FSOPS_H
#define LUNFS_FSOPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>

#include "fsimage/volume.h"

#define LF_ROOT_INO 2

struct lf_stat {
	uint64_t ino;
	uint32_t mode; /* S_IFMT | permission bits */
	uint32_t nlink;
	uint32_t uid, gid; /* DISK ids */
	uint64_t rdev;
	uint64_t size;
	uint64_t blocks; /* 512-byte units */
	struct timespec atime, mtime, ctime, btime;
	uint32_t generation;
};

/* lf_fs_setattr: which fields of struct lf_setattr to apply. */
enum {
	LF_SET_MODE = 1 << 0,
	LF_SET_UID = 1 << 1,
	LF_SET_GID = 1 << 2,
	LF_SET_SIZE = 1 << 3,
	LF_SET_ATIME = 1 << 4,
	LF_SET_MTIME = 1 << 5,
	LF_SET_ATIME_NOW = 1 << 6,
	LF_SET_MTIME_NOW = 1 << 7,
	LF_SET_CTIME = 1 << 8,
	/* Drop setuid, and setgid if group-executable, as a chown by a
	 * non-root user or a write by a non-owner must. */
	LF_SET_KILL_SUID = 1 << 9,
};

struct lf_setattr {
	uint32_t mode; /* permission bits only; type is kept */
	uint32_t uid, gid;
	uint64_t size;
	struct timespec atime, mtime, ctime;
};

/* Owner of a new inode, as DISK ids. */
struct lf_owner {
	uint32_t uid, gid;
	/* gid wins over a setgid parent's group (an fsGroup view presents
	 * every directory as setgid with that group). */
	bool gid_fixed;
	/* The caller's umask: it masks the new mode unless the parent has a
	 * default ACL, which then decides (as ext4 does). */
	uint32_t umask;
};

int lf_fs_getattr(struct lf_vol *v, uint64_t ino, struct lf_stat *st);
int lf_fs_lookup(struct lf_vol *v, uint64_t parent, const char *name,
		 struct lf_stat *st);
int lf_fs_setattr(struct lf_vol *v, uint64_t ino, unsigned what,
		  const struct lf_setattr *sa, struct lf_stat *st);

/* Create: regular files, fifos, sockets, char/block devices (by mode). New
 * directories inherit setgid and group from a setgid parent, as ext4. A
 * parent's default ACL becomes the new inode's access ACL (and a new
 * directory's default ACL), with the mode bits as posix_acl_create()
 * computes them (see fsimage/acl.h); symlinks take no ACL. */
int lf_fs_mknod(struct lf_vol *v, uint64_t parent, const char *name,
		uint32_t mode, uint64_t rdev, const struct lf_owner *o,
		struct lf_stat *st);
int lf_fs_mkdir(struct lf_vol *v, uint64_t parent, const char *name,
		uint32_t mode, const struct lf_owner *o, struct lf_stat *st);
/* Fast symlink (in the inode) when the target fits, else a data block. */
int lf_fs_symlink(struct lf_vol *v, uint64_t parent, const char *name,
		  const char *target, const struct lf_owner *o,
		  struct lf_stat *st);
int lf_fs_link(struct lf_vol *v, uint64_t ino, uint64_t newparent,
	       const char *newname, struct lf_stat *st);
/* On success *ino (if non-NULL) is the inode whose link was removed. */
int lf_fs_unlink(struct lf_vol *v, uint64_t parent, const char *name,
		 uint64_t *ino);
int lf_fs_rmdir(struct lf_vol *v, uint64_t parent, const char *name,
		uint64_t *ino);
/* flags: 0, RENAME_NOREPLACE or RENAME_EXCHANGE (linux/fs.h values).
 * On success *replaced (if non-NULL) is the inode that lost the name
 * newname (0 if none). */
int lf_fs_rename(struct lf_vol *v, uint64_t parent, const char *name,
		 uint64_t newparent, const char *newname, unsigned flags,
		 uint64_t *replaced);
/* Returns the target length; buf gets it NUL-terminated if it fits. */
int lf_fs_readlink(struct lf_vol *v, uint64_t ino, char *buf, size_t size);

/* Calls fn for each entry from position off ("." and ".." included);
 * next is the position after this entry. fn returns non-zero to stop
 * (e.g. the reply buffer is full). Positions stay valid across changes to
 * other entries of the directory. */
typedef int (*lf_fs_dirent_fn)(void *ctx, const char *name, size_t namelen,
			       uint64_t ino, uint32_t type /* S_IFMT */,
			       uint64_t next);
int lf_fs_readdir(struct lf_vol *v, uint64_t ino, uint64_t off,
		  lf_fs_dirent_fn fn, void *ctx);

int lf_fs_statfs(struct lf_vol *v, struct statvfs *st);

/* Check an inode can be opened with these open(2) flags (type checks,
 * EROFS for writes on a read-only volume); O_TRUNC truncates. */
int lf_fs_open(struct lf_vol *v, uint64_t ino, int flags);
/* Return bytes read (short only at EOF) or -errno. */
ssize_t lf_fs_read(struct lf_vol *v, uint64_t ino, void *buf, size_t size,
		   uint64_t off);
/* lf_fs_read() without waiting for the device: done(opaque, bytes or
 * -errno) runs exactly once, inline (nothing to read from the device, an
 * error, or a range the cache serves) or on the device's I/O thread. done
 * must not block nor call into the volume. buf stays valid until then and
 * may receive the whole last block of the file beyond its size (size is
 * rounded up to the block size; page-cache reads already are). */
typedef void (*lf_fs_read_done_fn)(void *opaque, ssize_t r);
void lf_fs_read_async(struct lf_vol *v, uint64_t ino, void *buf, size_t size,
		      uint64_t off, lf_fs_read_done_fn done, void *opaque);
/* Return bytes written or -errno; extends the size; updates mtime/ctime.
 * Data may still be on its way to the device (written behind: reads see
 * it at once); a device error on it is returned by the next fsync. */
ssize_t lf_fs_write(struct lf_vol *v, uint64_t ino, const void *buf,
		    size_t size, uint64_t off);
/* Data and the metadata needed to read it back are on the device and the
 * device has been told SYNCHRONIZE CACHE when this returns 0. */
int lf_fs_fsync(struct lf_vol *v, uint64_t ino, bool datasync);
/* mode: 0 or FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE|KEEP_SIZE,
 * FALLOC_FL_ZERO_RANGE; others -EOPNOTSUPP. */
int lf_fs_fallocate(struct lf_vol *v, uint64_t ino, int mode, uint64_t off,
		    uint64_t len);

/* Full names ("user.x", "security.selinux", "trusted.y",
 * "system.posix_acl_access"). getxattr/listxattr with size 0 return the
 * size needed; ERANGE if too small; ENODATA if absent. flags:
 * XATTR_CREATE / XATTR_REPLACE. */
ssize_t lf_fs_getxattr(struct lf_vol *v, uint64_t ino, const char *name,
		       void *buf, size_t size);
int lf_fs_setxattr(struct lf_vol *v, uint64_t ino, const char *name,
		   const void *value, size_t size, int flags);
ssize_t lf_fs_listxattr(struct lf_vol *v, uint64_t ino, char *buf, size_t size);
int lf_fs_removexattr(struct lf_vol *v, uint64_t ino, const char *name);

/* What the kernel does before a write, truncate or chown and leaves to the
 * filesystem under FUSE_HANDLE_KILLPRIV_V2: drop security.capability of a
 * non-directory and, if suidgid (the caller lacks CAP_FSETID), setuid, and
 * setgid when group-executable or when in_group (may be NULL) says the
 * caller is not in the file's group (a DISK gid). 1 if something was
 * dropped (ctime moved), 0 if there was nothing to drop. */
int lf_fs_killpriv(struct lf_vol *v, uint64_t ino, bool suidgid,
		   bool (*in_group)(void *opaque, uint32_t gid), void *opaque);

void lf_fs_iget(struct lf_vol *v, uint64_t ino);
void lf_fs_iput(struct lf_vol *v, uint64_t ino, uint64_t n);

#endif
