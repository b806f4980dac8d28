/* pr.h — SCSI-3 persistent reservations: one writer per LUN across nodes.
 *
 * A read-write attach holds a Write Exclusive reservation (type 1, LU
 * scope) under a key derived from the session's initiator name, so every
 * daemon that logs in with that name uses the same key. Other initiators
 * still read (read-only attaches stay allowed); their writes get
 * RESERVATION CONFLICT from the target.
 *
 * lf_pr_acquire():
 *  - no reservation: REGISTER AND IGNORE EXISTING KEY, RESERVE.
 *  - held under our own key: a previous lunfsd of this node (killed,
 *    restarted) registered it on an I_T nexus that no longer exists (tgtd
 *    keys registrations by session, and a new login is a new session):
 *    register this nexus with the same key and PREEMPT our own key, which
 *    moves the reservation here and drops the dead nexus's registration.
 *  - held under another key: -EBUSY, holder->key set; with `preempt`
 *    (takeover, after the caller proved the holder dead), REGISTER and
 *    PREEMPT that key: the holder's registration is removed and its
 *    writes fail from then on.
 *  - a target without PR (INVALID COMMAND OPERATION CODE): -EOPNOTSUPP,
 *    nothing done; the caller goes on with MMP alone.
 * lf_pr_release(): RELEASE, then unregister (REGISTER with key 0).
 *
 * Thread model: any thread; each call waits for its commands (they run on
 * the session's I/O thread). Errors: 0 or -errno, one line in err.
 */
#ifndef LUNFS_PR_H
#define LUNFS_PR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iscsi/bdev.h"

#define LF_PR_TYPE_WRITE_EXCLUSIVE 1

struct lf_pr_state {
	uint32_t generation;
	bool reserved;
	uint64_t holder; /* key of the reservation holder, if reserved */
	int type;
	int nkeys; /* registered keys (first 16 kept) */
	uint64_t keys[16];
};

/* Stable, nonzero key of an initiator name (FNV-1a, 64 bits). */
uint64_t lf_pr_key(const char *initiator);

/* READ KEYS + READ RESERVATION. */
int lf_pr_read(struct lf_bdev *b, struct lf_pr_state *st);

int lf_pr_acquire(struct lf_bdev *b, uint64_t key, bool preempt,
		  struct lf_pr_state *holder, char *err, size_t errlen);
int lf_pr_release(struct lf_bdev *b, uint64_t key);

/* PREEMPT `victim` with `key` (registering `key` first). For tests and
 * lf_pr_acquire(). */
int lf_pr_preempt(struct lf_bdev *b, uint64_t key, uint64_t victim);

#endif
