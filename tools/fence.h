/* fence.h — one writer per LUN across nodes: what lunfsd does around a
 * read-write attach, with persistent reservations (iscsi/pr.h) below and
 * ext4 MMP (fsimage/mmp.h) beside.
 *
 * lf_fence_acquire() runs before anything is written to the LUN:
 *  - PR reservation under the key of the session's initiator name;
 *    held by another key → -EBUSY with one line naming the holder (its
 *    key and, from the MMP block, its node) and what to do, unless
 *    `takeover`: then the MMP block must stay unchanged for the time ext4
 *    waits (the holder is dead) before the holder's key is preempted;
 *    while it changes → -EBUSY. A volume without MMP (block volumes,
 *    ext4 without the feature) has no proof to wait for: the takeover is
 *    taken on the operator's word, and the log says so.
 *  - a target without PR → f->no_pr, a warning in the log, and MMP alone
 *    fences (the filesystem's open claims it).
 * The caller then opens the volume with f's MMP hints (lf_vol_opts).
 * lf_fence_release() at the last release: RELEASE + unregister, unless
 * the bdev was fenced (the key is no longer registered).
 *
 * Thread model: the caller's thread; calls wait for the target (and, for
 * a takeover, for the MMP wait). Errors: 0 or -errno, one line in err.
 */
#ifndef LUNFS_FENCE_H
#define LUNFS_FENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iscsi/bdev.h"

struct lf_fence {
	uint64_t key;
	bool pr;    /* we hold the PR reservation */
	bool no_pr; /* the target does not implement PR */
	bool mmp_stale_known;
	uint32_t mmp_stale_seq;
};

int lf_fence_acquire(struct lf_bdev *b, const char *initiator, bool takeover,
		     struct lf_fence *f, char *err, size_t errlen);
void lf_fence_release(struct lf_bdev *b, struct lf_fence *f);

/* For a read-only attach: true when another node holds the LUN (a PR
 * reservation, or an MMP block in use), so that its in-use state is
 * expected rather than a crash left behind. holder gets who, for the log. */
bool lf_fence_held_elsewhere(struct lf_bdev *b, char *holder, size_t len);

/* "pr+mmp", "pr", "mmp-only" or "none", for status. */
const char *lf_fence_mode(const struct lf_fence *f, bool mmp);

#endif
