/* iomgr.h — a libext2fs io_manager over a struct lf_bdev, with a bounded
 * write-back block cache.
 *
 * The cache is the object; the io_manager is the door libext2fs uses to
 * reach it. libext2fs opens channels by name, so lf_iocache_name() spells
 * the cache's address as "lunfs-cache:<hex>", which only this process can
 * resolve; the open checks a magic number before trusting it.
 *
 * Contract:
 *  - The cache is keyed by byte offset in units of LF_IOCACHE_UNIT (4 KiB,
 *    or the device's logical block size if larger), whatever block size
 *    libext2fs sets on the channel; byte-granular requests (the superblock
 *    at 1024) are read-modify-written against the device.
 *  - Bounded (cache_bytes), LRU, write-back. Evicting a dirty block writes
 *    back every dirty block, merged into commands ≤ max_transfer.
 *  - One mutex of its own, independent of the volume lock:
 *    lf_iocache_pread()/pwrite() move file data straight to the device
 *    without the volume lock and keep the cached copies coherent (cached
 *    copies, dirty or clean, are always the newest bytes).
 *  - After lf_iocache_assume_zero(), ranges never written through this
 *    cache are taken to read back as zeros: zeroout of them is a no-op.
 *  - A read-only cache never writes a byte to the device.
 *  - Errors: 0 or -errno (channel ops return the errno as errcode_t).
 */
#ifndef LUNFS_IOMGR_H
#define LUNFS_IOMGR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ext2fs/ext2fs.h>

#include "iscsi/bdev.h"

#define LF_IOCACHE_UNIT		 4096u
#define LF_IOCACHE_DEFAULT_BYTES (64u << 20)

struct lf_iocache;

struct lf_iocache_stats {
	uint64_t bytes_read;	/* from the device */
	uint64_t bytes_written; /* to the device (zeros skipped excluded) */
	uint64_t hits, misses;
	uint64_t flushes; /* SYNCHRONIZE CACHE sent */
};

/* Takes no bdev reference: the caller keeps the bdev alive. */
int lf_iocache_new(struct lf_bdev *bdev, size_t cache_bytes, bool read_only,
		   struct lf_iocache **out);
/* Drops dirty blocks: write back first. */
void lf_iocache_free(struct lf_iocache *c);

io_manager lf_iomgr(void);
void lf_iocache_name(const struct lf_iocache *c, char *buf, size_t len);

void lf_iocache_assume_zero(struct lf_iocache *c);

/* Write back every dirty block (no SYNCHRONIZE CACHE). */
int lf_iocache_writeback(struct lf_iocache *c);
/* Write back (after the writes behind, see below), then SYNCHRONIZE CACHE
 * if anything was written since the last one. Also returns the failure of
 * a write behind since the last lf_iocache_sync(), once. */
int lf_iocache_sync(struct lf_iocache *c);
/* The same for a periodic flusher: a failed write-behind stays pending for
 * the next lf_iocache_sync(), which reports it (fsync must see it). */
int lf_iocache_sync_tick(struct lf_iocache *c);

/* File data, bypassing the cache but coherent with it. Byte offsets and
 * lengths aligned to the device's logical block size. Writes of up to
 * 1 MiB are written behind: they return once copied and sent, reads of
 * the range wait for them, the cache's write-back waits for all of them
 * (data before the metadata that points at it) and lf_iocache_sync()
 * reports their failure. */
int lf_iocache_pread(struct lf_iocache *c, void *buf, size_t len, uint64_t off);
int lf_iocache_pwrite(struct lf_iocache *c, const void *buf, size_t len,
		      uint64_t off);
/* lf_iocache_pread() without waiting: done(opaque, 0 or -errno) runs
 * exactly once, on the device's I/O thread, or inline when the cache holds
 * part of the range (the cached bytes are the newest, so that read is
 * served synchronously, overlaid). iov (one buffer) stays valid until
 * done runs. done must not block nor take locks that
 * are held across device I/O (the volume lock, this cache's). */
void lf_iocache_pread_async(struct lf_iocache *c, const struct iovec *iov,
			    uint64_t off, lf_bdev_done_fn done, void *opaque);

/* Blocks about to be unmapped (they are free): their cached copies are
 * dropped, dirty or not, and writes behind to them waited for, so that
 * nothing of ours lands on them after the UNMAP. Partly covered cache
 * units stay. */
void lf_iocache_forget(struct lf_iocache *c, uint64_t off, uint64_t len);
/* Another writer changed the device (resize2fs through a block view) and
 * it may have grown: drop every cached block, forget assume_zero, take
 * the device's current size. The cache must be written back first and
 * nobody may use it meanwhile; -EBUSY if a block is still dirty. */
int lf_iocache_reset(struct lf_iocache *c);

void lf_iocache_get_stats(struct lf_iocache *c, struct lf_iocache_stats *st);

/*
 * Journaled mode (txn.c drives it). The dirty units are the running
 * transaction: they are never written home by the cache (no write-back on
 * eviction or sync: the cache grows past its bound instead and calls kick,
 * as it does once more than soft units are dirty; kick must not block nor
 * take the volume lock or this cache's). lf_iocache_sync() then only
 * waits for the writes behind, reports their failure and flushes.
 *
 * A commit: lf_iocache_snapshot() (under the volume lock, at a consistent
 * point) copies the dirty units out and marks them clean; from then until
 * lf_iocache_snapshot_done() the snapshot is "in flight": a unit read from
 * home is overlaid with its copy, and a direct write (file data, zeroout,
 * discard) to one of its units waits, so the checkpoint never overwrites
 * newer bytes. lf_iocache_wait_ordered() waits for the writes behind
 * registered before the snapshot (ordered mode: data before the commit
 * that exposes it) and returns a pending write failure without taking it.
 * lf_iocache_write_home() is the checkpoint: the copies home, merged, then
 * SYNCHRONIZE CACHE; no lock is held across its I/O.
 */
struct lf_iosnap {
	size_t n;
	uint32_t unit;
	uint64_t *keys; /* sorted unit numbers */
	uint8_t *data;	/* n * unit bytes */
	uint64_t wticket;
};

void lf_iocache_set_journaled(struct lf_iocache *c, bool on, size_t soft,
			      void (*kick)(void *arg), void *arg);
size_t lf_iocache_ndirty(struct lf_iocache *c);
uint32_t lf_iocache_unit(const struct lf_iocache *c);
int lf_iocache_snapshot(struct lf_iocache *c, struct lf_iosnap **out);
int lf_iocache_wait_ordered(struct lf_iocache *c, const struct lf_iosnap *s);
int lf_iocache_write_home(struct lf_iocache *c, const struct lf_iosnap *s);
void lf_iocache_snapshot_done(struct lf_iocache *c, struct lf_iosnap *s);
void lf_iosnap_free(struct lf_iosnap *s);
/* The failure of a write behind since the last report, taken. */
int lf_iocache_take_error(struct lf_iocache *c);
/* Forget every clean cached unit (the device changed underneath: journal
 * replay). */
void lf_iocache_drop_clean(struct lf_iocache *c);

#endif
