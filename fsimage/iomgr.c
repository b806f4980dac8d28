/* iomgr.c — libext2fs io_manager + bounded write-back block cache over a
 * struct lf_bdev. See iomgr.h for the contract. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsimage/iomgr.h"
#include "iscsi/log.h"

#define MOD	      "fsimage"
#define IOCACHE_MAGIC 0x4c46494fu
#define NAME_PREFIX   "lunfs-cache:"
/* A miss that continues the previous one reads this much at once. */
#define RA_BYTES (256u << 10)
/* Channel requests this large go straight to the device. */
#define BYPASS_BYTES (1u << 20)
/* Granularity of the "may be non-zero" map used after assume_zero. */
#define ZCHUNK_SHIFT 20
#define ZBUF_BYTES   (1u << 20)
#define MAX_IOV	     1024

struct ent {
	uint64_t key;
	uint8_t *data;
	bool dirty;
	struct ent *hnext;
	struct ent *prev, *next; /* LRU: lru.next is the most recent */
};

struct lf_iocache {
	uint32_t magic;
	struct lf_bdev *bdev;
	bool read_only;
	uint32_t unit;
	uint64_t nunits;
	uint32_t max_xfer;
	size_t ra_units;

	/* Everything below is protected by mu. Device I/O on behalf of the
	 * cache (misses, writeback) happens with mu held, so a cached copy
	 * and the device never disagree behind the lock's back. */
	pthread_mutex_t mu;
	struct ent **buckets;
	size_t nbuckets;
	struct ent lru;
	size_t nents, max_ents, ndirty;
	uint64_t ra_next;
	uint8_t *zmap; /* bit set: chunk written by us since assume_zero */
	uint64_t nchunks;
	uint8_t *zbuf;
	bool need_flush;
	struct lf_iocache_stats st;
	/* Entries come from slabs (one aligned block of buffers each):
	 * a posix_memalign per 4 KiB buffer cost a second page of resident
	 * memory per entry. Freed entries wait on `spare` for reuse. */
	struct slab *slabs;
	struct ent *spare;

	/* File-data writes in flight (write-behind, see wb_*). They are
	 * registered under mu, together with the update of the cached
	 * copies, and complete without it: so whoever holds mu may wait
	 * for them, and no new one starts meanwhile. Protected by wmu, which
	 * is never held across I/O. */
	pthread_mutex_t wmu;
	pthread_cond_t wcv;
	struct wb *wlist;
	uint64_t wbytes;     /* in flight */
	int werr;	     /* first failure since the last sync */
	uint64_t wdone;	     /* bytes written behind, for the stats */
	struct wbuf *wspare; /* buffers kept for reuse */
	unsigned nwspare;
	uint64_t wticket; /* last ticket handed to a write behind */

	/* Journaled mode (txn.c): the dirty units are the running
	 * transaction and never go home from here; the snapshot being
	 * committed (inflight, under mu) is what reads of a unit whose home
	 * copy is still old overlay, and what direct writes wait for. */
	bool journaled;
	size_t jsoft;
	void (*kick)(void *arg);
	void *kick_arg;
	struct lf_iosnap *inflight;
	pthread_cond_t jcv; /* inflight cleared */
};

/* A write in flight. */
struct wb {
	struct wb *next;
	struct lf_iocache *c;
	uint64_t off, len;
	uint64_t ticket; /* order of registration, for commits */
	struct iovec iov;
	struct wbuf *buf; /* NULL: the caller's buffer, written synchronously */
};

struct wbuf {
	struct wbuf *next;
	void *data; /* WB_BUF bytes, page aligned */
};

#define SLAB_ENTS	       64
#define LF_IOCACHE_SMALL_WRITE (16u << 10)
/* Write-behind: a write of up to WB_BUF bytes is acknowledged once copied
 * and sent; at most WB_LIMIT bytes per volume are in flight. */
#define WB_BUF	 (1u << 20)
#define WB_LIMIT (8u << 20)
#define WB_KEEP	 8

struct slab {
	struct slab *next;
	uint8_t *data;
	struct ent ents[SLAB_ENTS];
};

struct lf_chan {
	struct lf_iocache *c;
	bool rw;
	struct struct_io_stats stats;
};

/* ---- hash + LRU ---- */

static size_t bucket_of(const struct lf_iocache *c, uint64_t key)
{
	return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) &
	       (c->nbuckets - 1);
}

static struct ent *find(struct lf_iocache *c, uint64_t key)
{
	struct ent *e;

	for (e = c->buckets[bucket_of(c, key)]; e; e = e->hnext)
		if (e->key == key)
			return e;
	return NULL;
}

static void lru_unlink(struct ent *e)
{
	e->prev->next = e->next;
	e->next->prev = e->prev;
	e->prev = e->next = e;
}

static void lru_push(struct lf_iocache *c, struct ent *e)
{
	e->next = c->lru.next;
	e->prev = &c->lru;
	c->lru.next->prev = e;
	c->lru.next = e;
}

static void touch(struct lf_iocache *c, struct ent *e)
{
	lru_unlink(e);
	lru_push(c, e);
}

static void hash_insert(struct lf_iocache *c, struct ent *e)
{
	size_t b = bucket_of(c, e->key);

	e->hnext = c->buckets[b];
	c->buckets[b] = e;
}

static void hash_remove(struct lf_iocache *c, struct ent *e)
{
	struct ent **pp = &c->buckets[bucket_of(c, e->key)];

	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
}

static void ent_free(struct lf_iocache *c, struct ent *e)
{
	e->dirty = false;
	e->hnext = c->spare;
	c->spare = e;
	c->nents--;
}

static void ent_drop(struct lf_iocache *c, struct ent *e)
{
	if (e->dirty)
		c->ndirty--;
	lru_unlink(e);
	hash_remove(c, e);
	ent_free(c, e);
}

/* ---- device access (mu held) ---- */

static void mark_written(struct lf_iocache *c, uint64_t off, uint64_t len)
{
	uint64_t ch;

	if (!c->zmap || !len)
		return;
	for (ch = off >> ZCHUNK_SHIFT;
	     ch <= (off + len - 1) >> ZCHUNK_SHIFT && ch < c->nchunks; ch++)
		c->zmap[ch / 8] |= (uint8_t)(1u << (ch % 8));
}

static bool chunk_written(const struct lf_iocache *c, uint64_t ch)
{
	return !c->zmap || ch >= c->nchunks ||
	       (c->zmap[ch / 8] & (1u << (ch % 8)));
}

/* ---- the snapshot in flight (journaled mode) ---- */

/* Index of the first snapshot unit >= key. */
static size_t snap_lower(const struct lf_iosnap *s, uint64_t key)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->keys[mid] < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool inflight_overlaps(const struct lf_iocache *c, uint64_t off,
			      uint64_t len)
{
	const struct lf_iosnap *s = c->inflight;
	size_t i;

	if (!s || !len)
		return false;
	i = snap_lower(s, off / c->unit);
	return i < s->n && s->keys[i] * c->unit < off + len;
}

/* A direct write to a unit whose committed copy is not home yet would be
 * overwritten by the checkpoint: wait for it. mu held. */
static void inflight_wait_locked(struct lf_iocache *c, uint64_t off,
				 uint64_t len)
{
	while (inflight_overlaps(c, off, len))
		pthread_cond_wait(&c->jcv, &c->mu);
}

/* Bytes read from home: the snapshot's units are newer. mu held. */
static void inflight_overlay_locked(struct lf_iocache *c, uint8_t *buf,
				    uint64_t len, uint64_t off)
{
	const struct lf_iosnap *s = c->inflight;

	if (!s || !len)
		return;
	for (size_t i = snap_lower(s, off / c->unit);
	     i < s->n && s->keys[i] * c->unit < off + len; i++) {
		uint64_t us = s->keys[i] * c->unit, ue = us + c->unit;
		uint64_t a = us > off ? us : off;
		uint64_t b = ue < off + len ? ue : off + len;

		memcpy(buf + (a - off), s->data + i * c->unit + (a - us),
		       b - a);
	}
}

/* ---- write-behind ---- */

static bool wb_overlaps(const struct lf_iocache *c, uint64_t off, uint64_t len)
{
	for (const struct wb *w = c->wlist; w; w = w->next)
		if (w->off < off + len && off < w->off + w->len)
			return true;
	return false;
}

/* Wait until no write in flight touches [off, off+len). */
static void wb_wait_range(struct lf_iocache *c, uint64_t off, uint64_t len)
{
	pthread_mutex_lock(&c->wmu);
	while (wb_overlaps(c, off, len))
		pthread_cond_wait(&c->wcv, &c->wmu);
	pthread_mutex_unlock(&c->wmu);
}

/* Wait until every write in flight is on the device. */
static void wb_drain(struct lf_iocache *c)
{
	pthread_mutex_lock(&c->wmu);
	while (c->wlist)
		pthread_cond_wait(&c->wcv, &c->wmu);
	pthread_mutex_unlock(&c->wmu);
}

static void wb_free_spares_locked(struct lf_iocache *c)
{
	while (c->wspare) {
		struct wbuf *b = c->wspare;

		c->wspare = b->next;
		free(b->data);
		free(b);
	}
	c->nwspare = 0;
}

/* The end of a write: on the device's I/O thread for one written behind,
 * so it takes wmu only. */
static void wb_end(void *opaque, int err)
{
	struct wb *w = opaque, **pp;
	struct lf_iocache *c = w->c;

	if (err < 0 && w->buf)
		lf_err(MOD,
		       "%s: write of %" PRIu64 " bytes at %" PRIu64
		       " failed: %s (reported by the next sync)",
		       lf_bdev_desc(c->bdev), w->len, w->off, strerror(-err));
	pthread_mutex_lock(&c->wmu);
	for (pp = &c->wlist; *pp != w; pp = &(*pp)->next)
		;
	*pp = w->next;
	c->wbytes -= w->len;
	if (err < 0 && w->buf && !c->werr)
		c->werr = err;
	if (err == 0)
		c->wdone += w->len;
	if (w->buf && c->nwspare < WB_KEEP) {
		w->buf->next = c->wspare;
		c->wspare = w->buf;
		c->nwspare++;
		w->buf = NULL;
	}
	pthread_cond_broadcast(&c->wcv);
	pthread_mutex_unlock(&c->wmu);
	if (w->buf) {
		free(w->buf->data);
		free(w->buf);
	}
	free(w);
}

static int dev_writev(struct lf_iocache *c, const struct iovec *iov, int n,
		      uint64_t off, uint64_t len)
{
	int r;

	if (c->read_only)
		return -EROFS;
	mark_written(c, off, len);
	c->need_flush = true;
	r = lf_bdev_pwritev(c->bdev, iov, n, off);
	if (r < 0) {
		lf_err(MOD,
		       "%s: write of %" PRIu64 " bytes at %" PRIu64
		       " failed: %s",
		       lf_bdev_desc(c->bdev), len, off, strerror(-r));
		return r;
	}
	c->st.bytes_written += len;
	return 0;
}

static int dev_readv(struct lf_iocache *c, const struct iovec *iov, int n,
		     uint64_t off, uint64_t len)
{
	int r = lf_bdev_preadv(c->bdev, iov, n, off);
	uint64_t p = off;

	if (r < 0) {
		lf_err(MOD,
		       "%s: read of %" PRIu64 " bytes at %" PRIu64
		       " failed: %s",
		       lf_bdev_desc(c->bdev), len, off, strerror(-r));
		return r;
	}
	c->st.bytes_read += len;
	for (int i = 0; i < n && c->inflight; i++) {
		inflight_overlay_locked(c, iov[i].iov_base, iov[i].iov_len, p);
		p += iov[i].iov_len;
	}
	return 0;
}

static int cmp_ent(const void *a, const void *b)
{
	const struct ent *x = *(struct ent *const *)a;
	const struct ent *y = *(struct ent *const *)b;

	return x->key < y->key ? -1 : x->key > y->key;
}

/* Every dirty block to the device, neighbours merged into one command. */
static int writeback_locked(struct lf_iocache *c)
{
	struct ent **arr, *e;
	struct iovec *iov;
	size_t n = 0, i, j, per_cmd;
	int r = 0;

	/* Data first (what the metadata points at is on the device before
	 * the metadata), and no older data write may land on a block after
	 * its newer cached copy. */
	wb_drain(c);
	if (!c->ndirty || c->journaled)
		return 0;
	arr = malloc(c->ndirty * sizeof(*arr));
	iov = malloc(MAX_IOV * sizeof(*iov));
	if (!arr || !iov) {
		r = -ENOMEM;
		goto out;
	}
	for (e = c->lru.next; e != &c->lru; e = e->next)
		if (e->dirty)
			arr[n++] = e;
	qsort(arr, n, sizeof(*arr), cmp_ent);
	per_cmd = c->max_xfer / c->unit;
	if (per_cmd > MAX_IOV)
		per_cmd = MAX_IOV;
	if (!per_cmd)
		per_cmd = 1;
	for (i = 0; i < n; i = j) {
		for (j = i; j < n && j - i < per_cmd &&
			    arr[j]->key == arr[i]->key + (j - i);
		     j++) {
			iov[j - i].iov_base = arr[j]->data;
			iov[j - i].iov_len = c->unit;
		}
		r = dev_writev(c, iov, (int)(j - i), arr[i]->key * c->unit,
			       (uint64_t)(j - i) * c->unit);
		if (r < 0)
			goto out;
		for (size_t k = i; k < j; k++) {
			arr[k]->dirty = false;
			c->ndirty--;
		}
	}
out:
	free(iov);
	free(arr);
	return r;
}

/* A fresh entry, evicting the least recently used one when full. The
 * entry is in neither the hash nor the LRU list. */
static int get_free_ent(struct lf_iocache *c, struct ent **out)
{
	struct ent *e;
	int r;

	if (!c->spare && c->nents < c->max_ents) {
		struct slab *sl = calloc(1, sizeof(*sl));

		if (!sl)
			return -ENOMEM;
		if (posix_memalign((void **)&sl->data, 4096,
				   (size_t)SLAB_ENTS * c->unit)) {
			free(sl);
			return -ENOMEM;
		}
		for (int i = SLAB_ENTS - 1; i >= 0; i--) {
			sl->ents[i].data = sl->data + (size_t)i * c->unit;
			sl->ents[i].hnext = c->spare;
			c->spare = &sl->ents[i];
		}
		sl->next = c->slabs;
		c->slabs = sl;
	}
	if (c->spare && c->nents < c->max_ents) {
		e = c->spare;
		c->spare = e->hnext;
		e->hnext = NULL;
		e->dirty = false;
		e->key = 0;
		e->prev = e->next = e;
		c->nents++;
		*out = e;
		return 0;
	}
	e = c->lru.prev;
	if (e == &c->lru)
		return -ENOMEM;
	if (e->dirty && c->journaled) {
		/* The running transaction stays in memory: take the oldest
		 * clean unit, or grow past the bound and ask for a commit. */
		while (e != &c->lru && e->dirty)
			e = e->prev;
		if (e == &c->lru) {
			if (c->kick)
				c->kick(c->kick_arg);
			c->max_ents += SLAB_ENTS;
			return get_free_ent(c, out);
		}
	} else if (e->dirty) {
		r = writeback_locked(c);
		if (r < 0)
			return r;
	}
	lru_unlink(e);
	hash_remove(c, e);
	*out = e;
	return 0;
}

/* Read units [key, key+n) (none cached) from the device into the cache. */
static int fill_run(struct lf_iocache *c, uint64_t key, size_t n)
{
	struct ent *ents[RA_BYTES / 512];
	struct iovec iov[RA_BYTES / 512] = {{0}};
	size_t i, got = 0;
	int r;

	for (i = 0; i < n; i++) {
		r = get_free_ent(c, &ents[i]);
		if (r < 0)
			goto fail;
		got++;
		ents[i]->key = key + i;
		ents[i]->dirty = false;
		iov[i].iov_base = ents[i]->data;
		iov[i].iov_len = c->unit;
	}
	/* A block a write is still carrying must not be cached stale. */
	wb_wait_range(c, key * c->unit, (uint64_t)n * c->unit);
	r = dev_readv(c, iov, (int)n, key * c->unit, (uint64_t)n * c->unit);
	if (r < 0)
		goto fail;
	c->st.misses++;
	for (i = 0; i < n; i++) {
		hash_insert(c, ents[i]);
		lru_push(c, ents[i]);
	}
	return 0;
fail:
	for (i = 0; i < got; i++)
		ent_free(c, ents[i]);
	return r;
}

/* Call fn on each cached unit intersecting [off, off+len) until it returns
 * true; return whether one did. Looks the keys up, or walks the LRU when
 * the range is much larger than the cache. */
static bool each_cached_locked(struct lf_iocache *c, uint64_t off, uint64_t len,
			       bool (*fn)(struct ent *, void *), void *ctx)
{
	uint64_t k0 = off / c->unit, k1 = (off + len + c->unit - 1) / c->unit;
	struct ent *e;

	if (!c->nents)
		return false;
	if (k1 - k0 <= 2 * c->nents) {
		for (uint64_t k = k0; k < k1; k++)
			if ((e = find(c, k)) && fn(e, ctx))
				return true;
		return false;
	}
	for (e = c->lru.next; e != &c->lru; e = e->next)
		if (e->key >= k0 && e->key < k1 && fn(e, ctx))
			return true;
	return false;
}

struct overlay {
	uint32_t unit;
	uint8_t *buf;
	uint64_t off, len;
};

static bool overlay_one(struct ent *e, void *ctx)
{
	struct overlay *o = ctx;
	uint64_t s = e->key * o->unit, en = s + o->unit;
	uint64_t a = s > o->off ? s : o->off;
	uint64_t b = en < o->off + o->len ? en : o->off + o->len;

	memcpy(o->buf + (a - o->off), e->data + (a - s), b - a);
	return false;
}

/* Copy every cached unit intersecting [off, off+len) over buf. */
static void overlay_locked(struct lf_iocache *c, uint8_t *buf, uint64_t len,
			   uint64_t off)
{
	struct overlay o = {c->unit, buf, off, len};

	each_cached_locked(c, off, len, overlay_one, &o);
}

/* The reverse: new bytes for [off, off+len) into every cached unit. */
static void update_locked(struct lf_iocache *c, const uint8_t *buf,
			  uint64_t len, uint64_t off)
{
	uint64_t k0 = off / c->unit, k1 = (off + len + c->unit - 1) / c->unit;
	struct ent *e;

	if (!c->nents)
		return;
	for (e = c->lru.next; k1 - k0 > 2 * c->nents && e != &c->lru;
	     e = e->next) {
		if (e->key < k0 || e->key >= k1)
			continue;
		uint64_t s = e->key * c->unit, en = s + c->unit;
		uint64_t a = s > off ? s : off;
		uint64_t b = en < off + len ? en : off + len;
		memcpy(e->data + (a - s), buf + (a - off), b - a);
	}
	if (k1 - k0 > 2 * c->nents)
		return;
	for (uint64_t k = k0; k < k1; k++) {
		e = find(c, k);
		if (!e)
			continue;
		uint64_t s = k * c->unit, en = s + c->unit;
		uint64_t a = s > off ? s : off;
		uint64_t b = en < off + len ? en : off + len;
		memcpy(e->data + (a - s), buf + (a - off), b - a);
	}
}

static void drop_range_locked(struct lf_iocache *c, uint64_t k0, uint64_t k1)
{
	struct ent *e, *next;

	if (k1 - k0 <= 2 * c->nents) {
		for (uint64_t k = k0; k < k1; k++) {
			e = find(c, k);
			if (e)
				ent_drop(c, e);
		}
		return;
	}
	for (e = c->lru.next; e != &c->lru; e = next) {
		next = e->next;
		if (e->key >= k0 && e->key < k1)
			ent_drop(c, e);
	}
}

static bool aligned(const struct lf_iocache *c, uint64_t off, uint64_t len)
{
	return !(off % c->unit) && !(len % c->unit);
}

static int range_ok(const struct lf_iocache *c, uint64_t off, uint64_t len)
{
	if (off + len < off || off + len > c->nunits * c->unit)
		return -EINVAL;
	return 0;
}

static int cache_read(struct lf_iocache *c, uint8_t *buf, uint64_t len,
		      uint64_t off)
{
	uint64_t p = off, end = off + len;
	int r = range_ok(c, off, len);

	if (r < 0)
		return r;
	if (len >= BYPASS_BYTES && aligned(c, off, len)) {
		struct iovec iov = {.iov_base = buf, .iov_len = len};

		r = dev_readv(c, &iov, 1, off, len);
		if (r == 0)
			overlay_locked(c, buf, len, off);
		return r;
	}
	while (p < end) {
		uint64_t k = p / c->unit, uoff = p % c->unit;
		uint64_t n =
			c->unit - uoff < end - p ? c->unit - uoff : end - p;
		struct ent *e = find(c, k);

		if (e) {
			c->st.hits++;
			touch(c, e);
			memcpy(buf + (p - off), e->data + uoff, n);
			p += n;
			continue;
		}
		uint64_t kend = (end + c->unit - 1) / c->unit, j = k + 1;

		while (j < kend && j - k < c->ra_units && !find(c, j))
			j++;
		if (j == kend && k == c->ra_next)
			while (j < c->nunits && j - k < c->ra_units &&
			       !find(c, j))
				j++;
		r = fill_run(c, k, j - k);
		if (r < 0)
			return r;
		c->ra_next = j;
	}
	return 0;
}

static int cache_write(struct lf_iocache *c, const uint8_t *buf, uint64_t len,
		       uint64_t off)
{
	uint64_t p = off, end = off + len;
	int r = range_ok(c, off, len);

	if (r < 0)
		return r;
	if (c->read_only)
		return -EROFS;
	if (len >= BYPASS_BYTES && aligned(c, off, len) && !c->journaled) {
		struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};

		drop_range_locked(c, off / c->unit, (off + len) / c->unit);
		return dev_writev(c, &iov, 1, off, len);
	}
	while (p < end) {
		uint64_t k = p / c->unit, uoff = p % c->unit;
		uint64_t n =
			c->unit - uoff < end - p ? c->unit - uoff : end - p;
		struct ent *e = find(c, k);
		bool fresh = !e && n == c->unit;

		if (fresh) {
			r = get_free_ent(c, &e);
			if (r < 0)
				return r;
			e->key = k;
			e->dirty = false;
			hash_insert(c, e);
			lru_push(c, e);
		} else if (!e) {
			/* Partial unit: read-modify-write. */
			r = fill_run(c, k, 1);
			if (r < 0)
				return r;
			e = find(c, k);
		}
		touch(c, e);
		/* A journaled commit rewrites every group descriptor and
		 * bitmap it holds: unchanged ones must not join it. */
		if (c->journaled && !fresh && !e->dirty &&
		    !memcmp(e->data + uoff, buf + (p - off), n)) {
			p += n;
			continue;
		}
		memcpy(e->data + uoff, buf + (p - off), n);
		if (!e->dirty) {
			e->dirty = true;
			c->ndirty++;
		}
		p += n;
	}
	if (c->journaled && c->ndirty > c->jsoft && c->kick)
		c->kick(c->kick_arg);
	return 0;
}

static int zero_dev(struct lf_iocache *c, uint64_t off, uint64_t len)
{
	const struct lf_bdev_info *info = lf_bdev_info(c->bdev);
	struct iovec iov[16];
	int r;

	if (info->can_unmap && info->unmap_zeroes) {
		r = lf_bdev_unmap(c->bdev, off, len);
		if (r == 0) {
			c->need_flush = true;
			return 0;
		}
		if (r != -ENOTSUP && r != -EOPNOTSUPP)
			return r;
	}
	if (!c->zbuf) {
		c->zbuf = calloc(1, ZBUF_BYTES);
		if (!c->zbuf)
			return -ENOMEM;
	}
	while (len) {
		uint64_t n = 0;
		int cnt = 0;

		while (cnt < 16 && n < len) {
			uint64_t piece =
				len - n < ZBUF_BYTES ? len - n : ZBUF_BYTES;
			iov[cnt].iov_base = c->zbuf;
			iov[cnt].iov_len = piece;
			cnt++;
			n += piece;
		}
		r = dev_writev(c, iov, cnt, off, n);
		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

static int cache_zeroout(struct lf_iocache *c, uint64_t off, uint64_t len)
{
	uint64_t head, k0, k1;
	int r = range_ok(c, off, len);

	if (r < 0)
		return r;
	if (c->read_only)
		return -EROFS;
	if (!c->zbuf) {
		c->zbuf = calloc(1, ZBUF_BYTES);
		if (!c->zbuf)
			return -ENOMEM;
	}
	/* Partial units at either end go through the cache. */
	head = off % c->unit ? c->unit - off % c->unit : 0;
	if (head > len)
		head = len;
	if (head) {
		r = cache_write(c, c->zbuf, head, off);
		if (r < 0)
			return r;
		off += head;
		len -= head;
	}
	if (len % c->unit) {
		r = cache_write(c, c->zbuf, len % c->unit,
				off + len - len % c->unit);
		if (r < 0)
			return r;
		len -= len % c->unit;
	}
	if (!len)
		return 0;
	k0 = off / c->unit;
	k1 = (off + len) / c->unit;
	inflight_wait_locked(c, off, len);
	drop_range_locked(c, k0, k1);
	wb_wait_range(c, off, len); /* nothing lands after the zeros */
	if (!c->zmap)
		return zero_dev(c, off, len);
	/* Only the chunks we wrote can hold anything but zeros. */
	uint64_t p = off, end = off + len;

	while (p < end) {
		uint64_t ch = p >> ZCHUNK_SHIFT;
		uint64_t cend = (ch + 1) << ZCHUNK_SHIFT;
		uint64_t q = cend < end ? cend : end;

		if (chunk_written(c, ch)) {
			r = zero_dev(c, p, q - p);
			if (r < 0)
				return r;
		}
		p = q;
	}
	return 0;
}

/* ---- public cache API ---- */

int lf_iocache_new(struct lf_bdev *bdev, size_t cache_bytes, bool read_only,
		   struct lf_iocache **out)
{
	const struct lf_bdev_info *info = lf_bdev_info(bdev);
	struct lf_iocache *c;
	size_t nb = 1;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->magic = IOCACHE_MAGIC;
	c->bdev = bdev;
	c->read_only = read_only || info->read_only;
	c->unit = info->block_size > LF_IOCACHE_UNIT ? info->block_size
						     : LF_IOCACHE_UNIT;
	c->nunits = info->size / c->unit;
	c->max_xfer = info->max_transfer ? info->max_transfer : (1u << 20);
	c->ra_units = RA_BYTES / c->unit;
	if (!c->ra_units)
		c->ra_units = 1;
	if (!cache_bytes)
		cache_bytes = LF_IOCACHE_DEFAULT_BYTES;
	c->max_ents = cache_bytes / c->unit;
	/* Room for a readahead run plus the blocks it must not evict. */
	if (c->max_ents < 4 * c->ra_units)
		c->max_ents = 4 * c->ra_units;
	while (nb < c->max_ents)
		nb <<= 1;
	c->nbuckets = nb;
	c->buckets = calloc(nb, sizeof(*c->buckets));
	if (!c->buckets) {
		free(c);
		return -ENOMEM;
	}
	c->lru.next = c->lru.prev = &c->lru;
	c->ra_next = UINT64_MAX;
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->wmu, NULL);
	pthread_cond_init(&c->wcv, NULL);
	pthread_cond_init(&c->jcv, NULL);
	*out = c;
	return 0;
}

void lf_iocache_free(struct lf_iocache *c)
{
	struct ent *e, *next;

	if (!c)
		return;
	wb_drain(c);
	wb_free_spares_locked(c);
	pthread_cond_destroy(&c->wcv);
	pthread_cond_destroy(&c->jcv);
	pthread_mutex_destroy(&c->wmu);
	for (e = c->lru.next; e != &c->lru; e = next) {
		next = e->next;
		ent_free(c, e);
	}
	while (c->slabs) {
		struct slab *sl = c->slabs;
		c->slabs = sl->next;
		free(sl->data);
		free(sl);
	}
	pthread_mutex_destroy(&c->mu);
	free(c->buckets);
	free(c->zmap);
	free(c->zbuf);
	c->magic = 0;
	free(c);
}

void lf_iocache_name(const struct lf_iocache *c, char *buf, size_t len)
{
	snprintf(buf, len, NAME_PREFIX "%" PRIxPTR, (uintptr_t)c);
}

void lf_iocache_assume_zero(struct lf_iocache *c)
{
	uint64_t size = lf_bdev_size(c->bdev);

	pthread_mutex_lock(&c->mu);
	if (!c->zmap) {
		c->nchunks =
			(size + (1ull << ZCHUNK_SHIFT) - 1) >> ZCHUNK_SHIFT;
		/* On failure every chunk simply counts as written. */
		c->zmap = calloc(1, (c->nchunks + 7) / 8);
	}
	pthread_mutex_unlock(&c->mu);
}

/* Buffers of a volume no longer writing go back to the system. */
static void wb_trim(struct lf_iocache *c)
{
	pthread_mutex_lock(&c->wmu);
	if (!c->wlist)
		wb_free_spares_locked(c);
	pthread_mutex_unlock(&c->wmu);
}

int lf_iocache_writeback(struct lf_iocache *c)
{
	int r;

	pthread_mutex_lock(&c->mu);
	r = writeback_locked(c);
	pthread_mutex_unlock(&c->mu);
	wb_trim(c);
	return r;
}

static int sync_common(struct lf_iocache *c, bool report)
{
	bool flush;
	int r;

	pthread_mutex_lock(&c->mu);
	r = writeback_locked(c); /* and the writes behind */
	if (r == 0 && report) {
		/* A write acknowledged earlier that failed on the device. */
		pthread_mutex_lock(&c->wmu);
		r = c->werr;
		c->werr = 0;
		pthread_mutex_unlock(&c->wmu);
	}
	flush = r == 0 && c->need_flush;
	if (flush) {
		c->need_flush = false;
		c->st.flushes++;
	}
	pthread_mutex_unlock(&c->mu);
	wb_trim(c);
	if (!flush)
		return r;
	r = lf_bdev_flush(c->bdev);
	if (r < 0) {
		lf_err(MOD, "%s: SYNCHRONIZE CACHE failed: %s",
		       lf_bdev_desc(c->bdev), strerror(-r));
		pthread_mutex_lock(&c->mu);
		c->need_flush = true;
		pthread_mutex_unlock(&c->mu);
	}
	return r;
}

int lf_iocache_sync(struct lf_iocache *c)
{
	return sync_common(c, true);
}

int lf_iocache_sync_tick(struct lf_iocache *c)
{
	return sync_common(c, false);
}

/* ---- journaled mode ---- */

void lf_iocache_set_journaled(struct lf_iocache *c, bool on, size_t soft,
			      void (*kick)(void *arg), void *arg)
{
	pthread_mutex_lock(&c->mu);
	c->journaled = on;
	c->jsoft = soft;
	c->kick = kick;
	c->kick_arg = arg;
	pthread_mutex_unlock(&c->mu);
}

size_t lf_iocache_ndirty(struct lf_iocache *c)
{
	size_t n;

	pthread_mutex_lock(&c->mu);
	n = c->ndirty;
	pthread_mutex_unlock(&c->mu);
	return n;
}

void lf_iosnap_free(struct lf_iosnap *s)
{
	if (!s)
		return;
	free(s->keys);
	free(s->data);
	free(s);
}

int lf_iocache_snapshot(struct lf_iocache *c, struct lf_iosnap **out)
{
	struct lf_iosnap *s = calloc(1, sizeof(*s));
	struct ent **arr = NULL, *e;
	size_t n = 0;
	int r = -ENOMEM;

	if (!s)
		return -ENOMEM;
	pthread_mutex_lock(&c->mu);
	if (c->inflight) {
		r = -EBUSY; /* one commit at a time: a bug in the caller */
		goto out;
	}
	if (c->ndirty) {
		arr = malloc(c->ndirty * sizeof(*arr));
		s->keys = malloc(c->ndirty * sizeof(*s->keys));
		if (!arr || !s->keys ||
		    posix_memalign((void **)&s->data, 4096,
				   c->ndirty * (size_t)c->unit))
			goto out;
		for (e = c->lru.next; e != &c->lru; e = e->next)
			if (e->dirty)
				arr[n++] = e;
		qsort(arr, n, sizeof(*arr), cmp_ent);
		for (size_t i = 0; i < n; i++) {
			s->keys[i] = arr[i]->key;
			memcpy(s->data + i * c->unit, arr[i]->data, c->unit);
			arr[i]->dirty = false;
		}
		c->ndirty = 0;
	}
	s->n = n;
	s->unit = c->unit;
	pthread_mutex_lock(&c->wmu);
	s->wticket = c->wticket;
	pthread_mutex_unlock(&c->wmu);
	if (n)
		c->inflight = s;
	r = 0;
out:
	pthread_mutex_unlock(&c->mu);
	free(arr);
	if (r < 0) {
		lf_iosnap_free(s);
		return r;
	}
	*out = s;
	return 0;
}

static bool wb_older(const struct lf_iocache *c, uint64_t ticket)
{
	for (const struct wb *w = c->wlist; w; w = w->next)
		if (w->ticket <= ticket)
			return true;
	return false;
}

int lf_iocache_wait_ordered(struct lf_iocache *c, const struct lf_iosnap *s)
{
	int r;

	pthread_mutex_lock(&c->wmu);
	while (wb_older(c, s->wticket))
		pthread_cond_wait(&c->wcv, &c->wmu);
	r = c->werr;
	pthread_mutex_unlock(&c->wmu);
	return r;
}

int lf_iocache_take_error(struct lf_iocache *c)
{
	int r;

	pthread_mutex_lock(&c->wmu);
	r = c->werr;
	c->werr = 0;
	pthread_mutex_unlock(&c->wmu);
	return r;
}

int lf_iocache_write_home(struct lf_iocache *c, const struct lf_iosnap *s)
{
	struct iovec iov[MAX_IOV];
	size_t per_cmd = c->max_xfer / c->unit, i, j;
	uint64_t written = 0;
	int r = 0;

	if (per_cmd > MAX_IOV)
		per_cmd = MAX_IOV;
	if (!per_cmd)
		per_cmd = 1;
	for (i = 0; i < s->n && r == 0; i = j) {
		for (j = i; j < s->n && j - i < per_cmd &&
			    s->keys[j] == s->keys[i] + (j - i);
		     j++) {
			iov[j - i].iov_base = s->data + j * c->unit;
			iov[j - i].iov_len = c->unit;
		}
		r = lf_bdev_pwritev(c->bdev, iov, (int)(j - i),
				    s->keys[i] * c->unit);
		if (r < 0)
			lf_err(MOD, "%s: checkpoint write at %" PRIu64 ": %s",
			       lf_bdev_desc(c->bdev), s->keys[i] * c->unit,
			       strerror(-r));
		else
			written += (uint64_t)(j - i) * c->unit;
	}
	if (r == 0 && s->n)
		r = lf_bdev_flush(c->bdev);
	pthread_mutex_lock(&c->mu);
	c->st.bytes_written += written;
	if (s->n)
		c->st.flushes++;
	if (written)
		mark_written(c, s->keys[0] * c->unit,
			     (s->keys[s->n - 1] - s->keys[0] + 1) * c->unit);
	pthread_mutex_unlock(&c->mu);
	return r;
}

void lf_iocache_snapshot_done(struct lf_iocache *c, struct lf_iosnap *s)
{
	pthread_mutex_lock(&c->mu);
	if (c->inflight == s) {
		c->inflight = NULL;
		pthread_cond_broadcast(&c->jcv);
	}
	pthread_mutex_unlock(&c->mu);
	lf_iosnap_free(s);
}

void lf_iocache_drop_clean(struct lf_iocache *c)
{
	struct ent *e, *next;

	pthread_mutex_lock(&c->mu);
	for (e = c->lru.next; e != &c->lru; e = next) {
		next = e->next;
		if (!e->dirty)
			ent_drop(c, e);
	}
	c->ra_next = UINT64_MAX;
	pthread_mutex_unlock(&c->mu);
}

int lf_iocache_pread(struct lf_iocache *c, void *buf, size_t len, uint64_t off)
{
	int r;

	wb_wait_range(c, off, len); /* read after write */
	r = lf_bdev_pread(c->bdev, buf, len, off);

	if (r < 0) {
		lf_err(MOD, "%s: read of %zu bytes at %" PRIu64 " failed: %s",
		       lf_bdev_desc(c->bdev), len, off, strerror(-r));
		return r;
	}
	pthread_mutex_lock(&c->mu);
	c->st.bytes_read += len;
	inflight_overlay_locked(c, buf, len, off);
	overlay_locked(c, buf, len, off);
	pthread_mutex_unlock(&c->mu);
	return 0;
}

static bool found(struct ent *e, void *ctx)
{
	return true;
}

void lf_iocache_pread_async(struct lf_iocache *c, const struct iovec *iov,
			    uint64_t off, lf_bdev_done_fn done, void *opaque)
{
	size_t len = iov->iov_len;
	bool cached;
	int r;

	wb_wait_range(c, off, len); /* read after write */
	/* A write that lands in the cache after this check is simply
	 * ordered after the read, as with any concurrent read and write. */
	pthread_mutex_lock(&c->mu);
	cached = each_cached_locked(c, off, len, found, NULL) ||
		 inflight_overlaps(c, off, len);
	if (!cached)
		c->st.bytes_read += len;
	pthread_mutex_unlock(&c->mu);
	if (cached) {
		done(opaque, lf_iocache_pread(c, iov->iov_base, len, off));
		return;
	}
	r = lf_bdev_submit(c->bdev, LF_BDEV_READ, iov, 1, off, len, done,
			   opaque);
	if (r < 0)
		done(opaque, r);
}

/*
 * A file-data write straight to the device. Up to WB_BUF bytes are written
 * behind: copied, sent, and acknowledged at once, so one writer keeps
 * several commands in flight (the kernel sends a single writer's FUSE
 * writes one at a time). Readers of the range wait for it, the cache's
 * writeback waits for all of them, and a failure is reported by the next
 * sync (as the kernel's writeback reports it at fsync). Once one failed,
 * writes wait for the device again until a sync has reported it.
 */
static int write_through(struct lf_iocache *c, const void *buf, size_t len,
			 uint64_t off)
{
	struct wb *w = calloc(1, sizeof(*w));
	bool behind = len <= WB_BUF;
	int r;

	if (!w)
		return -ENOMEM;
	w->c = c;
	w->off = off;
	w->len = len;
	for (;;) {
		/* Overlaps keep the device's order; the limit bounds memory. */
		pthread_mutex_lock(&c->wmu);
		while (wb_overlaps(c, off, len) ||
		       (behind && c->wlist && c->wbytes + len > WB_LIMIT))
			pthread_cond_wait(&c->wcv, &c->wmu);
		pthread_mutex_unlock(&c->wmu);
		/* Registered together with the update of the cached copies,
		 * under mu: a cache fill sees either both or neither. */
		pthread_mutex_lock(&c->mu);
		inflight_wait_locked(c, off, len);
		pthread_mutex_lock(&c->wmu);
		if (wb_overlaps(c, off, len)) {
			pthread_mutex_unlock(&c->wmu);
			pthread_mutex_unlock(&c->mu);
			continue;
		}
		if (c->werr)
			behind = false;
		w->ticket = ++c->wticket;
		w->next = c->wlist;
		c->wlist = w;
		c->wbytes += len;
		if (behind && c->wspare) {
			w->buf = c->wspare;
			c->wspare = w->buf->next;
			c->nwspare--;
		}
		pthread_mutex_unlock(&c->wmu);
		update_locked(c, buf, len, off);
		mark_written(c, off, len);
		c->need_flush = true;
		pthread_mutex_unlock(&c->mu);
		break;
	}
	if (behind && !w->buf) {
		w->buf = calloc(1, sizeof(*w->buf));
		if (w->buf && posix_memalign(&w->buf->data, 4096, WB_BUF)) {
			free(w->buf);
			w->buf = NULL;
		}
	}
	if (behind && w->buf) {
		memcpy(w->buf->data, buf, len);
		w->iov = (struct iovec){.iov_base = w->buf->data,
					.iov_len = len};
		r = lf_bdev_submit(c->bdev, LF_BDEV_WRITE, &w->iov, 1, off, len,
				   wb_end, w);
		if (r == 0)
			return 0;
		/* Not sent: nothing was acknowledged yet, say so now. */
	} else {
		r = lf_bdev_pwrite(c->bdev, buf, len, off);
	}
	if (r < 0)
		lf_err(MOD, "%s: write of %zu bytes at %" PRIu64 " failed: %s",
		       lf_bdev_desc(c->bdev), len, off, strerror(-r));
	if (w->buf) { /* this failure is the caller's, not the next sync's */
		free(w->buf->data);
		free(w->buf);
		w->buf = NULL;
	}
	wb_end(w, r);
	return r;
}

int lf_iocache_pwrite(struct lf_iocache *c, const void *buf, size_t len,
		      uint64_t off)
{
	int r;

	if (c->read_only)
		return -EROFS;
	pthread_mutex_lock(&c->mu);
	/* Small whole-unit writes (a new 4 KiB file) become dirty cache
	 * blocks, written back with the metadata in large merged commands
	 * (at fsync, sync, eviction or the flusher's tick) instead of one
	 * synchronous SCSI command each. Cached copies stay the newest bytes,
	 * so reads are coherent; fsync writes the cache back first. */
	if (len <= LF_IOCACHE_SMALL_WRITE && aligned(c, off, len) &&
	    c->ndirty < c->max_ents / 4 &&
	    (!c->journaled || c->ndirty < c->jsoft)) {
		r = cache_write(c, buf, len, off);
		if (!r)
			mark_written(c, off, len);
		c->need_flush = true;
		pthread_mutex_unlock(&c->mu);
		return r;
	}
	pthread_mutex_unlock(&c->mu);
	return write_through(c, buf, len, off);
}

void lf_iocache_forget(struct lf_iocache *c, uint64_t off, uint64_t len)
{
	uint64_t k0 = (off + c->unit - 1) / c->unit, k1 = (off + len) / c->unit;

	pthread_mutex_lock(&c->mu);
	if (k1 > k0)
		drop_range_locked(c, k0, k1);
	pthread_mutex_unlock(&c->mu);
	wb_wait_range(c, off, len);
}

int lf_iocache_reset(struct lf_iocache *c)
{
	struct ent *e, *next;
	int r = 0;

	wb_drain(c);
	pthread_mutex_lock(&c->mu);
	if (c->ndirty) {
		r = -EBUSY;
		goto out;
	}
	for (e = c->lru.next; e != &c->lru; e = next) {
		next = e->next;
		ent_drop(c, e);
	}
	free(c->zmap);
	c->zmap = NULL;
	c->nchunks = 0;
	c->ra_next = UINT64_MAX;
	c->nunits = lf_bdev_size(c->bdev) / c->unit;
out:
	pthread_mutex_unlock(&c->mu);
	return r;
}

void lf_iocache_get_stats(struct lf_iocache *c, struct lf_iocache_stats *st)
{
	pthread_mutex_lock(&c->mu);
	*st = c->st;
	pthread_mutex_unlock(&c->mu);
	pthread_mutex_lock(&c->wmu);
	st->bytes_written += c->wdone;
	pthread_mutex_unlock(&c->wmu);
}

/* ---- the io_manager ---- */

static struct struct_io_manager lf_io_manager_tbl;

static struct lf_chan *chan_of(io_channel ch)
{
	return ch->private_data;
}

static errcode_t to_errcode(int r)
{
	return r < 0 ? (errcode_t)-r : 0;
}

static errcode_t lf_io_open(const char *name, int flags, io_channel *out)
{
	struct lf_iocache *c;
	struct lf_chan *lc;
	io_channel ch;
	uintptr_t addr;
	char *end;

	if (!name || strncmp(name, NAME_PREFIX, strlen(NAME_PREFIX)))
		return EXT2_ET_BAD_DEVICE_NAME;
	errno = 0;
	addr = (uintptr_t)strtoull(name + strlen(NAME_PREFIX), &end, 16);
	if (errno || *end || !addr)
		return EXT2_ET_BAD_DEVICE_NAME;
	c = (struct lf_iocache *)addr;
	if (c->magic != IOCACHE_MAGIC)
		return EXT2_ET_BAD_DEVICE_NAME;
	if ((flags & IO_FLAG_RW) && c->read_only)
		return EROFS;

	ch = calloc(1, sizeof(*ch));
	lc = calloc(1, sizeof(*lc));
	if (!ch || !lc)
		goto nomem;
	ch->name = strdup(name);
	if (!ch->name)
		goto nomem;
	lc->c = c;
	lc->rw = flags & IO_FLAG_RW;
	ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
	ch->manager = &lf_io_manager_tbl;
	ch->block_size = 1024;
	ch->refcount = 1;
	ch->private_data = lc;
	/* Never CHANNEL_FLAGS_THREADS: the cache is not built for
	 * libext2fs' parallel bitmap loading. */
	if (lf_bdev_info(c->bdev)->unmap_zeroes &&
	    lf_bdev_info(c->bdev)->can_unmap)
		ch->flags |= CHANNEL_FLAGS_DISCARD_ZEROES;
	*out = ch;
	return 0;
nomem:
	if (ch)
		free(ch->name);
	free(ch);
	free(lc);
	return EXT2_ET_NO_MEMORY;
}

static errcode_t lf_io_close(io_channel ch)
{
	if (--ch->refcount > 0)
		return 0;
	free(ch->private_data);
	free(ch->name);
	free(ch);
	return 0;
}

static errcode_t lf_io_set_blksize(io_channel ch, int blksize)
{
	if (blksize <= 0)
		return EXT2_ET_INVALID_ARGUMENT;
	ch->block_size = blksize;
	return 0;
}

static uint64_t req_bytes(io_channel ch, int count)
{
	return count < 0 ? (uint64_t) - (int64_t)count
			 : (uint64_t)count * (uint64_t)ch->block_size;
}

static errcode_t lf_io_read_blk64(io_channel ch, unsigned long long block,
				  int count, void *data)
{
	struct lf_iocache *c = chan_of(ch)->c;
	int r;

	pthread_mutex_lock(&c->mu);
	r = cache_read(c, data, req_bytes(ch, count),
		       (uint64_t)block * (uint64_t)ch->block_size);
	pthread_mutex_unlock(&c->mu);
	return to_errcode(r);
}

static errcode_t lf_io_read_blk(io_channel ch, unsigned long block, int count,
				void *data)
{
	return lf_io_read_blk64(ch, block, count, data);
}

static errcode_t lf_io_write_blk64(io_channel ch, unsigned long long block,
				   int count, const void *data)
{
	struct lf_iocache *c = chan_of(ch)->c;
	int r;

	if (!chan_of(ch)->rw)
		return EXT2_ET_RO_FILSYS;
	pthread_mutex_lock(&c->mu);
	r = cache_write(c, data, req_bytes(ch, count),
			(uint64_t)block * (uint64_t)ch->block_size);
	pthread_mutex_unlock(&c->mu);
	return to_errcode(r);
}

static errcode_t lf_io_write_blk(io_channel ch, unsigned long block, int count,
				 const void *data)
{
	return lf_io_write_blk64(ch, block, count, data);
}

static errcode_t lf_io_write_byte(io_channel ch, unsigned long offset,
				  int count, const void *data)
{
	struct lf_iocache *c = chan_of(ch)->c;
	int r;

	if (!chan_of(ch)->rw)
		return EXT2_ET_RO_FILSYS;
	if (count < 0)
		return EXT2_ET_INVALID_ARGUMENT;
	pthread_mutex_lock(&c->mu);
	r = cache_write(c, data, (uint64_t)count, offset);
	pthread_mutex_unlock(&c->mu);
	return to_errcode(r);
}

static errcode_t lf_io_flush(io_channel ch)
{
	return to_errcode(lf_iocache_sync(chan_of(ch)->c));
}

static errcode_t lf_io_set_option(io_channel ch, const char *option,
				  const char *arg)
{
	return EXT2_ET_INVALID_ARGUMENT;
}

static errcode_t lf_io_get_stats(io_channel ch, io_stats *out)
{
	struct lf_chan *lc = chan_of(ch);
	struct lf_iocache_stats st;

	lf_iocache_get_stats(lc->c, &st);
	lc->stats.num_fields = 2;
	lc->stats.bytes_read = st.bytes_read;
	lc->stats.bytes_written = st.bytes_written;
	*out = &lc->stats;
	return 0;
}

static errcode_t lf_io_discard(io_channel ch, unsigned long long block,
			       unsigned long long count)
{
	struct lf_iocache *c = chan_of(ch)->c;
	uint64_t off = (uint64_t)block * ch->block_size;
	uint64_t len = (uint64_t)count * ch->block_size;
	int r;

	if (!chan_of(ch)->rw)
		return EXT2_ET_RO_FILSYS;
	if (!lf_bdev_info(c->bdev)->can_unmap || !aligned(c, off, len))
		return EXT2_ET_UNIMPLEMENTED;
	pthread_mutex_lock(&c->mu);
	r = range_ok(c, off, len);
	if (r == 0) {
		inflight_wait_locked(c, off, len);
		drop_range_locked(c, off / c->unit, (off + len) / c->unit);
		c->need_flush = true;
		wb_wait_range(c, off, len);
		r = lf_bdev_unmap(c->bdev, off, len);
	}
	pthread_mutex_unlock(&c->mu);
	if (r == -ENOTSUP || r == -EOPNOTSUPP)
		return EXT2_ET_UNIMPLEMENTED;
	return to_errcode(r);
}

static errcode_t lf_io_zeroout(io_channel ch, unsigned long long block,
			       unsigned long long count)
{
	struct lf_iocache *c = chan_of(ch)->c;
	int r;

	if (!chan_of(ch)->rw)
		return EXT2_ET_RO_FILSYS;
	pthread_mutex_lock(&c->mu);
	r = cache_zeroout(c, (uint64_t)block * ch->block_size,
			  (uint64_t)count * ch->block_size);
	pthread_mutex_unlock(&c->mu);
	return to_errcode(r);
}

static errcode_t lf_io_cache_readahead(io_channel ch, unsigned long long block,
				       unsigned long long count)
{
	struct lf_iocache *c = chan_of(ch)->c;
	uint64_t k = (uint64_t)block * ch->block_size / c->unit;
	uint64_t kend =
		((uint64_t)(block + count) * ch->block_size + c->unit - 1) /
		c->unit;

	if (kend > c->nunits)
		kend = c->nunits;
	/* Never more than half the cache: readahead must not evict it all. */
	if (kend - k > c->max_ents / 2)
		kend = k + c->max_ents / 2;
	pthread_mutex_lock(&c->mu);
	while (k < kend) {
		uint64_t j = k;

		while (j < kend && j - k < c->ra_units && !find(c, j))
			j++;
		if (j == k) {
			k++;
			continue;
		}
		if (fill_run(c, k, j - k) < 0)
			break;
		k = j;
	}
	pthread_mutex_unlock(&c->mu);
	return 0;
}

static struct struct_io_manager lf_io_manager_tbl = {
	.magic = EXT2_ET_MAGIC_IO_MANAGER,
	.name = "lunfs block cache",
	.open = lf_io_open,
	.close = lf_io_close,
	.set_blksize = lf_io_set_blksize,
	.read_blk = lf_io_read_blk,
	.write_blk = lf_io_write_blk,
	.flush = lf_io_flush,
	.write_byte = lf_io_write_byte,
	.set_option = lf_io_set_option,
	.get_stats = lf_io_get_stats,
	.read_blk64 = lf_io_read_blk64,
	.write_blk64 = lf_io_write_blk64,
	.discard = lf_io_discard,
	.cache_readahead = lf_io_cache_readahead,
	.zeroout = lf_io_zeroout,
};

io_manager lf_iomgr(void)
{
	return &lf_io_manager_tbl;
}

uint32_t lf_iocache_unit(const struct lf_iocache *c)
{
	return c->unit;
}
