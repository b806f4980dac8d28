/* resize.c — lf_vol_grow(): quiesce, let resize2fs grow, reopen. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <et/com_err.h>

#include "fsimage/fsops_int.h"
#include "fsimage/iomgr.h"
#include "fsimage/mmp.h"
#include "fsimage/resize.h"
#include "fsimage/txn.h"
#include "fsimage/volume_int.h"
#include "iscsi/log.h"

#define MOD "resize"

int lf_ext_peek(struct lf_bdev *b, uint64_t *fs_bytes, bool *clean)
{
	uint32_t bs = lf_bdev_block_size(b);
	size_t len = bs > 2048 ? bs : 2048;
	struct ext2_super_block sb;
	uint8_t *buf = malloc(len);
	int r;

	if (!buf)
		return -ENOMEM;
	r = lf_bdev_pread(b, buf, len, 0);
	if (r == 0)
		memcpy(&sb, buf + 1024, sizeof(sb));
	free(buf);
	if (r < 0)
		return r;
	/* Little-endian on disk, as the hosts we run on. */
	if (sb.s_magic != EXT2_SUPER_MAGIC || sb.s_log_block_size > 6)
		return -EMEDIUMTYPE;
	*fs_bytes = ext2fs_blocks_count(&sb) * (1024ull << sb.s_log_block_size);
	*clean = (sb.s_state & EXT2_VALID_FS) &&
		 !(sb.s_state & EXT2_ERROR_FS) &&
		 !ext2fs_has_feature_journal_needs_recovery(&sb);
	return 0;
}

uint64_t lf_vol_fs_bytes(struct lf_vol *v)
{
	return __atomic_load_n(&v->fs_bytes, __ATOMIC_RELAXED);
}

void lf_vol_geometry(struct lf_vol *v, uint64_t *fs_bytes, uint32_t *block_size,
		     uint64_t *free_bytes)
{
	lf_vol_lock(v);
	if (block_size)
		*block_size = v->fs->blocksize;
	if (fs_bytes)
		*fs_bytes = ext2fs_blocks_count(v->fs->super) *
			    (uint64_t)v->fs->blocksize;
	if (free_bytes)
		*free_bytes = ext2fs_free_blocks_count(v->fs->super) *
			      (uint64_t)v->fs->blocksize;
	lf_vol_unlock(v);
}

int lf_vol_grow(struct lf_vol *v, uint64_t new_bytes, lf_vol_grow_fn grow,
		void *ctx, char *err, size_t errlen)
{
	char mmp_err[512];
	const char *desc = lf_vol_desc(v);
	uint64_t cur, want, dev = lf_bdev_size(v->bdev);
	ext2_filsys old;
	bool journaled = false;
	int r, r2;

	*err = 0;
	if (lf_vol_read_only(v)) {
		snprintf(err, errlen, "%s is open read-only: cannot grow it",
			 desc);
		return -EROFS;
	}
	lf_vol_lock(v);
	/* UNMAPs in flight hold marks in the bitmap; they end soon. */
	while (!lf_trim_idle(v)) {
		lf_vol_unlock(v);
		usleep(10000);
		lf_vol_lock(v);
	}
	cur = ext2fs_blocks_count(v->fs->super);
	want = new_bytes / v->fs->blocksize;
	if (want < cur) {
		snprintf(err, errlen,
			 "%s: the filesystem has %llu bytes; shrinking it to "
			 "%llu is not supported",
			 desc, (unsigned long long)(cur * v->fs->blocksize),
			 (unsigned long long)new_bytes);
		r = -EINVAL;
		goto out;
	}
	if (new_bytes > dev) {
		snprintf(err, errlen,
			 "%s: %llu bytes is more than the LUN holds (%llu)",
			 desc, (unsigned long long)new_bytes,
			 (unsigned long long)dev);
		r = -ENOSPC;
		goto out;
	}
	if (want == cur) {
		r = 0;
		goto out;
	}
	/* Everything on the device, nothing in flight or cached. */
	lf_fsops_quiesce(v);
	/* A journaled volume is handed over clean: log empty, no
	 * needs_recovery (resize2fs wants it so); journaling resumes after. */
	journaled = v->txn != NULL;
	r = journaled ? lf_txn_suspend(v) : 0;
	if (r == 0)
		r = lf_vol_sync_locked(v);
	if (r < 0) {
		snprintf(err, errlen, "%s: writing back before the resize: %s",
			 desc, strerror(-r));
		goto out;
	}
	/* Discards still waiting are free blocks resize2fs may use. */
	lf_trim_drop_waiting(v);
	old = v->fs;
	v->fs = NULL;
	r = lf_iocache_reset(v->cache);
	/* resize2fs claims MMP itself (mmp.h): hand it the block. */
	if (r == 0 && v->mmp)
		r = lf_mmp_pause(v->mmp);
	if (r == 0)
		r = grow(ctx, want * old->blocksize, err, errlen);
	if (v->mmp && lf_mmp_resume(v->mmp, mmp_err, sizeof(mmp_err)) < 0) {
		if (!err[0])
			snprintf(err, errlen, "%s", mmp_err);
		lf_bdev_fence(v->bdev, "a node that claimed its MMP block "
				       "during a resize");
		if (!r)
			r = -EBUSY;
	}
	r2 = lf_iocache_reset(v->cache);
	if (r2 == 0)
		r2 = lf_vol_reopen_locked(v, err[0] ? NULL : err,
					  err[0] ? 0 : errlen);
	if (r2 < 0) {
		/* The device may hold the grown filesystem or not: keep
		 * the handle we had, and say what to do. */
		v->fs = old;
		lf_err(MOD,
		       "%s: cannot open the filesystem again after the "
		       "resize: unmount it and run 'lunfs fsck --check'",
		       desc);
		if (!r)
			r = -EIO;
		goto out;
	}
	ext2fs_free(old);
	lf_fsops_reloaded(v);
	if (r == 0)
		lf_info(MOD, "%s: grew from %llu to %llu bytes", desc,
			(unsigned long long)(cur * v->fs->blocksize),
			(unsigned long long)(ext2fs_blocks_count(v->fs->super) *
					     v->fs->blocksize));
out:
	if (journaled && !v->txn && v->fs) {
		char jerr[256];

		if (!lf_txn_usable(v) ||
		    lf_txn_start(v, jerr, sizeof(jerr)) < 0) {
			lf_err(MOD,
			       "%s: journaling did not resume after the "
			       "resize: unmount the volume and mount it again",
			       desc);
			if (!r)
				r = -EIO;
		}
	}
	lf_vol_unlock(v);
	return r;
}
