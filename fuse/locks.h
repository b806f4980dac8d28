/* locks.h — a volume's file locks, for mounts that do not share a kernel
 * (the per-mount FUSE views, "fuse-map"): POSIX record locks (fcntl,
 * lockf) and flock locks, kept here so that they exclude across mounts
 * as they would on one kernel filesystem.
 *
 * Owners are (mount, lock owner) pairs: the kernel's lock owner ids are
 * unique within one FUSE connection only. POSIX and flock locks never
 * conflict with each other, as on Linux. A wait is a waiter the caller
 * registers with a key (its FUSE request): the table calls done(key, 0)
 * when the lock is granted, or done(key, -EINTR) when lf_locks_cancel()
 * finds it still waiting; exactly once, never with the table's lock held.
 * No deadlock detection (EDEADLK is never returned).
 *
 * Thread-safe: one mutex per table, never held while calling done.
 */
#ifndef LUNFS_LOCKS_H
#define LUNFS_LOCKS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct lf_locks;

enum lf_lock_kind { LF_LOCK_POSIX, LF_LOCK_FLOCK };

struct lf_lock_req {
	enum lf_lock_kind kind;
	uint64_t ino;
	const void *mount;
	uint64_t owner;
	pid_t pid;
	short type;	     /* F_RDLCK, F_WRLCK, F_UNLCK */
	uint64_t start, end; /* inclusive; end UINT64_MAX: to EOF and on */
};

typedef void (*lf_lock_done_fn)(void *key, int err);

struct lf_locks *lf_locks_new(void);
/* Every waiter must have been cancelled or dropped. */
void lf_locks_free(struct lf_locks *t);

/* F_GETLK: a conflicting lock into *r (type, pid, range), or type
 * F_UNLCK if none. */
void lf_locks_get(struct lf_locks *t, struct lf_lock_req *r);
/* Set or clear. 0 granted (or cleared); -EAGAIN on conflict without
 * wait; with wait (key non-NULL), 1: queued, done(key, ...) follows. */
int lf_locks_set(struct lf_locks *t, const struct lf_lock_req *r, void *key,
		 lf_lock_done_fn done);
/* A waiter still queued under key ends with done(key, -EINTR). */
void lf_locks_cancel(struct lf_locks *t, void *key);
/* Drop every lock of (mount, owner) of this kind on ino (close); that
 * owner's waiters there end with done(key, -EINTR). */
void lf_locks_release(struct lf_locks *t, enum lf_lock_kind kind, uint64_t ino,
		      const void *mount, uint64_t owner);
/* A mount goes away: its locks are dropped and its waiters removed
 * without done (their requests die with the session); each removed
 * waiter's key goes to dropped(key). */
void lf_locks_drop_mount(struct lf_locks *t, const void *mount,
			 void (*dropped)(void *key));

#endif
