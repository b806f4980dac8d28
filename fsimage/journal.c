/* journal.c — the jbd2 writer: transactions into the journal inode, the
 * log's tail in the journal superblock. See journal.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fsimage/jbd2_disk.h"
#include "fsimage/journal.h"
#include "iscsi/log.h"

#define MOD "journal"
/* A transaction may fill this share of the log (the kernel's
 * j_max_transaction_buffers is a quarter; one transaction lives in our
 * log at a time, so half leaves room for descriptors with margin). */
#define CAP_SHARE 2
#define MAX_IOV	  256

struct lf_journal {
	struct lf_bdev *bdev;
	uint32_t bs;
	uint64_t *map; /* journal block → device block */
	uint32_t nblocks;
	uint32_t first, maxlen;
	uint32_t head; /* where the next transaction starts */
	uint32_t seq;  /* the next transaction's sequence */
	struct lf_jbd2_sb sb;
	struct lf_jbd2_layout lay;
	uint8_t *buf; /* one block, for the superblock and commit blocks */
};

uint32_t lf_journal_crc32c(uint32_t seed, const void *p, size_t len)
{
	return ext2fs_crc32c_le(seed, (unsigned char const *)p, len);
}

struct map_ctx {
	uint64_t *map;
	uint32_t n;
	int bad;
};

static int map_one(ext2_filsys fs, blk64_t *blocknr, e2_blkcnt_t blockcnt,
		   blk64_t ref_blk, int ref_offset, void *priv)
{
	struct map_ctx *m = priv;

	if (blockcnt < 0)
		return 0;
	if ((uint64_t)blockcnt >= m->n) {
		m->bad = 1;
		return BLOCK_ABORT;
	}
	m->map[blockcnt] = *blocknr;
	return 0;
}

int lf_journal_map(ext2_filsys fs, uint64_t **map, uint32_t *nblocks)
{
	struct ext2_inode in;
	struct map_ctx m = {0};
	errcode_t e;
	uint64_t size;

	e = ext2fs_read_inode(fs, fs->super->s_journal_inum, &in);
	if (e)
		return -EIO;
	size = EXT2_I_SIZE(&in);
	if (size < 1024u * fs->blocksize / 1024u * 2 ||
	    size / fs->blocksize > UINT32_MAX)
		return -EINVAL;
	m.n = (uint32_t)(size / fs->blocksize);
	m.map = calloc(m.n, sizeof(*m.map));
	if (!m.map)
		return -ENOMEM;
	e = ext2fs_block_iterate3(fs, fs->super->s_journal_inum,
				  BLOCK_FLAG_READ_ONLY | BLOCK_FLAG_DATA_ONLY,
				  NULL, map_one, &m);
	for (uint32_t i = 0; !e && !m.bad && i < m.n; i++)
		if (!m.map[i] || m.map[i] >= ext2fs_blocks_count(fs->super))
			m.bad = 1;
	if (e || m.bad) {
		free(m.map);
		return -EINVAL;
	}
	*map = m.map;
	*nblocks = m.n;
	return 0;
}

static uint64_t dev_off(const struct lf_journal *j, uint32_t jblk)
{
	return j->map[jblk] * j->bs;
}

static uint32_t next_blk(const struct lf_journal *j, uint32_t b)
{
	return b + 1 >= j->maxlen ? j->first : b + 1;
}

static int write_sb(struct lf_journal *j)
{
	int r;

	j->sb.checksum = 0;
	if (j->lay.csum)
		j->sb.checksum = htobe32(
			lf_journal_crc32c(0xffffffffu, &j->sb, sizeof(j->sb)));
	memset(j->buf, 0, j->bs);
	memcpy(j->buf, &j->sb, sizeof(j->sb));
	r = lf_bdev_pwrite(j->bdev, j->buf, j->bs, dev_off(j, 0));
	if (r == 0)
		r = lf_bdev_flush(j->bdev);
	if (r < 0)
		lf_err(MOD, "%s: writing the journal superblock: %s",
		       lf_bdev_desc(j->bdev), strerror(-r));
	return r;
}

void lf_journal_free(struct lf_journal *j)
{
	if (!j)
		return;
	free(j->map);
	free(j->buf);
	free(j);
}

int lf_journal_open(ext2_filsys fs, struct lf_bdev *bdev,
		    struct lf_journal **out, char *err, size_t errlen)
{
	const char *desc = lf_bdev_desc(bdev);
	struct lf_journal *j = calloc(1, sizeof(*j));
	uint32_t inc;
	int r;

	if (!j)
		return -ENOMEM;
	j->bdev = bdev;
	j->bs = fs->blocksize;
	r = lf_journal_map(fs, &j->map, &j->nblocks);
	if (r < 0) {
		snprintf(err, errlen, "%s: the journal inode is damaged", desc);
		goto fail;
	}
	r = -ENOMEM;
	if (posix_memalign((void **)&j->buf, 4096, j->bs))
		goto fail;
	r = lf_bdev_pread(bdev, j->buf, j->bs, dev_off(j, 0));
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot read the journal: %s", desc,
			 strerror(-r));
		goto fail;
	}
	memcpy(&j->sb, j->buf, sizeof(j->sb));
	r = -EINVAL;
	if (be32toh(j->sb.header.magic) != LF_JBD2_MAGIC ||
	    be32toh(j->sb.header.blocktype) != LF_JBD2_SB_V2 ||
	    be32toh(j->sb.blocksize) != j->bs ||
	    be32toh(j->sb.maxlen) > j->nblocks || be32toh(j->sb.first) == 0 ||
	    be32toh(j->sb.first) + 16 > be32toh(j->sb.maxlen)) {
		snprintf(err, errlen,
			 "%s: the journal superblock is not a jbd2 v2 one "
			 "lunfs can write ('lunfs fsck --repair' rebuilds it)",
			 desc);
		goto fail;
	}
	if (j->sb.start) {
		/* A log with data on a filesystem not flagged for recovery:
		 * e2fsck decides what it is. */
		snprintf(err, errlen,
			 "%s: the journal holds data but the filesystem is not "
			 "marked for recovery: run 'lunfs fsck --repair' on it",
			 desc);
		r = -EUCLEAN;
		goto fail;
	}
	j->first = be32toh(j->sb.first);
	j->maxlen = be32toh(j->sb.maxlen);
	/* The features the kernel's ext4 turns on at mount. */
	inc = be32toh(j->sb.feature_incompat) | LF_JBD2_INCOMPAT_REVOKE;
	if (ext2fs_has_feature_64bit(fs->super))
		inc |= LF_JBD2_INCOMPAT_64BIT;
	if (ext2fs_has_feature_metadata_csum(fs->super) &&
	    !(inc & LF_JBD2_INCOMPAT_CSUM_V2)) {
		inc |= LF_JBD2_INCOMPAT_CSUM_V3;
	}
	/* v1 (compat) checksums are not written: never claim them. */
	j->sb.feature_compat &= ~htobe32(LF_JBD2_COMPAT_CHECKSUM);
	j->sb.feature_incompat = htobe32(inc);
	if (!lf_jbd2_layout_init(&j->lay, &j->sb, lf_journal_crc32c)) {
		snprintf(err, errlen,
			 "%s: the journal uses features lunfs cannot write "
			 "(incompat 0x%x)",
			 desc, inc);
		r = -EOPNOTSUPP;
		goto fail;
	}
	if (j->lay.csum)
		j->sb.checksum_type = LF_JBD2_CRC32C;
	j->seq = be32toh(j->sb.sequence);
	if (!j->seq)
		j->seq = 1;
	j->head = j->first;
	*out = j;
	return 0;
fail:
	lf_err(MOD, "%s", err);
	lf_journal_free(j);
	return r;
}

int lf_journal_begin(struct lf_journal *j)
{
	/* The log starts here: a crash before the first commit finds no
	 * transaction at head with this sequence and replays nothing. */
	j->sb.sequence = htobe32(j->seq);
	j->sb.start = htobe32(j->head);
	j->sb.errno_ = 0;
	return write_sb(j);
}

size_t lf_journal_capacity(const struct lf_journal *j)
{
	size_t log = j->maxlen - j->first;
	size_t per_desc = (j->bs - 12 - 16 - 4) / j->lay.tag_bytes;
	size_t n = log / CAP_SHARE;

	/* n blocks need n / per_desc + 1 descriptors and a commit block. */
	return n - n / per_desc - 2;
}

uint32_t lf_journal_next_seq(const struct lf_journal *j)
{
	return j->seq;
}

/* A run of journal blocks to write, contiguous on the device. */
struct jw {
	struct lf_journal *j;
	struct iovec iov[MAX_IOV];
	int n;
	uint64_t off; /* device offset of iov[0] */
};

static int jw_flush(struct jw *w)
{
	int r = 0;

	if (w->n)
		r = lf_bdev_pwritev(w->j->bdev, w->iov, w->n, w->off);
	w->n = 0;
	return r;
}

static int jw_add(struct jw *w, uint32_t jblk, const void *data)
{
	uint64_t off = dev_off(w->j, jblk);
	int r = 0;

	if (w->n &&
	    (w->n == MAX_IOV || off != w->off + (uint64_t)w->n * w->j->bs))
		r = jw_flush(w);
	if (r < 0)
		return r;
	if (!w->n)
		w->off = off;
	w->iov[w->n].iov_base = (void *)data;
	w->iov[w->n].iov_len = w->j->bs;
	w->n++;
	return 0;
}

static void put_tag(const struct lf_journal *j, uint8_t *p, uint64_t blk,
		    uint32_t flags, uint32_t csum)
{
	uint32_t lo = htobe32((uint32_t)blk), hi = htobe32(blk >> 32);

	memcpy(p, &lo, 4);
	if (j->lay.csum3) {
		uint32_t f = htobe32(flags), c = htobe32(csum);

		memcpy(p + 4, &f, 4);
		memcpy(p + 8, &hi, 4);
		memcpy(p + 12, &c, 4);
		return;
	}
	uint16_t c16 = htobe16(j->lay.csum ? (uint16_t)csum : 0);
	uint16_t f16 = htobe16((uint16_t)flags);

	memcpy(p + 4, &c16, 2);
	memcpy(p + 6, &f16, 2);
	if (j->lay.is64)
		memcpy(p + 8, &hi, 4);
}

static void block_tail_csum(const struct lf_journal *j, uint8_t *blk)
{
	uint32_t c;

	if (!j->lay.csum)
		return;
	memset(blk + j->bs - 4, 0, 4);
	c = htobe32(lf_journal_crc32c(j->lay.seed, blk, j->bs));
	memcpy(blk + j->bs - 4, &c, 4);
}

static void header(uint8_t *blk, uint32_t type, uint32_t seq)
{
	struct lf_jbd2_header h = {htobe32(LF_JBD2_MAGIC), htobe32(type),
				   htobe32(seq)};

	memcpy(blk, &h, sizeof(h));
}

int lf_journal_commit(struct lf_journal *j, const struct lf_jblock *b, size_t n)
{
	size_t per_desc =
		(j->bs - 12 - 16 - (j->lay.csum ? 4 : 0)) / j->lay.tag_bytes;
	size_t ndesc = n ? (n + per_desc - 1) / per_desc : 0;
	uint8_t *desc = NULL, **esc = NULL;
	uint32_t pos = j->head, beseq = htobe32(j->seq);
	struct lf_jbd2_commit *cb;
	struct jw *w = NULL;
	struct timespec now;
	int r = -ENOMEM;

	if (n > lf_journal_capacity(j))
		return -E2BIG;
	w = calloc(1, sizeof(*w));
	esc = calloc(n ? n : 1, sizeof(*esc));
	if (!w || !esc ||
	    (ndesc && posix_memalign((void **)&desc, 4096, ndesc * j->bs)))
		goto out;
	w->j = j;
	/* Descriptor blocks, each followed by the blocks it tags: every
	 * descriptor complete (tags, checksum) before any write starts. */
	for (size_t d = 0, i = 0; d < ndesc; d++) {
		uint8_t *db = desc + d * j->bs, *tp = db + 12;
		size_t k, last = i + per_desc < n ? i + per_desc : n;

		memset(db, 0, j->bs);
		header(db, LF_JBD2_DESCRIPTOR, j->seq);
		for (k = i; k < last; k++) {
			const uint8_t *data = b[k].data;
			uint32_t flags = k == i ? 0 : LF_JBD2_FLAG_SAME_UUID;
			uint32_t csum = 0, magic;

			memcpy(&magic, data, 4);
			if (magic == htobe32(LF_JBD2_MAGIC)) {
				/* The kernel escapes a block that would read
				 * as a journal block; replay restores it. */
				if (posix_memalign((void **)&esc[k], 4096,
						   j->bs)) {
					r = -ENOMEM;
					goto out;
				}
				memcpy(esc[k], data, j->bs);
				memset(esc[k], 0, 4);
				data = esc[k];
				flags |= LF_JBD2_FLAG_ESCAPE;
			}
			if (k == last - 1)
				flags |= LF_JBD2_FLAG_LAST_TAG;
			if (j->lay.csum) {
				csum = lf_journal_crc32c(j->lay.seed, &beseq,
							 4);
				csum = lf_journal_crc32c(csum, data, j->bs);
			}
			put_tag(j, tp, b[k].blk, flags, csum);
			tp += j->lay.tag_bytes;
			if (k == i) {
				memcpy(tp, j->sb.uuid, 16);
				tp += 16;
			}
		}
		block_tail_csum(j, db);
		i = last;
	}
	for (size_t d = 0, i = 0; d < ndesc; d++) {
		size_t last = i + per_desc < n ? i + per_desc : n;

		r = jw_add(w, pos, desc + d * j->bs);
		pos = next_blk(j, pos);
		for (size_t k = i; r == 0 && k < last; k++) {
			r = jw_add(w, pos, esc[k] ? esc[k] : b[k].data);
			pos = next_blk(j, pos);
		}
		if (r < 0)
			goto io_fail;
		i = last;
	}
	r = jw_flush(w);
	if (r == 0)
		r = lf_bdev_flush(j->bdev);
	if (r < 0)
		goto io_fail;
	/* The commit block, only once everything it vouches for is stable. */
	memset(j->buf, 0, j->bs);
	header(j->buf, LF_JBD2_COMMIT, j->seq);
	cb = (struct lf_jbd2_commit *)j->buf;
	clock_gettime(CLOCK_REALTIME, &now);
	cb->commit_sec = htobe64((uint64_t)now.tv_sec);
	cb->commit_nsec = htobe32((uint32_t)now.tv_nsec);
	if (j->lay.csum)
		cb->chksum[0] =
			htobe32(lf_journal_crc32c(j->lay.seed, j->buf, j->bs));
	r = lf_bdev_pwrite(j->bdev, j->buf, j->bs, dev_off(j, pos));
	if (r == 0)
		r = lf_bdev_flush(j->bdev);
	if (r < 0)
		goto io_fail;
	j->head = next_blk(j, pos);
	j->seq++;
	goto out;
io_fail:
	lf_err(MOD, "%s: writing transaction %" PRIu32 " to the journal: %s",
	       lf_bdev_desc(j->bdev), j->seq, strerror(-r));
out:
	for (size_t k = 0; esc && k < n; k++)
		free(esc[k]);
	free(esc);
	free(desc);
	free(w);
	return r;
}

int lf_journal_checkpointed(struct lf_journal *j)
{
	j->sb.sequence = htobe32(j->seq);
	j->sb.start = htobe32(j->head);
	return write_sb(j);
}

int lf_journal_close(struct lf_journal *j)
{
	int r;

	j->sb.sequence = htobe32(j->seq);
	j->sb.start = 0;
	r = write_sb(j);
	lf_journal_free(j);
	return r;
}
