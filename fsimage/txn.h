/* txn.h — metadata transactions of an open volume, through its jbd2
 * journal (journal.h). fsimage-internal: volume.c and fsops.c use it.
 *
 * The running transaction is the set of dirty units in the block cache
 * (every metadata write libext2fs makes lands there) plus libext2fs's
 * in-memory superblock, group descriptors and bitmaps. A commit, on the
 * volume's committer thread:
 *  1. under the volume lock, at a consistent point (no handle open, see
 *     below): libext2fs's state into the cache (primary superblock and
 *     descriptors only, as the kernel), then a copy of the dirty units
 *     (lf_iocache_snapshot); the next transaction starts;
 *  2. without the lock: wait for the file data written behind before the
 *     snapshot (ordered mode), write the copies to the journal, flush,
 *     commit block, flush — fsync waiters are released here;
 *  3. checkpoint: the copies home, flush, the log's tail past them.
 * Operations run into the next transaction meanwhile; only one commit is
 * in flight.
 *
 * Freed blocks: a block freed in transaction T stays marked in use in
 * memory (not on disk: the bitmaps a commit writes show it free) until T
 * is checkpointed. Otherwise a freed directory or extent block could be
 * reused as file data and overwritten before the transaction freeing it
 * commits (a crash would then leave the old metadata pointing at data),
 * and replay of T could overwrite the new data: the jbd2 revoke problem,
 * solved here by never letting such a block be reused early.
 *
 * Handles: an operation that modifies metadata across two lock holds
 * (a write allocates blocks, drops the lock for the data, then sets the
 * size) brackets them with lf_txn_handle_start/stop so that no commit
 * sees the state in between; the commit waits for open handles and new
 * ones wait for the commit's snapshot.
 *
 * Errors: 0 or -errno, logged once. A failed commit or checkpoint is
 * sticky: every later fsync returns it.
 */
#ifndef LUNFS_TXN_H
#define LUNFS_TXN_H

#include <stdbool.h>
#include <stddef.h>

#include <ext2fs/ext2fs.h>

struct lf_vol;

/* Can v (opened read-write) be journaled? has_journal, an internal
 * journal, block size equal to the cache unit. */
bool lf_txn_usable(struct lf_vol *v);
/* Under the volume lock, before serving: open the journal, set
 * needs_recovery (EXT2_VALID_FS stays set, as the kernel's ext4 does),
 * write the superblock home, then journal everything after. */
int lf_txn_start(struct lf_vol *v, char *err, size_t errlen);
/* Without the volume lock: commit and checkpoint everything, stop the
 * committer, mark the log empty. Afterwards the cache writes back as an
 * unjournaled one and libext2fs may close the filesystem. */
int lf_txn_stop(struct lf_vol *v);
/* Lock held (dropped while waiting, retaken): lf_txn_stop(), then the
 * superblock home without needs_recovery: the device holds a clean
 * filesystem another tool (resize2fs) may change. lf_txn_start() again
 * resumes journaling. */
int lf_txn_suspend(struct lf_vol *v);
/* A block range freed (trim.c sees every free through libext2fs's
 * allocation callback and lf_vol_free_blocks()); lock held. Kept marked
 * in use in memory until its transaction is home, then queued for
 * discard. false: not journaled (or out of memory), the caller queues. */
bool lf_txn_freed(struct lf_vol *v, blk64_t blk, blk64_t n);
/* Lock held. Are freed blocks held for their transaction? Then an
 * allocation that met ENOSPC calls lf_txn_release_freed() (no handle
 * open: it commits, drops the lock until those blocks are home and
 * released, retakes it) and tries again, as ext4 retries after forcing
 * a commit. */
bool lf_txn_has_freed(struct lf_vol *v);
bool lf_txn_release_freed(struct lf_vol *v);
/* Lock held (dropped while waiting, retaken): commit the running
 * transaction and wait for that commit to be durable (home: and
 * checkpointed); also reports a failed write behind. */
int lf_txn_commit_wait(struct lf_vol *v, bool home);
/* Lock held. No-ops on an unjournaled volume. */
void lf_txn_handle_start(struct lf_vol *v);
void lf_txn_handle_stop(struct lf_vol *v);

struct lf_txn_stats {
	unsigned long long commits, blocks, journal_bytes;
	unsigned long long lock_ns_max; /* longest snapshot under the lock */
};
void lf_txn_get_stats(struct lf_vol *v, struct lf_txn_stats *st);

#endif
