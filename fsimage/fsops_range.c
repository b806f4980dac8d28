/* fsops_range.c — FALLOC_FL_COLLAPSE_RANGE and FALLOC_FL_INSERT_RANGE on
 * extent-mapped files, with the checks and errors of the kernel's
 * vfs_fallocate() and ext4_collapse_range() / ext4_insert_range().
 *
 * Both move file data by editing the extent tree only: collapse frees the
 * range's blocks (the hole punch's code) and moves every later extent down
 * by the range's length; insert splits the extent that straddles the
 * offset and moves every extent from there up. Physical blocks never move,
 * so data written behind and still on its way is unaffected. Extents are
 * moved one by one in the order that keeps the tree sorted after every
 * step (down: first to last; up: last to first), each step a valid tree.
 */
#include <errno.h>
#include <linux/falloc.h>
#include <stdlib.h>

#include "fsimage/fsops_int.h"

/* Logical blocks end below this (ext4's EXT_MAX_BLOCKS). */
#define LF_EXT_MAX_BLOCKS 0xFFFFFFFFull

/* The leaf extent at lblk, as it is now. */
static int goto_extent(ext2_extent_handle_t h, const struct ext2fs_extent *ex,
		       struct ext2fs_extent *cur)
{
	errcode_t e = ext2fs_extent_goto(h, ex->e_lblk);

	if (!e)
		e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, cur);
	if (e)
		return lf_errno_from_ext2(e);
	if (cur->e_lblk != ex->e_lblk || cur->e_pblk != ex->e_pblk ||
	    cur->e_len != ex->e_len)
		return -EIO;
	return 0;
}

static int move_extent(ext2_extent_handle_t h, const struct ext2fs_extent *ex,
		       blk64_t to)
{
	struct ext2fs_extent cur;
	errcode_t e;
	int r = goto_extent(h, ex, &cur);

	if (r)
		return r;
	cur.e_lblk = to;
	e = ext2fs_extent_replace(h, 0, &cur);
	if (!e)
		e = ext2fs_extent_fix_parents(h);
	return e ? lf_errno_from_ext2(e) : 0;
}

/* Split the extent that holds lblk so that one starts there. */
static int split_at(ext2_extent_handle_t h, blk64_t lblk)
{
	struct ext2fs_extent cur, tail;
	errcode_t e = ext2fs_extent_goto(h, lblk);

	if (e == EXT2_ET_EXTENT_NOT_FOUND)
		return 0; /* a hole there */
	if (!e)
		e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &cur);
	if (e)
		return lf_errno_from_ext2(e);
	if (cur.e_lblk >= lblk || cur.e_lblk + cur.e_len <= lblk)
		return 0;
	tail = cur;
	tail.e_lblk = lblk;
	tail.e_pblk = cur.e_pblk + (lblk - cur.e_lblk);
	tail.e_len = cur.e_len - (__u32)(lblk - cur.e_lblk);
	cur.e_len = (__u32)(lblk - cur.e_lblk);
	e = ext2fs_extent_replace(h, 0, &cur);
	if (!e)
		e = ext2fs_extent_insert(h, EXT2_EXTENT_INSERT_AFTER, &tail);
	if (!e)
		e = ext2fs_extent_fix_parents(h);
	return e ? lf_errno_from_ext2(e) : 0;
}

/* Move every extent at or after lblk from by n blocks, down or up. */
static int shift_extents(struct lf_vol *v, uint64_t ino,
			 struct ext2_inode_large *in, blk64_t from, blk64_t n,
			 bool down)
{
	ext2_extent_handle_t h = NULL;
	struct ext2fs_extent *list = NULL;
	size_t cnt = 0, first = 0;
	errcode_t e;
	int r;

	e = ext2fs_extent_open2(v->fs, (ext2_ino_t)ino, (struct ext2_inode *)in,
				&h);
	if (e)
		return lf_errno_from_ext2(e);
	r = down ? 0 : split_at(h, from);
	if (!r)
		r = lf_fs_extents_in(h, from, LF_EXT_MAX_BLOCKS, &list, &cnt);
	while (!r && first < cnt && list[first].e_lblk < from)
		first++; /* a collapse's range is a hole by now */
	if (!r && !down && cnt > first &&
	    list[cnt - 1].e_lblk + list[cnt - 1].e_len + n > LF_EXT_MAX_BLOCKS)
		r = -EFBIG; /* blocks kept past the end (KEEP_SIZE) */
	if (down) {
		for (size_t i = first; i < cnt && !r; i++)
			r = move_extent(h, &list[i], list[i].e_lblk - n);
	} else {
		for (size_t i = cnt; i-- > first && !r;)
			r = move_extent(h, &list[i], list[i].e_lblk + n);
	}
	free(list);
	ext2fs_extent_free(h);
	return r;
}

int lf_fs_shift_range(struct lf_vol *v, uint64_t ino, int mode, uint64_t off,
		      uint64_t len)
{
	bool collapse = mode & FALLOC_FL_COLLAPSE_RANGE;
	uint64_t bs = v->fs->blocksize, size;
	struct ext2_inode_large in;
	struct lf_ilock *l;
	int r;

	/* vfs_fallocate(): the modes exclude each other and KEEP_SIZE. */
	if (mode != FALLOC_FL_COLLAPSE_RANGE && mode != FALLOC_FL_INSERT_RANGE)
		return -EOPNOTSUPP;
	if (lf_vol_read_only(v))
		return -EROFS;
	if (off + len < off || off + len > lf_fs_max_size(v))
		return -EFBIG;
	l = lf_fs_ilock_get(v, ino);
	if (!l)
		return -ENOMEM;
	lf_vol_lock(v);
	r = lf_fs_iread_regular(v, ino, &in);
	if (r)
		goto out;
	if (!(in.i_flags & EXT4_EXTENTS_FL) ||
	    (in.i_flags & EXT4_INLINE_DATA_FL)) {
		r = -EOPNOTSUPP;
		goto out;
	}
	if ((off | len) % bs) {
		r = -EINVAL;
		goto out;
	}
	size = EXT2_I_SIZE(&in);
	if (collapse && off + len >= size) {
		r = -EINVAL; /* that would be a truncate */
		goto out;
	}
	if (!collapse && off >= size) {
		r = -EINVAL;
		goto out;
	}
	if (!collapse && len > lf_fs_max_size(v) - size) {
		r = -EFBIG;
		goto out;
	}
	if (collapse) {
		r = lf_fs_punch_locked(v, ino, &in, off / bs,
				       (off + len) / bs - 1);
		if (!r)
			r = shift_extents(v, ino, &in, (off + len) / bs,
					  len / bs, true);
		size -= len;
	} else {
		r = shift_extents(v, ino, &in, off / bs, len / bs, false);
		size += len;
	}
	if (r)
		goto out;
	in.i_size = (uint32_t)size;
	in.i_size_high = (uint32_t)(size >> 32);
	lf_fs_touch_mc(v, &in);
	r = lf_fs_iwrite(v, ino, &in);
out:
	lf_vol_unlock(v);
	lf_fs_ilock_put(v, l);
	return r;
}
