/* format.c — userspace mkfs.ext4 through our io_manager. The steps and
 * their order follow e2fsprogs' misc/mke2fs.c (main, write_inode_tables,
 * write_reserved_inodes, create_root_dir, create_lost_and_found,
 * reserve_inodes, create_bad_block_inode, the journal). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <time.h>

#include <et/com_err.h>
#include <ext2fs/ext2fs.h>

#include "fsimage/format.h"
#include "fsimage/mmp.h"
#include "fsimage/volume_int.h"
#include "iscsi/log.h"

#define MOD	    "fsimage"
#define BLOCK_LOG   2 /* 1024 << 2 = 4 KiB blocks */
#define INODE_RATIO 16384
#define INODE_SIZE  256

static int fail(char *err, size_t errlen, const char *desc, const char *step,
		errcode_t e)
{
	snprintf(err, errlen, "%s: format failed: %s: %s", desc, step,
		 error_message(e));
	lf_err(MOD, "%s", err);
	return lf_errno_from_ext2(e);
}

static void random_uuid(unsigned char u[16])
{
	size_t got = 0;

	while (got < 16) {
		ssize_t n = getrandom(u + got, 16 - got, 0);

		if (n > 0)
			got += (size_t)n;
	}
	u[6] = (u[6] & 0x0f) | 0x40;
	u[8] = (u[8] & 0x3f) | 0x80;
}

/* Lazy itable init: only the inodes in use are written; the kernel's
 * lazyinit thread (or e2fsck, via bg_itable_unused) handles the rest. */
static errcode_t write_inode_tables(ext2_filsys fs)
{
	for (dgrp_t i = 0; i < fs->group_desc_count; i++) {
		blk64_t blk = ext2fs_inode_table_loc(fs, i);
		int num = ext2fs_div_ceil((fs->super->s_inodes_per_group -
					   ext2fs_bg_itable_unused(fs, i)) *
						  EXT2_INODE_SIZE(fs->super),
					  EXT2_BLOCK_SIZE(fs->super));
		errcode_t e;

		if (!num)
			continue;
		e = ext2fs_zero_blocks2(fs, blk, num, &blk, &num);
		if (e)
			return e;
	}
	return 0;
}

/* Zeroed reserved inodes, so their checksums are valid (mke2fs does the
 * same with metadata_csum). */
static errcode_t write_reserved_inodes(ext2_filsys fs)
{
	struct ext2_inode *inode;
	errcode_t e;

	e = ext2fs_get_memzero(EXT2_INODE_SIZE(fs->super), &inode);
	if (e)
		return e;
	for (ext2_ino_t ino = 1; ino < EXT2_FIRST_INO(fs->super); ino++) {
		e = ext2fs_write_inode_full(fs, ino, inode,
					    EXT2_INODE_SIZE(fs->super));
		if (e)
			break;
	}
	ext2fs_free_mem(&inode);
	return e;
}

static errcode_t create_lost_and_found(ext2_filsys fs)
{
	const char *name = "lost+found";
	unsigned int lpf_size = 0;
	ext2_ino_t ino;
	errcode_t e;

	fs->umask = 077;
	e = ext2fs_mkdir(fs, EXT2_ROOT_INO, 0, name);
	fs->umask = 022;
	if (e)
		return e;
	e = ext2fs_lookup(fs, EXT2_ROOT_INO, name, strlen(name), 0, &ino);
	if (e)
		return e;
	/* At least 16 KiB, so e2fsck can reconnect files without growing
	 * it. */
	for (int i = 1; i < EXT2_NDIR_BLOCKS; i++) {
		if ((lpf_size += fs->blocksize) >= 16 * 1024 &&
		    lpf_size >= 2 * fs->blocksize)
			break;
		e = ext2fs_expand_dir(fs, ino);
		if (e)
			return e;
	}
	return 0;
}

int lf_format(struct lf_iocache *cache, uint64_t size, const char *label,
	      const char *desc, char *err, size_t errlen)
{
	struct ext2_super_block param;
	struct ext2fs_journal_params jparams;
	ext2_filsys fs = NULL;
	char name[64];
	uint64_t blocks = size >> (10 + BLOCK_LOG);
	uint64_t inodes;
	errcode_t e;
	int r;

	memset(&param, 0, sizeof(param));
	param.s_log_block_size = BLOCK_LOG;
	param.s_rev_level = EXT2_DYNAMIC_REV;
	ext2fs_blocks_count_set(&param, blocks);
	inodes = blocks * (1024u << BLOCK_LOG) / INODE_RATIO;
	if (inodes > UINT32_MAX - 1)
		inodes = UINT32_MAX - 1;
	param.s_inodes_count = (uint32_t)inodes;
	param.s_inode_size = INODE_SIZE;
	param.s_log_groups_per_flex = 4;
	param.s_desc_size = EXT2_MIN_DESC_SIZE_64BIT;
	param.s_max_mnt_count = -1;
	param.s_default_mount_opts = EXT2_DEFM_XATTR_USER | EXT2_DEFM_ACL;
	param.s_feature_compat =
		EXT2_FEATURE_COMPAT_EXT_ATTR | EXT2_FEATURE_COMPAT_DIR_INDEX;
	/* Online resize of the kernel needs the resize inode below 2^32
	 * blocks; mke2fs drops it above. */
	if (blocks < (1ull << 32))
		param.s_feature_compat |= EXT2_FEATURE_COMPAT_RESIZE_INODE;
	param.s_feature_incompat =
		EXT2_FEATURE_INCOMPAT_FILETYPE | EXT3_FEATURE_INCOMPAT_EXTENTS |
		EXT4_FEATURE_INCOMPAT_FLEX_BG | EXT4_FEATURE_INCOMPAT_64BIT;
	param.s_feature_ro_compat = EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER |
				    EXT2_FEATURE_RO_COMPAT_LARGE_FILE |
				    EXT4_FEATURE_RO_COMPAT_HUGE_FILE |
				    EXT4_FEATURE_RO_COMPAT_DIR_NLINK |
				    EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE |
				    EXT4_FEATURE_RO_COMPAT_METADATA_CSUM;

	lf_iocache_name(cache, name, sizeof(name));
	e = ext2fs_initialize(name, EXT2_FLAG_EXCLUSIVE | EXT2_FLAG_64BITS,
			      &param, lf_iomgr(), &fs);
	if (e)
		return fail(err, errlen, desc, "initialize", e);

	fs->super->s_checksum_type = EXT2_CRC32C_CHKSUM;
	random_uuid(fs->super->s_uuid);
	ext2fs_init_csum_seed(fs);
	random_uuid((unsigned char *)fs->super->s_hash_seed);
	fs->super->s_def_hash_version = EXT2_HASH_HALF_MD4;
	if (!(fs->super->s_flags &
	      (EXT2_FLAGS_SIGNED_HASH | EXT2_FLAGS_UNSIGNED_HASH)))
		fs->super->s_flags |= ((char)0x80 < 0)
					      ? EXT2_FLAGS_SIGNED_HASH
					      : EXT2_FLAGS_UNSIGNED_HASH;
	fs->super->s_min_extra_isize = fs->super->s_want_extra_isize =
		sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
	if (label)
		strncpy((char *)fs->super->s_volume_name, label,
			sizeof(fs->super->s_volume_name));

	e = ext2fs_allocate_tables(fs);
	if (e) {
		r = fail(err, errlen, desc, "allocating group tables", e);
		goto out;
	}
	e = ext2fs_convert_subcluster_bitmap(fs, &fs->block_map);
	if (e) {
		r = fail(err, errlen, desc, "converting the block bitmap", e);
		goto out;
	}
	e = write_inode_tables(fs);
	if (!e)
		e = write_reserved_inodes(fs);
	if (e) {
		r = fail(err, errlen, desc, "writing inode tables", e);
		goto out;
	}
	e = ext2fs_mkdir(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, 0);
	if (e) {
		r = fail(err, errlen, desc, "creating the root directory", e);
		goto out;
	}
	/* As mke2fs does: the root directory belongs to whoever formats, so
	 * a rootless daemon's user can write to its new volume. */
	if (geteuid() != 0) {
		struct ext2_inode ri;
		e = ext2fs_read_inode(fs, EXT2_ROOT_INO, &ri);
		if (!e) {
			ri.i_uid = (__u16)geteuid();
			ext2fs_set_i_uid_high(ri, geteuid() >> 16);
			ri.i_gid = (__u16)getegid();
			ext2fs_set_i_gid_high(ri, getegid() >> 16);
			e = ext2fs_write_inode(fs, EXT2_ROOT_INO, &ri);
		}
		if (e) {
			r = fail(err, errlen, desc, "setting the root owner",
				 e);
			goto out;
		}
	}
	e = create_lost_and_found(fs);
	if (e) {
		r = fail(err, errlen, desc, "creating lost+found", e);
		goto out;
	}
	for (ext2_ino_t i = EXT2_ROOT_INO + 1; i < EXT2_FIRST_INODE(fs->super);
	     i++)
		ext2fs_inode_alloc_stats2(fs, i, +1, 0);
	ext2fs_mark_ib_dirty(fs);
	ext2fs_mark_inode_bitmap2(fs->inode_map, EXT2_BAD_INO);
	ext2fs_inode_alloc_stats2(fs, EXT2_BAD_INO, +1, 0);
	e = ext2fs_update_bb_inode(fs, NULL);
	if (e) {
		r = fail(err, errlen, desc, "creating the bad block inode", e);
		goto out;
	}
	if (ext2fs_has_feature_resize_inode(fs->super)) {
		e = ext2fs_create_resize_inode(fs);
		if (e) {
			r = fail(err, errlen, desc, "creating the resize inode",
				 e);
			goto out;
		}
	}
	e = ext2fs_get_journal_params(&jparams, fs);
	if (e == 0 && jparams.num_journal_blocks) {
		e = ext2fs_add_journal_inode3(fs, &jparams, ~0ULL,
					      EXT2_MKJOURNAL_NO_MNT_CHECK);
		if (e) {
			r = fail(err, errlen, desc, "creating the journal", e);
			goto out;
		}
	}
	/* Multi-mount protection (mmp.h), as mke2fs -O mmp does it: the
	 * kernel's ext4 on another node refuses the volume while lunfs
	 * holds it. */
	fs->super->s_mmp_update_interval = LF_MMP_UPDATE_INTERVAL;
	e = ext2fs_mmp_init(fs);
	if (e) {
		r = fail(err, errlen, desc, "creating the MMP block", e);
		goto out;
	}
	ext2fs_set_feature_mmp(fs->super);
	ext2fs_mark_super_dirty(fs);
	e = ext2fs_close2(fs, 0);
	if (e) {
		r = fail(err, errlen, desc, "writing the filesystem", e);
		goto out;
	}
	fs = NULL;
	lf_info(MOD, "%s: formatted ext4, %llu blocks of 4 KiB, %llu inodes",
		desc, (unsigned long long)blocks, (unsigned long long)inodes);
	return 0;
out:
	if (fs)
		ext2fs_free(fs);
	return r;
}
