/* fsops.c — POSIX operations on an ext4 volume through libext2fs.
 *
 * Every libext2fs call happens under vol->lock. File data moves outside it:
 * read/write map the block range under the lock, then move the bytes with
 * lf_vol_data_pread/pwrite in runs of physically contiguous blocks.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "fsimage/acl.h"
#include "fsimage/dirindex.h"
#include "fsimage/fsops_int.h"
#include "fsimage/txn.h"
#include "iscsi/log.h"

#define MOD		  "fsops"
#define LF_LINK_MAX	  65000
#define LF_NAME_MAX	  255
#define LF_DIRINDEX_BYTES (64u << 20)
#define LF_HOLD_BUCKETS	  4096
#define LF_ILOCK_BUCKETS  256
#define LF_AIO_BUCKETS	  1024
/* Longest initialised extent ext4 allows (EXT_INIT_MAX_LEN). */
#define LF_EXT_INIT_MAX 32768

struct lf_hold {
	struct lf_hold *next;
	uint64_t ino;
	uint64_t count;
	bool orphan; /* nlink reached 0 while held: free at the last iput */
};

/* Per-inode data I/O lock. Data moves outside the volume lock, so a
 * truncate must not free (and another file reuse) blocks that a read or
 * write has mapped: read and write hold it shared from mapping to the end
 * of the data move, truncate/punch/fallocate exclusive. Order: inode lock
 * first, then the volume lock; nobody waits for it holding the volume lock.
 * Entries exist while someone holds or waits (users), under vol->lock. */
struct lf_ilock {
	struct lf_ilock *next;
	uint64_t ino;
	unsigned users;
	bool free_pending; /* lost its last name during I/O: free at the end */
	pthread_rwlock_t rw;
};

struct lf_fsops {
	struct lf_dirindex_set *dix;
	struct lf_hold *holds[LF_HOLD_BUCKETS];
	struct lf_ilock *ilocks[LF_ILOCK_BUCKETS];
	uint64_t overhead; /* blocks statfs does not count; 0 = unknown */
	/* Asynchronous reads in flight, by inode hash: whatever frees an
	 * inode's blocks (truncate, punch, the last unlink) first waits for
	 * its bucket to drain, so a read started before never returns
	 * blocks reused meanwhile. Completions only decrement and, when
	 * someone waits, broadcast: they run on the device's I/O thread,
	 * which must never wait for the volume lock. */
	unsigned aio[LF_AIO_BUCKETS];
	unsigned aio_waiters;
	pthread_mutex_t aio_mu;
	pthread_cond_t aio_cv;
};

static void fsops_fini(struct lf_vol *v);

/* Caller holds the lock. */
static struct lf_fsops *fsops_state(struct lf_vol *v)
{
	struct lf_fsops *s = v->fsops;

	if (s)
		return s;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->dix = lf_dirindex_set_new(LF_DIRINDEX_BYTES);
	if (!s->dix) {
		free(s);
		return NULL;
	}
	pthread_mutex_init(&s->aio_mu, NULL);
	pthread_cond_init(&s->aio_cv, NULL);
	v->fsops = s;
	v->fsops_fini = fsops_fini;
	if (!v->fs->inode_map || !v->fs->block_map) {
		errcode_t e = ext2fs_read_bitmaps(v->fs);

		if (e)
			lf_err(MOD, "%s: reading bitmaps: %s", lf_vol_desc(v),
			       error_message(e));
	}
	return s;
}

#define LOCK_STATE(v, s)                                                       \
	do {                                                                   \
		lf_vol_lock(v);                                                \
		(s) = fsops_state(v);                                          \
	} while (0)

/* ---- inodes, times, types ---- */

static uint32_t ft_to_mode(int ft)
{
	static const uint32_t m[] = {0,	      S_IFREG, S_IFDIR,	 S_IFCHR,
				     S_IFBLK, S_IFIFO, S_IFSOCK, S_IFLNK};

	return ft > 0 && ft < 8 ? m[ft] : 0;
}

static int mode_to_ft(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return EXT2_FT_REG_FILE;
	case S_IFDIR:
		return EXT2_FT_DIR;
	case S_IFCHR:
		return EXT2_FT_CHRDEV;
	case S_IFBLK:
		return EXT2_FT_BLKDEV;
	case S_IFIFO:
		return EXT2_FT_FIFO;
	case S_IFSOCK:
		return EXT2_FT_SOCK;
	case S_IFLNK:
		return EXT2_FT_SYMLINK;
	}
	return EXT2_FT_UNKNOWN;
}

#define HAS_EXTRA(fs, in, f)                                                   \
	(EXT2_INODE_SIZE((fs)->super) > EXT2_GOOD_OLD_INODE_SIZE &&            \
	 (in)->i_extra_isize >= offsetof(struct ext2_inode_large, f) +         \
					sizeof((in)->f) -                      \
					EXT2_GOOD_OLD_INODE_SIZE)

static void tenc(uint32_t *lo, uint32_t *extra, const struct timespec *t)
{
	*lo = (uint32_t)t->tv_sec;
	if (extra)
		*extra = ((uint32_t)t->tv_nsec << EXT4_EPOCH_BITS) |
			 (((t->tv_sec - (int32_t)t->tv_sec) >> 32) &
			  EXT4_EPOCH_MASK);
}

static void tdec(struct timespec *t, uint32_t lo, const uint32_t *extra)
{
	t->tv_sec = (int32_t)lo;
	t->tv_nsec = 0;
	if (extra) {
		t->tv_sec += (int64_t)(*extra & EXT4_EPOCH_MASK) << 32;
		t->tv_nsec = *extra >> EXT4_EPOCH_BITS;
	}
}

#define TSET(fs, in, F, ts)                                                    \
	tenc(&(in)->i_##F,                                                     \
	     HAS_EXTRA(fs, in, i_##F##_extra) ? &(in)->i_##F##_extra : NULL,   \
	     ts)
#define TGET(fs, in, F, ts)                                                    \
	tdec(ts, (in)->i_##F,                                                  \
	     HAS_EXTRA(fs, in, i_##F##_extra) ? &(in)->i_##F##_extra : NULL)

static struct timespec now_ts(void)
{
	struct timespec t;

	clock_gettime(CLOCK_REALTIME, &t);
	return t;
}

void lf_fs_set_ctime_now(struct lf_vol *v, struct ext2_inode_large *in)
{
	struct timespec t = now_ts();

	TSET(v->fs, in, ctime, &t);
}

static void touch_mc(struct lf_vol *v, struct ext2_inode_large *in)
{
	struct timespec t = now_ts();

	TSET(v->fs, in, mtime, &t);
	TSET(v->fs, in, ctime, &t);
}

int lf_fs_iread_sized(struct lf_vol *v, uint64_t ino,
		      struct ext2_inode_large *in, size_t size)
{
	errcode_t e;

	if (ino < 1 || ino > v->fs->super->s_inodes_count)
		return -ESTALE;
	memset(in, 0, size);
	e = ext2fs_read_inode_full(v->fs, ino, (struct ext2_inode *)in,
				   (int)size);
	if (e)
		return lf_errno_from_ext2(e);
	if (in->i_links_count == 0 && in->i_dtime)
		return -ESTALE;
	return 0;
}

int lf_fs_iread(struct lf_vol *v, uint64_t ino, struct ext2_inode_large *in)
{
	return lf_fs_iread_sized(v, ino, in, sizeof(*in));
}

int lf_fs_iwrite(struct lf_vol *v, uint64_t ino, struct ext2_inode_large *in)
{
	errcode_t e = ext2fs_write_inode_full(
		v->fs, ino, (struct ext2_inode *)in, sizeof(*in));

	return e ? lf_errno_from_ext2(e) : 0;
}

static uint32_t i_uid(const struct ext2_inode_large *in)
{
	return in->i_uid | (uint32_t)in->osd2.linux2.l_i_uid_high << 16;
}

static uint32_t i_gid(const struct ext2_inode_large *in)
{
	return in->i_gid | (uint32_t)in->osd2.linux2.l_i_gid_high << 16;
}

static void set_uid(struct ext2_inode_large *in, uint32_t uid)
{
	in->i_uid = uid & 0xffff;
	in->osd2.linux2.l_i_uid_high = uid >> 16;
}

static void set_gid(struct ext2_inode_large *in, uint32_t gid)
{
	in->i_gid = gid & 0xffff;
	in->osd2.linux2.l_i_gid_high = gid >> 16;
}

/* Device numbers as ext4 stores them: old 16-bit form when it fits. */
static void rdev_encode(struct ext2_inode_large *in, uint64_t rdev)
{
	unsigned ma = major(rdev), mi = minor(rdev);

	if (ma < 256 && mi < 256) {
		in->i_block[0] = ma << 8 | mi;
		in->i_block[1] = 0;
	} else {
		in->i_block[0] = 0;
		in->i_block[1] =
			(mi & 0xff) | (ma << 8) | ((mi & ~0xffu) << 12);
		in->i_block[2] = 0;
	}
}

static uint64_t rdev_decode(const struct ext2_inode_large *in)
{
	uint32_t d = in->i_block[0];

	if (d)
		return makedev((d >> 8) & 0xff, d & 0xff);
	d = in->i_block[1];
	return makedev((d & 0xfff00) >> 8, (d & 0xff) | ((d >> 12) & 0xfff00));
}

static void fill_stat(struct lf_vol *v, uint64_t ino,
		      struct ext2_inode_large *in, struct lf_stat *st)
{
	ext2_filsys fs = v->fs;

	memset(st, 0, sizeof(*st));
	st->ino = ino;
	st->mode = in->i_mode;
	st->nlink = in->i_links_count;
	st->uid = i_uid(in);
	st->gid = i_gid(in);
	if (LINUX_S_ISCHR(in->i_mode) || LINUX_S_ISBLK(in->i_mode))
		st->rdev = rdev_decode(in);
	st->size = EXT2_I_SIZE(in);
	st->blocks = ext2fs_get_stat_i_blocks(fs, (struct ext2_inode *)in);
	TGET(fs, in, atime, &st->atime);
	TGET(fs, in, mtime, &st->mtime);
	TGET(fs, in, ctime, &st->ctime);
	if (HAS_EXTRA(fs, in, i_crtime_extra))
		tdec(&st->btime, in->i_crtime, &in->i_crtime_extra);
	else if (HAS_EXTRA(fs, in, i_crtime))
		tdec(&st->btime, in->i_crtime, NULL);
	st->generation = in->i_generation;
}

static int stat_ino(struct lf_vol *v, uint64_t ino, struct lf_stat *st)
{
	struct ext2_inode_large in;
	int r = lf_fs_iread(v, ino, &in);

	if (!r && st)
		fill_stat(v, ino, &in, st);
	return r;
}

static bool name_bad(const char *name, int *err)
{
	size_t len = strlen(name);

	if (len > LF_NAME_MAX) {
		*err = -ENAMETOOLONG;
		return true;
	}
	if (len == 0 || strchr(name, '/')) {
		*err = -EINVAL;
		return true;
	}
	return false;
}

static bool is_dot(const char *n)
{
	return strcmp(n, ".") == 0 || strcmp(n, "..") == 0;
}

/* ---- link counts ---- */

static void nlink_inc(struct ext2_inode_large *in)
{
	if (LINUX_S_ISDIR(in->i_mode) &&
	    (in->i_links_count == 1 || in->i_links_count + 1 >= LF_LINK_MAX))
		in->i_links_count = 1; /* dir_nlink: "many" */
	else
		in->i_links_count++;
}

static void nlink_dec(struct ext2_inode_large *in)
{
	if (!LINUX_S_ISDIR(in->i_mode) || in->i_links_count > 2)
		in->i_links_count--;
}

static int dir_nlink_room(struct lf_vol *v, struct ext2_inode_large *dir)
{
	if (dir->i_links_count >= LF_LINK_MAX - 1 &&
	    !ext2fs_has_feature_dir_nlink(v->fs->super))
		return -EMLINK;
	return 0;
}

/* ---- holds and orphans ---- */

static struct lf_hold **hold_slot(struct lf_fsops *s, uint64_t ino)
{
	struct lf_hold **pp = &s->holds[ino % LF_HOLD_BUCKETS];

	while (*pp && (*pp)->ino != ino)
		pp = &(*pp)->next;
	return pp;
}

/* ---- freeing blocks ---- */

/* Leaf extents of an extent-mapped inode that overlap lblks [from, to]. */
static int extents_in(ext2_extent_handle_t h, blk64_t from, blk64_t to,
		      struct ext2fs_extent **out, size_t *nout)
{
	struct ext2fs_extent ex, *list = NULL;
	size_t n = 0, cap = 0;
	blk64_t prev = 0;
	bool seen = false;
	errcode_t e;

	*out = NULL;
	*nout = 0;
	/* goto leaves the handle on the extent at or before `from` (or the
	 * first one) even when it reports a hole. */
	ext2fs_extent_goto(h, from);
	e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex);
	while (!e && ex.e_lblk <= to) {
		if (!(ex.e_flags & EXT2_EXTENT_FLAGS_LEAF))
			goto next;
		/* NEXT_LEAF wraps around to the first leaf at the end. */
		if (seen && ex.e_lblk <= prev)
			break;
		seen = true;
		prev = ex.e_lblk;
		if (ex.e_len && ex.e_lblk + ex.e_len > from) {
			if (n == cap) {
				size_t c = cap ? cap * 2 : 16;
				struct ext2fs_extent *nl =
					realloc(list, c * sizeof(*nl));

				if (!nl) {
					free(list);
					return -ENOMEM;
				}
				list = nl;
				cap = c;
			}
			list[n++] = ex;
		}
	next:
		e = ext2fs_extent_get(h, EXT2_EXTENT_NEXT_LEAF, &ex);
	}
	if (e && e != EXT2_ET_EXTENT_NO_NEXT && e != EXT2_ET_NO_CURRENT_NODE) {
		free(list);
		return lf_errno_from_ext2(e);
	}
	*out = list;
	*nout = n;
	return 0;
}

/* Drop logical blocks [cut, end of ex) from the tree, then free them and
 * take them off i_blocks, and write the inode: each step leaves tree,
 * bitmap and i_blocks agreeing (a crash in between leaks, never shares). */
static int cut_extent_tail(struct lf_vol *v, ext2_extent_handle_t h,
			   uint64_t ino, struct ext2_inode_large *in,
			   const struct ext2fs_extent *ex, blk64_t cut)
{
	ext2_filsys fs = v->fs;
	struct ext2fs_extent cur;
	blk64_t n = ex->e_lblk + ex->e_len - cut;
	blk64_t pblk = ex->e_pblk + (cut - ex->e_lblk);
	errcode_t e;

	e = ext2fs_extent_goto(h, ex->e_lblk);
	if (!e)
		e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &cur);
	if (e)
		return lf_errno_from_ext2(e);
	if (cur.e_lblk != ex->e_lblk || cur.e_pblk != ex->e_pblk ||
	    cur.e_len != ex->e_len)
		return -EIO;
	if (cut == ex->e_lblk) {
		e = ext2fs_extent_delete(h, 0);
		if (!e) {
			e = ext2fs_extent_fix_parents(h);
			if (e == EXT2_ET_NO_CURRENT_NODE)
				e = 0;
		}
	} else {
		cur.e_len = cut - ex->e_lblk;
		e = ext2fs_extent_replace(h, 0, &cur);
		if (!e)
			e = ext2fs_extent_fix_parents(h);
	}
	if (e)
		return lf_errno_from_ext2(e);
	lf_vol_free_blocks(v, pblk, n);
	e = ext2fs_iblk_sub_blocks(fs, (struct ext2_inode *)in, n);
	if (e)
		return lf_errno_from_ext2(e);
	return lf_fs_iwrite(v, ino, in);
}

/* Free logical blocks [start, end] (end ~0ULL: to the end of the file);
 * writes the inode. Lock held.
 *
 * ext2fs_punch (1.47.0) cannot free a range that reaches the last block of
 * the filesystem: it rejects it with EXT2_ET_BAD_BLOCK_NUM (an off-by-one
 * range check) after it has already edited the extent tree, leaving i_blocks
 * and the bitmap wrong. A file that filled the volume ends there. So
 * truncation of extent-mapped inodes is ours, tail extent by tail extent
 * (it never splits an extent, so it never needs a new block), and a hole
 * punch first cuts any extent ending on the last block itself. */
static int punch_blocks(struct lf_vol *v, uint64_t ino,
			struct ext2_inode_large *in, blk64_t start, blk64_t end)
{
	ext2_filsys fs = v->fs;
	blk64_t last = ext2fs_blocks_count(fs->super) - 1;
	ext2_extent_handle_t h = NULL;
	struct ext2fs_extent *list = NULL;
	size_t n = 0;
	bool to_eof = end >= (blk64_t)UINT32_MAX;
	errcode_t e;
	int r;

	if (!(in->i_flags & EXT4_EXTENTS_FL) ||
	    (in->i_flags & EXT4_INLINE_DATA_FL)) {
		e = ext2fs_punch(fs, ino, (struct ext2_inode *)in, NULL, start,
				 end);
		return e ? lf_errno_from_ext2(e) : 0;
	}
	e = ext2fs_extent_open2(fs, ino, (struct ext2_inode *)in, &h);
	if (e)
		return lf_errno_from_ext2(e);
	r = extents_in(h, start, end, &list, &n);
	for (size_t i = n; i-- > 0 && !r;) {
		const struct ext2fs_extent *ex = &list[i];
		blk64_t xend = ex->e_lblk + ex->e_len - 1;

		if (!to_eof &&
		    (ex->e_pblk + ex->e_len - 1 != last || xend > end))
			continue;
		r = cut_extent_tail(v, h, ino, in, ex,
				    ex->e_lblk > start ? ex->e_lblk : start);
	}
	free(list);
	ext2fs_extent_free(h);
	if (r || to_eof)
		return r ? r : lf_fs_iwrite(v, ino, in);
	e = ext2fs_punch(fs, ino, (struct ext2_inode *)in, NULL, start, end);
	return e ? lf_errno_from_ext2(e) : 0;
}

/* Release everything the inode owns and mark it free. Lock held. */
static unsigned *aio_slot(struct lf_fsops *s, uint64_t ino)
{
	return &s->aio[ino % LF_AIO_BUCKETS];
}

static void aio_get(struct lf_fsops *s, uint64_t ino)
{
	__atomic_add_fetch(aio_slot(s, ino), 1, __ATOMIC_SEQ_CST);
}

static void aio_put(struct lf_fsops *s, uint64_t ino)
{
	if (__atomic_sub_fetch(aio_slot(s, ino), 1, __ATOMIC_SEQ_CST) == 0 &&
	    __atomic_load_n(&s->aio_waiters, __ATOMIC_SEQ_CST)) {
		pthread_mutex_lock(&s->aio_mu);
		pthread_cond_broadcast(&s->aio_cv);
		pthread_mutex_unlock(&s->aio_mu);
	}
}

/* Wait until no asynchronous read of ino's bucket is in flight. Safe with
 * the volume lock held: completions never take it. */
static void aio_drain(struct lf_fsops *s, uint64_t ino)
{
	unsigned *n = aio_slot(s, ino);

	if (!__atomic_load_n(n, __ATOMIC_SEQ_CST))
		return;
	pthread_mutex_lock(&s->aio_mu);
	__atomic_add_fetch(&s->aio_waiters, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(n, __ATOMIC_SEQ_CST))
		pthread_cond_wait(&s->aio_cv, &s->aio_mu);
	__atomic_sub_fetch(&s->aio_waiters, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&s->aio_mu);
}

static int free_inode(struct lf_vol *v, uint64_t ino)
{
	ext2_filsys fs = v->fs;
	struct ext2_inode_large in;
	struct timespec t = now_ts();
	errcode_t e;
	int r;

	if (v->fsops)
		aio_drain(v->fsops, ino);

	r = lf_fs_iread(v, ino, &in);
	if (r)
		return r;
	if (ext2fs_inode_has_valid_blocks2(fs, (struct ext2_inode *)&in)) {
		r = punch_blocks(v, ino, &in, 0, ~0ULL);
		if (r)
			lf_warn(MOD, "%s: inode %llu: freeing blocks: %s",
				lf_vol_desc(v), (unsigned long long)ino,
				strerror(-r));
	}
	if (ext2fs_file_acl_block(fs, (struct ext2_inode *)&in)) {
		e = ext2fs_free_ext_attr(fs, ino, &in);
		if (e)
			lf_warn(MOD, "%s: inode %llu: freeing xattrs: %s",
				lf_vol_desc(v), (unsigned long long)ino,
				error_message(e));
		r = lf_fs_iread(v, ino, &in);
		if (r && r != -ESTALE)
			return r;
	}
	in.i_links_count = 0;
	in.i_dtime = (uint32_t)t.tv_sec;
	r = lf_fs_iwrite(v, ino, &in);
	if (r)
		return r;
	ext2fs_inode_alloc_stats2(fs, ino, -1, LINUX_S_ISDIR(in.i_mode));
	return 0;
}

static struct lf_ilock **ilock_slot(struct lf_fsops *s, uint64_t ino)
{
	struct lf_ilock **pp = &s->ilocks[ino % LF_ILOCK_BUCKETS];

	while (*pp && (*pp)->ino != ino)
		pp = &(*pp)->next;
	return pp;
}

/* Nothing names ino any more: free it unless it is still held or has data
 * I/O in flight, in which case the last of those frees it. Lock held. */
static int release_inode(struct lf_vol *v, struct lf_fsops *s, uint64_t ino)
{
	struct lf_hold *h = *hold_slot(s, ino);
	struct lf_ilock *l = *ilock_slot(s, ino);

	if (h && h->count) {
		h->orphan = true;
		return 0;
	}
	if (l) {
		l->free_pending = true;
		return 0;
	}
	return free_inode(v, ino);
}

/* The inode lost its last name. */
static int inode_unlinked(struct lf_vol *v, struct lf_fsops *s, uint64_t ino)
{
	lf_dirindex_drop(s->dix, ino);
	return release_inode(v, s, ino);
}

/* Take ino's I/O lock, shared or exclusive; NULL on ENOMEM. Called
 * without the volume lock. */
static struct lf_ilock *ilock_get(struct lf_vol *v, uint64_t ino, bool excl)
{
	struct lf_fsops *s;
	struct lf_ilock **pp, *l = NULL;

	LOCK_STATE(v, s);
	if (!s)
		goto out;
	pp = ilock_slot(s, ino);
	if (!*pp) {
		pthread_rwlockattr_t a;

		*pp = calloc(1, sizeof(**pp));
		if (!*pp)
			goto out;
		(*pp)->ino = ino;
		/* A stream of readers must not starve a truncate. */
		pthread_rwlockattr_init(&a);
		pthread_rwlockattr_setkind_np(
			&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&(*pp)->rw, &a);
		pthread_rwlockattr_destroy(&a);
	}
	l = *pp;
	l->users++;
out:
	lf_vol_unlock(v);
	if (l) {
		if (excl) {
			pthread_rwlock_wrlock(&l->rw);
			aio_drain(s, ino);
		} else {
			pthread_rwlock_rdlock(&l->rw);
		}
	}
	return l;
}

static void ilock_destroy(struct lf_ilock *l)
{
	pthread_rwlock_destroy(&l->rw);
	free(l);
}

/* Drop the I/O lock; the last user frees an inode unlinked meanwhile.
 * Called without the volume lock. */
static void ilock_put(struct lf_vol *v, struct lf_ilock *l)
{
	struct lf_fsops *s;
	struct lf_ilock **pp;
	uint64_t ino = l->ino;
	bool pending;

	pthread_rwlock_unlock(&l->rw);
	lf_vol_lock(v);
	s = v->fsops;
	if (--l->users == 0) {
		pending = l->free_pending;
		pp = ilock_slot(s, ino);
		*pp = l->next;
		ilock_destroy(l);
		if (pending && !lf_vol_read_only(v))
			release_inode(v, s, ino);
	}
	lf_vol_unlock(v);
}

void lf_fs_iget(struct lf_vol *v, uint64_t ino)
{
	struct lf_fsops *s;
	struct lf_hold **pp;

	LOCK_STATE(v, s);
	if (s) {
		pp = hold_slot(s, ino);
		if (!*pp) {
			*pp = calloc(1, sizeof(**pp));
			if (*pp)
				(*pp)->ino = ino;
		}
		if (*pp)
			(*pp)->count++;
	}
	lf_vol_unlock(v);
}

void lf_fs_iput(struct lf_vol *v, uint64_t ino, uint64_t n)
{
	struct lf_fsops *s;
	struct lf_hold **pp, *h;

	LOCK_STATE(v, s);
	if (!s)
		goto out;
	pp = hold_slot(s, ino);
	h = *pp;
	if (!h)
		goto out;
	h->count = h->count > n ? h->count - n : 0;
	if (h->count == 0) {
		bool orphan = h->orphan;

		*pp = h->next;
		free(h);
		if (orphan && !lf_vol_read_only(v))
			release_inode(v, s, ino);
	}
out:
	lf_vol_unlock(v);
}

static void fsops_fini(struct lf_vol *v)
{
	struct lf_fsops *s = v->fsops;

	if (!s)
		return;
	for (uint64_t i = 0; i < LF_AIO_BUCKETS; i++)
		aio_drain(s, i);
	for (size_t i = 0; i < LF_HOLD_BUCKETS; i++) {
		struct lf_hold *h = s->holds[i], *n;

		for (; h; h = n) {
			n = h->next;
			if (h->orphan && !lf_vol_read_only(v))
				free_inode(v, h->ino);
			free(h);
		}
	}
	for (size_t i = 0; i < LF_ILOCK_BUCKETS; i++) {
		struct lf_ilock *l = s->ilocks[i], *n;

		/* Nobody does I/O on a volume being closed. */
		for (; l; l = n) {
			n = l->next;
			if (l->free_pending && !lf_vol_read_only(v))
				free_inode(v, l->ino);
			ilock_destroy(l);
		}
	}
	lf_dirindex_set_free(s->dix);
	pthread_cond_destroy(&s->aio_cv);
	pthread_mutex_destroy(&s->aio_mu);
	free(s);
	v->fsops = NULL;
	v->fsops_fini = NULL;
}

/* resize.c replaces vol->fs under us (fsops_int.h). */
void lf_fsops_quiesce(struct lf_vol *v)
{
	struct lf_fsops *s = v->fsops;

	for (uint64_t i = 0; s && i < LF_AIO_BUCKETS; i++)
		aio_drain(s, i);
}

void lf_fsops_reloaded(struct lf_vol *v)
{
	struct lf_fsops *s = v->fsops;
	struct lf_dirindex_set *dix;

	if (!s)
		return;
	s->overhead = 0;
	dix = lf_dirindex_set_new(LF_DIRINDEX_BYTES);
	if (dix) {
		lf_dirindex_set_free(s->dix);
		s->dix = dix;
	}
}

/* ---- directories ---- */

struct build_ctx {
	struct lf_dirindex_set *set;
	struct lf_dirindex *d;
	int err;
};

static int build_cb(ext2_ino_t dir, int entry, struct ext2_dir_entry *de,
		    int offset, int blocksize, char *buf, void *priv)
{
	struct build_ctx *c = priv;
	int len = ext2fs_dirent_name_len(de);

	if (lf_dirindex_add(c->set, c->d, de->name, len, de->inode,
			    ft_to_mode(ext2fs_dirent_file_type(de)),
			    LF_DIRPOS_NONE)) {
		c->err = -ENOMEM;
		return DIRENT_ABORT;
	}
	return 0;
}

/* Directory block lblk of dir into buf (checksum verified); -ENOENT for a
 * hole. Lock held. */
static int dirblk_read(struct lf_vol *v, uint64_t dir,
		       struct ext2_inode_large *din, blk64_t lblk,
		       blk64_t *pblk, char *buf)
{
	errcode_t e = ext2fs_bmap2(v->fs, dir, (struct ext2_inode *)din, NULL,
				   0, lblk, NULL, pblk);

	if (!e && !*pblk)
		return -ENOENT;
	if (!e)
		e = ext2fs_read_dir_block4(v->fs, *pblk, buf, 0, dir);
	return e ? lf_errno_from_ext2(e) : 0;
}

/* End of the entries in a directory block: the checksum tail follows. */
static unsigned dirblk_limit(ext2_filsys fs)
{
	return fs->blocksize - (ext2fs_has_feature_metadata_csum(fs->super)
					? sizeof(struct ext2_dir_entry_tail)
					: 0);
}

/* Entries we edit in place ourselves: not inline, not hashed by name in a
 * way we do not keep (casefold, encryption). */
static bool dir_plain(const struct ext2_inode_large *din)
{
	return !(din->i_flags &
		 (EXT4_INLINE_DATA_FL | EXT4_ENCRYPT_FL | EXT4_CASEFOLD_FL));
}

/* Blocks a directory's size claims, checked against what it owns: a
 * damaged i_size must not turn every directory walk into billions of
 * block-map lookups. Directories may have a few holes, not that many. */
static int dir_nblocks(ext2_filsys fs, uint64_t dir,
		       const struct ext2_inode_large *din, uint64_t *nblk)
{
	uint64_t n = EXT2_I_SIZE(din) / fs->blocksize;
	uint64_t owned =
		ext2fs_get_stat_i_blocks(fs, (struct ext2_inode *)din) * 512 /
		fs->blocksize;

	if (n > 2 * owned + 16) {
		lf_err("fsimage",
		       "directory inode %llu: size %llu is far "
		       "beyond its %llu blocks: damaged",
		       (unsigned long long)dir,
		       (unsigned long long)EXT2_I_SIZE(din),
		       (unsigned long long)owned);
		return -EIO;
	}
	*nblk = n;
	return 0;
}

/* Index every live entry of dir with its position, block by block. */
static int build_walk(struct lf_vol *v, uint64_t dir,
		      struct ext2_inode_large *din, struct build_ctx *c)
{
	ext2_filsys fs = v->fs;
	uint64_t nblk = 0;
	int r = dir_nblocks(fs, dir, din, &nblk);
	char *buf;

	if (r)
		return r;
	buf = malloc(fs->blocksize);
	r = buf ? 0 : -ENOMEM;

	for (uint64_t b = 0; b < nblk && !r; b++) {
		blk64_t pblk = 0;
		unsigned o = 0;

		r = dirblk_read(v, dir, din, b, &pblk, buf);
		if (r == -ENOENT) {
			r = 0;
			continue;
		}
		while (!r && o + 8 <= fs->blocksize) {
			struct ext2_dir_entry *de = (void *)(buf + o);
			unsigned rec = 0;

			if (ext2fs_get_rec_len(fs, de, &rec) || rec < 8 ||
			    o + rec > fs->blocksize) {
				r = -EIO;
				break;
			}
			if (de->inode &&
			    lf_dirindex_add(
				    c->set, c->d, de->name,
				    ext2fs_dirent_name_len(de), de->inode,
				    ft_to_mode(ext2fs_dirent_file_type(de)),
				    b << 32 | o))
				r = -ENOMEM;
			o += rec;
		}
	}
	free(buf);
	return r;
}

/* The index of dir, built on first use. Lock held. */
static int dir_index(struct lf_vol *v, struct lf_fsops *s, uint64_t dir,
		     struct lf_dirindex **out)
{
	struct build_ctx c = {.set = s->dix};
	struct ext2_inode_large din;
	int r;

	*out = lf_dirindex_get(s->dix, dir);
	if (*out)
		return 0;
	r = lf_fs_iread(v, dir, &din);
	if (r)
		return r;
	c.d = lf_dirindex_create(s->dix, dir);
	if (!c.d)
		return -ENOMEM;
	if (dir_plain(&din)) {
		r = build_walk(v, dir, &din, &c);
	} else {
		errcode_t e =
			ext2fs_dir_iterate2(v->fs, dir, 0, NULL, build_cb, &c);

		r = e ? lf_errno_from_ext2(e) : c.err;
	}
	if (r) {
		lf_dirindex_drop(s->dix, dir);
		return r;
	}
	lf_dirindex_trim(s->dix, dir);
	*out = c.d;
	return 0;
}

/* Look name up in dir (which must be a directory). Lock held. */
static int dir_lookup(struct lf_vol *v, struct lf_fsops *s, uint64_t dir,
		      const char *name, uint64_t *ino, uint32_t *type)
{
	struct ext2_inode_large din;
	struct lf_dirindex *d;
	int r;

	r = lf_fs_iread(v, dir, &din);
	if (r)
		return r;
	if (!LINUX_S_ISDIR(din.i_mode))
		return -ENOTDIR;
	if (din.i_links_count == 0)
		return -ENOENT;
	r = dir_index(v, s, dir, &d);
	if (r)
		return r;
	r = lf_dirindex_find(d, name, strlen(name), ino, type, NULL);
	if (!r && *type == 0) {
		struct ext2_inode_large in;

		r = lf_fs_iread(v, *ino, &in);
		if (!r)
			*type = in.i_mode & S_IFMT;
	}
	return r;
}

static void index_add(struct lf_fsops *s, uint64_t dir, const char *name,
		      uint64_t ino, uint32_t type, uint64_t pos)
{
	struct lf_dirindex *d = lf_dirindex_get(s->dix, dir);

	if (d && lf_dirindex_add(s->dix, d, name, strlen(name), ino, type, pos))
		lf_dirindex_drop(s->dix, dir);
}

static void index_del(struct lf_fsops *s, uint64_t dir, const char *name)
{
	struct lf_dirindex *d = lf_dirindex_get(s->dix, dir);

	if (d)
		lf_dirindex_del(s->dix, d, name, strlen(name));
}

/* Put an entry into a free gap of a directory block: the offset, or
 * -ENOSPC. */
static int dirblk_insert(ext2_filsys fs, char *buf, const char *name,
			 size_t len, uint64_t ino, int ft)
{
	unsigned limit = dirblk_limit(fs), need = EXT2_DIR_REC_LEN(len);

	for (unsigned o = 0; o < limit;) {
		struct ext2_dir_entry *de = (void *)(buf + o);
		unsigned rec = 0, used;

		if (ext2fs_get_rec_len(fs, de, &rec) || rec < 8 ||
		    o + rec > limit)
			return -EIO;
		used = de->inode ? EXT2_DIR_REC_LEN(ext2fs_dirent_name_len(de))
				 : 0;
		if (rec >= used + need) {
			if (used) {
				ext2fs_set_rec_len(fs, used, de);
				o += used;
				de = (void *)(buf + o);
				ext2fs_set_rec_len(fs, rec - used, de);
			}
			de->inode = ino;
			ext2fs_dirent_set_name_len(de, len);
			ext2fs_dirent_set_file_type(de, ft);
			memcpy(de->name, name, len);
			return o;
		}
		o += rec;
	}
	return -ENOSPC;
}

/* Insert into the first block with room, starting at the index's hint
 * block: without it, every create would scan (and checksum) the whole
 * directory as ext2fs_link does. -ENOSPC when no block has room. */
static int fast_link(struct lf_vol *v, struct lf_dirindex *d, uint64_t dir,
		     const char *name, uint64_t ino, uint32_t mode,
		     uint64_t *pos)
{
	ext2_filsys fs = v->fs;
	struct ext2_inode_large din;
	uint64_t nblk, *hint = lf_dirindex_hint(d);
	int ft = ext2fs_has_feature_filetype(fs->super) ? mode_to_ft(mode) : 0;
	char *buf;
	int r;

	r = lf_fs_iread(v, dir, &din);
	if (r)
		return r;
	if (!dir_plain(&din) || (din.i_flags & EXT2_INDEX_FL))
		return -EOPNOTSUPP;
	r = dir_nblocks(fs, dir, &din, &nblk);
	if (r)
		return r;
	if (!nblk)
		return -EOPNOTSUPP;
	buf = malloc(fs->blocksize);
	if (!buf)
		return -ENOMEM;
	r = -ENOSPC;
	for (uint64_t i = 0; i < nblk && r == -ENOSPC; i++) {
		uint64_t b = ((*hint < nblk ? *hint : nblk - 1) + i) % nblk;
		blk64_t pblk = 0;
		errcode_t e;
		int o;

		r = dirblk_read(v, dir, &din, b, &pblk, buf);
		if (r == -ENOENT) {
			r = -ENOSPC;
			continue;
		}
		if (r)
			break;
		o = dirblk_insert(fs, buf, name, strlen(name), ino, ft);
		if (o < 0) {
			r = o;
			continue;
		}
		e = ext2fs_write_dir_block4(fs, pblk, buf, 0, dir);
		r = e ? lf_errno_from_ext2(e) : 0;
		if (!r) {
			*hint = b;
			*pos = b << 32 | (unsigned)o;
		}
	}
	free(buf);
	return r;
}

/* Add an entry, growing the directory when its blocks are full; *pos gets
 * where it went (or NONE). */
static int dir_link(struct lf_vol *v, struct lf_fsops *s, uint64_t dir,
		    const char *name, uint64_t ino, uint32_t mode,
		    uint64_t *pos)
{
	ext2_filsys fs = v->fs;
	struct lf_dirindex *d = lf_dirindex_get(s->dix, dir);
	errcode_t e;
	int r = -EOPNOTSUPP;

	*pos = LF_DIRPOS_NONE;
	if (d)
		r = fast_link(v, d, dir, name, ino, mode, pos);
	if (r == -ENOSPC) {
		e = ext2fs_expand_dir(fs, dir);
		if (e)
			return lf_errno_from_ext2(e);
		*lf_dirindex_hint(d) = UINT32_MAX; /* the new last block */
		r = fast_link(v, d, dir, name, ino, mode, pos);
	}
	if (r != -EOPNOTSUPP && r != -EIO && r != -EUCLEAN)
		return r;

	/* Library path: inline or hashed directories, odd blocks. */
	*pos = LF_DIRPOS_NONE;
	e = ext2fs_link(fs, dir, name, ino, mode_to_ft(mode));
	if (e == EXT2_ET_DIR_NO_SPACE) {
		struct ext2_inode_large din;

		r = lf_fs_iread(v, dir, &din);
		if (r)
			return r;
		/* expand_dir appends a block the hash tree does not know:
		 * the directory becomes linear, which ext4 accepts. */
		if (din.i_flags & EXT2_INDEX_FL) {
			din.i_flags &= ~EXT2_INDEX_FL;
			r = lf_fs_iwrite(v, dir, &din);
			if (r)
				return r;
		}
		e = ext2fs_expand_dir(fs, dir);
		if (!e)
			e = ext2fs_link(fs, dir, name, ino, mode_to_ft(mode));
	}
	return e ? lf_errno_from_ext2(e) : 0;
}

/* Remove the entry at offset `at` of a directory block if it is name→ino:
 * merged into the entry before it, as ext2fs_unlink does. */
static int dirblk_remove(ext2_filsys fs, char *buf, unsigned at,
			 const char *name, size_t len, uint64_t ino)
{
	unsigned limit = dirblk_limit(fs), prev = UINT_MAX, prec = 0;

	for (unsigned o = 0; o < limit && o <= at;) {
		struct ext2_dir_entry *de = (void *)(buf + o);
		unsigned rec = 0;

		if (ext2fs_get_rec_len(fs, de, &rec) || rec < 8 ||
		    o + rec > limit)
			return -EIO;
		if (o == at) {
			if (de->inode != ino ||
			    (size_t)ext2fs_dirent_name_len(de) != len ||
			    memcmp(de->name, name, len) != 0)
				return -ENOENT;
			if (prev == UINT_MAX)
				de->inode = 0;
			else
				ext2fs_set_rec_len(
					fs, prec + rec,
					(struct ext2_dir_entry *)(buf + prev));
			return 0;
		}
		prev = o;
		prec = rec;
		o += rec;
	}
	return -ENOENT;
}

/* Remove name→ino from dir: straight at the position the index knows, else
 * by ext2fs_unlink's scan of the whole directory. */
static int dir_unlink(struct lf_vol *v, struct lf_fsops *s, uint64_t dir,
		      const char *name, uint64_t ino)
{
	ext2_filsys fs = v->fs;
	struct lf_dirindex *d = lf_dirindex_get(s->dix, dir);
	struct ext2_inode_large din;
	uint64_t xino, pos = LF_DIRPOS_NONE;
	uint32_t xtype;
	char *buf = NULL;
	errcode_t e;
	int r;

	if (d &&
	    !lf_dirindex_find(d, name, strlen(name), &xino, &xtype, &pos) &&
	    xino == ino && pos != LF_DIRPOS_NONE &&
	    !lf_fs_iread(v, dir, &din) && dir_plain(&din) &&
	    (buf = malloc(fs->blocksize))) {
		blk64_t pblk = 0;

		r = dirblk_read(v, dir, &din, pos >> 32, &pblk, buf);
		if (!r)
			r = dirblk_remove(fs, buf, (unsigned)pos, name,
					  strlen(name), ino);
		if (!r) {
			e = ext2fs_write_dir_block4(fs, pblk, buf, 0, dir);
			free(buf);
			if (e)
				return lf_errno_from_ext2(e);
			*lf_dirindex_hint(d) = pos >> 32;
			return 0;
		}
		free(buf);
	}
	e = ext2fs_unlink(fs, dir, name, ino, 0);
	return e ? lf_errno_from_ext2(e) : 0;
}

struct setent_ctx {
	const char *name;
	size_t len;
	uint64_t ino;
	int ft;
	bool done;
};

static int setent_cb(ext2_ino_t dir, int entry, struct ext2_dir_entry *de,
		     int offset, int blocksize, char *buf, void *priv)
{
	struct setent_ctx *c = priv;

	if ((size_t)ext2fs_dirent_name_len(de) != c->len ||
	    memcmp(de->name, c->name, c->len) != 0)
		return 0;
	de->inode = c->ino;
	ext2fs_dirent_set_file_type(de, c->ft);
	c->done = true;
	return DIRENT_CHANGED | DIRENT_ABORT;
}

/* Point an existing entry at another inode, in place. */
static int dir_set_entry(struct lf_vol *v, uint64_t dir, const char *name,
			 uint64_t ino, uint32_t mode)
{
	struct setent_ctx c = {name, strlen(name), ino, mode_to_ft(mode),
			       false};
	errcode_t e = ext2fs_dir_iterate2(v->fs, dir, 0, NULL, setent_cb, &c);

	if (e)
		return lf_errno_from_ext2(e);
	return c.done ? 0 : -ENOENT;
}

static int empty_cb(ext2_ino_t dir, int entry, struct ext2_dir_entry *de,
		    int offset, int blocksize, char *buf, void *priv)
{
	int len = ext2fs_dirent_name_len(de);

	if ((len == 1 && de->name[0] == '.') ||
	    (len == 2 && de->name[0] == '.' && de->name[1] == '.'))
		return 0;
	*(bool *)priv = false;
	return DIRENT_ABORT;
}

static int dir_is_empty(struct lf_vol *v, uint64_t dir)
{
	bool empty = true;
	errcode_t e =
		ext2fs_dir_iterate2(v->fs, dir, 0, NULL, empty_cb, &empty);

	if (e)
		return lf_errno_from_ext2(e);
	return empty ? 0 : -ENOTEMPTY;
}

/* Adjust a directory's link count and touch its mtime/ctime. */
static int dir_touch(struct lf_vol *v, uint64_t dir, int dlinks)
{
	struct ext2_inode_large in;
	int r = lf_fs_iread(v, dir, &in);

	if (r)
		return r;
	for (; dlinks > 0; dlinks--)
		nlink_inc(&in);
	for (; dlinks < 0; dlinks++)
		nlink_dec(&in);
	touch_mc(v, &in);
	return lf_fs_iwrite(v, dir, &in);
}

/* ---- create ---- */

static void extent_header_init(struct ext2_inode_large *in)
{
	struct ext3_extent_header *eh = (void *)in->i_block;

	in->i_flags |= EXT4_EXTENTS_FL;
	memset(in->i_block, 0, sizeof(in->i_block));
	eh->eh_magic = ext2fs_cpu_to_le16(EXT3_EXT_MAGIC);
	eh->eh_max = ext2fs_cpu_to_le16((sizeof(in->i_block) - sizeof(*eh)) /
					sizeof(struct ext3_extent));
}

/* Write a fresh inode over its whole on-disk size: stale in-inode xattrs
 * of a previous owner must not survive. */
static int write_new_inode(struct lf_vol *v, uint64_t ino,
			   struct ext2_inode_large *in)
{
	size_t isz = EXT2_INODE_SIZE(v->fs->super);
	char *buf = calloc(1, isz > sizeof(*in) ? isz : sizeof(*in));
	errcode_t e;

	if (!buf)
		return -ENOMEM;
	memcpy(buf, in, isz < sizeof(*in) ? isz : sizeof(*in));
	e = ext2fs_write_inode_full(v->fs, ino, (struct ext2_inode *)buf, isz);
	free(buf);
	return e ? lf_errno_from_ext2(e) : 0;
}

/* First data block of a new directory or slow symlink. */
static int new_first_block(struct lf_vol *v, uint64_t ino,
			   struct ext2_inode_large *in, uint64_t parent,
			   const char *target)
{
	ext2_filsys fs = v->fs;
	blk64_t pblk = 0;
	char *blk = NULL;
	errcode_t e;

	e = ext2fs_bmap2(fs, ino, (struct ext2_inode *)in, NULL, BMAP_ALLOC, 0,
			 NULL, &pblk);
	if (e)
		return lf_errno_from_ext2(e);
	if (target) {
		e = ext2fs_get_memzero(fs->blocksize, &blk);
		if (!e) {
			memcpy(blk, target, strlen(target));
			e = io_channel_write_blk64(fs->io, pblk, 1, blk);
		}
		EXT2_I_SIZE(in); /* size set by caller */
	} else {
		e = ext2fs_new_dir_block(fs, ino, parent, &blk);
		if (!e)
			e = ext2fs_write_dir_block4(fs, pblk, blk, 0, ino);
	}
	ext2fs_free_mem(&blk);
	return e ? lf_errno_from_ext2(e) : 0;
}

static int create_node_once(struct lf_vol *v, uint64_t parent, const char *name,
			    uint32_t mode, uint64_t rdev, const char *target,
			    const struct lf_owner *o, struct lf_stat *st)
{
	ext2_filsys fs = v->fs;
	struct lf_fsops *s;
	struct ext2_inode_large pin, in;
	struct lf_acl_new acl = {0};
	struct timespec t = now_ts();
	uint64_t xino;
	uint32_t xtype, gid = o->gid;
	uint64_t pos;
	ext2_ino_t ino = 0;
	bool isdir = LINUX_S_ISDIR(mode), reserved = false;
	errcode_t e;
	int r;

	if (name_bad(name, &r))
		return r;
	if (lf_vol_read_only(v))
		return -EROFS;
	LOCK_STATE(v, s);
	if (!s) {
		r = -ENOMEM;
		goto out;
	}
	r = dir_lookup(v, s, parent, name, &xino, &xtype);
	if (r == 0)
		r = -EEXIST;
	if (r != -ENOENT)
		goto out;
	r = lf_fs_iread(v, parent, &pin);
	if (r)
		goto out;
	if (isdir && (r = dir_nlink_room(v, &pin)))
		goto out;
	if (pin.i_mode & S_ISGID) {
		if (!o->gid_fixed)
			gid = i_gid(&pin);
		if (isdir)
			mode |= S_ISGID;
	}
	r = lf_acl_inherit(v, parent, &mode, o->umask, &acl);
	if (r)
		goto out;

	e = ext2fs_new_inode(fs, parent, mode, NULL, &ino);
	if (e) {
		r = lf_errno_from_ext2(e);
		goto out;
	}
	ext2fs_inode_alloc_stats2(fs, ino, +1, isdir);
	reserved = true;

	memset(&in, 0, sizeof(in));
	in.i_mode = mode;
	set_uid(&in, o->uid);
	set_gid(&in, gid);
	in.i_links_count = isdir ? 2 : 1;
	if (EXT2_INODE_SIZE(fs->super) > EXT2_GOOD_OLD_INODE_SIZE)
		in.i_extra_isize = sizeof(struct ext2_inode_large) -
				   EXT2_GOOD_OLD_INODE_SIZE;
	TSET(fs, &in, atime, &t);
	TSET(fs, &in, mtime, &t);
	TSET(fs, &in, ctime, &t);
	if (HAS_EXTRA(fs, &in, i_crtime_extra))
		tenc(&in.i_crtime, &in.i_crtime_extra, &t);
	in.i_generation = (uint32_t)random();
	if (LINUX_S_ISCHR(mode) || LINUX_S_ISBLK(mode)) {
		rdev_encode(&in, rdev);
	} else if (target && strlen(target) < sizeof(in.i_block)) {
		memcpy(in.i_block, target, strlen(target));
		in.i_size = strlen(target);
	} else if (LINUX_S_ISREG(mode) || isdir || target) {
		if (ext2fs_has_feature_extents(fs->super))
			extent_header_init(&in);
	}
	r = write_new_inode(v, ino, &in);
	if (r)
		goto out;
	if (isdir || (target && strlen(target) >= sizeof(in.i_block))) {
		r = new_first_block(v, ino, &in, parent, target);
		if (r)
			goto out;
		in.i_size = isdir ? fs->blocksize : strlen(target);
		r = lf_fs_iwrite(v, ino, &in);
		if (r)
			goto out;
	}
	r = lf_acl_store(v, ino, &acl);
	if (r)
		goto out;

	r = dir_link(v, s, parent, name, ino, mode, &pos);
	if (r)
		goto out;
	reserved = false;
	index_add(s, parent, name, ino, mode & S_IFMT, pos);
	r = dir_touch(v, parent, isdir ? 1 : 0);
	if (r)
		goto out;
	if (st)
		r = stat_ino(v, ino, st);
out:
	if (reserved && ino)
		free_inode(v, ino);
	lf_vol_unlock(v);
	lf_acl_new_free(&acl);
	return r;
}

/* Out of space with freed blocks held for their commit: commit, retry
 * once (txn.h). */
static int create_node(struct lf_vol *v, uint64_t parent, const char *name,
		       uint32_t mode, uint64_t rdev, const char *target,
		       const struct lf_owner *o, struct lf_stat *st)
{
	int r = create_node_once(v, parent, name, mode, rdev, target, o, st);
	bool again;

	if (r != -ENOSPC)
		return r;
	lf_vol_lock(v);
	again = lf_txn_release_freed(v);
	lf_vol_unlock(v);
	return again ? create_node_once(v, parent, name, mode, rdev, target, o,
					st)
		     : r;
}

int lf_fs_mknod(struct lf_vol *v, uint64_t parent, const char *name,
		uint32_t mode, uint64_t rdev, const struct lf_owner *o,
		struct lf_stat *st)
{
	if ((mode & S_IFMT) == 0)
		mode |= S_IFREG;
	switch (mode & S_IFMT) {
	case S_IFREG:
	case S_IFIFO:
	case S_IFSOCK:
	case S_IFCHR:
	case S_IFBLK:
		break;
	default:
		return -EINVAL;
	}
	return create_node(v, parent, name, mode & (S_IFMT | 07777), rdev, NULL,
			   o, st);
}

int lf_fs_mkdir(struct lf_vol *v, uint64_t parent, const char *name,
		uint32_t mode, const struct lf_owner *o, struct lf_stat *st)
{
	return create_node(v, parent, name, S_IFDIR | (mode & 07777), 0, NULL,
			   o, st);
}

int lf_fs_symlink(struct lf_vol *v, uint64_t parent, const char *name,
		  const char *target, const struct lf_owner *o,
		  struct lf_stat *st)
{
	size_t len = strlen(target);

	if (len == 0)
		return -ENOENT;
	if (len >= v->fs->blocksize || len >= PATH_MAX)
		return -ENAMETOOLONG;
	return create_node(v, parent, name, S_IFLNK | 0777, 0, target, o, st);
}

/* ---- simple queries ---- */

int lf_fs_getattr(struct lf_vol *v, uint64_t ino, struct lf_stat *st)
{
	int r;

	lf_vol_lock(v);
	r = stat_ino(v, ino, st);
	lf_vol_unlock(v);
	return r;
}

int lf_fs_lookup(struct lf_vol *v, uint64_t parent, const char *name,
		 struct lf_stat *st)
{
	struct lf_fsops *s;
	uint64_t ino;
	uint32_t type;
	int r;

	if (strlen(name) > LF_NAME_MAX)
		return -ENAMETOOLONG;
	LOCK_STATE(v, s);
	r = s ? dir_lookup(v, s, parent, name, &ino, &type) : -ENOMEM;
	if (!r)
		r = stat_ino(v, ino, st);
	lf_vol_unlock(v);
	return r;
}

int lf_fs_readlink(struct lf_vol *v, uint64_t ino, char *buf, size_t size)
{
	ext2_filsys fs = v->fs;
	struct ext2_inode_large in;
	char *blk = NULL;
	const char *src;
	blk64_t pblk = 0;
	size_t len;
	int r;

	lf_vol_lock(v);
	r = lf_fs_iread(v, ino, &in);
	if (r)
		goto out;
	if (!LINUX_S_ISLNK(in.i_mode)) {
		r = -EINVAL;
		goto out;
	}
	len = EXT2_I_SIZE(&in);
	if (len >= fs->blocksize) {
		r = -EIO;
		goto out;
	}
	if (ext2fs_is_fast_symlink((struct ext2_inode *)&in)) {
		src = (const char *)in.i_block;
	} else {
		errcode_t e = ext2fs_bmap2(fs, ino, (struct ext2_inode *)&in,
					   NULL, 0, 0, NULL, &pblk);

		if (!e && !pblk)
			e = EXT2_ET_BAD_BLOCK_NUM;
		if (!e)
			e = ext2fs_get_mem(fs->blocksize, &blk);
		if (!e)
			e = io_channel_read_blk64(fs->io, pblk, 1, blk);
		if (e) {
			r = lf_errno_from_ext2(e);
			goto out;
		}
		src = blk;
	}
	if (size > 0) {
		size_t n = len < size ? len : size - 1;

		memcpy(buf, src, n);
		buf[n] = 0;
	}
	r = (int)len;
out:
	ext2fs_free_mem(&blk);
	lf_vol_unlock(v);
	return r;
}

/* ---- truncate and partial-block zeroing ---- */

/* Zero bytes [from, to) of logical block lblk if it holds data. */
static int zero_in_block(struct lf_vol *v, uint64_t ino,
			 struct ext2_inode_large *in, blk64_t lblk,
			 unsigned from, unsigned to)
{
	ext2_filsys fs = v->fs;
	blk64_t pblk = 0;
	int rflags = 0;
	char *buf = NULL;
	errcode_t e;

	e = ext2fs_bmap2(fs, ino, (struct ext2_inode *)in, NULL, 0, lblk,
			 &rflags, &pblk);
	if (e)
		return lf_errno_from_ext2(e);
	if (!pblk || (rflags & BMAP_RET_UNINIT))
		return 0;
	e = ext2fs_get_mem(fs->blocksize, &buf);
	if (!e)
		e = io_channel_read_blk64(fs->io, pblk, 1, buf);
	if (!e) {
		memset(buf + from, 0, to - from);
		e = io_channel_write_blk64(fs->io, pblk, 1, buf);
	}
	ext2fs_free_mem(&buf);
	return e ? lf_errno_from_ext2(e) : 0;
}

static uint64_t max_file_size(ext2_filsys fs)
{
	return (((uint64_t)1 << 32) - 1) * fs->blocksize;
}

/* Lock held; in is ino's inode and is written back. */
static int do_truncate(struct lf_vol *v, uint64_t ino,
		       struct ext2_inode_large *in, uint64_t size)
{
	ext2_filsys fs = v->fs;
	uint64_t old = EXT2_I_SIZE(in), bs = fs->blocksize;
	int r;

	if (size > max_file_size(fs))
		return -EFBIG;
	if (size < old || (in->i_flags & EXT4_EXTENTS_FL && size > old)) {
		/* Blocks past the new end (also preallocated ones kept past
		 * the old end) go; the tail of the last block reads zero. */
		blk64_t first = (size + bs - 1) / bs;

		if (ext2fs_inode_has_valid_blocks2(fs,
						   (struct ext2_inode *)in)) {
			if (size < old) {
				r = punch_blocks(v, ino, in, first, ~0ULL);
				if (r) {
					lf_err(MOD,
					       "%s: inode %llu: truncating: %s",
					       lf_vol_desc(v),
					       (unsigned long long)ino,
					       strerror(-r));
					return r;
				}
			}
			if (size % bs && size < old) {
				r = zero_in_block(v, ino, in, size / bs,
						  size % bs, bs);
				if (r)
					return r;
			}
		}
	}
	in->i_size = (uint32_t)size;
	in->i_size_high = (uint32_t)(size >> 32);
	return lf_fs_iwrite(v, ino, in);
}

int lf_fs_setattr(struct lf_vol *v, uint64_t ino, unsigned what,
		  const struct lf_setattr *sa, struct lf_stat *st)
{
	ext2_filsys fs = v->fs;
	struct ext2_inode_large in;
	struct timespec t = now_ts();
	struct lf_ilock *l = NULL;
	int r;

	if ((what & LF_SET_SIZE) && !(l = ilock_get(v, ino, true)))
		return -ENOMEM;
	lf_vol_lock(v);
	r = lf_fs_iread(v, ino, &in);
	if (r)
		goto out;
	if (what && lf_vol_read_only(v)) {
		r = -EROFS;
		goto out;
	}
	if (what & LF_SET_SIZE) {
		if (LINUX_S_ISDIR(in.i_mode)) {
			r = -EISDIR;
			goto out;
		}
		if (!LINUX_S_ISREG(in.i_mode)) {
			r = -EINVAL;
			goto out;
		}
		if (sa->size != EXT2_I_SIZE(&in)) {
			r = do_truncate(v, ino, &in, sa->size);
			if (r)
				goto out;
			TSET(fs, &in, mtime, &t);
		}
	}
	if (what & LF_SET_MODE)
		in.i_mode = (in.i_mode & S_IFMT) | (sa->mode & 07777);
	if (what & LF_SET_UID)
		set_uid(&in, sa->uid);
	if (what & LF_SET_GID)
		set_gid(&in, sa->gid);
	if (what & LF_SET_KILL_SUID) {
		in.i_mode &= ~S_ISUID;
		if (in.i_mode & S_IXGRP)
			in.i_mode &= ~S_ISGID;
	}
	if (what & LF_SET_ATIME_NOW)
		TSET(fs, &in, atime, &t);
	else if (what & LF_SET_ATIME)
		TSET(fs, &in, atime, &sa->atime);
	if (what & LF_SET_MTIME_NOW)
		TSET(fs, &in, mtime, &t);
	else if (what & LF_SET_MTIME)
		TSET(fs, &in, mtime, &sa->mtime);
	if (what & LF_SET_CTIME)
		TSET(fs, &in, ctime, &sa->ctime);
	else if (what)
		TSET(fs, &in, ctime, &t);
	if (what)
		r = lf_fs_iwrite(v, ino, &in);
	if (!r && (what & LF_SET_MODE) && !LINUX_S_ISLNK(in.i_mode))
		r = lf_fs_acl_chmod_locked(v, ino, in.i_mode);
	if (!r && st)
		fill_stat(v, ino, &in, st);
out:
	lf_vol_unlock(v);
	if (l)
		ilock_put(v, l);
	return r;
}

/* ---- link, unlink, rmdir, rename ---- */

int lf_fs_link(struct lf_vol *v, uint64_t ino, uint64_t newparent,
	       const char *newname, struct lf_stat *st)
{
	struct lf_fsops *s;
	struct ext2_inode_large in;
	uint64_t xino, pos;
	uint32_t xtype;
	int r;

	if (name_bad(newname, &r))
		return r;
	if (lf_vol_read_only(v))
		return -EROFS;
	LOCK_STATE(v, s);
	if (!s) {
		r = -ENOMEM;
		goto out;
	}
	r = lf_fs_iread(v, ino, &in);
	if (r)
		goto out;
	if (LINUX_S_ISDIR(in.i_mode)) {
		r = -EPERM;
		goto out;
	}
	if (in.i_links_count == 0) {
		r = -ENOENT;
		goto out;
	}
	if (in.i_links_count >= LF_LINK_MAX) {
		r = -EMLINK;
		goto out;
	}
	r = dir_lookup(v, s, newparent, newname, &xino, &xtype);
	if (r == 0)
		r = -EEXIST;
	if (r != -ENOENT)
		goto out;
	r = dir_link(v, s, newparent, newname, ino, in.i_mode, &pos);
	if (r)
		goto out;
	index_add(s, newparent, newname, ino, in.i_mode & S_IFMT, pos);
	r = lf_fs_iread(v, ino, &in);
	if (r)
		goto out;
	in.i_links_count++;
	lf_fs_set_ctime_now(v, &in);
	r = lf_fs_iwrite(v, ino, &in);
	if (!r)
		r = dir_touch(v, newparent, 0);
	if (!r && st)
		fill_stat(v, ino, &in, st);
out:
	lf_vol_unlock(v);
	return r;
}

/* Drop one name of ino (a directory loses all its links). Lock held. */
static int drop_link(struct lf_vol *v, struct lf_fsops *s, uint64_t ino)
{
	struct ext2_inode_large in;
	int r = lf_fs_iread(v, ino, &in);

	if (r)
		return r;
	if (LINUX_S_ISDIR(in.i_mode))
		in.i_links_count = 0;
	else if (in.i_links_count > 0)
		in.i_links_count--;
	lf_fs_set_ctime_now(v, &in);
	r = lf_fs_iwrite(v, ino, &in);
	if (r)
		return r;
	return in.i_links_count ? 0 : inode_unlinked(v, s, ino);
}

static int remove_entry(struct lf_vol *v, uint64_t parent, const char *name,
			bool isdir, uint64_t *inop)
{
	struct lf_fsops *s;
	uint64_t ino;
	uint32_t type;
	int r;

	if (strlen(name) > LF_NAME_MAX)
		return -ENAMETOOLONG;
	if (isdir && strcmp(name, ".") == 0)
		return -EINVAL;
	if (isdir && strcmp(name, "..") == 0)
		return -ENOTEMPTY;
	if (lf_vol_read_only(v))
		return -EROFS;
	LOCK_STATE(v, s);
	if (!s) {
		r = -ENOMEM;
		goto out;
	}
	r = dir_lookup(v, s, parent, name, &ino, &type);
	if (r)
		goto out;
	if (isdir && type != S_IFDIR) {
		r = -ENOTDIR;
		goto out;
	}
	if (!isdir && type == S_IFDIR) {
		r = -EISDIR;
		goto out;
	}
	if (isdir && (r = dir_is_empty(v, ino)))
		goto out;
	r = dir_unlink(v, s, parent, name, ino);
	if (r)
		goto out;
	index_del(s, parent, name);
	r = dir_touch(v, parent, isdir ? -1 : 0);
	if (!r)
		r = drop_link(v, s, ino);
	if (!r && inop)
		*inop = ino;
out:
	lf_vol_unlock(v);
	return r;
}

int lf_fs_unlink(struct lf_vol *v, uint64_t parent, const char *name,
		 uint64_t *ino)
{
	return remove_entry(v, parent, name, false, ino);
}

int lf_fs_rmdir(struct lf_vol *v, uint64_t parent, const char *name,
		uint64_t *ino)
{
	return remove_entry(v, parent, name, true, ino);
}

/* -EINVAL if dir is anc or lies below it. Lock held. */
static int check_not_below(struct lf_vol *v, struct lf_fsops *s, uint64_t anc,
			   uint64_t dir)
{
	uint64_t cur = dir, up;
	uint32_t type;
	int depth = 0, r;

	while (cur != LF_ROOT_INO) {
		if (cur == anc)
			return -EINVAL;
		r = dir_lookup(v, s, cur, "..", &up, &type);
		if (r)
			return r;
		if (up == cur || ++depth > 65536)
			return -ELOOP;
		cur = up;
	}
	return anc == LF_ROOT_INO ? -EINVAL : 0;
}

static int set_dotdot(struct lf_vol *v, struct lf_fsops *s, uint64_t dir,
		      uint64_t parent)
{
	int r = dir_set_entry(v, dir, "..", parent, S_IFDIR);

	if (!r)
		index_add(s, dir, "..", parent, S_IFDIR, LF_DIRPOS_NONE);
	return r;
}

int lf_fs_touch_ctime(struct lf_vol *v, uint64_t ino)
{
	struct ext2_inode_large in;
	int r = lf_fs_iread(v, ino, &in);

	if (r)
		return r;
	lf_fs_set_ctime_now(v, &in);
	return lf_fs_iwrite(v, ino, &in);
}

static int parents_touch(struct lf_vol *v, uint64_t p, int dp, uint64_t np,
			 int dnp)
{
	int r;

	if (p == np)
		return dir_touch(v, p, dp + dnp);
	r = dir_touch(v, p, dp);
	return r ? r : dir_touch(v, np, dnp);
}

static int rename_locked(struct lf_vol *v, struct lf_fsops *s, uint64_t p,
			 const char *name, uint64_t np, const char *newname,
			 unsigned flags, uint64_t *replaced)
{
	struct ext2_inode_large npin;
	uint64_t sino, dino = 0, pos = LF_DIRPOS_NONE;
	uint32_t stype, dtype = 0;
	bool sdir, ddir = false, moved = p != np;
	int r;

	r = dir_lookup(v, s, p, name, &sino, &stype);
	if (r)
		return r;
	r = dir_lookup(v, s, np, newname, &dino, &dtype);
	if (r && r != -ENOENT)
		return r;
	if (r == -ENOENT)
		dino = 0;
	if ((flags & RENAME_EXCHANGE) && !dino)
		return -ENOENT;
	if (dino && (flags & RENAME_NOREPLACE))
		return -EEXIST;
	if (dino == sino)
		return 0; /* same inode (or same entry): nothing to do */
	sdir = stype == S_IFDIR;
	ddir = dino && dtype == S_IFDIR;
	if (sdir && moved && (r = check_not_below(v, s, sino, np)))
		return r;
	if ((flags & RENAME_EXCHANGE) && ddir && moved &&
	    (r = check_not_below(v, s, dino, p)))
		return r;

	if (flags & RENAME_EXCHANGE) {
		r = dir_set_entry(v, p, name, dino, dtype);
		if (!r)
			r = dir_set_entry(v, np, newname, sino, stype);
		if (r)
			return r;
		index_add(s, p, name, dino, dtype, LF_DIRPOS_NONE);
		index_add(s, np, newname, sino, stype, LF_DIRPOS_NONE);
		if (moved && sdir && (r = set_dotdot(v, s, sino, np)))
			return r;
		if (moved && ddir && (r = set_dotdot(v, s, dino, p)))
			return r;
		r = lf_fs_touch_ctime(v, sino);
		if (!r)
			r = lf_fs_touch_ctime(v, dino);
		if (!r) {
			int d = moved ? (int)sdir - (int)ddir : 0;

			r = parents_touch(v, p, -d, np, d);
		}
		return r;
	}

	if (dino) {
		if (sdir && !ddir)
			return -ENOTDIR;
		if (!sdir && ddir)
			return -EISDIR;
		if (ddir && (r = dir_is_empty(v, dino)))
			return r;
		r = dir_set_entry(v, np, newname, sino, stype);
		if (r)
			return r;
	} else {
		if (sdir && moved) {
			r = lf_fs_iread(v, np, &npin);
			if (!r)
				r = dir_nlink_room(v, &npin);
			if (r)
				return r;
		}
		r = dir_link(v, s, np, newname, sino, stype, &pos);
		if (r)
			return r;
	}
	index_add(s, np, newname, sino, stype, pos);
	r = dir_unlink(v, s, p, name, sino);
	if (r)
		return r;
	index_del(s, p, name);
	if (sdir && moved && (r = set_dotdot(v, s, sino, np)))
		return r;
	r = lf_fs_touch_ctime(v, sino);
	if (r)
		return r;
	{
		int dp = sdir && moved ? -1 : 0;
		int dnp = (sdir && moved ? 1 : 0) - (ddir ? 1 : 0);

		r = parents_touch(v, p, dp, np, dnp);
	}
	if (!r && dino) {
		r = drop_link(v, s, dino);
		if (!r && replaced)
			*replaced = dino;
	}
	return r;
}

int lf_fs_rename(struct lf_vol *v, uint64_t parent, const char *name,
		 uint64_t newparent, const char *newname, unsigned flags,
		 uint64_t *replaced)
{
	struct lf_fsops *s;
	int r;

	if (replaced)
		*replaced = 0;
	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) ||
	    ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE)))
		return -EINVAL;
	if (name_bad(name, &r) || name_bad(newname, &r))
		return r;
	if (is_dot(name) || is_dot(newname))
		return -EINVAL;
	if (lf_vol_read_only(v))
		return -EROFS;
	LOCK_STATE(v, s);
	if (!s)
		r = -ENOMEM;
	else
		r = rename_locked(v, s, parent, name, newparent, newname, flags,
				  replaced);
	if (r && s) {
		/* A failure midway may leave an index out of step. */
		lf_dirindex_drop(s->dix, parent);
		lf_dirindex_drop(s->dix, newparent);
	}
	lf_vol_unlock(v);
	return r;
}

/* ---- readdir ---- */

/* Positions are (block index << 32 | offset in block): an entry keeps its
 * position while others come and go, as libext2fs never moves entries. */
int lf_fs_readdir(struct lf_vol *v, uint64_t ino, uint64_t off,
		  lf_fs_dirent_fn fn, void *ctx)
{
	ext2_filsys fs = v->fs;
	struct ext2_inode_large in;
	char *buf = NULL;
	uint64_t nblk, blk;
	errcode_t e;
	int r;

	lf_vol_lock(v);
	r = lf_fs_iread(v, ino, &in);
	if (r)
		goto out;
	if (!LINUX_S_ISDIR(in.i_mode)) {
		r = -ENOTDIR;
		goto out;
	}
	if (in.i_flags & EXT4_INLINE_DATA_FL) {
		r = -EOPNOTSUPP;
		goto out;
	}
	e = ext2fs_get_mem(fs->blocksize, &buf);
	if (e) {
		r = -ENOMEM;
		goto out;
	}
	r = dir_nblocks(fs, ino, &in, &nblk);
	if (r)
		goto out;
	for (blk = off >> 32; blk < nblk; blk++) {
		blk64_t pblk = 0;
		unsigned o = 0;

		e = ext2fs_bmap2(fs, ino, (struct ext2_inode *)&in, NULL, 0,
				 blk, NULL, &pblk);
		if (!e && !pblk)
			continue;
		if (!e)
			e = ext2fs_read_dir_block4(fs, pblk, buf, 0, ino);
		if (e) {
			r = lf_errno_from_ext2(e);
			goto out;
		}
		while (o + 8 <= fs->blocksize) {
			struct ext2_dir_entry *de = (void *)(buf + o);
			unsigned rec = 0;
			uint64_t pos = blk << 32 | o, next;

			if (ext2fs_get_rec_len(fs, de, &rec) || rec < 8 ||
			    o + rec > fs->blocksize) {
				r = -EIO;
				goto out;
			}
			next = o + rec >= fs->blocksize ? (blk + 1) << 32
							: pos + rec;
			if (de->inode && pos >= off &&
			    fn(ctx, de->name, ext2fs_dirent_name_len(de),
			       de->inode,
			       ft_to_mode(ext2fs_dirent_file_type(de)), next))
				goto out;
			o += rec;
		}
	}
out:
	ext2fs_free_mem(&buf);
	lf_vol_unlock(v);
	return r;
}

/* ---- statfs ---- */

static uint64_t fs_overhead(struct lf_vol *v)
{
	ext2_filsys fs = v->fs;
	uint64_t ov = fs->super->s_first_data_block;

	if (fs->super->s_overhead_clusters)
		return (uint64_t)fs->super->s_overhead_clusters *
		       EXT2FS_CLUSTER_RATIO(fs);
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		blk64_t sb, od, nd;
		blk_t used = 0;

		ext2fs_super_and_bgd_loc2(fs, g, &sb, &od, &nd, &used);
		ov += used + 2 + fs->inode_blocks_per_group;
	}
	if (ext2fs_has_feature_journal(fs->super) &&
	    fs->super->s_journal_inum) {
		struct ext2_inode_large jin;

		if (!lf_fs_iread(v, fs->super->s_journal_inum, &jin))
			ov += ext2fs_get_stat_i_blocks(
				      fs, (struct ext2_inode *)&jin) *
			      512 / fs->blocksize;
	}
	return ov;
}

int lf_fs_statfs(struct lf_vol *v, struct statvfs *st)
{
	ext2_filsys fs;
	struct lf_fsops *s;
	uint64_t blocks, bfree, resv;

	LOCK_STATE(v, s);
	fs = v->fs;
	memset(st, 0, sizeof(*st));
	if (s && !s->overhead)
		s->overhead = fs_overhead(v);
	blocks = ext2fs_blocks_count(fs->super);
	bfree = ext2fs_free_blocks_count(fs->super);
	resv = ext2fs_r_blocks_count(fs->super);
	st->f_bsize = fs->blocksize;
	st->f_frsize = fs->blocksize;
	st->f_blocks = blocks - (s && s->overhead < blocks ? s->overhead : 0);
	st->f_bfree = bfree;
	st->f_bavail = bfree > resv ? bfree - resv : 0;
	st->f_files = fs->super->s_inodes_count;
	st->f_ffree = fs->super->s_free_inodes_count;
	st->f_favail = st->f_ffree;
	memcpy(&st->f_fsid, fs->super->s_uuid, sizeof(st->f_fsid));
	st->f_namemax = LF_NAME_MAX;
	if (lf_vol_read_only(v))
		st->f_flag |= ST_RDONLY;
	lf_vol_unlock(v);
	return 0;
}

/* ---- open, fsync ---- */

int lf_fs_open(struct lf_vol *v, uint64_t ino, int flags)
{
	struct ext2_inode_large in;
	bool wr = (flags & O_ACCMODE) != O_RDONLY;
	struct lf_ilock *l = NULL;
	int r;

	if ((flags & O_TRUNC) && wr && !(l = ilock_get(v, ino, true)))
		return -ENOMEM;
	lf_vol_lock(v);
	r = lf_fs_iread(v, ino, &in);
	if (r)
		goto out;
	if (LINUX_S_ISDIR(in.i_mode) && (wr || (flags & O_TRUNC))) {
		r = -EISDIR;
		goto out;
	}
	if ((wr || (flags & O_TRUNC)) && lf_vol_read_only(v) &&
	    !LINUX_S_ISCHR(in.i_mode) && !LINUX_S_ISBLK(in.i_mode) &&
	    !LINUX_S_ISFIFO(in.i_mode) && !LINUX_S_ISSOCK(in.i_mode)) {
		r = -EROFS;
		goto out;
	}
	if ((flags & O_TRUNC) && wr && LINUX_S_ISREG(in.i_mode)) {
		r = do_truncate(v, ino, &in, 0);
		if (!r) {
			touch_mc(v, &in);
			r = lf_fs_iwrite(v, ino, &in);
		}
	}
out:
	lf_vol_unlock(v);
	if (l)
		ilock_put(v, l);
	return r;
}

int lf_fs_fsync(struct lf_vol *v, uint64_t ino, bool datasync)
{
	int r = 0;

	/* Opened read-only: nothing to sync. Fenced: EIO (what was not on
	 * the LUN never will be), from lf_vol_sync_locked(). */
	if (v->opts.read_only)
		return 0;
	lf_vol_lock(v);
	r = lf_vol_sync_locked(v);
	lf_vol_unlock(v);
	return r;
}

/* ---- file data ---- */

/* A piece of a file's block map. */
struct lf_run {
	uint64_t lblk, pblk; /* pblk 0: hole (reads as zeros) */
	uint64_t n;
	bool uninit; /* allocated but unwritten: reads as zeros */
	bool fresh;  /* this write allocated or initialised it: no old bytes */
};

struct lf_runs {
	struct lf_run *v;
	size_t n, cap;
};

static int runs_add(struct lf_runs *rs, uint64_t lblk, uint64_t pblk,
		    uint64_t n, bool uninit, bool fresh)
{
	struct lf_run *l = rs->n ? &rs->v[rs->n - 1] : NULL;

	if (!n)
		return 0;
	if (l && l->lblk + l->n == lblk && l->fresh == fresh &&
	    l->uninit == uninit &&
	    ((!l->pblk && !pblk) ||
	     (l->pblk && pblk && l->pblk + l->n == pblk))) {
		l->n += n;
		return 0;
	}
	if (rs->n == rs->cap) {
		size_t c = rs->cap ? rs->cap * 2 : 16;
		struct lf_run *nv = realloc(rs->v, c * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		rs->v = nv;
		rs->cap = c;
	}
	rs->v[rs->n++] = (struct lf_run){lblk, pblk, n, uninit, fresh};
	return 0;
}

/* Append the map of logical blocks [first, last] to rs, holes included,
 * neighbours merged. Extent-mapped inodes cost one tree walk for the whole
 * range, not one lookup per block. Lock held. */
static int map_blocks(struct lf_vol *v, uint64_t ino,
		      struct ext2_inode_large *in, uint64_t first,
		      uint64_t last, bool fresh, struct lf_runs *rs)
{
	ext2_filsys fs = v->fs;
	uint64_t pos = first;
	int r = 0;

	if ((in->i_flags & EXT4_EXTENTS_FL) &&
	    !(in->i_flags & EXT4_INLINE_DATA_FL)) {
		struct ext2fs_extent *list = NULL;
		ext2_extent_handle_t h;
		size_t n = 0;
		errcode_t e = ext2fs_extent_open2(fs, ino,
						  (struct ext2_inode *)in, &h);

		if (e)
			return lf_errno_from_ext2(e);
		r = extents_in(h, first, last, &list, &n);
		ext2fs_extent_free(h);
		for (size_t i = 0; i < n && !r && pos <= last; i++) {
			uint64_t s = list[i].e_lblk;
			uint64_t xe = s + list[i].e_len - 1, to;

			if (xe < pos)
				continue;
			if (s > last)
				break;
			if (s > pos) {
				r = runs_add(rs, pos, 0, s - pos, false, fresh);
				pos = s;
			}
			to = xe < last ? xe : last;
			if (!r)
				r = runs_add(rs, pos,
					     list[i].e_pblk + (pos - s),
					     to - pos + 1,
					     list[i].e_flags &
						     EXT2_EXTENT_FLAGS_UNINIT,
					     fresh);
			pos = to + 1;
		}
		free(list);
		if (!r && pos <= last)
			r = runs_add(rs, pos, 0, last - pos + 1, false, fresh);
		return r;
	}
	for (; pos <= last && !r; pos++) {
		blk64_t pblk = 0;
		int rf = 0;
		errcode_t e = ext2fs_bmap2(fs, ino, (struct ext2_inode *)in,
					   NULL, 0, pos, &rf, &pblk);

		if (e)
			return lf_errno_from_ext2(e);
		r = runs_add(rs, pos, pblk, 1, rf & BMAP_RET_UNINIT, fresh);
	}
	return r;
}

/* Read [s, e) of the file, which lies in run ru, into dst: whole blocks
 * straight into the caller's buffer, a partial first or last block through
 * a bounce block. */
static int read_span(struct lf_vol *v, const struct lf_run *ru, uint64_t s,
		     uint64_t e, char *dst, char **bounce)
{
	uint64_t bs = v->fs->blocksize, rs = ru->lblk * bs;
	uint64_t fs_ = (s + bs - 1) / bs * bs, fe = e / bs * bs;
	int r = 0;

	if (fs_ < fe) {
		r = lf_vol_data_pread(v, dst + (fs_ - s), fe - fs_,
				      (ru->pblk + (fs_ - rs) / bs) * bs);
		if (r)
			return r;
	} else {
		fs_ = fe = e;
	}
	for (uint64_t ps = s; ps < e && !r;) {
		uint64_t blk0 = ps / bs * bs, pe;

		if (ps >= fs_ && ps < fe) {
			ps = fe;
			continue;
		}
		pe = blk0 + bs < e ? blk0 + bs : e;
		if (!*bounce && !(*bounce = malloc(bs)))
			return -ENOMEM;
		r = lf_vol_data_pread(v, *bounce, bs,
				      (ru->pblk + (blk0 - rs) / bs) * bs);
		if (!r)
			memcpy(dst + (ps - s), *bounce + (ps - blk0), pe - ps);
		ps = pe;
	}
	return r;
}

/* The inode of a file whose data is being read or changed: a directory is
 * EISDIR, any other non-regular inode nonreg. Lock held. */
static int iread_regular(struct lf_vol *v, uint64_t ino,
			 struct ext2_inode_large *in, int nonreg)
{
	int r = lf_fs_iread(v, ino, in);

	if (r)
		return r;
	if (LINUX_S_ISDIR(in->i_mode))
		return -EISDIR;
	return LINUX_S_ISREG(in->i_mode) ? 0 : nonreg;
}

/* A read's first steps: ino's I/O lock shared, the volume lock, the inode.
 * Returns 1 with both locks held and *end (the end of what there is to
 * read) set, or 0 (nothing: EOF) or -errno with neither held. */
static int read_begin(struct lf_vol *v, uint64_t ino, size_t size, uint64_t off,
		      struct lf_ilock **lp, struct ext2_inode_large *in,
		      uint64_t *end)
{
	uint64_t isize;
	int r;

	*lp = ilock_get(v, ino, false);
	if (!*lp)
		return -ENOMEM;
	lf_vol_lock(v);
	r = iread_regular(v, ino, in, -EINVAL);
	if (r == 0) {
		isize = EXT2_I_SIZE(in);
		if (off < isize && size) {
			*end = off + size < isize ? off + size : isize;
			return 1;
		}
	}
	lf_vol_unlock(v);
	ilock_put(v, *lp);
	return r;
}

ssize_t lf_fs_read(struct lf_vol *v, uint64_t ino, void *buf, size_t size,
		   uint64_t off)
{
	ext2_filsys fs = v->fs;
	struct ext2_inode_large in;
	struct lf_runs rs = {0};
	uint64_t bs, end;
	char *bounce = NULL;
	struct lf_ilock *l;
	ssize_t r;

	r = read_begin(v, ino, size, off, &l, &in, &end);
	if (r <= 0)
		return r;
	bs = fs->blocksize;
	r = map_blocks(v, ino, &in, off / bs, (end - 1) / bs, false, &rs);
	if (r)
		goto out_unlock;
	lf_vol_unlock(v);

	for (size_t i = 0; i < rs.n && !r; i++) {
		struct lf_run *ru = &rs.v[i];
		uint64_t s = ru->lblk * bs, e = (ru->lblk + ru->n) * bs;
		char *dst;

		s = s > off ? s : off;
		e = e < end ? e : end;
		dst = (char *)buf + (s - off);
		if (!ru->pblk || ru->uninit)
			memset(dst, 0, e - s);
		else
			r = read_span(v, ru, s, e, dst, &bounce);
	}
	ilock_put(v, l);
	if (!r)
		r = end - off;
	free(bounce);
	free(rs.v);
	return r;
out_unlock:
	lf_vol_unlock(v);
	ilock_put(v, l);
	free(rs.v);
	return r;
}

struct aread;

struct aread_part {
	struct aread *a;
	struct iovec iov;
	uint64_t off; /* on the device */
};

struct aread {
	struct lf_vol *v;
	struct lf_fsops *s;
	uint64_t ino;
	ssize_t n;
	int err; /* the first part's error */
	unsigned pending;
	lf_fs_read_done_fn done;
	void *opaque;
	struct aread_part parts[];
};

static void aread_unref(struct aread *a)
{
	lf_fs_read_done_fn done = a->done;
	void *opaque = a->opaque;
	ssize_t r;

	if (__atomic_sub_fetch(&a->pending, 1, __ATOMIC_ACQ_REL))
		return;
	r = a->err ? a->err : a->n;
	aio_put(a->s, a->ino);
	free(a);
	done(opaque, r);
}

/* On the device's I/O thread: no locks but the cache's own. */
static void aread_part_done(void *opaque, int err)
{
	struct aread_part *p = opaque;
	struct aread *a = p->a;
	int none = 0;

	if (err) {
		lf_err(MOD,
		       "%s: inode %" PRIu64 ": read of %zu bytes at %" PRIu64
		       " failed: %s",
		       lf_vol_desc(a->v), a->ino, p->iov.iov_len, p->off,
		       strerror(-err));
		__atomic_compare_exchange_n(&a->err, &none, err, false,
					    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
	}
	aread_unref(a);
}

/* Like lf_fs_read, but the device commands are only started here: the
 * caller's thread goes back to work at once and the reply leaves from the
 * completion, without a hand-off back to a waiting thread. */
void lf_fs_read_async(struct lf_vol *v, uint64_t ino, void *buf, size_t size,
		      uint64_t off, lf_fs_read_done_fn done, void *opaque)
{
	ext2_filsys fs = v->fs;
	struct ext2_inode_large in;
	struct lf_runs rs = {0};
	struct aread *a = NULL;
	struct lf_ilock *l;
	uint64_t bs, end, rend;
	size_t nio = 0;
	ssize_t r;

	r = read_begin(v, ino, size, off, &l, &in, &end);
	if (r <= 0) {
		done(opaque, r);
		return;
	}
	bs = fs->blocksize;
	rend = (end + bs - 1) / bs * bs;
	if (off % bs || rend - off > size) {
		/* Not whole blocks: the synchronous path has the bounce
		 * buffers for that. */
		lf_vol_unlock(v);
		ilock_put(v, l);
		done(opaque, lf_fs_read(v, ino, buf, size, off));
		return;
	}
	r = map_blocks(v, ino, &in, off / bs, (end - 1) / bs, false, &rs);
	if (r)
		goto out_unlock;
	lf_vol_unlock(v);

	for (size_t i = 0; i < rs.n; i++)
		if (rs.v[i].pblk && !rs.v[i].uninit)
			nio++;
	if (nio) {
		a = malloc(sizeof(*a) + nio * sizeof(a->parts[0]));
		if (!a) {
			r = -ENOMEM;
			goto out;
		}
		*a = (struct aread){.v = v,
				    .s = v->fsops,
				    .ino = ino,
				    .n = (ssize_t)(end - off),
				    .pending = (unsigned)nio + 1,
				    .done = done,
				    .opaque = opaque};
	}
	nio = 0;
	for (size_t i = 0; i < rs.n; i++) {
		struct lf_run *ru = &rs.v[i];
		uint64_t s0 = ru->lblk * bs, e0 = (ru->lblk + ru->n) * bs;
		char *dst;

		s0 = s0 > off ? s0 : off;
		e0 = e0 < rend ? e0 : rend;
		dst = (char *)buf + (s0 - off);
		if (!ru->pblk || ru->uninit) {
			memset(dst, 0, e0 - s0);
			continue;
		}
		a->parts[nio] = (struct aread_part){
			.a = a,
			.iov = {.iov_base = dst, .iov_len = e0 - s0},
			.off = (ru->pblk + (s0 / bs - ru->lblk)) * bs};
		nio++;
	}
	if (a) {
		/* Counted before the inode lock goes: from then on only the
		 * bucket keeps a truncate from freeing these blocks. */
		aio_get(a->s, ino);
		for (size_t i = 0; i < nio; i++)
			lf_vol_data_pread_async(v, &a->parts[i].iov,
						a->parts[i].off,
						aread_part_done, &a->parts[i]);
	}
	ilock_put(v, l);
	free(rs.v);
	if (a)
		aread_unref(a);
	else
		done(opaque, (ssize_t)(end - off));
	return;
out_unlock:
	lf_vol_unlock(v);
out:
	ilock_put(v, l);
	free(rs.v);
	done(opaque, r);
}

/* Write [s, e) of the file, which lies in run ru, from src. */
static int write_span(struct lf_vol *v, const struct lf_run *ru, uint64_t s,
		      uint64_t e, const char *src, char **bounce)
{
	uint64_t bs = v->fs->blocksize, rs = ru->lblk * bs;
	uint64_t fs_ = (s + bs - 1) / bs * bs, fe = e / bs * bs;
	int r = 0;

	if (fs_ < fe) {
		r = lf_vol_data_pwrite(v, src + (fs_ - s), fe - fs_,
				       (ru->pblk + (fs_ - rs) / bs) * bs);
		if (r)
			return r;
	} else {
		fs_ = fe = e; /* no whole block */
	}
	for (uint64_t ps = s; ps < e && !r;) {
		uint64_t blk0 = ps / bs * bs, pe, pb;

		if (ps >= fs_ && ps < fe) {
			ps = fe;
			continue;
		}
		pe = blk0 + bs < e ? blk0 + bs : e;
		pb = (ru->pblk + (blk0 - rs) / bs) * bs;
		if (!*bounce && !(*bounce = malloc(bs)))
			return -ENOMEM;
		if (ru->fresh)
			memset(*bounce, 0, bs);
		else
			r = lf_vol_data_pread(v, *bounce, bs, pb);
		if (!r) {
			memcpy(*bounce + (ps - blk0), src + (ps - s), pe - ps);
			r = lf_vol_data_pwrite(v, *bounce, bs, pb);
		}
		ps = pe;
	}
	return r;
}

/* Mark the unwritten blocks of run u written, adding them to out. An
 * unwritten extent the run covers whole is flipped in place; the blocks of
 * one it covers in part go through libext2fs one by one, which splits it.
 * Lock held. */
static int init_unwritten(struct lf_vol *v, uint64_t ino,
			  struct ext2_inode_large *in, const struct lf_run *u,
			  struct lf_runs *out)
{
	ext2_filsys fs = v->fs;
	uint64_t b = u->lblk, uend = u->lblk + u->n;
	int r = 0;

	while (b < uend && !r) {
		blk64_t pblk = u->pblk + (b - u->lblk);
		struct ext2fs_extent ex;
		ext2_extent_handle_t h;
		bool whole = false;
		errcode_t e;

		/* A fresh handle each time: the block-by-block path below
		 * changes the tree behind any handle we kept. */
		e = ext2fs_extent_open2(fs, ino, (struct ext2_inode *)in, &h);
		if (e)
			return lf_errno_from_ext2(e);
		if (!ext2fs_extent_goto(h, b) &&
		    !ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex) &&
		    ex.e_lblk == b && ex.e_len &&
		    ex.e_lblk + ex.e_len <= uend &&
		    (ex.e_flags & EXT2_EXTENT_FLAGS_UNINIT)) {
			whole = true;
			ex.e_flags &= ~EXT2_EXTENT_FLAGS_UNINIT;
			e = ext2fs_extent_replace(h, 0, &ex);
			if (!e)
				e = ext2fs_extent_fix_parents(h);
		}
		ext2fs_extent_free(h);
		if (e)
			return lf_errno_from_ext2(e);
		if (whole) {
			r = runs_add(out, b, ex.e_pblk, ex.e_len, false, true);
			b += ex.e_len;
			continue;
		}
		e = ext2fs_bmap2(fs, ino, (struct ext2_inode *)in, NULL,
				 BMAP_SET, b, NULL, &pblk);
		if (e)
			return lf_errno_from_ext2(e);
		r = runs_add(out, b, pblk, 1, false, true);
		b++;
	}
	return r;
}

/* A free run of `want` blocks at or after goal (wrapping once), else the
 * first free piece after it. Our own bounded search: in 1.47.0
 * ext2fs_new_range(EXT2_NEWRANGE_MIN_LENGTH) searches forever when the
 * only free runs, too short, end at the last block (f_ext_zero_len). */
static errcode_t find_free_run(ext2_filsys fs, blk64_t goal, blk64_t want,
			       blk64_t *pblk, blk64_t *plen)
{
	blk64_t first = fs->super->s_first_data_block;
	blk64_t last = ext2fs_blocks_count(fs->super) - 1;
	int tries = 0;

	for (int pass = 0; pass < 2; pass++) {
		blk64_t start = pass ? first : goal;
		blk64_t end = pass ? (goal > first ? goal - 1 : first) : last;

		while (start <= end && tries++ < 512) {
			blk64_t z, set, stop;

			if (ext2fs_find_first_zero_block_bitmap2(
				    fs->block_map, start, end, &z))
				break;
			stop = z + want - 1 <= end ? z + want - 1 : end;
			if (ext2fs_find_first_set_block_bitmap2(
				    fs->block_map, z, stop, &set)) {
				if (stop - z + 1 == want) {
					*pblk = z;
					*plen = want;
					return 0;
				}
				break; /* too short, and it ends the range */
			}
			start = set + 1;
		}
	}
	return ext2fs_new_range(fs, 0, goal, want, NULL, pblk, plen);
}

/* Allocate and map logical blocks [s, s+n), a hole, adding them to out:
 * whole free ranges at a time, each extent grown in place, instead of a
 * tree walk and a bitmap search per block. On failure *alloc_err says why
 * and what was mapped before stays. Lock held. */
static int alloc_hole(struct lf_vol *v, uint64_t ino,
		      struct ext2_inode_large *in, uint64_t s, uint64_t n,
		      struct lf_runs *out, int *alloc_err)
{
	ext2_filsys fs = v->fs;
	ext2_extent_handle_t h;
	blk64_t goal;
	errcode_t e = 0;
	int r = 0;

	if (!(in->i_flags & EXT4_EXTENTS_FL) || EXT2FS_CLUSTER_RATIO(fs) > 1) {
		for (; n && !r; s++, n--) {
			blk64_t pblk = 0;

			e = ext2fs_bmap2(fs, ino, (struct ext2_inode *)in, NULL,
					 BMAP_ALLOC, s, NULL, &pblk);
			if (e || !pblk)
				break;
			r = runs_add(out, s, pblk, 1, false, true);
		}
		if (!r && n)
			*alloc_err = e ? lf_errno_from_ext2(e) : -ENOSPC;
		return r;
	}
	e = ext2fs_extent_open2(fs, ino, (struct ext2_inode *)in, &h);
	if (e)
		return lf_errno_from_ext2(e);
	goal = ext2fs_find_inode_goal(fs, ino, (struct ext2_inode *)in, s);
	while (n && !r && !e) {
		/* A damaged extent can point the goal off the device, where
		 * ext2fs_new_range searches forever. */
		if (goal < fs->super->s_first_data_block ||
		    goal >= ext2fs_blocks_count(fs->super))
			goal = fs->super->s_first_data_block;
		blk64_t pblk, plen, done = 0;
		blk64_t want = n < LF_EXT_INIT_MAX ? n : LF_EXT_INIT_MAX;

		/* One free range that holds it all if there is one, else
		 * the first free piece after the goal. */
		e = find_free_run(fs, goal, want, &pblk, &plen);
		if (e)
			break;
		ext2fs_block_alloc_stats_range(fs, pblk, plen, +1);
		/* libext2fs places the first block (joining a neighbour
		 * when it can); the rest of the range extends that extent. */
		while (done < plen) {
			struct ext2fs_extent ex;
			blk64_t k;

			e = ext2fs_extent_set_bmap(h, s + done, pblk + done, 0);
			if (e)
				break;
			done++;
			e = ext2fs_extent_goto(h, s + done - 1);
			if (!e)
				e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT,
						      &ex);
			if (e)
				break;
			if (ex.e_lblk + ex.e_len != s + done ||
			    ex.e_pblk + ex.e_len != pblk + done ||
			    (ex.e_flags & EXT2_EXTENT_FLAGS_UNINIT) ||
			    ex.e_len >= LF_EXT_INIT_MAX)
				continue;
			k = plen - done;
			if (k > LF_EXT_INIT_MAX - ex.e_len)
				k = LF_EXT_INIT_MAX - ex.e_len;
			ex.e_len += k;
			e = ext2fs_extent_replace(h, 0, &ex);
			if (!e)
				e = ext2fs_extent_fix_parents(h);
			if (e)
				break;
			done += k;
		}
		if (done < plen)
			ext2fs_block_alloc_stats_range(fs, pblk + done,
						       plen - done, -1);
		if (done) {
			errcode_t e2 = ext2fs_iblk_add_blocks(
				fs, (struct ext2_inode *)in, done);

			if (e2 && !e)
				e = e2;
			r = runs_add(out, s, pblk, done, false, true);
		}
		s += done;
		n -= done;
		goal = pblk + done;
	}
	ext2fs_extent_free(h);
	if (!r && n)
		*alloc_err = e ? lf_errno_from_ext2(e) : -ENOSPC;
	return r;
}

/* Give every hole and unwritten piece of map an initialised block. out
 * gets the resulting map up to where space ran out (*alloc_err then says
 * why). Writes the inode. Lock held.
 *
 * Not ext2fs_fallocate: with FORCE_INIT (1.47.0) it also fills the gap up
 * to a nearby extent beyond the range it was given, initialised blocks
 * whose stale bytes nobody writes; and it never joins the extent to its
 * left, so a file written 1 MiB at a time got an extent per write. */
static int alloc_runs(struct lf_vol *v, uint64_t ino,
		      struct ext2_inode_large *in, const struct lf_runs *map,
		      struct lf_runs *out, int *alloc_err)
{
	int r = 0;

	for (size_t i = 0; i < map->n && !r && !*alloc_err; i++) {
		const struct lf_run *m = &map->v[i];

		if (m->pblk && !m->uninit) {
			r = runs_add(out, m->lblk, m->pblk, m->n, false, false);
			continue;
		}
		if (m->uninit) {
			r = init_unwritten(v, ino, in, m, out);
			if (r < 0 && r != -ENOMEM) {
				*alloc_err = r;
				r = 0;
			}
			continue;
		}
		r = alloc_hole(v, ino, in, m->lblk, m->n, out, alloc_err);
	}
	if (!r)
		r = lf_fs_iwrite(v, ino, in);
	return r;
}

ssize_t lf_fs_write(struct lf_vol *v, uint64_t ino, const void *buf,
		    size_t size, uint64_t off)
{
	ext2_filsys fs = v->fs;
	struct ext2_inode_large in;
	struct lf_runs map = {0}, runs = {0}, *use;
	uint64_t bs, end, done_end;
	char *bounce = NULL;
	struct lf_ilock *l;
	size_t failed = 0;
	int alloc_err = 0;
	bool excl, need, retried = false;
	ssize_t r;

	if (size == 0)
		return 0;
	if (lf_vol_read_only(v))
		return -EROFS;
	if (off >= max_file_size(fs))
		return -EFBIG;
	end = off + size;
	if (end > max_file_size(fs) || end < off)
		end = max_file_size(fs);

	/* Shared only while every block is already allocated and written and
	 * every block is written whole: a reader must never see a block this
	 * write has just allocated before its bytes land, and partial blocks
	 * are read-modify-write. */
	bs = fs->blocksize;
	excl = off % bs || end % bs;
again:
	l = ilock_get(v, ino, excl);
	if (!l)
		return -ENOMEM;
	lf_vol_lock(v);
	/* One transaction from the allocation to the size (txn.h). */
	lf_txn_handle_start(v);
remap:
	r = iread_regular(v, ino, &in, -EINVAL);
	if (r)
		goto out_unlock;
	map.n = 0;
	r = map_blocks(v, ino, &in, off / bs, (end - 1) / bs, false, &map);
	if (r)
		goto out_unlock;
	need = false;
	for (size_t i = 0; i < map.n; i++)
		need |= !map.v[i].pblk || map.v[i].uninit;
	if (need && !excl) {
		lf_txn_handle_stop(v);
		lf_vol_unlock(v);
		ilock_put(v, l);
		excl = true;
		goto again;
	}
	use = &map;
	if (need) {
		r = alloc_runs(v, ino, &in, &map, &runs, &alloc_err);
		if (r)
			goto out_unlock;
		if (alloc_err == -ENOSPC && !retried && lf_txn_has_freed(v)) {
			/* Freed blocks wait for their commit (txn.h). What
			 * this attempt allocated holds stale bytes: given
			 * back first, so that the retry allocates it afresh
			 * (and zeroes the partial blocks). */
			for (size_t i = 0; !r && i < runs.n; i++)
				if (runs.v[i].fresh)
					r = punch_blocks(
						v, ino, &in, runs.v[i].lblk,
						runs.v[i].lblk + runs.v[i].n -
							1);
			if (r)
				goto out_unlock;
			lf_txn_handle_stop(v);
			lf_txn_release_freed(v);
			lf_txn_handle_start(v);
			retried = true;
			alloc_err = 0;
			runs.n = 0;
			goto remap;
		}
		use = &runs;
	}
	lf_vol_unlock(v);
	if (use->n == 0) {
		r = alloc_err ? alloc_err : -ENOSPC;
		lf_vol_lock(v);
		goto out_unlock;
	}
	/* Short write up to the last block we could allocate. */
	done_end = (use->v[use->n - 1].lblk + use->v[use->n - 1].n) * bs;
	if (done_end > end)
		done_end = end;

	r = 0;
	for (failed = 0; failed < use->n; failed++) {
		const struct lf_run *ru = &use->v[failed];
		uint64_t rs = ru->lblk * bs, re = rs + ru->n * bs;
		uint64_t s = rs > off ? rs : off,
			 e = re < done_end ? re : done_end;

		r = write_span(v, ru, s, e, (const char *)buf + (s - off),
			       &bounce);
		if (r)
			break;
	}

	lf_vol_lock(v);
	{
		int r2 = lf_fs_iread(v, ino, &in);

		/* Blocks this write allocated but could not fill must not
		 * show their stale bytes: release them; what came before
		 * the failed run is a short write. */
		for (size_t i = failed; r && !r2 && i < use->n; i++) {
			const struct lf_run *ru = &use->v[i];

			if (ru->fresh)
				r2 = punch_blocks(v, ino, &in, ru->lblk,
						  ru->lblk + ru->n - 1);
		}
		if (r && failed < use->n) {
			uint64_t ok = use->v[failed].lblk * bs;

			done_end = ok > off ? ok : off;
			if (done_end > off)
				r = 0;
		}
		if (!r2 && done_end > off) {
			if (done_end > EXT2_I_SIZE(&in)) {
				in.i_size = (uint32_t)done_end;
				in.i_size_high = (uint32_t)(done_end >> 32);
			}
			touch_mc(v, &in);
			r2 = lf_fs_iwrite(v, ino, &in);
		}
		if (!r)
			r = r2;
	}
	if (!r)
		r = done_end - off;
out_unlock:
	lf_txn_handle_stop(v);
	lf_vol_unlock(v);
	ilock_put(v, l);
	free(bounce);
	free(map.v);
	free(runs.v);
	return r;
}

static int falloc_range(struct lf_vol *v, uint64_t ino,
			struct ext2_inode_large *in, uint64_t off, uint64_t len)
{
	uint64_t bs = v->fs->blocksize;
	blk64_t start = off / bs, n = (off + len + bs - 1) / bs - start;
	errcode_t e =
		ext2fs_fallocate(v->fs, EXT2_FALLOCATE_FORCE_UNINIT, ino,
				 (struct ext2_inode *)in, ~0ULL, start, n);

	return e ? lf_errno_from_ext2(e) : 0;
}

int lf_fs_fallocate(struct lf_vol *v, uint64_t ino, int mode, uint64_t off,
		    uint64_t len)
{
	ext2_filsys fs = v->fs;
	struct ext2_inode_large in;
	bool keep = mode & FALLOC_FL_KEEP_SIZE;
	uint64_t end = off + len, bs;
	struct lf_ilock *l;
	int r;

	if (len == 0)
		return -EINVAL;
	if (mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE))
		return lf_fs_shift_range(v, ino, mode, off, len);
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE |
		     FALLOC_FL_ZERO_RANGE))
		return -EOPNOTSUPP;
	if ((mode & FALLOC_FL_PUNCH_HOLE) &&
	    (!keep || (mode & FALLOC_FL_ZERO_RANGE)))
		return -EOPNOTSUPP;
	if (lf_vol_read_only(v))
		return -EROFS;
	if (end > max_file_size(fs) || end < off)
		return -EFBIG;
	l = ilock_get(v, ino, true);
	if (!l)
		return -ENOMEM;
	lf_vol_lock(v);
	bs = fs->blocksize;
	r = iread_regular(v, ino, &in, -ENODEV);
	if (r)
		goto out;
	if (!(in.i_flags & EXT4_EXTENTS_FL)) {
		r = -EOPNOTSUPP;
		goto out;
	}
	if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
		uint64_t isize = EXT2_I_SIZE(&in);
		uint64_t zend = (mode & FALLOC_FL_PUNCH_HOLE) && end > isize
					? isize
					: end;
		uint64_t fb = (off + bs - 1) / bs,
			 lb = zend / bs; /* [fb, lb) */

		if (off < zend) {
			if (off / bs == (zend - 1) / bs &&
			    (off % bs || zend % bs)) {
				r = zero_in_block(v, ino, &in, off / bs,
						  off % bs,
						  zend % bs ? zend % bs : bs);
			} else {
				if (off % bs)
					r = zero_in_block(v, ino, &in, off / bs,
							  off % bs, bs);
				if (!r && zend % bs)
					r = zero_in_block(v, ino, &in,
							  zend / bs, 0,
							  zend % bs);
			}
			if (!r && fb < lb)
				r = punch_blocks(v, ino, &in, fb, lb - 1);
		}
		if (!r && (mode & FALLOC_FL_ZERO_RANGE) && fb < (end / bs))
			r = falloc_range(v, ino, &in, fb * bs,
					 (end / bs - fb) * bs);
	} else {
		r = falloc_range(v, ino, &in, off, len);
	}
	if (r)
		goto out;
	/* ext2fs_fallocate leaves writing a caller's inode to the caller. */
	if (!keep && end > EXT2_I_SIZE(&in)) {
		in.i_size = (uint32_t)end;
		in.i_size_high = (uint32_t)(end >> 32);
		touch_mc(v, &in);
	} else {
		lf_fs_set_ctime_now(v, &in);
	}
	r = lf_fs_iwrite(v, ino, &in);
out:
	lf_vol_unlock(v);
	ilock_put(v, l);
	return r;
}

/* ---- for fsops_range.c (see fsops_int.h) ---- */

struct lf_ilock *lf_fs_ilock_get(struct lf_vol *v, uint64_t ino)
{
	return ilock_get(v, ino, true);
}

void lf_fs_ilock_put(struct lf_vol *v, struct lf_ilock *l)
{
	ilock_put(v, l);
}

int lf_fs_iread_regular(struct lf_vol *v, uint64_t ino,
			struct ext2_inode_large *in)
{
	return iread_regular(v, ino, in, -ENODEV);
}

int lf_fs_punch_locked(struct lf_vol *v, uint64_t ino,
		       struct ext2_inode_large *in, uint64_t start,
		       uint64_t end)
{
	return punch_blocks(v, ino, in, start, end);
}

int lf_fs_extents_in(ext2_extent_handle_t h, uint64_t from, uint64_t to,
		     struct ext2fs_extent **out, size_t *nout)
{
	return extents_in(h, from, to, out, nout);
}

uint64_t lf_fs_max_size(struct lf_vol *v)
{
	return max_file_size(v->fs);
}

void lf_fs_touch_mc(struct lf_vol *v, struct ext2_inode_large *in)
{
	touch_mc(v, in);
}
