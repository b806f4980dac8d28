/* jreplay.c — journal recovery: what the kernel's jbd2 (and e2fsck's
 * recovery.c) do at mount after a crash, written for lunfs: scan the log
 * from s_start for transactions with consecutive sequence numbers and a
 * valid commit block, skip blocks revoked by a later (or the same)
 * transaction, write the rest home, flush, then mark the log empty.
 * See journal.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsimage/jbd2_disk.h"
#include "fsimage/journal.h"
#include "iscsi/log.h"

#define MOD "journal"

struct rtag {
	uint64_t blk;
	uint32_t jpos, seq, flags;
};

struct rrev {
	uint64_t blk;
	uint32_t seq;
};

struct replay {
	struct lf_bdev *bdev;
	const uint64_t *map;
	uint32_t bs, first, maxlen;
	struct lf_jbd2_layout lay;
	struct rtag *tags; /* committed, then the pending transaction's */
	size_t ntags, ncommitted_tags, cap_tags;
	struct rrev *revs;
	size_t nrevs, ncommitted_revs, cap_revs;
	uint8_t *blk, *data;
};

static uint32_t rnext(const struct replay *p, uint32_t b)
{
	return b + 1 >= p->maxlen ? p->first : b + 1;
}

static int rread(struct replay *p, uint32_t jblk, uint8_t *buf)
{
	return lf_bdev_pread(p->bdev, buf, p->bs, p->map[jblk] * p->bs);
}

static int add_tag(struct replay *p, struct rtag t)
{
	if (p->ntags == p->cap_tags) {
		size_t nc = p->cap_tags ? 2 * p->cap_tags : 256;
		struct rtag *nt = realloc(p->tags, nc * sizeof(*nt));

		if (!nt)
			return -ENOMEM;
		p->tags = nt;
		p->cap_tags = nc;
	}
	p->tags[p->ntags++] = t;
	return 0;
}

static int add_rev(struct replay *p, struct rrev v)
{
	if (p->nrevs == p->cap_revs) {
		size_t nc = p->cap_revs ? 2 * p->cap_revs : 256;
		struct rrev *nv = realloc(p->revs, nc * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		p->revs = nv;
		p->cap_revs = nc;
	}
	p->revs[p->nrevs++] = v;
	return 0;
}

static bool tail_ok(const struct replay *p, const uint8_t *b)
{
	uint32_t want, got;
	uint8_t *copy;
	bool ok;

	if (!p->lay.csum)
		return true;
	copy = malloc(p->bs);
	if (!copy)
		return false;
	memcpy(copy, b, p->bs);
	memcpy(&want, copy + p->bs - 4, 4);
	memset(copy + p->bs - 4, 0, 4);
	got = htobe32(lf_journal_crc32c(p->lay.seed, copy, p->bs));
	ok = got == want;
	free(copy);
	return ok;
}

static bool commit_ok(const struct replay *p, uint8_t *b)
{
	struct lf_jbd2_commit *c = (struct lf_jbd2_commit *)b;
	uint32_t want = c->chksum[0], got;

	if (!p->lay.csum)
		return true;
	c->chksum[0] = 0;
	got = htobe32(lf_journal_crc32c(p->lay.seed, b, p->bs));
	c->chksum[0] = want;
	return got == want;
}

/* Parse a descriptor at pos: its tags, the position after its blocks. */
static int scan_descriptor(struct replay *p, const uint8_t *b, uint32_t seq,
			   uint32_t *pos)
{
	size_t off = 12, end = p->bs - (p->lay.csum ? 4 : 0);
	uint32_t dpos = rnext(p, *pos);
	int r;

	while (off + p->lay.tag_bytes <= end) {
		const uint8_t *t = b + off;
		uint32_t lo, hi = 0, flags;
		uint16_t f16;

		memcpy(&lo, t, 4);
		if (p->lay.csum3) {
			memcpy(&flags, t + 4, 4);
			flags = be32toh(flags);
			memcpy(&hi, t + 8, 4);
		} else {
			memcpy(&f16, t + 6, 2);
			flags = be16toh(f16);
			if (p->lay.is64)
				memcpy(&hi, t + 8, 4);
		}
		off += p->lay.tag_bytes;
		if (!(flags & LF_JBD2_FLAG_SAME_UUID))
			off += 16;
		r = add_tag(p,
			    (struct rtag){
				    .blk = (uint64_t)be32toh(lo) |
					   (p->lay.is64 ? (uint64_t)be32toh(hi)
								  << 32
							: 0),
				    .jpos = dpos,
				    .seq = seq,
				    .flags = flags});
		if (r < 0)
			return r;
		dpos = rnext(p, dpos);
		if (flags & LF_JBD2_FLAG_LAST_TAG)
			break;
	}
	*pos = dpos;
	return 0;
}

static int scan_revoke(struct replay *p, const uint8_t *b, uint32_t seq)
{
	struct lf_jbd2_revoke_header h;
	size_t rec = p->lay.is64 ? 8 : 4, cnt;

	memcpy(&h, b, sizeof(h));
	cnt = be32toh(h.count);
	if (cnt > p->bs - (p->lay.csum ? 4 : 0))
		return -EINVAL;
	for (size_t off = sizeof(h); off + rec <= cnt; off += rec) {
		uint64_t blk;
		uint32_t v32;

		if (rec == 8) {
			memcpy(&blk, b + off, 8);
			blk = be64toh(blk);
		} else {
			memcpy(&v32, b + off, 4);
			blk = be32toh(v32);
		}
		int r = add_rev(p, (struct rrev){blk, seq});

		if (r < 0)
			return r;
	}
	return 0;
}

static bool revoked(const struct replay *p, const struct rtag *t)
{
	for (size_t i = 0; i < p->ncommitted_revs; i++)
		if (p->revs[i].blk == t->blk && p->revs[i].seq >= t->seq)
			return true;
	return false;
}

int lf_journal_replay(ext2_filsys fs, struct lf_bdev *bdev, unsigned *ntrans,
		      char *err, size_t errlen)
{
	const char *desc = lf_bdev_desc(bdev);
	struct replay p = {.bdev = bdev, .bs = fs->blocksize};
	struct lf_jbd2_sb sb;
	uint64_t *map = NULL;
	uint32_t nblocks, pos, seq, scanned = 0;
	unsigned committed = 0;
	int r;

	*ntrans = 0;
	r = lf_journal_map(fs, &map, &nblocks);
	if (r < 0) {
		snprintf(err, errlen,
			 "%s: the journal inode is damaged: run 'lunfs fsck "
			 "--repair' on it",
			 desc);
		goto out;
	}
	p.map = map;
	r = -ENOMEM;
	if (posix_memalign((void **)&p.blk, 4096, p.bs) ||
	    posix_memalign((void **)&p.data, 4096, p.bs))
		goto out;
	r = rread(&p, 0, p.blk);
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot read the journal: %s", desc,
			 strerror(-r));
		goto out;
	}
	memcpy(&sb, p.blk, sizeof(sb));
	p.first = be32toh(sb.first);
	p.maxlen = be32toh(sb.maxlen);
	r = -EUCLEAN;
	if (be32toh(sb.header.magic) != LF_JBD2_MAGIC ||
	    (be32toh(sb.header.blocktype) != LF_JBD2_SB_V2 &&
	     be32toh(sb.header.blocktype) != LF_JBD2_SB_V1) ||
	    be32toh(sb.blocksize) != p.bs || p.maxlen > nblocks || !p.first ||
	    p.first >= p.maxlen) {
		snprintf(err, errlen,
			 "%s: the journal superblock is damaged: run 'lunfs "
			 "fsck --repair' on it",
			 desc);
		goto out;
	}
	if (be32toh(sb.header.blocktype) == LF_JBD2_SB_V1)
		sb.feature_incompat = 0;
	if (!lf_jbd2_layout_init(&p.lay, &sb, lf_journal_crc32c)) {
		r = -EOPNOTSUPP;
		snprintf(err, errlen,
			 "%s: the journal uses features lunfs cannot replay "
			 "(incompat 0x%x): run 'lunfs fsck --repair' on it",
			 desc, be32toh(sb.feature_incompat));
		goto out;
	}
	seq = be32toh(sb.sequence);
	if (!sb.start) {
		r = 0;
		goto out; /* nothing logged */
	}
	pos = be32toh(sb.start);
	if (pos < p.first || pos >= p.maxlen) {
		snprintf(err, errlen,
			 "%s: the journal's start is out of range: run 'lunfs "
			 "fsck --repair' on it",
			 desc);
		goto out;
	}
	/* Scan: transactions end at the first block that is not the next
	 * one of the expected sequence, or a commit that fails its check. */
	while (scanned++ < p.maxlen) {
		struct lf_jbd2_header h;

		r = rread(&p, pos, p.blk);
		if (r < 0) {
			snprintf(err, errlen, "%s: cannot read the journal: %s",
				 desc, strerror(-r));
			goto out;
		}
		memcpy(&h, p.blk, sizeof(h));
		if (be32toh(h.magic) != LF_JBD2_MAGIC ||
		    be32toh(h.sequence) != seq)
			break;
		switch (be32toh(h.blocktype)) {
		case LF_JBD2_DESCRIPTOR:
			if (!tail_ok(&p, p.blk))
				goto scan_done;
			r = scan_descriptor(&p, p.blk, seq, &pos);
			if (r < 0)
				goto out;
			continue;
		case LF_JBD2_REVOKE:
			if (!tail_ok(&p, p.blk) ||
			    scan_revoke(&p, p.blk, seq) < 0)
				goto scan_done;
			pos = rnext(&p, pos);
			continue;
		case LF_JBD2_COMMIT:
			if (!commit_ok(&p, p.blk))
				goto scan_done;
			p.ncommitted_tags = p.ntags;
			p.ncommitted_revs = p.nrevs;
			committed++;
			seq++;
			pos = rnext(&p, pos);
			continue;
		default:
			goto scan_done;
		}
	}
scan_done:
	/* Replay, in log order: a later copy of a block wins. */
	for (size_t i = 0; i < p.ncommitted_tags; i++) {
		const struct rtag *t = &p.tags[i];

		if (revoked(&p, t))
			continue;
		if (t->blk >= ext2fs_blocks_count(fs->super)) {
			r = -EUCLEAN;
			snprintf(err, errlen,
				 "%s: the journal names block %" PRIu64
				 " beyond the filesystem: run 'lunfs fsck "
				 "--repair' on it",
				 desc, t->blk);
			goto out;
		}
		r = rread(&p, t->jpos, p.data);
		if (r < 0) {
			snprintf(err, errlen, "%s: cannot read the journal: %s",
				 desc, strerror(-r));
			goto out;
		}
		if (t->flags & LF_JBD2_FLAG_ESCAPE) {
			uint32_t m = htobe32(LF_JBD2_MAGIC);

			memcpy(p.data, &m, 4);
		}
		r = lf_bdev_pwrite(bdev, p.data, p.bs, t->blk * p.bs);
		if (r < 0) {
			snprintf(err, errlen,
				 "%s: writing block %" PRIu64
				 " from the journal: %s",
				 desc, t->blk, strerror(-r));
			goto out;
		}
	}
	r = lf_bdev_flush(bdev);
	if (r < 0) {
		snprintf(err, errlen, "%s: flush after journal replay: %s",
			 desc, strerror(-r));
		goto out;
	}
	/* An empty log, restarted past every sequence seen (the kernel's
	 * ++end_transaction), so no stale commit block can ever match. */
	sb.sequence = htobe32(seq + 1);
	sb.start = 0;
	sb.checksum = 0;
	if (p.lay.csum)
		sb.checksum = htobe32(
			lf_journal_crc32c(0xffffffffu, &sb, sizeof(sb)));
	r = rread(&p, 0, p.blk);
	if (r == 0) {
		memcpy(p.blk, &sb, sizeof(sb));
		r = lf_bdev_pwrite(bdev, p.blk, p.bs, map[0] * p.bs);
	}
	if (r == 0)
		r = lf_bdev_flush(bdev);
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot write the journal: %s", desc,
			 strerror(-r));
		goto out;
	}
	*ntrans = committed;
	lf_info(MOD, "%s: journal replayed: %u transaction(s), %zu block(s)",
		desc, committed, p.ncommitted_tags);
out:
	if (r < 0)
		lf_err(MOD, "%s", err);
	free(p.tags);
	free(p.revs);
	free(p.blk);
	free(p.data);
	free(map);
	return r;
}
