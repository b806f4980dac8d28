/* mount_int.h — what fuse_common.c, fsmount.c and blockmount.c share.
 * Not a public header: only the fuse/ sources include it. */
#ifndef LUNFS_MOUNT_INT_H
#define LUNFS_MOUNT_INT_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "fuse/mount.h"

#define LF_FUSE_IO_MAX	(1u << 20) /* max_read / max_write */
#define LF_FUSE_TIMEOUT 3600.0	   /* lunfs is the only writer */

/* Lookup counts the kernel holds on inodes of one mount, so that what it
 * never forgets can be dropped at unmount. Open addressing, linear
 * probing; key 0 is the empty slot (inode 0 does not exist). */
struct lf_icount {
	uint64_t *ino, *cnt;
	size_t cap, used;
};

enum lf_mount_kind { LF_MOUNT_FS, LF_MOUNT_BLOCK };

struct lf_mount {
	enum lf_mount_kind kind;
	char *path; /* canonical */
	char *desc; /* fsname=lunfs:<desc> */
	struct lf_mount_opts opts;
	struct fuse_session *se;
	pthread_t thread;
	bool thread_started;
	dev_t dev;	      /* st_dev of the mounted root, 0 if unknown */
	pthread_key_t bufkey; /* per-thread reusable I/O buffer */
	bool bufkey_ok;
	/* Set once by whichever ends the mount first: lf_mount_stop() or
	 * the loop ending by itself (then on_exit runs). */
	atomic_bool claimed;
	atomic_bool loop_done;

	/* LF_MOUNT_FS */
	struct lf_served *sv;
	struct lf_vol *vol;
	struct lf_mount *next; /* in sv->mounts, protected by sv->lock */
	pthread_mutex_t ilock; /* protects icount */
	struct lf_icount icount;

	/* LF_MOUNT_BLOCK */
	struct lf_bdev *bdev;
	uint32_t owner_uid, owner_gid;
	struct timespec mtime;
	/* Unaligned writes read-modify-write edge blocks: they take it for
	 * writing, aligned writes for reading, so no update is lost. */
	pthread_rwlock_t rmw;
};

/* fuse_common.c */
struct lf_mount *lf_mount_alloc(enum lf_mount_kind kind,
				const struct lf_mount_opts *o);
int lf_mount_start(struct lf_mount *m, const char *path, bool want_dir,
		   const struct fuse_lowlevel_ops *ops, size_t opsize,
		   char *err, size_t errlen);
void lf_mount_free(struct lf_mount *m);
void *lf_mount_buf(struct lf_mount *m, size_t size);
void lf_mount_init_conn(struct fuse_conn_info *conn, bool atomic_trunc);

/* fsmount.c */
void lf_served_unlink_mount(struct lf_served *sv, struct lf_mount *m);
void lf_mount_drop_counts(struct lf_mount *m);

#endif
