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

struct lf_vol {
	pthread_mutex_t lock;
	ext2_filsys fs;
	struct lf_bdev *bdev;
	struct lf_vol_opts opts;
	bool formatted;
	struct lf_iocache *cache; /* owned by iomgr.c */

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
