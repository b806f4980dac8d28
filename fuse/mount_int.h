/* mount_int.h — what fuse_common.c, fsmount.c and blockmount.c share.
 * Not a public header: only the fuse/ sources include it. */
#ifndef LUNFS_MOUNT_INT_H
#define LUNFS_MOUNT_INT_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "fuse/mount.h"

#define LF_FUSE_IO_MAX	(1u << 20) /* max_read / max_write */
#define LF_FUSE_TIMEOUT 3600.0	   /* lunfs is the only writer */
/* Several max_read requests in flight for one sequential reader. */
#define LF_FUSE_READAHEAD_KB   "4096"
#define LF_FUSE_MAX_BACKGROUND 64

/* Lookup counts the kernel holds on inodes of one mount, so that what it
 * never forgets can be dropped at unmount. Open addressing, linear
 * probing; key 0 is the empty slot (inode 0 does not exist). */
struct lf_icount {
	uint64_t *ino, *cnt;
	size_t cap, used;
};

/* LF_MOUNT_BIND: an idmapped bind of a view (view.c), no FUSE session
 * of its own. */
enum lf_mount_kind { LF_MOUNT_FS, LF_MOUNT_BLOCK, LF_MOUNT_BIND };

/* view.c: one FUSE mount of a filesystem volume, with identity maps and
 * FUSE_ALLOW_IDMAP, at a private directory; each mount asked for becomes
 * an idmapped bind of it. One per (fsGroup, read-only) of a volume. */
struct lf_view {
	struct lf_view *next; /* in sv->views, protected by sv->vlock */
	struct lf_served *sv;
	int64_t fsgroup; /* DISK gid, -1 = none */
	bool read_only;
	struct lf_mount *fuse; /* the FUSE mount at dir */
	char *dir;
	int refs; /* binds, and a notifier at work; vlock */
	/* Via bnext; changed under sv->vlock and mlock, read under either:
	 * handlers take only mlock (see lf_view_caller). */
	struct lf_mount *binds;
	pthread_mutex_t mlock;
};

/* One cache invalidation for the other mounts of a group. */
struct lf_inval {
	fuse_ino_t ino;	  /* inode, or the directory holding name */
	off_t off, len;	  /* data range (len 0 = to the end); off < 0: only
			   * attributes */
	const char *name; /* non-NULL: the entry name in directory ino */
};

/* A modifying request in flight on one mount, with the inodes whose
 * kernel locks (directory i_rwsem, page locks) that mount's kernel holds
 * until we reply. Notifying a mount on one of those inodes could wait for
 * that request, so such a notification is deferred to the worker instead
 * (see lf_op_notify). */
struct lf_op {
	struct lf_op *next;
	struct lf_mount *m;
	fuse_ino_t keys[2]; /* 0 = unused */
};

/*
 * The mounts of one volume (filesystem) or one bdev (block): one group
 * whose members invalidate each other's kernel caches.
 * Locks, in order: lock, then a member's ilock. No lock is held while
 * calling into fsops, the bdev or the kernel.
 */
struct lf_served {
	struct lf_vol *vol;   /* filesystem groups */
	struct lf_bdev *bdev; /* block groups (the caller's reference) */
	pthread_mutex_t lock;
	pthread_cond_t wake;	 /* deferred queue non-empty, or quit */
	pthread_cond_t idle;	 /* pins or busy changed */
	struct lf_mount *mounts; /* protected by lock */
	int nmounts;		 /* protected by lock */
	struct lf_op *ops;	 /* protected by lock */
	struct lf_inval_item *head, **tail; /* deferred; protected by lock */
	/* The mount the worker is notifying right now, with lock dropped:
	 * unlinking that mount waits until it is done. */
	struct lf_mount *busy; /* protected by lock */
	bool quit;	       /* protected by lock */
	pthread_t worker;
	/* Views (view.c) of a filesystem group. Taken before lock, never
	 * while a FUSE handler runs (only mount and unmount take it). */
	pthread_mutex_t vlock;
	struct lf_view *views; /* protected by vlock */
	bool no_views;	       /* idmapped binds failed here; vlock */
	/* Filesystem groups: the locks of the per-mount views (fslocks.c);
	 * thread-safe itself. */
	struct lf_locks *locks;
	/* Block groups: unaligned writes read-modify-write edge blocks and
	 * take it for writing, aligned writes for reading, so no update is
	 * lost across the group's mounts. */
	pthread_rwlock_t rmw;
};

/* A reply buffer that outlives its handler: asynchronous reads reply from
 * the device's I/O thread. */
struct lf_iobuf {
	struct lf_iobuf *next; /* on a spare list */
	struct lf_mount *m;
	fuse_req_t req;
	size_t cap;
	void *data;	  /* cap bytes, page aligned */
	struct iovec iov; /* for lf_bdev_submit(), which keeps it */
	size_t skip, len; /* the reply: len bytes from data + skip */
};

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
	/* lf_iobufs handed out: their replies are still to be sent, and the
	 * loop's end waits for none, as they use the session. Protected by
	 * iolock. The buffers come from pool (opts.pool or own_pool). */
	pthread_mutex_t iolock;
	pthread_cond_t iodone;
	unsigned inflight;
	struct lf_bufpool *pool, *own_pool;
	/* Set once by whichever ends the mount first: lf_mount_stop() or
	 * the loop ending by itself (then on_exit runs). */
	atomic_bool claimed;
	atomic_bool loop_done;

	/* devio.c: FUSE_HANDLE_KILLPRIV_V2 negotiation. The init fields are
	 * touched only while INIT is handled, before any other request;
	 * init_pending is also read by every write to the device, including
	 * other mounts' invalidations of this one, hence atomic (it orders
	 * the other fields for the thread that answers INIT). */
	bool want_killpriv_v2; /* filesystem mounts */
	atomic_bool init_pending;
	bool kernel_killpriv_v2;
	uint64_t init_unique;
	atomic_bool killpriv_v2; /* the kernel leaves killing privs to us */
	/* FUSE over io_uring (uring.c): offered by the kernel in INIT, and
	 * the rings, set once while INIT is answered. */
	bool kernel_uring;
	/* FUSE_ALLOW_IDMAP: offered by the kernel in INIT; granted in the
	 * reply when opts.allow_idmap (set once while INIT is answered). */
	bool kernel_idmap;
	atomic_bool idmap;
	_Atomic(struct lf_uring *) uring;
	/* Requests received, by opcode; [0] counts opcodes beyond the
	 * table (opcode 0 does not exist). */
	_Atomic uint64_t nreq[LF_MOUNT_REQUEST_KINDS];

	struct lf_served *sv;
	struct lf_mount *next; /* in sv->mounts, protected by sv->lock */
	/* Handlers of other mounts notifying this one with sv->lock
	 * dropped: unlinking waits for 0. Protected by sv->lock. */
	int pins;

	/* LF_MOUNT_FS */
	struct lf_vol *vol;
	pthread_mutex_t ilock; /* protects icount */
	struct lf_icount icount;

	/* LF_MOUNT_BIND: the view it shows (and for LF_MOUNT_FS, the view
	 * it is, if any); the other fields protected by
	 * view->sv->vlock. holds: notifiers using it; stopped: it was
	 * stopped while held, the last holder frees it. */
	struct lf_view *view;
	struct lf_mount *bnext;
	/* A detached bind (opts.detached): its tree until taken, else -1. */
	int tree;
	bool direct;
	int holds;
	bool stopped;

	/* LF_MOUNT_BLOCK */
	struct lf_bdev *bdev;
	uint32_t owner_uid, owner_gid;
	struct timespec mtime;
};

/* fuse_common.c */
struct lf_mount *lf_mount_alloc(enum lf_mount_kind kind,
				const struct lf_mount_opts *o);
int lf_mount_start(struct lf_mount *m, const char *path, bool want_dir,
		   const struct fuse_lowlevel_ops *ops, size_t opsize,
		   char *err, size_t errlen);
void lf_mount_free(struct lf_mount *m);
void *lf_mount_buf(struct lf_mount *m, size_t size);
/* A buffer of at least size bytes for one request's reply; NULL on
 * ENOMEM. lf_iobuf_put() after the reply, from any thread. */
struct lf_iobuf *lf_iobuf_get(struct lf_mount *m, size_t size);
void lf_iobuf_put(struct lf_iobuf *b);
void lf_mount_init_conn(struct fuse_conn_info *conn, bool atomic_trunc);

/* Groups (fuse_common.c). A modifying handler calls lf_op_begin() before
 * it changes anything, lf_op_notify() after, then replies, then
 * lf_op_end(): the other mounts' caches are invalidated before the reply,
 * so the change is visible through them at once. */
struct lf_served *lf_served_alloc(void);
void lf_served_link_mount(struct lf_served *sv, struct lf_mount *m);
void lf_served_unlink_mount(struct lf_served *sv, struct lf_mount *m);
void lf_op_begin(struct lf_mount *m, struct lf_op *op, fuse_ino_t k1,
		 fuse_ino_t k2);
void lf_op_notify(struct lf_mount *m, const struct lf_op *op,
		  const struct lf_inval *iv, int n);
void lf_op_end(struct lf_mount *m, struct lf_op *op);

/* devio.c. lf_devio_install() after fuse_session_mount(); then, in a
 * handler of WRITE or OPEN on a mount with killpriv_v2 set,
 * lf_devio_kill_suidgid() tells whether the kernel asked to drop setuid
 * and setgid (FUSE_WRITE_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID), which
 * libfuse 3.14 does not pass on. */
int lf_devio_install(struct lf_mount *m);
bool lf_devio_kill_suidgid(void);
/* For uring.c: what devio.c notes of each request it reads (counts, the
 * kill flags), for a request of n bytes at buf about to be handled on
 * this thread. */
void lf_devio_note(struct lf_mount *m, const void *buf, size_t n);

/* fuse_common.c: cut m's FUSE connection (its requests fail with
 * ENOTCONN), for when it cannot be served. */
void lf_mount_abort(struct lf_mount *m);

/* fsmount.c */
void lf_mount_drop_counts(struct lf_mount *m);
/* A FUSE mount of sv's volume at path (with o's maps), outside views. */
int lf_mount_fs_fuse(struct lf_served *sv, const char *path,
		     const struct lf_mount_opts *o, struct lf_mount **out,
		     char *err, size_t errlen);

/* fslocks.c: the lock ops (and flush, release) of a mount whose locks
 * the volume's lock table keeps; lf_fslocks_drop_mount() once its loop
 * has ended, before its session goes. */
void lf_fslocks_ops(struct fuse_lowlevel_ops *ops);
void lf_fslocks_drop_mount(struct lf_mount *m);

/* view.c. lf_view_bind() returns -EOPNOTSUPP (with the reason in err)
 * where idmapped binds cannot be made, for the caller to fall back to a
 * FUSE mount of its own; lf_view_unbind() is lf_mount_stop() of a bind. */
int lf_view_bind(struct lf_served *sv, const char *path,
		 const struct lf_mount_opts *o, struct lf_mount **out,
		 char *err, size_t errlen);
void lf_view_unbind(struct lf_mount *m);
/* For a handler of view m, which the kernel tells no caller ids: whether
 * process pid, through one of the view's binds, is root (root_only) or a
 * member of the DISK group gid, read from /proc and mapped through each
 * bind's maps. Any bind will do: a process may use any, and the answer
 * only decides whether a setgid bit without group execute stays. */
bool lf_view_caller(struct lf_mount *m, pid_t pid, bool root_only,
		    uint32_t gid);

/* fsioctl.c: the filesystem mount's ioctl op (FITRIM). */
void lf_fs_op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		    struct fuse_file_info *fi, unsigned flags,
		    const void *in_buf, size_t in_bufsz, size_t out_bufsz);

#endif
