/* volume.h — an open ext4 filesystem on a block device, in userspace.
 *
 * lf_vol_open() does the in-tree plugin's safe format and mount:
 *  1. Probe the device (probe.h). All zeros in the first MiB and at the
 *     ext superblock → format ext4 (unless read-only or !allow_format);
 *     ext2/3/4 → open it; anything else (another filesystem, a partition
 *     table, data) → -EMEDIUMTYPE with a message, and nothing is written.
 *  2. Open with libext2fs through our io_manager (iomgr.h) and its
 *     bounded write-back block cache. Refuse features libext2fs cannot
 *     write safely.
 *  3. A volume that needs journal recovery is replayed (read-write opens
 *     of journaled 4 KiB-block volumes, jreplay.c); one that was not
 *     cleanly unmounted, or needs recovery we cannot replay, is refused
 *     (-EUCLEAN) with a message naming the command that repairs it
 *     ("lunfs fsck SPEC"); never served dirty.
 *  4. Read-write, journaled (txn.h): needs_recovery set, every metadata
 *     change through jbd2 transactions committed every flush_interval_ms
 *     and on sync. Without a usable journal: the superblock marked not
 *     clean (s_state without EXT2_VALID_FS) before serving, and a flusher
 *     thread writes the cache back every flush_interval_ms.
 * lf_vol_close() commits and checkpoints (empty log), marks clean, writes
 * the superblock, closes and sends SYNCHRONIZE CACHE. After it, e2fsck -fn
 * is silent.
 *
 * Fencing: a read-write open of a volume with the mmp feature claims its
 * MMP block before the first write and keeps it updated (mmp.h). Once the
 * bdev is fenced (another node took the LUN over: lf_bdev_fence()), the
 * volume is read-only for every caller (lf_vol_read_only() is true,
 * writes fail with EROFS, fsync with EIO) and lf_vol_close() writes
 * nothing: what was not on the LUN before the fence is dropped.
 *
 * Thread model: libext2fs is not thread-safe, so every use of vol->fs
 * happens under lf_vol_lock(); fsops.h takes it for you. File data moves
 * outside the lock (straight to the bdev) once the block map is known.
 * Errors: 0 or -errno; the reason is logged once with the device's desc.
 */
#ifndef LUNFS_VOLUME_H
#define LUNFS_VOLUME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iscsi/bdev.h"

struct lf_vol;

struct lf_vol_opts {
	size_t cache_bytes;	    /* metadata cache; 0 = default 64 MiB */
	unsigned flush_interval_ms; /* 0 = default 5000 */
	bool read_only;
	bool allow_format; /* format an all-zero device */
	bool repair;	   /* run recovery/fsck instead of refusing */
	/* MMP (mmp.h): the name written as holder (NULL: hostname);
	 * `reserved` when the caller holds the LUN's PR reservation; a seq
	 * the caller just proved stale (takeover). */
	const char *mmp_node;
	bool reserved;
	bool mmp_stale_known;
	uint32_t mmp_stale_seq;
	/* Read-only: another node writes the volume (fence.h), so "not
	 * clean" is its being in use, not a crash: served as it is. */
	bool held_elsewhere;
};

/* Takes a bdev reference of its own. err gets one line on failure. */
int lf_vol_open(struct lf_bdev *bdev, const struct lf_vol_opts *opts,
		struct lf_vol **out, char *err, size_t errlen);
int lf_vol_close(struct lf_vol *v);

/* Everything durable: on a journaled volume committed and checkpointed
 * (metadata home), otherwise every dirty cached block written back; then
 * SYNCHRONIZE CACHE. */
int lf_vol_sync(struct lf_vol *v);

bool lf_vol_read_only(const struct lf_vol *v);
/* True once fenced (see above); why gets the reason. */
bool lf_vol_fenced(const struct lf_vol *v, char *why, size_t len);
/* True while this open holds the volume's MMP block. */
bool lf_vol_mmp(const struct lf_vol *v);
bool lf_vol_formatted(const struct lf_vol *v); /* formatted by this open */
struct lf_bdev *lf_vol_bdev(const struct lf_vol *v);
const char *lf_vol_desc(const struct lf_vol *v);

#endif
