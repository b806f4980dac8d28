/* format.h — userspace mkfs.ext4, following e2fsprogs' misc/mke2fs.c.
 *
 * 4 KiB blocks, 256-byte inodes, one inode per 16 KiB, ext4 features with
 * metadata_csum and 64bit, flex_bg, a journal of mke2fs's default size,
 * root and lost+found, default mount options user_xattr,acl, and the mmp
 * feature (update interval LF_MMP_UPDATE_INTERVAL, see mmp.h). Inode tables
 * are initialised lazily (like lazy_itable_init=1), so on a device known
 * to read zeros (lf_iocache_assume_zero) formatting writes a few MiB.
 * The result passes e2fsck -fn and mounts with the kernel's ext4.
 */
#ifndef LUNFS_FORMAT_H
#define LUNFS_FORMAT_H

#include <stddef.h>

#include "fsimage/iomgr.h"

/* label may be NULL. desc names the device in messages. 0 or -errno,
 * with one line in err. The filesystem is closed again on return. */
int lf_format(struct lf_iocache *cache, uint64_t size, const char *label,
	      const char *desc, char *err, size_t errlen);

#endif
