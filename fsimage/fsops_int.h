/* fsops_int.h — helpers shared by fsops.c, fsops_xattr.c, fsops_range.c
 * and acl.c. */
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

/* fsops.c, for fsops_range.c. The inode's data I/O lock, exclusive (no
 * read or write of ino runs meanwhile); taken without the volume lock. */
struct lf_ilock;
struct lf_ilock *lf_fs_ilock_get(struct lf_vol *v, uint64_t ino);
void lf_fs_ilock_put(struct lf_vol *v, struct lf_ilock *l);
/* Lock held. A regular file's inode: -EISDIR, -ENODEV for other types. */
int lf_fs_iread_regular(struct lf_vol *v, uint64_t ino,
			struct ext2_inode_large *in);
/* Lock held. Free logical blocks [start, end]; writes the inode. */
int lf_fs_punch_locked(struct lf_vol *v, uint64_t ino,
		       struct ext2_inode_large *in, uint64_t start,
		       uint64_t end);
/* Leaf extents overlapping logical blocks [from, to], in order (free()). */
int lf_fs_extents_in(ext2_extent_handle_t h, uint64_t from, uint64_t to,
		     struct ext2fs_extent **out, size_t *nout);
uint64_t lf_fs_max_size(struct lf_vol *v);
void lf_fs_touch_mc(struct lf_vol *v, struct ext2_inode_large *in);

/* fsops_range.c: FALLOC_FL_COLLAPSE_RANGE and FALLOC_FL_INSERT_RANGE. */
int lf_fs_shift_range(struct lf_vol *v, uint64_t ino, int mode, uint64_t off,
		      uint64_t len);

/* For resize.c, lock held: wait for the reads in flight (their blocks
 * may move), then, once vol->fs was reopened, forget what was derived
 * from the old geometry (statfs overhead, directory indexes). */
void lf_fsops_quiesce(struct lf_vol *v);
void lf_fsops_reloaded(struct lf_vol *v);

#endif
