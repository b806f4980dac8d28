/* trim.c — FITRIM and online discard (see trim.h for the promises).
 *
 * State (struct lf_trim, one per volume, under the volume lock):
 *  - queue: extents freed since the last durable point, collected from
 *    libext2fs's block-allocation callbacks while discard is on;
 *  - batches: extents marked in use in the in-memory bitmap while their
 *    UNMAP is in flight (or waits for the flusher). A batch belongs to
 *    whoever made it; it is unlinked and unmarked by its owner only.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <et/com_err.h>

#include "fsimage/iomgr.h"
#include "fsimage/trim.h"
#include "fsimage/txn.h"
#include "fsimage/volume_int.h"
#include "iscsi/log.h"

#define MOD "trim"
/* Past this many queued extents discard gives up on the rest until the
 * next durable point: fstrim reclaims them later. 1 MiB of memory. */
#define QUEUE_MAX 65536

struct ext {
	blk64_t blk;
	blk64_t len;
};

struct batch {
	struct batch *next;
	size_t n;
	bool ready; /* discard: waits for the flusher to unmap it */
	struct ext e[LF_TRIM_BATCH];
};

struct lf_trim {
	bool discard;
	bool said_unsupported;
	bool said_overflow;
	struct ext *queue;
	size_t nqueue, capqueue;
	struct batch *batches;
	struct lf_trim_stats st;
};

/* ---- helpers (volume lock held) ---- */

static struct lf_trim *trim_of(struct lf_vol *v)
{
	if (!v->trim)
		__atomic_store_n(&v->trim, calloc(1, sizeof(*v->trim)),
				 __ATOMIC_RELEASE);
	return v->trim;
}

static void queue_add(struct lf_vol *v, blk64_t blk, blk64_t len)
{
	struct lf_trim *t = v->trim;
	struct ext *last;

	if (!t || !t->discard || !len)
		return;
	last = t->nqueue ? &t->queue[t->nqueue - 1] : NULL;
	if (last && last->blk + last->len == blk) {
		last->len += len;
		return;
	}
	if (last && blk + len == last->blk) {
		last->blk = blk;
		last->len += len;
		return;
	}
	if (t->nqueue == t->capqueue) {
		size_t cap = t->capqueue ? 2 * t->capqueue : 64;
		struct ext *q;

		if (cap > QUEUE_MAX ||
		    !(q = realloc(t->queue, cap * sizeof(*q)))) {
			if (!t->said_overflow)
				lf_warn(MOD,
					"%s: too many freed extents between "
					"two write-backs; some are left for "
					"fstrim",
					lf_vol_desc(v));
			t->said_overflow = true;
			return;
		}
		t->queue = q;
		t->capqueue = cap;
	}
	t->queue[t->nqueue++] = (struct ext){blk, len};
}

void lf_trim_queue(struct lf_vol *v, blk64_t blk, blk64_t len)
{
	queue_add(v, blk, len);
}

static void on_block_stats(ext2_filsys fs, blk64_t blk, int inuse)
{
	/* A journaled volume hands its frees over once they are home. */
	if (inuse < 0 && fs->priv_data && !lf_txn_freed(fs->priv_data, blk, 1))
		queue_add(fs->priv_data, blk, 1);
}

/* Not a range callback: libext2fs 1.47.0 calls it with the range's end
 * and a count of 0. Our own range frees come through here instead. */
void lf_vol_free_blocks(struct lf_vol *v, blk64_t blk, blk64_t n)
{
	ext2fs_block_alloc_stats_range(v->fs, blk, (blk_t)n, -1);
	if (!lf_txn_freed(v, blk, n))
		queue_add(v, blk, n);
}

static void batch_mark(struct lf_vol *v, struct batch *b, bool used)
{
	for (size_t i = 0; i < b->n; i++) {
		if (used)
			ext2fs_mark_block_bitmap_range2(v->fs->block_map,
							b->e[i].blk,
							(unsigned)b->e[i].len);
		else
			ext2fs_unmark_block_bitmap_range2(
				v->fs->block_map, b->e[i].blk,
				(unsigned)b->e[i].len);
	}
}

static void batch_unlink(struct lf_vol *v, struct batch *b)
{
	struct batch **pp;

	for (pp = &v->trim->batches; *pp; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	batch_mark(v, b, false);
	free(b);
}

/* Adds the free runs of [blk, end) of at least minlen blocks to b, marks
 * them in use and returns where it stopped (end, or earlier when b is
 * full). Runs are cut at LF_BDEV_UNMAP_CAP-ish sizes by the bdev. */
static blk64_t collect(struct lf_vol *v, struct batch *b, blk64_t blk,
		       blk64_t end, blk64_t minlen)
{
	ext2fs_block_bitmap bm = v->fs->block_map;
	blk64_t s, e;

	while (blk < end && b->n < LF_TRIM_BATCH) {
		if (ext2fs_find_first_zero_block_bitmap2(bm, blk, end - 1, &s))
			return end;
		if (ext2fs_find_first_set_block_bitmap2(bm, s, end - 1, &e))
			e = end;
		/* ext2fs marks ranges with an unsigned count. */
		if (e - s > UINT32_MAX / 2)
			e = s + UINT32_MAX / 2;
		if (e - s >= minlen) {
			b->e[b->n++] = (struct ext){s, e - s};
			ext2fs_mark_block_bitmap_range2(bm, s,
							(unsigned)(e - s));
		}
		blk = e;
	}
	return blk;
}

/* ---- UNMAP (volume lock NOT held) ---- */

struct unmap_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned pending;
	int err;
	uint64_t bytes;
};

struct unmap_one {
	struct unmap_wait *w;
	uint64_t len;
};

static void unmap_done(void *opaque, int err)
{
	struct unmap_one *u = opaque;
	struct unmap_wait *w = u->w;

	pthread_mutex_lock(&w->mu);
	if (err && !w->err)
		w->err = err;
	if (!err)
		w->bytes += u->len;
	if (--w->pending == 0)
		pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	free(u);
}

/* Unmaps every extent of b, all in flight together; returns the bytes
 * unmapped or -errno (the first failure). */
static int64_t unmap_batch(struct lf_vol *v, const struct batch *b,
			   unsigned blocksize)
{
	const struct lf_bdev_info *info = lf_bdev_info(v->bdev);
	uint64_t g = info->unmap_granularity, a = info->unmap_alignment;
	struct unmap_wait w = {.mu = PTHREAD_MUTEX_INITIALIZER,
			       .cv = PTHREAD_COND_INITIALIZER,
			       .pending = 1};
	int r;

	for (size_t i = 0; i < b->n; i++) {
		uint64_t off = b->e[i].blk * blocksize;
		uint64_t end = off + b->e[i].len * blocksize;
		struct unmap_one *u;

		/* Keep inside the extent, on the LUN's granularity. */
		off = off < a ? a : off + (g - (off - a) % g) % g;
		end = end < a ? 0 : end - (end - a) % g;
		if (end <= off)
			continue;
		u = malloc(sizeof(*u));
		if (!u) {
			w.err = -ENOMEM;
			break;
		}
		*u = (struct unmap_one){&w, end - off};
		lf_iocache_forget(v->cache, off, end - off);
		pthread_mutex_lock(&w.mu);
		w.pending++;
		pthread_mutex_unlock(&w.mu);
		r = lf_bdev_submit(v->bdev, LF_BDEV_UNMAP, NULL, 0, off,
				   end - off, unmap_done, u);
		if (r)
			unmap_done(u, r);
	}
	pthread_mutex_lock(&w.mu);
	w.pending--;
	while (w.pending)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cv);
	if (w.err)
		return w.err;
	return (int64_t)w.bytes;
}

static int check_can_unmap(struct lf_vol *v, struct lf_trim *t)
{
	if (lf_vol_read_only(v))
		return -EROFS;
	if (lf_bdev_info(v->bdev)->can_unmap)
		return 0;
	if (!t->said_unsupported)
		lf_warn(MOD,
			"%s: the LUN does not support UNMAP (no LBPU in its "
			"Logical Block Provisioning page): nothing can be "
			"trimmed or discarded (tgtd: --params "
			"thin_provisioning=1)",
			lf_vol_desc(v));
	t->said_unsupported = true;
	return -EOPNOTSUPP;
}

/* ---- public ---- */

int lf_vol_trim(struct lf_vol *v, uint64_t start, uint64_t len, uint64_t minlen,
		uint64_t *trimmed)
{
	struct lf_trim *t;
	blk64_t pos, end, minblks, first, nblocks;
	unsigned bs;
	uint64_t total = 0;
	int r = 0;

	*trimmed = 0;
	lf_vol_lock(v);
	t = trim_of(v);
	if (!t) {
		lf_vol_unlock(v);
		return -ENOMEM;
	}
	r = check_can_unmap(v, t);
	bs = v->fs->blocksize;
	nblocks = ext2fs_blocks_count(v->fs->super);
	first = v->fs->super->s_first_data_block;
	lf_vol_unlock(v);
	if (r)
		return r;
	/* As ext4_trim_fs: a range starting past the end, shorter than a
	 * block, or a minimum larger than the filesystem is EINVAL. */
	if (start / bs >= nblocks || len < bs || minlen / bs > nblocks)
		return -EINVAL;
	pos = start / bs < first ? first : start / bs;
	end = len / bs > nblocks - start / bs ? nblocks : start / bs + len / bs;
	minblks = (minlen + bs - 1) / bs;
	if (lf_bdev_info(v->bdev)->unmap_granularity / bs > minblks)
		minblks = lf_bdev_info(v->bdev)->unmap_granularity / bs;
	if (!minblks)
		minblks = 1;

	while (pos < end && r == 0) {
		blk64_t step = end - pos < LF_TRIM_STEP_BLOCKS
				       ? end
				       : pos + LF_TRIM_STEP_BLOCKS;
		struct batch *b = calloc(1, sizeof(*b));
		int64_t got;

		if (!b)
			return total ? 0 : -ENOMEM;
		lf_vol_lock(v);
		/* What is free in memory is free on disk only once the
		 * frees are durable (journaled: home, and released). */
		r = v->txn ? lf_txn_commit_wait(v, true)
			   : lf_vol_sync_locked(v);
		if (r < 0) {
			lf_vol_unlock(v);
			free(b);
			break;
		}
		pos = collect(v, b, pos, step, minblks);
		b->next = t->batches;
		t->batches = b;
		lf_vol_unlock(v);

		got = b->n ? unmap_batch(v, b, bs) : 0;

		lf_vol_lock(v);
		batch_unlink(v, b);
		if (got > 0)
			__atomic_add_fetch(&t->st.trimmed_bytes, (uint64_t)got,
					   __ATOMIC_RELAXED);
		lf_vol_unlock(v);
		if (got < 0) {
			r = (int)got;
			lf_err(MOD, "%s: UNMAP failed: %s", lf_vol_desc(v),
			       strerror(-r));
		} else {
			total += (uint64_t)got;
		}
	}
	*trimmed = total;
	if (r == 0)
		lf_info(MOD, "%s: fstrim unmapped %llu bytes", lf_vol_desc(v),
			(unsigned long long)total);
	return r;
}

int lf_vol_set_discard(struct lf_vol *v, bool on)
{
	struct lf_trim *t;
	int r = 0;

	lf_vol_lock(v);
	t = trim_of(v);
	if (!t)
		r = -ENOMEM;
	else if (on)
		r = check_can_unmap(v, t);
	if (r == 0 && t->discard != on) {
		__atomic_store_n(&t->discard, on, __ATOMIC_RELAXED);
		lf_info(MOD, "%s: online discard %s", lf_vol_desc(v),
			on ? "on" : "off");
	}
	lf_vol_unlock(v);
	return r;
}

/* Without the volume lock (status must not wait for a resize): the
 * state, once made, lives as long as the volume; fields are read
 * relaxed, a snapshot. */
bool lf_vol_discard(struct lf_vol *v)
{
	struct lf_trim *t = __atomic_load_n(&v->trim, __ATOMIC_ACQUIRE);

	return t && __atomic_load_n(&t->discard, __ATOMIC_RELAXED);
}

void lf_vol_trim_stats(struct lf_vol *v, struct lf_trim_stats *st)
{
	struct lf_trim *t = __atomic_load_n(&v->trim, __ATOMIC_ACQUIRE);

	memset(st, 0, sizeof(*st));
	if (!t)
		return;
	st->trimmed_bytes =
		__atomic_load_n(&t->st.trimmed_bytes, __ATOMIC_RELAXED);
	st->discarded_bytes =
		__atomic_load_n(&t->st.discarded_bytes, __ATOMIC_RELAXED);
	st->queued_extents = __atomic_load_n(&t->nqueue, __ATOMIC_RELAXED);
}

/* ---- volume_int.h ---- */

void lf_trim_attach(struct lf_vol *v)
{
	v->fs->priv_data = v;
	ext2fs_set_block_alloc_stats_callback(v->fs, on_block_stats, NULL);
}

/* Everything freed before now is on stable storage: the queued extents
 * that are still free (free now means free on disk, since everything is
 * durable) become a batch for the flusher, marked in use meanwhile. */
void lf_vol_after_durable(struct lf_vol *v)
{
	struct lf_trim *t = v->trim;
	struct batch *b = NULL;

	if (!t || !t->nqueue)
		return;
	for (size_t i = 0; i < t->nqueue; i++) {
		blk64_t pos = t->queue[i].blk,
			end = t->queue[i].blk + t->queue[i].len;

		while (pos < end) {
			if (!b) {
				b = calloc(1, sizeof(*b));
				if (!b)
					goto out;
				b->ready = true;
				b->next = t->batches;
				t->batches = b;
			}
			pos = collect(v, b, pos, end, 1);
			if (b->n == LF_TRIM_BATCH)
				b = NULL;
		}
	}
out:
	t->nqueue = 0;
	t->said_overflow = false;
	pthread_cond_signal(&v->flusher_cond);
}

void lf_trim_work(struct lf_vol *v, bool keep_lock)
{
	struct lf_trim *t = v->trim;
	struct batch *b;
	int64_t got;

	if (!t)
		return;
	for (;;) {
		for (b = t->batches; b && !b->ready; b = b->next)
			;
		if (!b)
			return;
		b->ready = false; /* ours now */
		if (!keep_lock)
			lf_vol_unlock(v);
		got = unmap_batch(v, b, v->fs->blocksize);
		if (!keep_lock)
			lf_vol_lock(v);
		if (got > 0)
			__atomic_add_fetch(&t->st.discarded_bytes,
					   (uint64_t)got, __ATOMIC_RELAXED);
		else if (got < 0)
			lf_warn(MOD, "%s: discard: UNMAP failed: %s",
				lf_vol_desc(v), strerror((int)-got));
		batch_unlink(v, b);
	}
}

void lf_trim_bitmaps_begin(struct lf_vol *v)
{
	if (!v->trim)
		return;
	for (struct batch *b = v->trim->batches; b; b = b->next)
		batch_mark(v, b, false);
}

void lf_trim_bitmaps_end(struct lf_vol *v)
{
	if (!v->trim)
		return;
	for (struct batch *b = v->trim->batches; b; b = b->next)
		batch_mark(v, b, true);
}

bool lf_trim_idle(struct lf_vol *v)
{
	for (struct batch *b = v->trim ? v->trim->batches : NULL; b;
	     b = b->next)
		if (!b->ready)
			return false;
	return true;
}

void lf_trim_drop_waiting(struct lf_vol *v)
{
	struct lf_trim *t = v->trim;
	struct batch *b, *next;

	if (!t)
		return;
	for (b = t->batches; b; b = next) {
		next = b->next;
		if (b->ready) /* in-flight ones belong to their owner */
			batch_unlink(v, b);
	}
	t->nqueue = 0;
}

void lf_trim_close_locked(struct lf_vol *v)
{
	struct lf_trim *t = v->trim;

	if (t && t->discard && t->nqueue && lf_vol_sync_locked(v) == 0)
		lf_trim_work(v, true);
	lf_trim_free(v);
}

void lf_trim_free(struct lf_vol *v)
{
	struct lf_trim *t = v->trim;

	if (!t)
		return;
	while (t->batches)
		batch_unlink(v, t->batches);
	free(t->queue);
	free(t);
	v->trim = NULL;
}
