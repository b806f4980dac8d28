/* test_locks.c — the per-volume lock table (fuse/locks.h): byte-range
 * POSIX semantics against a per-byte model, waiters, cancel, release on
 * close, and a mount's teardown. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>

#include "fuse/locks.h"
#include "tests/unit/check.h"

#define NBYTES	64
#define NOWNERS 3

/* Owners: (mount, owner) pairs; 0 and 1 share a mount, 2 is another. */
static const int mounts[NOWNERS] = {1, 1, 2};

static struct lf_lock_req req(int who, short type, uint64_t start, uint64_t end)
{
	return (struct lf_lock_req){
		.kind = LF_LOCK_POSIX,
		.ino = 12,
		.mount = &mounts[who == 2 ? 2 : 0],
		.owner = (uint64_t)who,
		.pid = 100 + who,
		.type = type,
		.start = start,
		.end = end,
	};
}

/* model[owner][byte]: F_UNLCK, F_RDLCK or F_WRLCK. */
static short model[NOWNERS][NBYTES];

static bool model_conflicts(int who, short type, int s, int e)
{
	for (int o = 0; o < NOWNERS; o++)
		for (int b = s; o != who && b <= e; b++)
			if (model[o][b] != F_UNLCK &&
			    (model[o][b] == F_WRLCK || type == F_WRLCK))
				return true;
	return false;
}

static void test_model(void)
{
	struct lf_locks *t = lf_locks_new();
	unsigned seed = 18;

	for (int o = 0; o < NOWNERS; o++) /* F_RDLCK is 0 */
		for (int b = 0; b < NBYTES; b++)
			model[o][b] = F_UNLCK;

	for (int step = 0; step < 20000; step++) {
		int who = rand_r(&seed) % NOWNERS;
		int s = rand_r(&seed) % NBYTES;
		int e = s + rand_r(&seed) % (NBYTES - s);
		short types[] = {F_RDLCK, F_WRLCK, F_UNLCK};
		short type = types[rand_r(&seed) % 3];
		struct lf_lock_req r = req(who, type, s, e);

		if (rand_r(&seed) % 4 == 0 && type != F_UNLCK) {
			bool want = model_conflicts(who, type, s, e);

			lf_locks_get(t, &r);
			CHECK_EQ(r.type != F_UNLCK, want);
			if (r.type != F_UNLCK) {
				/* What it names is a real conflict. */
				int o = r.pid - 100;

				CHECK(o != who && o >= 0 && o < NOWNERS);
				CHECK(r.start <= (uint64_t)e &&
				      r.end >= (uint64_t)s);
			}
			continue;
		}
		if (type != F_UNLCK && model_conflicts(who, type, s, e)) {
			CHECK_EQ(lf_locks_set(t, &r, NULL, NULL), -EAGAIN);
			continue;
		}
		CHECK_EQ(lf_locks_set(t, &r, NULL, NULL), 0);
		for (int b = s; b <= e; b++)
			model[who][b] = type;
	}
	for (int o = 0; o < NOWNERS; o++) {
		lf_locks_release(t, LF_LOCK_POSIX, 12, req(o, 0, 0, 0).mount,
				 (uint64_t)o);
		for (int b = 0; b < NBYTES; b++)
			model[o][b] = F_UNLCK;
	}
	/* All released: a write lock over everything is free for anyone. */
	{
		struct lf_lock_req r = req(2, F_WRLCK, 0, UINT64_MAX);

		CHECK_EQ(lf_locks_set(t, &r, NULL, NULL), 0);
	}
	lf_locks_free(t);
}

static int done_calls, done_err[8];
static void *done_key[8];

static void done(void *key, int err)
{
	if (done_calls < 8) {
		done_key[done_calls] = key;
		done_err[done_calls] = err;
	}
	done_calls++;
}

static int dropped_calls;

static void dropped(void *key)
{
	(void)key;
	dropped_calls++;
}

static void test_waiters(void)
{
	struct lf_locks *t = lf_locks_new();
	struct lf_lock_req w0 = req(0, F_WRLCK, 0, 9);
	struct lf_lock_req w2 = req(2, F_WRLCK, 5, 5);
	struct lf_lock_req r1 = req(1, F_RDLCK, 0, 0);
	int k1, k2, k3;

	done_calls = 0;
	CHECK_EQ(lf_locks_set(t, &w0, NULL, NULL), 0);
	CHECK_EQ(lf_locks_set(t, &w2, &k1, done), 1); /* queued */
	CHECK_EQ(lf_locks_set(t, &r1, &k2, done), 1);
	CHECK_EQ(done_calls, 0);
	/* Unlocking a range neither waits for wakes neither. */
	w0.type = F_UNLCK;
	w0.start = w0.end = 9;
	CHECK_EQ(lf_locks_set(t, &w0, NULL, NULL), 0);
	CHECK_EQ(done_calls, 0);
	/* Downgrading to a read lock lets the reader in, not the writer. */
	w0 = req(0, F_RDLCK, 0, 8);
	CHECK_EQ(lf_locks_set(t, &w0, NULL, NULL), 0);
	CHECK_EQ(done_calls, 1);
	CHECK(done_key[0] == &k2 && done_err[0] == 0);
	/* Cancelled: answered EINTR once; a second cancel finds nothing. */
	lf_locks_cancel(t, &k1);
	lf_locks_cancel(t, &k1);
	CHECK_EQ(done_calls, 2);
	CHECK(done_key[1] == &k1 && done_err[1] == -EINTR);
	/* A waiter of an owner that closes goes with the close. */
	CHECK_EQ(lf_locks_set(t, &w2, &k3, done), 1);
	lf_locks_release(t, LF_LOCK_POSIX, 12, w2.mount, w2.owner);
	CHECK_EQ(done_calls, 3);
	CHECK(done_key[2] == &k3 && done_err[2] == -EINTR);
	/* Owner 1's read lock and owner 0's still hold against mount 2. */
	CHECK_EQ(lf_locks_set(t, &w2, NULL, NULL), -EAGAIN);
	/* Mount 1 goes: its locks go, and mount 2's waiter is granted. */
	CHECK_EQ(lf_locks_set(t, &w2, &k1, done), 1);
	lf_locks_drop_mount(t, w0.mount, dropped);
	CHECK_EQ(done_calls, 4);
	CHECK(done_key[3] == &k1 && done_err[3] == 0);
	/* Mount 2's own waiter is dropped without an answer. */
	r1 = req(0, F_WRLCK, 5, 5);
	CHECK_EQ(lf_locks_set(t, &r1, &k2, done), 1);
	lf_locks_drop_mount(t, r1.mount, dropped);
	CHECK_EQ(dropped_calls, 1);
	CHECK_EQ(done_calls, 4);
	lf_locks_drop_mount(t, w2.mount, dropped);
	lf_locks_free(t);
}

static void test_flock_apart(void)
{
	struct lf_locks *t = lf_locks_new();
	struct lf_lock_req p = req(0, F_WRLCK, 0, UINT64_MAX);
	struct lf_lock_req f = req(2, F_WRLCK, 0, UINT64_MAX);
	struct lf_lock_req f2 = req(1, F_RDLCK, 0, UINT64_MAX);

	f.kind = f2.kind = LF_LOCK_FLOCK;
	CHECK_EQ(lf_locks_set(t, &p, NULL, NULL), 0);
	/* POSIX and flock locks never conflict, as on Linux. */
	CHECK_EQ(lf_locks_set(t, &f, NULL, NULL), 0);
	CHECK_EQ(lf_locks_set(t, &f2, NULL, NULL), -EAGAIN);
	/* Another inode is another file. */
	f2.ino = 13;
	CHECK_EQ(lf_locks_set(t, &f2, NULL, NULL), 0);
	/* Converting one's own flock: no conflict with itself. */
	f.type = F_RDLCK;
	CHECK_EQ(lf_locks_set(t, &f, NULL, NULL), 0);
	f2.ino = 12;
	CHECK_EQ(lf_locks_set(t, &f2, NULL, NULL), 0);
	lf_locks_free(t);
}

int main(void)
{
	test_model();
	test_waiters();
	test_flock_apart();
	printf("%d passed, %d failed\n", check_passed, check_failed);
	return check_failed ? 1 : 0;
}
