/* jbd2_disk.h — the jbd2 journal's on-disk format, as the kernel's
 * fs/jbd2 writes and replays it (include/linux/jbd2.h). Every field is
 * big-endian. Shared by the writer (journal.c) and the replay (jreplay.c);
 * nothing here does I/O.
 */
#ifndef LUNFS_JBD2_DISK_H
#define LUNFS_JBD2_DISK_H

#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LF_JBD2_MAGIC 0xc03b3998u

enum {
	LF_JBD2_DESCRIPTOR = 1,
	LF_JBD2_COMMIT = 2,
	LF_JBD2_SB_V1 = 3,
	LF_JBD2_SB_V2 = 4,
	LF_JBD2_REVOKE = 5,
};

#define LF_JBD2_COMPAT_CHECKSUM	     0x1u
#define LF_JBD2_INCOMPAT_REVOKE	     0x1u
#define LF_JBD2_INCOMPAT_64BIT	     0x2u
#define LF_JBD2_INCOMPAT_ASYNC	     0x4u
#define LF_JBD2_INCOMPAT_CSUM_V2     0x8u
#define LF_JBD2_INCOMPAT_CSUM_V3     0x10u
#define LF_JBD2_INCOMPAT_FAST_COMMIT 0x20u
/* What our writer and replay understand. */
#define LF_JBD2_INCOMPAT_KNOWN                                                 \
	(LF_JBD2_INCOMPAT_REVOKE | LF_JBD2_INCOMPAT_64BIT |                    \
	 LF_JBD2_INCOMPAT_ASYNC | LF_JBD2_INCOMPAT_CSUM_V2 |                   \
	 LF_JBD2_INCOMPAT_CSUM_V3)

#define LF_JBD2_CRC32C 4

/* Tag flags. */
#define LF_JBD2_FLAG_ESCAPE    1u
#define LF_JBD2_FLAG_SAME_UUID 2u
#define LF_JBD2_FLAG_DELETED   4u
#define LF_JBD2_FLAG_LAST_TAG  8u

struct lf_jbd2_header {
	uint32_t magic;
	uint32_t blocktype;
	uint32_t sequence;
};

struct lf_jbd2_sb {
	struct lf_jbd2_header header;
	uint32_t blocksize; /* 0x0c */
	uint32_t maxlen;
	uint32_t first;
	uint32_t sequence; /* 0x18: first transaction expected in the log */
	uint32_t start;	   /* 0x1c: its block; 0 = the log is empty */
	uint32_t errno_;   /* 0x20 */
	uint32_t feature_compat;
	uint32_t feature_incompat;
	uint32_t feature_ro_compat;
	uint8_t uuid[16];  /* 0x30 */
	uint32_t nr_users; /* 0x40 */
	uint32_t dynsuper;
	uint32_t max_transaction; /* 0x48 */
	uint32_t max_trans_data;
	uint8_t checksum_type; /* 0x50 */
	uint8_t padding2[3];
	uint32_t num_fc_blks; /* 0x54 */
	uint32_t head;	      /* 0x58 */
	uint32_t padding[40];
	uint32_t checksum; /* 0xfc: crc32c of the whole 1024 bytes */
	uint8_t users[16 * 48];
};

struct lf_jbd2_commit {
	struct lf_jbd2_header header;
	uint8_t chksum_type;
	uint8_t chksum_size;
	uint8_t padding[2];
	uint32_t chksum[8];
	uint64_t commit_sec;
	uint32_t commit_nsec;
};

struct lf_jbd2_revoke_header {
	struct lf_jbd2_header header;
	uint32_t count; /* bytes used in the block, header included */
};

_Static_assert(sizeof(struct lf_jbd2_sb) == 1024, "journal superblock");
_Static_assert(offsetof(struct lf_jbd2_sb, checksum) == 0xfc, "jsb csum");
_Static_assert(offsetof(struct lf_jbd2_sb, head) == 0x58, "jsb head");
_Static_assert(offsetof(struct lf_jbd2_commit, commit_sec) == 48,
	       "commit time");

/* What a journal superblock's features imply for the block layout. */
struct lf_jbd2_layout {
	bool csum;  /* v2 or v3 */
	bool csum3; /* 16-byte tags with a 32-bit checksum */
	bool is64;
	size_t tag_bytes;
	uint32_t seed; /* crc32c(~0, uuid) */
};

static inline bool
lf_jbd2_layout_init(struct lf_jbd2_layout *l, const struct lf_jbd2_sb *sb,
		    uint32_t (*crc)(uint32_t, const void *, size_t))
{
	uint32_t inc = be32toh(sb->feature_incompat);

	l->csum3 = inc & LF_JBD2_INCOMPAT_CSUM_V3;
	l->csum = l->csum3 || (inc & LF_JBD2_INCOMPAT_CSUM_V2);
	l->is64 = inc & LF_JBD2_INCOMPAT_64BIT;
	if (l->csum3) {
		l->tag_bytes = 16;
	} else {
		/* blocknr, 16-bit checksum, 16-bit flags[, blocknr_high] */
		l->tag_bytes = 8 + (l->is64 ? 4 : 0);
		if (inc & LF_JBD2_INCOMPAT_CSUM_V2)
			l->tag_bytes += 2;
	}
	l->seed = crc(0xffffffffu, sb->uuid, sizeof(sb->uuid));
	return !(inc & ~LF_JBD2_INCOMPAT_KNOWN);
}

#endif
