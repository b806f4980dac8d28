/* grow.h — the work of `lunfs resize` on one volume, for daemon.c: ask the
 * LUN for its size again, then grow what is on it to that size (or to an
 * asked size): a block volume's file (its mounts forget the cached size),
 * or the ext4 filesystem, online through lf_vol_grow() or offline, with
 * resize2fs run by the caller's function on a private view of the LUN
 * (fsimage/resize.h says why resize2fs).
 *
 * Contract: grow only. A LUN that shrank, a size below the filesystem's
 * (-EINVAL) or above the LUN's (-ENOSPC), an unclean closed volume
 * (-EUCLEAN) and a LUN without an ext filesystem (-EMEDIUMTYPE) are
 * refused before anything is written, with one line in err naming key.
 * *lun and *fs get the sizes in bytes afterwards. The caller holds the
 * volume's claim (voltable.h): nothing else opens or changes it meanwhile.
 */
#ifndef LUNFS_GROW_H
#define LUNFS_GROW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsimage/volume.h"
#include "fuse/mount.h"
#include "iscsi/bdev.h"

/* Runs `resize2fs -f VIEW NEW_BYTES` on b; its exit status or -errno,
 * out gets its last line. */
typedef int (*lf_grow_resize2fs_fn)(void *ctx, struct lf_bdev *b,
				    uint64_t new_bytes, char *out,
				    size_t outlen);

struct lf_grow {
	struct lf_bdev *bdev;
	const char *key; /* for messages */
	uint64_t size;	 /* 0: the LUN's size */
	lf_grow_resize2fs_fn resize2fs;
	void *ctx;
	/* lf_grow_closed(): called (if set) once the checks passed, right
	 * before resize2fs writes; an error stops it. */
	int (*before_write)(void *ctx, char *err, size_t errlen);
};

/* An open volume: vol (filesystem) or sv's block mounts (vol NULL). */
int lf_grow_open(const struct lf_grow *g, struct lf_vol *vol,
		 struct lf_served *sv, uint64_t *lun, uint64_t *fs, char *err,
		 size_t errlen);
/* A volume nobody serves; block: nothing on it to grow. */
int lf_grow_closed(const struct lf_grow *g, bool block, uint64_t *lun,
		   uint64_t *fs, char *err, size_t errlen);

#endif
