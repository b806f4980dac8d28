/* fsops_int.h — helpers shared by fsops.c and fsops_xattr.c. */
#ifndef LUNFS_FSOPS_INT_H
#define LUNFS_FSOPS_INT_H

#include "fsimage/fsops.h"
#include "fsimage/volume_int.h"

/* Read/write the large inode of ino; caller holds the lock. */
int lf_fs_iread(struct lf_vol *v, uint64_t ino, struct ext2_inode_large *in);
int lf_fs_iwrite(struct lf_vol *v, uint64_t ino, struct ext2_inode_large *in);
/* lf_fs_iread() of size bytes (at least the large inode's): also the
 * in-inode extended attribute area when size is the inode size. */
int lf_fs_iread_sized(struct lf_vol *v, uint64_t ino,
		      struct ext2_inode_large *in, size_t size);
void lf_fs_set_ctime_now(struct lf_vol *v, struct ext2_inode_large *in);
/* ctime = now, written back. Lock held. */
int lf_fs_touch_ctime(struct lf_vol *v, uint64_t ino);
/* chmod of an inode with an access ACL rewrites the ACL's owner, group
 * (mask) and other entries as the kernel does. Lock held. */
int lf_fs_acl_chmod_locked(struct lf_vol *v, uint64_t ino, unsigned mode);
/* Whether the inode holds any extended attribute; in holds the whole
 * inode, isize bytes (fsops_xattr.c). */
bool lf_fs_has_xattrs(struct lf_vol *v, const struct ext2_inode_large *in,
		      unsigned isize);

#endif
