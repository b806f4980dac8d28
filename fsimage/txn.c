/* txn.c — transactions and the committer thread. See txn.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <et/com_err.h>

#include "fsimage/iomgr.h"
#include "fsimage/journal.h"
#include "fsimage/txn.h"
#include "fsimage/volume_int.h"
#include "iscsi/log.h"

#define MOD "journal"

struct range {
	uint64_t blk, n;
};

struct rangeset {
	struct range *v;
	size_t n, cap;
};

/* Locks, in the order taken: vol->lock, then t->mu. */
struct lf_txn {
	struct lf_vol *v;
	struct lf_journal *j;
	pthread_t thread;
	bool thread_running;

	/* Under vol->lock. */
	uint64_t running; /* id of the running transaction */
	unsigned handles;
	bool locked; /* a commit waits for handles: new ones wait */
	pthread_cond_t handle_cv;
	struct rangeset freed;	    /* in the running transaction */
	struct rangeset committing; /* in the one in flight */

	/* Under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv;	/* wakes the committer */
	pthread_cond_t done_cv; /* a commit became durable */
	bool kicked, stopping;
	uint64_t want;	    /* commit at least up to this id */
	uint64_t committed; /* durable up to this id */
	uint64_t completed; /* home, its freed blocks released, up to this */
	int err;	    /* sticky */
	struct lf_txn_stats st;
};

static int rs_add(struct rangeset *s, uint64_t blk, uint64_t n)
{
	if (s->n && s->v[s->n - 1].blk + s->v[s->n - 1].n == blk) {
		s->v[s->n - 1].n += n;
		return 0;
	}
	if (s->n == s->cap) {
		size_t nc = s->cap ? 2 * s->cap : 64;
		struct range *nv = realloc(s->v, nc * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		s->v = nv;
		s->cap = nc;
	}
	s->v[s->n++] = (struct range){blk, n};
	return 0;
}

static void rs_mark(ext2_filsys fs, const struct rangeset *s, bool used)
{
	for (size_t i = 0; i < s->n; i++) {
		if (used)
			ext2fs_mark_block_bitmap_range2(fs->block_map,
							s->v[i].blk, s->v[i].n);
		else
			ext2fs_unmark_block_bitmap_range2(fs->block_map,
							  s->v[i].blk,
							  (unsigned)s->v[i].n);
	}
}

static void kick(void *arg)
{
	struct lf_txn *t = arg;

	pthread_mutex_lock(&t->mu);
	t->kicked = true;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

bool lf_txn_freed(struct lf_vol *v, blk64_t blk, blk64_t n)
{
	struct lf_txn *t = v->txn;

	if (!t)
		return false;
	if (!n)
		return true;
	if (rs_add(&t->freed, blk, n) < 0) {
		/* Out of memory: let it be reused at once, and say so. */
		lf_warn(MOD, "%s: out of memory tracking freed blocks",
			lf_vol_desc(v));
		return false;
	}
	ext2fs_mark_block_bitmap_range2(v->fs->block_map, blk, (unsigned)n);
	/* Space runs short: the held blocks are worth a commit now. */
	if (ext2fs_free_blocks_count(v->fs->super) <
	    ext2fs_blocks_count(v->fs->super) / 16)
		kick(t);
	return true;
}

bool lf_txn_has_freed(struct lf_vol *v)
{
	struct lf_txn *t = v->txn;

	return t && (t->freed.n || t->committing.n);
}

bool lf_txn_release_freed(struct lf_vol *v)
{
	struct lf_txn *t = v->txn;
	uint64_t id;
	bool ok;

	if (!lf_txn_has_freed(v))
		return false;
	id = t->running;
	lf_vol_unlock(v);
	pthread_mutex_lock(&t->mu);
	if (t->want < id)
		t->want = id;
	pthread_cond_signal(&t->cv);
	while (t->completed < id && !t->err)
		pthread_cond_wait(&t->done_cv, &t->mu);
	ok = t->completed >= id;
	pthread_mutex_unlock(&t->mu);
	lf_vol_lock(v);
	return ok;
}

bool lf_txn_usable(struct lf_vol *v)
{
	struct ext2_super_block *sb = v->fs->super;

	return ext2fs_has_feature_journal(sb) && sb->s_journal_inum &&
	       !ext2fs_has_feature_journal_dev(sb) &&
	       v->fs->blocksize == lf_iocache_unit(v->cache);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Step 1 of a commit (txn.h). vol->lock held. */
static int snapshot_locked(struct lf_txn *t, struct lf_iosnap **s, uint64_t *id)
{
	struct lf_vol *v = t->v;
	ext2_filsys fs = v->fs;
	errcode_t e = 0;
	int r;

	t->locked = true;
	while (t->handles)
		pthread_cond_wait(&t->handle_cv, &v->lock);
	uint64_t t0 = now_ns();

	if (fs->flags & (EXT2_FLAG_DIRTY | EXT2_FLAG_IB_DIRTY |
			 EXT2_FLAG_BB_DIRTY) ||
	    t->freed.n) {
		/* The bitmaps on disk show this transaction's frees. */
		rs_mark(fs, &t->freed, false);
		if (t->freed.n)
			ext2fs_mark_bb_dirty(fs);
		lf_trim_bitmaps_begin(v);
		fs->flags |= EXT2_FLAG_MASTER_SB_ONLY;
		e = ext2fs_flush2(fs, EXT2_FLAG_FLUSH_NO_SYNC);
		fs->flags &= ~EXT2_FLAG_MASTER_SB_ONLY;
		lf_trim_bitmaps_end(v);
		rs_mark(fs, &t->freed, true);
	}
	if (e) {
		lf_err(MOD, "%s: writing filesystem metadata for a commit: %s",
		       lf_vol_desc(v), error_message(e));
		r = lf_errno_from_ext2(e);
	} else {
		r = lf_iocache_snapshot(v->cache, s);
	}
	if (r == 0) {
		/* The frees now belong to the transaction in flight. */
		for (size_t i = 0; i < t->freed.n; i++)
			if (rs_add(&t->committing, t->freed.v[i].blk,
				   t->freed.v[i].n) < 0) {
				/* Cannot track: release at once (the
				 * pre-journal behaviour) rather than leak. */
				ext2fs_unmark_block_bitmap_range2(
					fs->block_map, t->freed.v[i].blk,
					(unsigned)t->freed.v[i].n);
			}
		t->freed.n = 0;
		*id = t->running++;
	}
	t->locked = false;
	pthread_cond_broadcast(&t->handle_cv);
	uint64_t dt = now_ns() - t0;

	pthread_mutex_lock(&t->mu);
	if (dt > t->st.lock_ns_max)
		t->st.lock_ns_max = dt;
	pthread_mutex_unlock(&t->mu);
	return r;
}

/* One commit and its checkpoint (txn.h, steps 1–3). */
static int commit_once(struct lf_txn *t)
{
	struct lf_vol *v = t->v;
	struct lf_iosnap *s = NULL;
	struct lf_jblock *b = NULL;
	uint64_t id = 0;
	int r;

	lf_vol_lock(v);
	r = snapshot_locked(t, &s, &id);
	lf_vol_unlock(v);
	if (r < 0)
		goto fail;

	/* A failed data write is the fsync's to report (lf_txn_commit_wait
	 * takes it), not a reason to stop journaling. */
	lf_iocache_wait_ordered(v->cache, s);
	r = 0;
	if (s->n) {
		b = malloc(s->n * sizeof(*b));
		if (!b)
			r = -ENOMEM;
		for (size_t i = 0; b && i < s->n; i++)
			b[i] = (struct lf_jblock){s->keys[i],
						  s->data + i * s->unit};
		if (b)
			r = lf_journal_commit(t->j, b, s->n);
		if (r == -E2BIG) {
			/* One consistent state larger than the log: written
			 * home directly, which a crash can tear. */
			lf_err(MOD,
			       "%s: a transaction of %zu blocks does not fit "
			       "the journal: written without it",
			       lf_vol_desc(v), s->n);
			r = 0;
		}
	} else {
		r = lf_bdev_flush(v->bdev); /* the ordered data, durable */
	}
	if (r < 0)
		goto fail;
	pthread_mutex_lock(&t->mu);
	t->committed = id;
	t->st.commits++;
	t->st.blocks += s->n;
	if (s->n)
		t->st.journal_bytes +=
			(s->n + s->n / 250 + 2) * (unsigned long long)s->unit;
	pthread_cond_broadcast(&t->done_cv);
	pthread_mutex_unlock(&t->mu);

	if (s->n) {
		r = lf_iocache_write_home(v->cache, s);
		if (r == 0)
			r = lf_journal_checkpointed(t->j);
		if (r < 0)
			goto fail;
	}
	lf_iocache_snapshot_done(v->cache, s);
	free(b);
	lf_vol_lock(v);
	rs_mark(v->fs, &t->committing, false);
	for (size_t i = 0; i < t->committing.n; i++)
		lf_trim_queue(v, t->committing.v[i].blk, t->committing.v[i].n);
	t->committing.n = 0;
	/* A durable point for online discard: what is free now and was
	 * queued is free on disk. Its UNMAPs run here, under the lock, so
	 * that none is in flight when the volume closes. */
	lf_vol_after_durable(v);
	lf_trim_work(v, true);
	lf_vol_unlock(v);
	pthread_mutex_lock(&t->mu);
	t->completed = id;
	pthread_cond_broadcast(&t->done_cv);
	pthread_mutex_unlock(&t->mu);
	return 0;
fail:
	/* Nothing more is committed. The copies go home as they are (best
	 * effort: the next open replays or repairs) so that no direct write
	 * waits for this snapshot forever. */
	if (s) {
		lf_iocache_write_home(v->cache, s);
		lf_iocache_snapshot_done(v->cache, s);
	}
	free(b);
	pthread_mutex_lock(&t->mu);
	if (!t->err)
		t->err = r;
	pthread_cond_broadcast(&t->done_cv);
	pthread_mutex_unlock(&t->mu);
	lf_err(MOD, "%s: commit failed: %s; the volume takes no more commits",
	       lf_vol_desc(v), strerror(-r));
	return r;
}

static bool has_work(struct lf_txn *t)
{
	struct lf_vol *v = t->v;
	bool w;

	lf_vol_lock(v);
	w = (v->fs->flags &
	     (EXT2_FLAG_DIRTY | EXT2_FLAG_IB_DIRTY | EXT2_FLAG_BB_DIRTY)) ||
	    t->freed.n || lf_iocache_ndirty(v->cache);
	lf_vol_unlock(v);
	return w;
}

static void *committer_main(void *arg)
{
	struct lf_txn *t = arg;
	unsigned ms = t->v->opts.flush_interval_ms;
	struct timespec ts;

	pthread_mutex_lock(&t->mu);
	for (;;) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += ms / 1000;
		ts.tv_nsec += (long)(ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!t->kicked && !t->stopping && t->want <= t->committed)
			if (pthread_cond_timedwait(&t->cv, &t->mu, &ts))
				break;
		if (t->err) {
			if (t->stopping)
				break;
			t->kicked = false;
			t->want = t->committed;
			pthread_cond_broadcast(&t->done_cv);
			continue;
		}
		bool asked = t->want > t->committed || t->kicked;
		bool stop = t->stopping;

		t->kicked = false;
		pthread_mutex_unlock(&t->mu);
		if (asked || stop || has_work(t))
			commit_once(t);
		pthread_mutex_lock(&t->mu);
		if (stop)
			break; /* the close's final commit is done */
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

static void txn_free(struct lf_txn *t)
{
	pthread_cond_destroy(&t->handle_cv);
	pthread_cond_destroy(&t->cv);
	pthread_cond_destroy(&t->done_cv);
	pthread_mutex_destroy(&t->mu);
	free(t->freed.v);
	free(t->committing.v);
	free(t);
}

int lf_txn_start(struct lf_vol *v, char *err, size_t errlen)
{
	ext2_filsys fs = v->fs;
	struct lf_txn *t = calloc(1, sizeof(*t));
	errcode_t e;
	size_t cap, soft;
	int r;

	if (!t)
		return -ENOMEM;
	t->v = v;
	t->running = 1;
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	pthread_cond_init(&t->done_cv, NULL);
	pthread_cond_init(&t->handle_cv, NULL);
	r = lf_journal_open(fs, v->bdev, &t->j, err, errlen);
	if (r < 0)
		goto fail;
	/* In use, recoverable: what the kernel's ext4 writes at mount. */
	ext2fs_set_feature_journal_needs_recovery(fs->super);
	fs->super->s_state |= EXT2_VALID_FS;
	fs->super->s_mnt_count++;
	fs->super->s_mtime = (__u32)time(NULL);
	ext2fs_mark_super_dirty(fs);
	fs->flags |= EXT2_FLAG_MASTER_SB_ONLY;
	e = ext2fs_flush2(fs, 0);
	fs->flags &= ~EXT2_FLAG_MASTER_SB_ONLY;
	r = e ? lf_errno_from_ext2(e) : lf_iocache_sync(v->cache);
	if (r == 0)
		r = lf_journal_begin(t->j);
	if (r < 0) {
		snprintf(err, errlen,
			 "%s: cannot mark the filesystem in use: %s",
			 lf_vol_desc(v), e ? error_message(e) : strerror(-r));
		goto fail_journal;
	}
	cap = lf_journal_capacity(t->j);
	soft = cap / 4;
	if (soft > v->opts.cache_bytes / lf_iocache_unit(v->cache) / 4)
		soft = v->opts.cache_bytes / lf_iocache_unit(v->cache) / 4;
	if (soft < 16)
		soft = 16;
	lf_iocache_set_journaled(v->cache, true, soft, kick, t);
	v->txn = t;
	if (pthread_create(&t->thread, NULL, committer_main, t) != 0) {
		snprintf(err, errlen, "%s: cannot start the committer thread",
			 lf_vol_desc(v));
		r = -EAGAIN;
		v->txn = NULL;
		lf_iocache_set_journaled(v->cache, false, 0, NULL, NULL);
		goto fail_journal;
	}
	t->thread_running = true;
	lf_info(MOD,
		"%s: journaling metadata (log of %zu-block transactions, "
		"commit every %u ms)",
		lf_vol_desc(v), cap, v->opts.flush_interval_ms);
	return 0;
fail_journal:
	lf_journal_free(t->j);
fail:
	lf_err(MOD, "%s", err);
	txn_free(t);
	return r;
}

int lf_txn_stop(struct lf_vol *v)
{
	struct lf_txn *t = v->txn;
	int r;

	if (!t)
		return 0;
	pthread_mutex_lock(&t->mu);
	t->stopping = true;
	t->want = UINT64_MAX; /* commit what is there, whatever its id */
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->thread, NULL);
	r = t->err;
	lf_vol_lock(v);
	v->txn = NULL;
	lf_vol_unlock(v);
	if (r == 0) {
		lf_iocache_set_journaled(v->cache, false, 0, NULL, NULL);
		r = lf_journal_close(t->j);
	} else {
		/* Leave the log as it is: replay at the next open repairs
		 * what this session could not finish. */
		lf_journal_free(t->j);
	}
	txn_free(t);
	return r;
}

int lf_txn_suspend(struct lf_vol *v)
{
	errcode_t e;
	int r;

	lf_vol_unlock(v);
	r = lf_txn_stop(v);
	lf_vol_lock(v);
	if (r < 0)
		return r;
	ext2fs_clear_feature_journal_needs_recovery(v->fs->super);
	ext2fs_mark_super_dirty(v->fs);
	v->fs->flags |= EXT2_FLAG_MASTER_SB_ONLY;
	e = ext2fs_flush2(v->fs, 0);
	v->fs->flags &= ~EXT2_FLAG_MASTER_SB_ONLY;
	return e ? lf_errno_from_ext2(e) : 0;
}

int lf_txn_commit_wait(struct lf_vol *v, bool home)
{
	struct lf_txn *t = v->txn;
	uint64_t id = t->running;
	int r, r2;

	lf_vol_unlock(v);
	pthread_mutex_lock(&t->mu);
	if (t->want < id)
		t->want = id;
	pthread_cond_signal(&t->cv);
	while ((home ? t->completed : t->committed) < id && !t->err)
		pthread_cond_wait(&t->done_cv, &t->mu);
	r = (home ? t->completed : t->committed) >= id ? 0 : t->err;
	pthread_mutex_unlock(&t->mu);
	r2 = lf_iocache_take_error(v->cache);
	lf_vol_lock(v);
	return r < 0 ? r : r2;
}

void lf_txn_handle_start(struct lf_vol *v)
{
	struct lf_txn *t = v->txn;

	if (!t)
		return;
	while (t->locked)
		pthread_cond_wait(&t->handle_cv, &v->lock);
	t->handles++;
}

void lf_txn_handle_stop(struct lf_vol *v)
{
	struct lf_txn *t = v->txn;

	if (!t || !t->handles)
		return;
	if (--t->handles == 0 && t->locked)
		pthread_cond_broadcast(&t->handle_cv);
}

void lf_txn_get_stats(struct lf_vol *v, struct lf_txn_stats *st)
{
	struct lf_txn *t = v->txn;

	memset(st, 0, sizeof(*st));
	if (!t)
		return;
	pthread_mutex_lock(&t->mu);
	*st = t->st;
	pthread_mutex_unlock(&t->mu);
}
