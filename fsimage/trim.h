/* trim.h — giving free space back to a thin LUN: FITRIM (fstrim) and
 * online discard of freed extents (ext4's -o discard).
 *
 * Both send UNMAP for blocks that are free in the block bitmap, and keep
 * two promises:
 *  - Never unmap live data. A block is unmapped only while it is free on
 *    stable storage too: FITRIM makes the volume durable (lf_vol_sync)
 *    before each step, and discard unmaps what was freed only after the
 *    next durable point (lf_vol_after_durable(), volume_int.h). While its
 *    UNMAP is in flight a block is marked in use in the in-memory bitmap,
 *    so the allocator cannot hand it out; the marks are hidden whenever
 *    the bitmaps are written (lf_trim_bitmaps_begin/end).
 *  - Never hold the volume lock across device commands: the lock is held
 *    to pick a bounded batch from the bitmap (at most LF_TRIM_STEP_BLOCKS
 *    of the volume, LF_TRIM_BATCH extents), dropped for the UNMAPs, taken
 *    again to clear the marks.
 * UNMAPs honour the LUN's Block Limits (bdev.h: maximum per command,
 * granularity, alignment).
 *
 * Errors: -EOPNOTSUPP when the LUN cannot unmap (logged once per volume
 * with the reason), -EROFS on a read-only volume, -EINVAL for a range
 * outside the filesystem (as ext4), or the device's -errno.
 * Thread-safe: any thread, the volume lock not held.
 */
#ifndef LUNFS_TRIM_H
#define LUNFS_TRIM_H

#include <stdbool.h>
#include <stdint.h>

#include "fsimage/volume.h"

#define LF_TRIM_BATCH	    256
#define LF_TRIM_STEP_BLOCKS (1u << 18) /* 1 GiB of 4 KiB blocks */

/* FITRIM: unmap the free extents of at least minlen bytes inside
 * [start, start+len) bytes of the filesystem; *trimmed gets the bytes
 * unmapped (what ext4 returns in fstrim_range.len). */
int lf_vol_trim(struct lf_vol *v, uint64_t start, uint64_t len, uint64_t minlen,
		uint64_t *trimmed);

/* Online discard on or off for the whole volume (every mount of it).
 * -EOPNOTSUPP (and stays off) when the LUN cannot unmap. */
int lf_vol_set_discard(struct lf_vol *v, bool on);
bool lf_vol_discard(struct lf_vol *v);

struct lf_trim_stats {
	uint64_t trimmed_bytes;	  /* by FITRIM */
	uint64_t discarded_bytes; /* by online discard */
	uint64_t queued_extents;  /* freed, waiting for a durable point */
};
void lf_vol_trim_stats(struct lf_vol *v, struct lf_trim_stats *st);

#endif
