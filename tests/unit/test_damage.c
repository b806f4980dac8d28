/* test_damage.c — our own damage generator: a good 64 MiB volume written
 * through fsops, then one copy per kind of damage (superblock, group
 * descriptors, inodes, extent trees, directory blocks, a truncated LUN,
 * random bytes over metadata). Each copy goes through corrupt_walk.h's
 * procedure: refused with a message or served with -errno, never a crash,
 * a hang or a write to a refused or read-only volume.
 *
 * Most edits come twice: with the checksums recomputed (so the parser
 * behind the checksum sees the damage) and without (so the checksum
 * check itself is exercised). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <ext2fs/ext2fs.h>

#include "tests/unit/check.h"
#include "tests/unit/corrupt_walk.h"

#define MIB	  (1024 * 1024)
#define IMG_BYTES (64 * MIB)
#define NBIGDIR	  500

static const struct lf_owner owner = {1000, 1000, false, 0};

/* What the damage functions poke at. */
struct good {
	char path[128];
	uint64_t small, medium, big, big2, d1, d2, d3, bigdir, fastlink,
		slowlink;
};

struct dmg {
	const char *copy;
	const struct good *g;
	ext2_filsys fs; /* the copy, opened read-only: layout and checksums */
	int fd;		/* the copy, for raw writes */
	long arg;
	bool fix_csum;
};

/* ---- the good image ---- */

static uint64_t mk(struct lf_vol *v, uint64_t dir, const char *name,
		   uint32_t mode)
{
	struct lf_stat st;
	int r = S_ISDIR(mode) ? lf_fs_mkdir(v, dir, name, mode, &owner, &st)
			      : lf_fs_mknod(v, dir, name, mode, 0, &owner, &st);

	CHECK_EQ(r, 0);
	return r ? 0 : st.ino;
}

static void put(struct lf_vol *v, uint64_t ino, size_t len, uint64_t off,
		unsigned seed)
{
	unsigned char *buf = malloc(len);

	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)rand_r(&seed);
	CHECK_EQ(lf_fs_write(v, ino, buf, len, off), (ssize_t)len);
	free(buf);
}

static bool make_good(struct good *g)
{
	struct lf_vol_opts o = {.allow_format = true};
	struct lf_bdev *b = NULL;
	struct lf_vol *v = NULL;
	struct lf_stat st;
	char err[256] = "", name[64], longt[301], cmd[256];
	int fd, r;

	fd = open(g->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, IMG_BYTES) < 0) {
		perror(g->path);
		return false;
	}
	close(fd);
	if (lf_bdev_open_file(g->path, false, &b) < 0 ||
	    lf_vol_open(b, &o, &v, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", g->path, err);
		return false;
	}
	lf_bdev_unref(b);

	g->d1 = mk(v, LF_ROOT_INO, "d1", S_IFDIR | 0755);
	g->d2 = mk(v, g->d1, "d2", S_IFDIR | 0755);
	g->d3 = mk(v, g->d2, "d3", S_IFDIR | 0700);
	g->small = mk(v, LF_ROOT_INO, "small", S_IFREG | 0644);
	put(v, g->small, 100, 0, 1);
	g->medium = mk(v, g->d1, "medium", S_IFREG | 0644);
	put(v, g->medium, 40000, 0, 2);
	/* Two files written in turns, 64 KiB at a time: each ends up with
	 * many extents, so the tree has an index level. */
	g->big = mk(v, g->d1, "big", S_IFREG | 0644);
	g->big2 = mk(v, g->d2, "big2", S_IFREG | 0600);
	for (unsigned i = 0; i < 48; i++) {
		put(v, g->big, 65536, (uint64_t)i * 65536, 10 + i);
		put(v, g->big2, 65536, (uint64_t)i * 2 * 65536, 100 + i);
	}
	CHECK_EQ(lf_fs_symlink(v, g->d1, "fast", "../small", &owner, &st), 0);
	g->fastlink = st.ino;
	memset(longt, 'x', 300);
	longt[300] = '\0';
	CHECK_EQ(lf_fs_symlink(v, g->d1, "slow", longt, &owner, &st), 0);
	g->slowlink = st.ino;
	CHECK_EQ(lf_fs_setxattr(v, g->small, "user.a", "hello", 5, 0), 0);
	memset(longt, 'v', 300);
	CHECK_EQ(lf_fs_setxattr(v, g->medium, "user.big", longt, 300, 0), 0);
	CHECK_EQ(lf_fs_setxattr(v, g->d1, "user.dir", "d", 1, 0), 0);
	g->bigdir = mk(v, LF_ROOT_INO, "bigdir", S_IFDIR | 0755);
	for (int i = 0; i < NBIGDIR; i++) {
		snprintf(name, sizeof(name), "entry-%04d-with-a-longer-name",
			 i);
		mk(v, g->bigdir, name, (i % 50 ? S_IFREG : S_IFDIR) | 0644);
	}
	r = lf_vol_close(v);
	CHECK_EQ(r, 0);
	snprintf(cmd, sizeof(cmd), "e2fsck -fn '%s' >/dev/null 2>&1", g->path);
	r = system(cmd);
	CHECK_EQ(r, 0);
	return r == 0;
}

/* ---- raw access to the copy ---- */

static void raw_read(struct dmg *d, uint64_t off, void *p, size_t n)
{
	if (pread(d->fd, p, n, off) != (ssize_t)n)
		memset(p, 0, n);
}

static void raw_write(struct dmg *d, uint64_t off, const void *p, size_t n)
{
	CHECK_EQ(pwrite(d->fd, p, n, off), (ssize_t)n);
}

static uint64_t blk_off(struct dmg *d, blk64_t b)
{
	return (uint64_t)b * d->fs->blocksize;
}

/* ---- superblock ---- */

static void sb_edit(struct dmg *d,
		    void (*edit)(struct ext2_super_block *, long))
{
	struct ext2_super_block sb;

	raw_read(d, 1024, &sb, sizeof(sb));
	edit(&sb, d->arg);
	if (d->fix_csum)
		ext2fs_superblock_csum_set(d->fs, &sb);
	raw_write(d, 1024, &sb, sizeof(sb));
}

#define SB_FIELD(fn, stmt)                                                     \
	static void fn##_e(struct ext2_super_block *sb, long a)                \
	{                                                                      \
		stmt;                                                          \
	}                                                                      \
	static void fn(struct dmg *d)                                          \
	{                                                                      \
		sb_edit(d, fn##_e);                                            \
	}

SB_FIELD(sb_inodes_count, sb->s_inodes_count = (__u32)a)
SB_FIELD(sb_blocks_count, sb->s_blocks_count = (__u32)a)
SB_FIELD(sb_blocks_count_hi, sb->s_blocks_count_hi = (__u32)a)
SB_FIELD(sb_log_block_size, sb->s_log_block_size = (__u32)a)
SB_FIELD(sb_first_data_block, sb->s_first_data_block = (__u32)a)
SB_FIELD(sb_inodes_per_group, sb->s_inodes_per_group = (__u32)a)
SB_FIELD(sb_blocks_per_group, sb->s_blocks_per_group = (__u32)a)
SB_FIELD(sb_magic, sb->s_magic = (__u16)a)
SB_FIELD(sb_incompat, sb->s_feature_incompat ^= (__u32)a)
SB_FIELD(sb_ro_compat, sb->s_feature_ro_compat ^= (__u32)a)
SB_FIELD(sb_inode_size, sb->s_inode_size = (__u16)a)
SB_FIELD(sb_desc_size, sb->s_desc_size = (__u16)a)
SB_FIELD(sb_first_ino, sb->s_first_ino = (__u32)a)
SB_FIELD(sb_rev_level, sb->s_rev_level = (__u32)a)
SB_FIELD(sb_log_groups_per_flex, sb->s_log_groups_per_flex = (__u8)a)
SB_FIELD(sb_reserved_gdt, sb->s_reserved_gdt_blocks = (__u16)a)

/* ---- group descriptors ---- */

static uint64_t gd_off(struct dmg *d, dgrp_t g)
{
	return blk_off(d, d->fs->super->s_first_data_block + 1) +
	       (uint64_t)g * EXT2_DESC_SIZE(d->fs->super);
}

static void gd_write(struct dmg *d, dgrp_t g)
{
	if (d->fix_csum)
		ext2fs_group_desc_csum_set(d->fs, g);
	raw_write(d, gd_off(d, g),
		  ext2fs_group_desc(d->fs, d->fs->group_desc, g),
		  EXT2_DESC_SIZE(d->fs->super));
}

static blk64_t beyond(struct dmg *d)
{
	return ext2fs_blocks_count(d->fs->super) + 1000;
}

static void gd_block_bitmap(struct dmg *d)
{
	ext2fs_block_bitmap_loc_set(d->fs, d->arg, beyond(d));
	gd_write(d, d->arg);
}

static void gd_inode_bitmap(struct dmg *d)
{
	ext2fs_inode_bitmap_loc_set(d->fs, d->arg, beyond(d));
	gd_write(d, d->arg);
}

static void gd_inode_table(struct dmg *d)
{
	ext2fs_inode_table_loc_set(d->fs, 0,
				   d->arg ? (blk64_t)d->arg : beyond(d));
	gd_write(d, 0);
}

static void gd_itable_on_sb(struct dmg *d)
{
	/* The inode table on top of the group descriptors themselves. */
	ext2fs_inode_table_loc_set(d->fs, 0,
				   d->fs->super->s_first_data_block + 1);
	gd_write(d, 0);
}

static void gd_flags(struct dmg *d)
{
	ext2fs_bg_flags_set(d->fs, 0, (__u16)d->arg);
	gd_write(d, 0);
}

static void gd_itable_unused(struct dmg *d)
{
	ext2fs_bg_itable_unused_set(d->fs, 0, (__u32)d->arg);
	gd_write(d, 0);
}

static void gd_free_counts(struct dmg *d)
{
	ext2fs_bg_free_blocks_count_set(d->fs, 0, 0xffffffu);
	ext2fs_bg_free_inodes_count_set(d->fs, 0, 0xffffffu);
	gd_write(d, 0);
}

static void gd_garbage(struct dmg *d)
{
	unsigned seed = (unsigned)d->arg;
	unsigned char *p =
		(unsigned char *)ext2fs_group_desc(d->fs, d->fs->group_desc, 0);

	for (unsigned i = 0; i < EXT2_DESC_SIZE(d->fs->super); i++)
		p[i] = (unsigned char)rand_r(&seed);
	gd_write(d, 0);
}

/* ---- inodes ---- */

static uint64_t ino_off(struct dmg *d, uint64_t ino)
{
	ext2_filsys fs = d->fs;
	dgrp_t g = (ino - 1) / fs->super->s_inodes_per_group;
	uint64_t i = (ino - 1) % fs->super->s_inodes_per_group;

	return blk_off(d, ext2fs_inode_table_loc(fs, g)) +
	       i * EXT2_INODE_SIZE(fs->super);
}

struct raw_inode {
	union {
		struct ext2_inode_large in;
		unsigned char bytes[1024];
	};
};

static void ino_read(struct dmg *d, uint64_t ino, struct raw_inode *ri)
{
	raw_read(d, ino_off(d, ino), ri->bytes, EXT2_INODE_SIZE(d->fs->super));
}

static void ino_write(struct dmg *d, uint64_t ino, struct raw_inode *ri)
{
	if (d->fix_csum)
		ext2fs_inode_csum_set(d->fs, ino, &ri->in);
	raw_write(d, ino_off(d, ino), ri->bytes, EXT2_INODE_SIZE(d->fs->super));
}

/* arg selects the victim. */
static uint64_t victim(struct dmg *d, long which)
{
	const struct good *g = d->g;
	uint64_t v[] = {g->big,	     g->d1,	  LF_ROOT_INO, g->small,
			g->slowlink, g->fastlink, g->bigdir,   g->medium};

	return v[which % (long)(sizeof(v) / sizeof(v[0]))];
}

#define INO_EDIT(fn, stmt)                                                     \
	static void fn(struct dmg *d)                                          \
	{                                                                      \
		struct raw_inode ri;                                           \
		struct ext2_inode_large *in = &ri.in;                          \
		uint64_t ino = victim(d, d->arg);                              \
                                                                               \
		ino_read(d, ino, &ri);                                         \
		stmt;                                                          \
		ino_write(d, ino, &ri);                                        \
	}

INO_EDIT(in_mode_garbage, in->i_mode = 0xffff)
INO_EDIT(in_mode_zero, in->i_mode = 0)
INO_EDIT(in_mode_reg, in->i_mode = LINUX_S_IFREG | 0644)
INO_EDIT(in_mode_dir, in->i_mode = LINUX_S_IFDIR | 0755)
INO_EDIT(in_mode_lnk, in->i_mode = LINUX_S_IFLNK | 0777)
INO_EDIT(in_size_huge, (in->i_size = 0xfffff000u, in->i_size_high = 0x3fffffff))
INO_EDIT(in_size_dir_big, (in->i_size = 0, in->i_size_high = 16))
INO_EDIT(in_size_odd, in->i_size = 4097)
INO_EDIT(in_blocks_huge,
	 (in->i_blocks = 0xffffffffu, in->osd2.linux2.l_i_blocks_hi = 0xffff))
INO_EDIT(in_links_zero, in->i_links_count = 0)
INO_EDIT(in_flags_noextents, in->i_flags &= ~EXT4_EXTENTS_FL)
INO_EDIT(in_flags_inline, in->i_flags |= EXT4_INLINE_DATA_FL)
INO_EDIT(in_flags_index, in->i_flags |= EXT2_INDEX_FL)
INO_EDIT(in_flags_all, in->i_flags = 0xffffffffu)
INO_EDIT(in_file_acl_beyond,
	 (in->i_file_acl = 0xfffffff0u, in->osd2.linux2.l_i_file_acl_high = 0))
INO_EDIT(in_file_acl_sb, in->i_file_acl = 0)
INO_EDIT(in_extra_isize, in->i_extra_isize = 0xfff0)
INO_EDIT(in_xattr_magic,
	 ri.bytes[EXT2_GOOD_OLD_INODE_SIZE + in->i_extra_isize] ^= 0xff)
INO_EDIT(in_zero_all, memset((void *)in, 0, sizeof(ri.bytes)))

/* ---- extent trees ---- */

#define EH(in) ((struct ext3_extent_header *)(in)->i_block)

INO_EDIT(ex_magic, EH(in)->eh_magic = 0)
INO_EDIT(ex_depth, EH(in)->eh_depth = 40)
INO_EDIT(ex_depth1, EH(in)->eh_depth = EH(in)->eh_depth ? 0 : 1)
INO_EDIT(ex_entries, EH(in)->eh_entries = 300)
INO_EDIT(ex_max, EH(in)->eh_max = 0xffff)

/* The first record of the root node (an extent or an index entry). */
static void ex_first(struct dmg *d, int what)
{
	struct raw_inode ri;
	struct ext3_extent_header *eh;
	struct ext3_extent *ex;
	struct ext3_extent_idx *ix;
	uint64_t ino = victim(d, d->arg);

	ino_read(d, ino, &ri);
	eh = EH(&ri.in);
	ex = (struct ext3_extent *)(eh + 1);
	ix = (struct ext3_extent_idx *)(eh + 1);
	switch (what) {
	case 0: /* past the device */
		if (eh->eh_depth) {
			ix->ei_leaf = 0xfffffff0u;
			ix->ei_leaf_hi = 0;
		} else {
			ex->ee_start = 0xfffffff0u;
			ex->ee_start_hi = 0;
		}
		break;
	case 1: /* onto the superblock / group descriptors */
		if (eh->eh_depth)
			ix->ei_leaf = 0;
		else
			ex->ee_start = 1;
		break;
	case 2: /* zero length */
		ex->ee_len = 0;
		break;
	case 3: /* longest uninitialised length */
		ex->ee_len = 0xffff;
		break;
	case 4: /* every record at logical block 0: overlapping */
		for (int i = 0; i < eh->eh_entries && i < 4; i++)
			if (eh->eh_depth)
				ix[i].ei_block = 0;
			else
				ex[i].ee_block = 0;
		break;
	case 5: /* out of order */
		if (eh->eh_entries >= 2) {
			if (eh->eh_depth) {
				struct ext3_extent_idx t = ix[0];

				ix[0] = ix[1];
				ix[1] = t;
			} else {
				struct ext3_extent t = ex[0];

				ex[0] = ex[1];
				ex[1] = t;
			}
		}
		break;
	case 6: /* logical block near the 2^32 limit */
		if (eh->eh_depth)
			ix->ei_block = 0xfffffff0u;
		else
			ex->ee_block = 0xfffffff0u;
		break;
	}
	ino_write(d, ino, &ri);
}

static void ex_beyond(struct dmg *d)
{
	ex_first(d, 0);
}
static void ex_on_sb(struct dmg *d)
{
	ex_first(d, 1);
}
static void ex_len0(struct dmg *d)
{
	ex_first(d, 2);
}
static void ex_len_max(struct dmg *d)
{
	ex_first(d, 3);
}
static void ex_overlap(struct dmg *d)
{
	ex_first(d, 4);
}
static void ex_unsorted(struct dmg *d)
{
	ex_first(d, 5);
}
static void ex_lblk_high(struct dmg *d)
{
	ex_first(d, 6);
}

/* The big file's first index block: arg 0 loops it onto itself, 1 zeroes
 * its magic, 2 makes its extents overlap, 3 points into the inode table. */
static void ex_leaf_block(struct dmg *d)
{
	struct raw_inode ri;
	struct ext3_extent_header *eh, *leh;
	struct ext3_extent_idx *ix;
	struct ext3_extent *ex;
	unsigned char *blk = calloc(1, d->fs->blocksize);
	uint64_t ino = d->g->big;
	blk64_t leaf;

	ino_read(d, ino, &ri);
	eh = EH(&ri.in);
	ix = (struct ext3_extent_idx *)(eh + 1);
	if (!eh->eh_depth) {
		printf("damage: the big file has no index level; nothing to "
		       "damage\n");
		CHECK(!"big file has depth 0");
		goto out;
	}
	leaf = ix->ei_leaf | (blk64_t)ix->ei_leaf_hi << 32;
	raw_read(d, blk_off(d, leaf), blk, d->fs->blocksize);
	leh = (struct ext3_extent_header *)blk;
	ex = (struct ext3_extent *)(leh + 1);
	switch (d->arg) {
	case 0:
		leh->eh_depth = 1;
		((struct ext3_extent_idx *)ex)->ei_leaf = (__u32)leaf;
		((struct ext3_extent_idx *)ex)->ei_leaf_hi =
			(__u16)(leaf >> 32);
		break;
	case 1:
		leh->eh_magic = 0;
		break;
	case 2:
		for (int i = 0; i < leh->eh_entries; i++)
			ex[i].ee_block = (__u32)(i / 2);
		break;
	case 3:
		for (int i = 0; i < leh->eh_entries; i++)
			ex[i].ee_start =
				(__u32)ext2fs_inode_table_loc(d->fs, 0);
		break;
	}
	if (d->fix_csum)
		ext2fs_extent_block_csum_set(d->fs, ino, leh);
	raw_write(d, blk_off(d, leaf), blk, d->fs->blocksize);
out:
	free(blk);
}

/* ---- directory blocks ---- */

/* metadata_csum's dirent tail, computed by hand: libext2fs' helper walks
 * the (damaged) entries to find the tail and gives up. */
static void dir_csum(struct dmg *d, uint64_t dir, unsigned char *blk)
{
	struct raw_inode ri;
	ext2_filsys fs = d->fs;
	struct ext2_dir_entry_tail *t;
	__u32 crc, le_ino = (__u32)dir, gen;

	if (!d->fix_csum || !ext2fs_has_feature_metadata_csum(fs->super))
		return;
	ino_read(d, dir, &ri);
	gen = ri.in.i_generation;
	t = (struct ext2_dir_entry_tail *)(blk + fs->blocksize - sizeof(*t));
	crc = ext2fs_crc32c_le(fs->csum_seed, (unsigned char *)&le_ino, 4);
	crc = ext2fs_crc32c_le(crc, (unsigned char *)&gen, 4);
	crc = ext2fs_crc32c_le(crc, blk, fs->blocksize - sizeof(*t));
	t->det_checksum = crc;
}

/* arg: low byte the kind of damage, then which directory, then which
 * logical block. */
static void dir_block(struct dmg *d)
{
	const struct good *g = d->g;
	uint64_t dirs[] = {g->bigdir, g->d1, LF_ROOT_INO, g->d3};
	uint64_t dir = dirs[(d->arg >> 8 & 0xff) % 4];
	blk64_t lblk = (blk64_t)(d->arg >> 16), pblk = 0;
	unsigned bs = d->fs->blocksize;
	unsigned char *blk = calloc(1, bs);
	struct ext2_dir_entry *de, *third;
	unsigned o;

	if (ext2fs_bmap2(d->fs, dir, NULL, NULL, 0, lblk, NULL, &pblk) ||
	    !pblk) {
		printf("damage: directory %llu has no block %llu\n",
		       (unsigned long long)dir, (unsigned long long)lblk);
		CHECK(!"dir block");
		goto out;
	}
	raw_read(d, blk_off(d, pblk), blk, bs);
	de = (struct ext2_dir_entry *)blk;
	/* the third entry: past "." and ".." in block 0 */
	o = lblk ? 0
		 : de->rec_len + ((struct ext2_dir_entry *)(blk + de->rec_len))
					 ->rec_len;
	if (o + 12 > bs)
		o = 0;
	third = (struct ext2_dir_entry *)(blk + o);
	switch (d->arg & 0xff) {
	case 0:
		third->rec_len = 0;
		break;
	case 1:
		third->rec_len = (__u16)(bs - o + 64);
		break;
	case 2:
		third->name_len = (third->name_len & 0xff00) | 0xff;
		break;
	case 3:
		third->inode = 0xfffffff0u;
		break;
	case 4: /* a directory entry that points back up: a loop */
		third->inode = (__u32)LF_ROOT_INO;
		third->name_len =
			(__u16)(EXT2_FT_DIR << 8 | (third->name_len & 0xff));
		break;
	case 5:
		third->rec_len = 3; /* not a multiple of 4 */
		break;
	case 6: /* "." becomes something else */
		de->inode = 0xffff;
		de->rec_len = 0xfffc;
		break;
	case 7: /* random bytes over the entries */
		for (unsigned i = o, seed = (unsigned)d->arg;
		     i < bs - 12 && i < o + 256; i++)
			blk[i] = (unsigned char)rand_r(&seed);
		break;
	}
	dir_csum(d, dir, blk);
	raw_write(d, blk_off(d, pblk), blk, bs);
out:
	free(blk);
}

/* ---- the rest ---- */

static void truncate_copy(struct dmg *d)
{
	CHECK_EQ(ftruncate(d->fd, d->arg), 0);
}

/* Random bytes sprayed over the metadata: superblock area, group 0's
 * bitmaps and the used part of its inode table, directory blocks. */
static void spray(struct dmg *d)
{
	ext2_filsys fs = d->fs;
	unsigned seed = (unsigned)d->arg;
	uint64_t it = blk_off(d, ext2fs_inode_table_loc(fs, 0));
	uint64_t areas[][2] = {
		{1024, 2048},
		{blk_off(d, ext2fs_block_bitmap_loc(fs, 0)), fs->blocksize},
		{blk_off(d, ext2fs_inode_bitmap_loc(fs, 0)), fs->blocksize},
		{it, (uint64_t)EXT2_INODE_SIZE(fs->super) * 32},
		{it, (uint64_t)EXT2_INODE_SIZE(fs->super) * 600},
	};

	for (int i = 0; i < 24; i++) {
		int a = 1 + rand_r(&seed) % 4;
		uint64_t off =
			areas[a][0] + (uint64_t)rand_r(&seed) % areas[a][1];
		unsigned char b = (unsigned char)rand_r(&seed);

		raw_write(d, off, &b, 1);
	}
}

struct dcase {
	const char *name;
	void (*fn)(struct dmg *d);
	long arg;
	bool fix_csum;
};

#define BLK_BEYOND 0x10000000 /* far past a 64 MiB device */
#define RO_UNKNOWN 0x40000000 /* a ro_compat bit nobody defines */
#define IN_UNKNOWN 0x40000000 /* an incompat bit nobody defines */

static const struct dcase cases[] = {
	{"sb-inodes-count-max", sb_inodes_count, 0xffffffff, true},
	{"sb-inodes-count-1", sb_inodes_count, 1, true},
	{"sb-blocks-count-beyond", sb_blocks_count, BLK_BEYOND, true},
	{"sb-blocks-count-10", sb_blocks_count, 10, true},
	{"sb-blocks-count-hi", sb_blocks_count_hi, 1, true},
	{"sb-log-block-size-20", sb_log_block_size, 20, true},
	{"sb-log-block-size-1k", sb_log_block_size, 0, true},
	{"sb-first-data-block-1", sb_first_data_block, 1, true},
	{"sb-first-data-block-big", sb_first_data_block, 100000, true},
	{"sb-inodes-per-group-0", sb_inodes_per_group, 0, true},
	{"sb-inodes-per-group-huge", sb_inodes_per_group, 0xfffff0, true},
	{"sb-blocks-per-group-0", sb_blocks_per_group, 0, true},
	{"sb-blocks-per-group-8", sb_blocks_per_group, 8, true},
	{"sb-magic", sb_magic, 0x1234, true},
	{"sb-incompat-unknown", sb_incompat, IN_UNKNOWN, true},
	{"sb-incompat-no-extents", sb_incompat, EXT3_FEATURE_INCOMPAT_EXTENTS,
	 true},
	{"sb-incompat-no-64bit", sb_incompat, EXT4_FEATURE_INCOMPAT_64BIT,
	 true},
	{"sb-incompat-meta-bg", sb_incompat, EXT2_FEATURE_INCOMPAT_META_BG,
	 true},
	{"sb-ro-compat-unknown", sb_ro_compat, RO_UNKNOWN, true},
	{"sb-ro-compat-no-csum", sb_ro_compat,
	 EXT4_FEATURE_RO_COMPAT_METADATA_CSUM, true},
	{"sb-inode-size-3000", sb_inode_size, 3000, true},
	{"sb-inode-size-100", sb_inode_size, 100, true},
	{"sb-desc-size-0", sb_desc_size, 0, true},
	{"sb-desc-size-odd", sb_desc_size, 200, true},
	{"sb-first-ino-0", sb_first_ino, 0, true},
	{"sb-first-ino-huge", sb_first_ino, 0xfffffff, true},
	{"sb-rev-level-9", sb_rev_level, 9, true},
	{"sb-flex-31", sb_log_groups_per_flex, 31, true},
	{"sb-reserved-gdt-huge", sb_reserved_gdt, 0xffff, true},
	{"sb-stale-csum", sb_inodes_count, 12345, false},

	{"gd-block-bitmap-beyond", gd_block_bitmap, 0, true},
	{"gd-inode-bitmap-beyond", gd_inode_bitmap, 0, true},
	{"gd-inode-table-beyond", gd_inode_table, 0, true},
	{"gd-inode-table-zero", gd_inode_table, 0, false},
	{"gd-inode-table-on-gdt", gd_itable_on_sb, 0, true},
	{"gd-inode-uninit", gd_flags, EXT2_BG_INODE_UNINIT, true},
	{"gd-block-uninit", gd_flags, EXT2_BG_BLOCK_UNINIT, true},
	{"gd-itable-unused-huge", gd_itable_unused, 0xfffffff, true},
	{"gd-free-counts-huge", gd_free_counts, 0, true},
	{"gd-garbage", gd_garbage, 7, true},
	{"gd-stale-csum", gd_block_bitmap, 0, false},

	{"inode-big-mode-garbage", in_mode_garbage, 0, true},
	{"inode-d1-mode-zero", in_mode_zero, 1, true},
	{"inode-root-mode-reg", in_mode_reg, 2, true},
	{"inode-big-mode-dir", in_mode_dir, 0, true},
	{"inode-big-mode-symlink", in_mode_lnk, 0, true},
	{"inode-fastlink-mode-dir", in_mode_dir, 5, true},
	{"inode-slowlink-size-huge", in_size_huge, 4, true},
	{"inode-big-size-huge", in_size_huge, 0, true},
	{"inode-d1-size-huge", in_size_huge, 1, true},
	{"inode-bigdir-size-64g", in_size_dir_big, 6, true},
	{"inode-d1-size-odd", in_size_odd, 1, true},
	{"inode-big-blocks-huge", in_blocks_huge, 0, true},
	{"inode-small-links-zero", in_links_zero, 3, true},
	{"inode-big-no-extents-flag", in_flags_noextents, 0, true},
	{"inode-d1-no-extents-flag", in_flags_noextents, 1, true},
	{"inode-d1-inline-flag", in_flags_inline, 1, true},
	{"inode-small-inline-flag", in_flags_inline, 3, true},
	{"inode-big-index-flag", in_flags_index, 0, true},
	{"inode-big-all-flags", in_flags_all, 0, true},
	{"inode-root-all-flags", in_flags_all, 2, true},
	{"inode-medium-acl-beyond", in_file_acl_beyond, 7, true},
	{"inode-small-extra-isize", in_extra_isize, 3, true},
	{"inode-small-xattr-magic", in_xattr_magic, 3, true},
	{"inode-medium-acl-zero", in_file_acl_sb, 7, true},
	{"inode-root-zeroed", in_zero_all, 2, true},
	{"inode-d1-zeroed", in_zero_all, 1, true},
	{"inode-big-stale-csum", in_size_odd, 0, false},

	{"extent-big-magic", ex_magic, 0, true},
	{"extent-d1-magic", ex_magic, 1, true},
	{"extent-big-depth-40", ex_depth, 0, true},
	{"extent-medium-depth-flip", ex_depth1, 7, true},
	{"extent-big-depth-flip", ex_depth1, 0, true},
	{"extent-big-entries-300", ex_entries, 0, true},
	{"extent-big-max-huge", ex_max, 0, true},
	{"extent-big-index-beyond", ex_beyond, 0, true},
	{"extent-medium-leaf-beyond", ex_beyond, 7, true},
	{"extent-d1-leaf-beyond", ex_beyond, 1, true},
	{"extent-medium-on-sb", ex_on_sb, 7, true},
	{"extent-big-index-on-sb", ex_on_sb, 0, true},
	{"extent-medium-len-0", ex_len0, 7, true},
	{"extent-medium-len-max", ex_len_max, 7, true},
	{"extent-bigdir-len-max", ex_len_max, 6, true},
	{"extent-big-overlap", ex_overlap, 0, true},
	{"extent-big-unsorted", ex_unsorted, 0, true},
	{"extent-medium-lblk-high", ex_lblk_high, 7, true},
	{"extent-leaf-loop", ex_leaf_block, 0, true},
	{"extent-leaf-magic", ex_leaf_block, 1, true},
	{"extent-leaf-overlap", ex_leaf_block, 2, true},
	{"extent-leaf-on-itable", ex_leaf_block, 3, true},
	{"extent-leaf-stale-csum", ex_leaf_block, 2, false},

	{"dir-bigdir-rec-len-0", dir_block, 0x10000 | 0, true},
	{"dir-bigdir-rec-len-past", dir_block, 0x20000 | 1, true},
	{"dir-bigdir-name-len", dir_block, 0x10000 | 2, true},
	{"dir-bigdir-ino-range", dir_block, 0x30000 | 3, true},
	{"dir-bigdir-rec-len-3", dir_block, 0x10000 | 5, true},
	{"dir-bigdir-random", dir_block, 0x20000 | 7, true},
	{"dir-d1-rec-len-0", dir_block, 0x100 | 0, true},
	{"dir-d1-name-len", dir_block, 0x100 | 2, true},
	{"dir-d1-ino-range", dir_block, 0x100 | 3, true},
	{"dir-d3-loop", dir_block, 0x300 | 4, true},
	{"dir-root-dot", dir_block, 0x200 | 6, true},
	{"dir-root-rec-len-past", dir_block, 0x200 | 1, true},
	{"dir-root-random", dir_block, 0x200 | 7, true},
	{"dir-bigdir-stale-csum", dir_block, 0x10000 | 3, false},

	{"truncated-half", truncate_copy, IMG_BYTES / 2, false},
	{"truncated-1mib", truncate_copy, MIB, false},
	{"truncated-8k", truncate_copy, 8192, false},

	{"spray-1", spray, 1, false},
	{"spray-2", spray, 2, false},
	{"spray-3", spray, 3, false},
	{"spray-4", spray, 4, false},
	{"spray-5", spray, 5, false},
	{"spray-6", spray, 6, false},
	{"spray-7", spray, 7, false},
	{"spray-8", spray, 8, false},
};

static bool copy_file(const char *from, const char *to)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", from, to);
	return system(cmd) == 0;
}

static bool damage(const struct good *g, const struct dcase *c,
		   const char *copy)
{
	struct dmg d = {
		.copy = copy, .g = g, .arg = c->arg, .fix_csum = c->fix_csum};
	errcode_t e;

	if (!copy_file(g->path, copy))
		return false;
	e = ext2fs_open(copy, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &d.fs);
	if (e) {
		fprintf(stderr, "%s: ext2fs_open: %ld\n", copy, (long)e);
		return false;
	}
	d.fd = open(copy, O_RDWR);
	if (d.fd < 0) {
		ext2fs_free(d.fs);
		return false;
	}
	c->fn(&d);
	close(d.fd);
	ext2fs_free(d.fs); /* read-only: never flushes */
	return true;
}

int main(int argc, char **argv)
{
	char tmpdir[64], copy[256];
	const char *only = argc > 1 ? argv[1] : getenv("LUNFS_DAMAGE_ONLY");
	struct cw_totals tot = {0};
	struct good g = {0};

	setvbuf(stdout, NULL, _IOLBF, 0);
	lf_log_set_level(getenv("LUNFS_CORRUPT_VERBOSE") ? LF_LOG_INFO
							 : LF_LOG_WARN);
	initialize_ext2_error_table();
	cw_tmpdir(tmpdir, sizeof(tmpdir), "damage");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	snprintf(g.path, sizeof(g.path), "%s/good.img", tmpdir);
	CHECK(make_good(&g));
	if (check_failed)
		return check_report("test_damage");
	/* The undamaged image must pass the procedure served, of course. */
	CHECK(cw_check_image(g.path, "good", &tot));
	CHECK_EQ(tot.ro_served, 1);
	/* … and cw_check_image wrote to it (rw pass): make it again. */
	CHECK(make_good(&g));

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct dcase *c = &cases[i];

		if (only && !strstr(c->name, only))
			continue;
		snprintf(copy, sizeof(copy), "%s/%s.img", tmpdir, c->name);
		if (!damage(&g, c, copy)) {
			printf("%s: FAILED: cannot make the damaged copy\n",
			       c->name);
			CHECK(!"damage");
			continue;
		}
		CHECK(cw_check_image(copy, c->name, &tot));
		unlink(copy);
	}
	unlink(g.path);
	rmdir(tmpdir);
	cw_print_totals("damage generator", &tot);
	return check_report("test_damage");
}
