/* fslocks.c — file locks through FUSE for the per-mount views: the FUSE
 * lock requests of every mount of a volume go to its one lock table
 * (locks.h), so that locks exclude across the mounts.
 *
 * A mount that is a shared view (idmapped binds) does not take these: the
 * kernel keeps the locks itself, for all the binds at once.
 *
 * The kernel releases a process's POSIX locks with the FLUSH of each
 * close (the lock owner is the process's file table) and flock locks with
 * the RELEASE of the last reference to the open file. A blocking request
 * (SETLKW, flock without LOCK_NB) is queued and answered when granted,
 * from whichever thread released the conflicting lock, so no FUSE worker
 * waits; a signal to the waiter (INTERRUPT) answers it EINTR, and the
 * waiter's own close drops it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/file.h>

#include "fuse/locks.h"
#include "fuse/mount_int.h"

static uint64_t to_disk(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? 2 : (uint64_t)ino;
}

static struct lf_mount *mnt(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void to_req(const struct flock *fl, struct lf_lock_req *r)
{
	r->type = fl->l_type;
	r->pid = fl->l_pid;
	r->start = fl->l_start < 0 ? 0 : (uint64_t)fl->l_start;
	r->end = fl->l_len <= 0 ? UINT64_MAX
				: r->start + (uint64_t)fl->l_len - 1;
}

static void op_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock)
{
	struct lf_mount *m = mnt(req);
	struct lf_lock_req r = {
		.kind = LF_LOCK_POSIX,
		.ino = to_disk(ino),
		.mount = m,
		.owner = fi->lock_owner,
	};
	struct flock out = {.l_whence = SEEK_SET};

	to_req(lock, &r);
	lf_locks_get(m->sv->locks, &r);
	out.l_type = r.type;
	if (r.type != F_UNLCK) {
		out.l_pid = r.pid;
		out.l_start = (off_t)r.start;
		out.l_len =
			r.end == UINT64_MAX ? 0 : (off_t)(r.end - r.start + 1);
	}
	fuse_reply_lock(req, &out);
}

static void granted(void *key, int err)
{
	fuse_reply_err(key, -err);
}

/* libfuse calls this when the kernel interrupts req (a signal to the
 * waiting process), holding req alive meanwhile. */
static void interrupted(fuse_req_t req, void *data)
{
	struct lf_mount *m = data;

	lf_locks_cancel(m->sv->locks, req);
}

static void set_lock(fuse_req_t req, const struct lf_lock_req *r, bool wait)
{
	struct lf_mount *m = mnt(req);
	int ret;

	if (wait) {
		/* Before queueing, while req surely lives: once queued, a
		 * grant on another thread may answer (and free) it. An
		 * interrupt between this check and the queueing is not
		 * seen; the process's close drops the waiter all the same. */
		fuse_req_interrupt_func(req, interrupted, m);
		if (fuse_req_interrupted(req)) {
			fuse_reply_err(req, EINTR);
			return;
		}
	}
	ret = lf_locks_set(m->sv->locks, r, wait ? req : NULL, granted);
	if (ret == 1)
		return; /* queued: granted() or interrupted() answers */
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

static void op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock, int sleep)
{
	struct lf_lock_req r = {
		.kind = LF_LOCK_POSIX,
		.ino = to_disk(ino),
		.mount = mnt(req),
		.owner = fi->lock_owner,
	};

	to_req(lock, &r);
	set_lock(req, &r, sleep && r.type != F_UNLCK);
}

static void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     int op)
{
	struct lf_lock_req r = {
		.kind = LF_LOCK_FLOCK,
		.ino = to_disk(ino),
		.mount = mnt(req),
		.owner = fi->lock_owner,
		.pid = fuse_req_ctx(req)->pid,
		.start = 0,
		.end = UINT64_MAX,
	};

	switch (op & (LOCK_SH | LOCK_EX | LOCK_UN)) {
	case LOCK_SH:
		r.type = F_RDLCK;
		break;
	case LOCK_EX:
		r.type = F_WRLCK;
		break;
	default:
		r.type = F_UNLCK;
		break;
	}
	set_lock(req, &r, !(op & LOCK_NB) && r.type != F_UNLCK);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);

	lf_locks_release(m->sv->locks, LF_LOCK_POSIX, to_disk(ino), m,
			 fi->lock_owner);
	fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);

	if (fi->flock_release)
		lf_locks_release(m->sv->locks, LF_LOCK_FLOCK, to_disk(ino), m,
				 fi->lock_owner);
	fuse_reply_err(req, 0);
}

void lf_fslocks_ops(struct fuse_lowlevel_ops *ops)
{
	ops->getlk = op_getlk;
	ops->setlk = op_setlk;
	ops->flock = op_flock;
	ops->flush = op_flush;
	ops->release = op_release;
}

static void drop_req(void *key)
{
	fuse_reply_none(key);
}

void lf_fslocks_drop_mount(struct lf_mount *m)
{
	if (m->sv && m->sv->locks)
		lf_locks_drop_mount(m->sv->locks, m, drop_req);
}
