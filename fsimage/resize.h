/* resize.h — growing an open filesystem volume after its LUN grew.
 *
 * How: libext2fs has no resize code, and resize2fs (e2fsprogs) is the
 * tool that knows every layout (the resize inode's reserved GDT blocks,
 * meta_bg, flex groups, moving blocks out of the way when the reserved
 * descriptors run out). lf_vol_grow() quiesces the volume (waits for
 * trims and reads in flight, writes everything back, SYNCHRONIZE CACHE),
 * drops its libext2fs handle and its cache, lets the caller run the
 * grower (the daemon runs resize2fs on a private block view of the same
 * LUN), then opens the filesystem again and tells fsops the geometry
 * changed. The volume lock is held throughout, so every mount's requests
 * wait (seconds) and then see the new size at once (statfs reads it).
 *
 * Contract: lock NOT held by the caller. Grow only: new_bytes below the
 * current size is -EINVAL (shrinking is not supported), equal is a no-op
 * (0, grow not called), above the device's size is -ENOSPC. Read-only
 * volumes: -EROFS. err gets one line on failure. If the filesystem cannot
 * be opened again the old handle is kept and -EIO returned; the volume
 * should then be unmounted and checked ('lunfs fsck').
 */
#ifndef LUNFS_RESIZE_H
#define LUNFS_RESIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsimage/volume.h"

/* Grows the filesystem on the device to new_bytes while the volume is
 * quiesced; 0 or -errno with err filled. */
typedef int (*lf_vol_grow_fn)(void *ctx, uint64_t new_bytes, char *err,
			      size_t errlen);

int lf_vol_grow(struct lf_vol *v, uint64_t new_bytes, lf_vol_grow_fn grow,
		void *ctx, char *err, size_t errlen);

/* For a volume that is not open: the size of the ext filesystem on b
 * from its superblock, and whether it is clean (unmounted cleanly, no
 * errors, no journal to replay). -EMEDIUMTYPE when b holds no ext
 * filesystem. Reads only. */
int lf_ext_peek(struct lf_bdev *b, uint64_t *fs_bytes, bool *clean);

/* The filesystem's size in bytes, without waiting for the volume lock
 * (for status while a resize holds it): the size at open or after the
 * last lf_vol_grow(). */
uint64_t lf_vol_fs_bytes(struct lf_vol *v);

/* The filesystem's size, its block size, and its free bytes. */
void lf_vol_geometry(struct lf_vol *v, uint64_t *fs_bytes, uint32_t *block_size,
		     uint64_t *free_bytes);

#endif
