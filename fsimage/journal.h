/* journal.h — the volume's jbd2 journal (its internal journal inode), in
 * the on-disk format the kernel writes and replays (jbd2_disk.h).
 *
 * Two jobs, one per file:
 *  - jreplay.c: lf_journal_replay() replays what a crash left in the log,
 *    the kernel's three passes (scan, revoke, replay) in one, before the
 *    filesystem is served.
 *  - journal.c: the writer. lf_journal_commit() writes one transaction
 *    (descriptor blocks, the blocks, a commit block) and makes it durable;
 *    lf_journal_checkpointed() moves the log's tail past it once its blocks
 *    are home. One transaction lives in the log at a time: the tail moves
 *    before the next one is written, so replay never sees a block older
 *    than the last checkpoint, which is why no revoke records are needed
 *    (see txn.c for the rule on freed blocks).
 *
 * Journal blocks are read and written straight on the bdev, never through
 * the block cache. Thread model: a struct lf_journal is used by one thread
 * at a time (the committer); lf_journal_open() and _close() run under the
 * volume lock. Errors: 0 or -errno, logged once with the device's name.
 */
#ifndef LUNFS_JOURNAL_H
#define LUNFS_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ext2fs/ext2fs.h>

#include "iscsi/bdev.h"

struct lf_journal;

/* One block of a transaction: fs block number and its bytes (blocksize). */
struct lf_jblock {
	uint64_t blk;
	const uint8_t *data;
};

/* Replay the journal of fs (opened through the cache, not yet written
 * to) straight onto bdev: committed transactions from the log's start,
 * honouring revoke records, then an empty log (s_start = 0) and a flush.
 * *replayed tells whether any transaction was applied; *ntrans their count.
 * The caller must drop its cached copies and reopen fs afterwards. */
int lf_journal_replay(ext2_filsys fs, struct lf_bdev *bdev, unsigned *ntrans,
		      char *err, size_t errlen);

/* Map the journal inode's blocks, check the journal superblock (an empty
 * log), turn on the features the filesystem asks for (64-bit tags on
 * 64bit, v3 checksums on metadata_csum, as the kernel does). Writes
 * nothing. */
int lf_journal_open(ext2_filsys fs, struct lf_bdev *bdev,
		    struct lf_journal **out, char *err, size_t errlen);
/* Write the journal superblock with the log starting at its first block.
 * Only once the filesystem says needs_recovery: a log with a start and a
 * superblock without the flag is what e2fsck calls damage. */
int lf_journal_begin(struct lf_journal *j);
/* Data blocks one transaction may carry (descriptors and commit block
 * come on top). */
size_t lf_journal_capacity(const struct lf_journal *j);
/* Write blocks as transaction seq: descriptor(s) + blocks, flush, commit
 * block, flush. Once it returns 0 the transaction survives a crash. */
int lf_journal_commit(struct lf_journal *j, const struct lf_jblock *b,
		      size_t n);
/* Every block of the last committed transaction is home and flushed:
 * move the tail past it and flush (after which its blocks may be reused
 * for anything). */
int lf_journal_checkpointed(struct lf_journal *j);
/* The sequence number the next commit will carry. */
uint32_t lf_journal_next_seq(const struct lf_journal *j);
/* Clean unmount: everything checkpointed; the log is marked empty
 * (s_start = 0) and flushed. Frees j. */
int lf_journal_close(struct lf_journal *j);
/* Drop j without touching the device (failed open, dead device). */
void lf_journal_free(struct lf_journal *j);

/* Shared by journal.c and jreplay.c: the physical block of each journal
 * block, from the journal inode's map. */
int lf_journal_map(ext2_filsys fs, uint64_t **map, uint32_t *nblocks);
uint32_t lf_journal_crc32c(uint32_t seed, const void *p, size_t len);

#endif
