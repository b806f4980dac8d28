/* probe.c — classify a device's first MiB: empty, ext2/3/4, or other. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ext2fs/ext2_fs.h>

#include "fsimage/probe.h"
#include "iscsi/log.h"

#define MOD	    "fsimage"
#define PROBE_BYTES (1u << 20)
#define SB_OFF	    1024u

static uint32_t le32_at(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static bool has(const unsigned char *buf, size_t len, size_t off,
		const void *sig, size_t siglen)
{
	return off + siglen <= len && !memcmp(buf + off, sig, siglen);
}

static void set(struct lf_probe_result *res, enum lf_probe_kind kind,
		const char *what)
{
	res->kind = kind;
	snprintf(res->what, sizeof(res->what), "%s", what);
}

static bool probe_ext(const unsigned char *buf, size_t len,
		      struct lf_probe_result *res)
{
	const unsigned char *sb = buf + SB_OFF;
	uint32_t compat, incompat, ro_compat;

	if (len < SB_OFF + 1024 || !(sb[56] == (EXT2_SUPER_MAGIC & 0xff) &&
				     sb[57] == (EXT2_SUPER_MAGIC >> 8)))
		return false;
	compat = le32_at(sb +
			 offsetof(struct ext2_super_block, s_feature_compat));
	incompat = le32_at(
		sb + offsetof(struct ext2_super_block, s_feature_incompat));
	ro_compat = le32_at(
		sb + offsetof(struct ext2_super_block, s_feature_ro_compat));
	if (incompat & EXT3_FEATURE_INCOMPAT_JOURNAL_DEV) {
		set(res, LF_PROBE_OTHER, "an external ext3/4 journal device");
		return true;
	}
	if ((incompat &
	     (EXT3_FEATURE_INCOMPAT_EXTENTS | EXT4_FEATURE_INCOMPAT_64BIT |
	      EXT4_FEATURE_INCOMPAT_FLEX_BG | EXT4_FEATURE_INCOMPAT_MMP |
	      EXT4_FEATURE_INCOMPAT_INLINE_DATA)) ||
	    (ro_compat & (EXT4_FEATURE_RO_COMPAT_HUGE_FILE |
			  EXT4_FEATURE_RO_COMPAT_GDT_CSUM |
			  EXT4_FEATURE_RO_COMPAT_DIR_NLINK |
			  EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE |
			  EXT4_FEATURE_RO_COMPAT_METADATA_CSUM)))
		set(res, LF_PROBE_EXT, "ext4");
	else if (compat & EXT3_FEATURE_COMPAT_HAS_JOURNAL)
		set(res, LF_PROBE_EXT, "ext3");
	else
		set(res, LF_PROBE_EXT, "ext2");
	return true;
}

void lf_probe_buf(const unsigned char *buf, size_t len,
		  struct lf_probe_result *res)
{
	static const struct {
		size_t off;
		const char *sig;
		size_t siglen;
		const char *what;
	} sigs[] = {
		{0, "XFSB", 4, "an xfs filesystem"},
		{0x10040, "_BHRfS_M", 8, "a btrfs filesystem"},
		{4086, "SWAPSPACE2", 10, "a swap area"},
		{4086, "SWAP-SPACE", 10, "a swap area"},
		{0, "LUKS\xba\xbe", 6, "a LUKS encrypted volume"},
		{0, "SKL\xba\xbe", 6, "a LUKS2 encrypted volume"},
		{0x8001, "CD001", 5, "an iso9660 filesystem"},
		{0, "hsqs", 4, "a squashfs filesystem"},
		{3, "NTFS    ", 8, "an NTFS filesystem"},
		{3, "EXFAT   ", 8, "an exFAT filesystem"},
		{82, "FAT32   ", 8, "a vfat filesystem"},
		{54, "FAT16   ", 8, "a vfat filesystem"},
		{54, "FAT12   ", 8, "a vfat filesystem"},
		{512, "EFI PART", 8, "a GPT partition table"},
		{4096, "EFI PART", 8, "a GPT partition table"},
		{512, "LABELONE", 8, "an LVM physical volume"},
		{0x10000 + 0x34, "ReIsEr", 6, "a reiserfs filesystem"},
		{0x400, "\x10\x20\xf5\xf2", 4, "an f2fs filesystem"},
		{0x1000, "\xfc\x4e\x2b\xa9", 4, "a bcachefs/bcache device"},
	};
	size_t i;

	if (probe_ext(buf, len, res))
		return;
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		if (has(buf, len, sigs[i].off, sigs[i].sig, sigs[i].siglen)) {
			set(res, LF_PROBE_OTHER, sigs[i].what);
			return;
		}
	}
	if (has(buf, len, 510, "\x55\xaa", 2)) {
		set(res, LF_PROBE_OTHER,
		    "an MBR partition table or boot sector");
		return;
	}
	for (i = 0; i < len; i++) {
		if (buf[i]) {
			set(res, LF_PROBE_OTHER,
			    "non-zero data in the first MiB");
			return;
		}
	}
	set(res, LF_PROBE_ALL_ZERO, "nothing (all zeros)");
}

int lf_probe(struct lf_bdev *bdev, struct lf_probe_result *res)
{
	uint64_t size = lf_bdev_size(bdev);
	uint32_t lbs = lf_bdev_block_size(bdev);
	size_t len = size < PROBE_BYTES ? (size_t)size : PROBE_BYTES;
	unsigned char *buf;
	int r;

	len -= len % lbs;
	if (len < SB_OFF + 1024) {
		lf_err(MOD, "%s: device too small (%llu bytes) for ext4",
		       lf_bdev_desc(bdev), (unsigned long long)size);
		return -ENOSPC;
	}
	if (posix_memalign((void **)&buf, 4096, len))
		return -ENOMEM;
	r = lf_bdev_pread(bdev, buf, len, 0);
	if (r < 0) {
		lf_err(MOD, "%s: probe read failed: %s", lf_bdev_desc(bdev),
		       strerror(-r));
		goto out;
	}
	lf_probe_buf(buf, len, res);
out:
	free(buf);
	return r;
}
