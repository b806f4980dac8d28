/* probe.h — what a block device holds, before anything writes to it.
 *
 * Reads the first MiB (which holds the ext superblock at 1024) and
 * classifies it the way the in-tree plugin's safe format does: all zeros
 * (safe to format), an ext2/3/4 filesystem, or anything else — another
 * filesystem, a partition table, or just data — which must never be
 * formatted or mounted. Never writes.
 */
#ifndef LUNFS_PROBE_H
#define LUNFS_PROBE_H

#include <stddef.h>

#include "iscsi/bdev.h"

enum lf_probe_kind { LF_PROBE_ALL_ZERO, LF_PROBE_EXT, LF_PROBE_OTHER };

struct lf_probe_result {
	enum lf_probe_kind kind;
	/* "ext4", or for OTHER what was found: "an xfs filesystem",
	 * "a GPT partition table", "non-zero data in the first MiB". */
	char what[96];
};

/* 0 or -errno (a read error). */
int lf_probe(struct lf_bdev *bdev, struct lf_probe_result *res);

/* Pure classification of a buffer holding the device's first len bytes
 * (the unit tests feed it directly). */
void lf_probe_buf(const unsigned char *buf, size_t len,
		  struct lf_probe_result *res);

#endif
