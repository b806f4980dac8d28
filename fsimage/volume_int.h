/* volume_int.h — what fsimage's own modules (fsops.c) see of an open volume.
 * Not for fuse/ or tools/: they use volume.h and fsops.h.
 *
 * Contract:
 *  - vol->lock guards every libext2fs call on vol->fs (libext2fs is not
 *    thread-safe). lf_vol_lock()/lf_vol_unlock() take and drop it.
 *  - File data may move outside the lock through lf_vol_data_pread() and
 *    lf_vol_data_pwrite(): they go straight to the device, in large
 *    commands, and keep the metadata block cache coherent (a dirty cached
 *    block in the range is honoured on read and replaced on write). Offsets
 *    and lengths are bytes, multiples of the filesystem block size.
 *  - vol->fsops belongs to fsops.c. lf_vol_close() calls vol->fsops_fini
 *    (if set) with the lock held, before it flushes and closes vol->fs, so
 *    fsops can free inodes that were unlinked while open.
 */
#ifndef LUNFS_VOLUME_INT_H
#define LUNFS_VOLUME_INT_H

#include <pthread.h>

#include <ext2fs/ext2fs.h>

#include "fsimage/volume.h"

struct lf_iocache;
struct lf_trim;
struct lf_txn;

struct lf_vol {
	pthread_mutex_t lock;
	ext2_filsys fs;
	struct lf_bdev *bdev;
	struct lf_vol_opts opts;
	bool formatted;
	struct lf_iocache *cache; /* owned by iomgr.c */
	struct lf_mmp *mmp;	  /* read-write opens with mmp (mmp.c) */

	struct lf_trim *trim; /* owned by trim.c */
	uint64_t fs_bytes;    /* atomic; lf_vol_fs_bytes() */
	struct lf_txn *txn;   /* journaled read-write volumes; owned by txn.c */

	void *fsops; /* owned by fsops.c */
	void (*fsops_fini)(struct lf_vol *v);

	/* flusher thread (volume.c) */
	pthread_t flusher;
	pthread_cond_t flusher_cond;
	bool flusher_running;
	bool stopping;
};

void lf_vol_lock(struct lf_vol *v);
void lf_vol_unlock(struct lf_vol *v);

/* Write back dirty cached blocks and send SYNCHRONIZE CACHE. Caller holds
 * the lock (fsync inside fsops). */
int lf_vol_sync_locked(struct lf_vol *v);

/* A durable point: every change made before it is on stable storage
 * (today the end of lf_vol_sync_locked() and of the flusher's write-back;
 * a journal commit once there is one). Caller holds the lock. Extents
 * freed before it may now be discarded (trim.c). */
void lf_vol_after_durable(struct lf_vol *v);

/* trim.c, all with the lock held. attach: after each ext2fs_open (hooks
 * the block-allocation callbacks, sets fs->priv_data). work: unmap the
 * batches lf_vol_after_durable() made; drops and retakes the lock around
 * the UNMAPs unless keep_lock. bitmaps_begin/end: around every write of
 * the block bitmap, which must not carry the in-flight marks. idle: no
 * UNMAP in flight (some may wait for the flusher). close_locked: the last
 * discards, then free the state (before ext2fs_close). */
void lf_trim_attach(struct lf_vol *v);
/* ext2fs_block_alloc_stats_range(fs, blk, n, -1), noted for discard:
 * what fsops calls to free a range itself (libext2fs's own frees, block
 * by block, are seen through its allocation callback). */
void lf_vol_free_blocks(struct lf_vol *v, blk64_t blk, blk64_t n);
/* Queue a freed extent for discard at the next durable point (txn.c
 * hands over a transaction's frees once they are home). */
void lf_trim_queue(struct lf_vol *v, blk64_t blk, blk64_t len);
void lf_trim_work(struct lf_vol *v, bool keep_lock);
void lf_trim_bitmaps_begin(struct lf_vol *v);
void lf_trim_bitmaps_end(struct lf_vol *v);
bool lf_trim_idle(struct lf_vol *v);
/* Forget the discards not yet sent (the filesystem is about to change
 * under us: resize2fs may use those free blocks). Requires idle. */
void lf_trim_drop_waiting(struct lf_vol *v);
void lf_trim_close_locked(struct lf_vol *v);
void lf_trim_free(struct lf_vol *v);

/* resize.c: open vol->fs again (read-write, through the same cache)
 * after another writer changed the filesystem; no clean-state checks,
 * the volume stays marked in use. 0 or -errno (vol->fs NULL). */
int lf_vol_reopen_locked(struct lf_vol *v, char *err, size_t errlen);

int lf_vol_data_pread(struct lf_vol *v, void *buf, size_t len, uint64_t off);
/* lf_vol_data_pread() without waiting (see lf_iocache_pread_async()). */
void lf_vol_data_pread_async(struct lf_vol *v, const struct iovec *iov,
			     uint64_t off, lf_bdev_done_fn done, void *opaque);
int lf_vol_data_pwrite(struct lf_vol *v, const void *buf, size_t len,
		       uint64_t off);

/* errcode_t from libext2fs → -errno (EXT2_ET_* mapped to the errno ext4
 * would give; plain errno values pass through). */
int lf_errno_from_ext2(errcode_t e);

#endif
