/* volume.c — probe, format-if-empty, open, mark dirty, flush, close. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <et/com_err.h>

#include "fsimage/format.h"
#include "fsimage/iomgr.h"
#include "fsimage/journal.h"
#include "fsimage/mmp.h"
#include "fsimage/probe.h"
#include "fsimage/txn.h"
#include "fsimage/volume_int.h"
#include "iscsi/log.h"

#define MOD		 "fsimage"
#define DEFAULT_FLUSH_MS 5000

/* libext2fs's messages come from com_err's table, which someone has to
 * register, or error_message() prints "Unknown code ext2 N". */
static pthread_once_t ext2_errors_once = PTHREAD_ONCE_INIT;

static void ext2_errors_init(void)
{
	initialize_ext2_error_table();
}

static int say(char *err, size_t errlen, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int say(char *err, size_t errlen, int r, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (err && errlen)
		snprintf(err, errlen, "%s", buf);
	lf_err(MOD, "%s", buf);
	return r;
}

void lf_vol_lock(struct lf_vol *v)
{
	pthread_mutex_lock(&v->lock);
}

void lf_vol_unlock(struct lf_vol *v)
{
	pthread_mutex_unlock(&v->lock);
}

bool lf_vol_read_only(const struct lf_vol *v)
{
	return v->opts.read_only || lf_bdev_fenced(v->bdev, NULL, 0);
}

bool lf_vol_fenced(const struct lf_vol *v, char *why, size_t len)
{
	return lf_bdev_fenced(v->bdev, why, len);
}

bool lf_vol_mmp(const struct lf_vol *v)
{
	return v->mmp != NULL;
}

bool lf_vol_formatted(const struct lf_vol *v)
{
	return v->formatted;
}

struct lf_bdev *lf_vol_bdev(const struct lf_vol *v)
{
	return v->bdev;
}

const char *lf_vol_desc(const struct lf_vol *v)
{
	return lf_bdev_desc(v->bdev);
}

int lf_vol_data_pread(struct lf_vol *v, void *buf, size_t len, uint64_t off)
{
	return lf_iocache_pread(v->cache, buf, len, off);
}

void lf_vol_data_pread_async(struct lf_vol *v, const struct iovec *iov,
			     uint64_t off, lf_bdev_done_fn done, void *opaque)
{
	lf_iocache_pread_async(v->cache, iov, off, done, opaque);
}

int lf_vol_data_pwrite(struct lf_vol *v, const void *buf, size_t len,
		       uint64_t off)
{
	if (lf_vol_read_only(v))
		return -EROFS;
	return lf_iocache_pwrite(v->cache, buf, len, off);
}

/* The superblock, group descriptors and bitmaps if libext2fs holds them
 * dirty, then the cache, then SYNCHRONIZE CACHE. */
int lf_vol_sync_locked(struct lf_vol *v)
{
	errcode_t e;
	int r;

	if (v->opts.read_only || !v->fs)
		return 0;
	if (lf_vol_fenced(v, NULL, 0))
		return -EIO; /* what was not on the LUN never will be */
	if (v->txn)
		return lf_txn_commit_wait(v, false);
	if (v->fs->flags &
	    (EXT2_FLAG_DIRTY | EXT2_FLAG_IB_DIRTY | EXT2_FLAG_BB_DIRTY)) {
		lf_trim_bitmaps_begin(v);
		e = ext2fs_flush2(v->fs, EXT2_FLAG_FLUSH_NO_SYNC);
		lf_trim_bitmaps_end(v);
		if (e) {
			lf_err(MOD, "%s: writing filesystem metadata: %s",
			       lf_vol_desc(v), error_message(e));
			return lf_errno_from_ext2(e);
		}
	}
	r = lf_iocache_sync(v->cache);
	if (r == 0)
		lf_vol_after_durable(v);
	return r;
}

int lf_vol_sync(struct lf_vol *v)
{
	int r;

	lf_vol_lock(v);
	/* A volume-wide sync also waits for the checkpoint: afterwards the
	 * metadata is home, not only in the journal. */
	r = v->txn ? lf_txn_commit_wait(v, true) : lf_vol_sync_locked(v);
	lf_vol_unlock(v);
	return r;
}

/* Periodic write-back. Bitmaps and cached blocks only: the group
 * descriptors' free counts may lag, which is what "not clean" in the
 * superblock tells e2fsck after a crash. */
static void *flusher_main(void *arg)
{
	struct lf_vol *v = arg;
	struct timespec ts;

	lf_vol_lock(v);
	while (!v->stopping) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += v->opts.flush_interval_ms / 1000;
		ts.tv_nsec +=
			(long)(v->opts.flush_interval_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&v->flusher_cond, &v->lock, &ts);
		if (v->stopping)
			break;
		if (lf_vol_fenced(v, NULL, 0))
			continue;
		if (v->fs->flags & (EXT2_FLAG_IB_DIRTY | EXT2_FLAG_BB_DIRTY)) {
			errcode_t e;

			lf_trim_bitmaps_begin(v);
			e = ext2fs_write_bitmaps(v->fs);
			lf_trim_bitmaps_end(v);
			if (e)
				lf_warn(MOD, "%s: writing bitmaps: %s",
					lf_vol_desc(v), error_message(e));
		}
		if (lf_iocache_sync_tick(v->cache) < 0)
			lf_warn(MOD, "%s: periodic write-back failed",
				lf_vol_desc(v));
		else
			lf_vol_after_durable(v);
		lf_trim_work(v, false);
	}
	lf_vol_unlock(v);
	return NULL;
}

static void stop_flusher(struct lf_vol *v)
{
	if (!v->flusher_running)
		return;
	lf_vol_lock(v);
	v->stopping = true;
	pthread_cond_signal(&v->flusher_cond);
	lf_vol_unlock(v);
	pthread_join(v->flusher, NULL);
	v->flusher_running = false;
}

static void vol_free(struct lf_vol *v)
{
	if (v->fs)
		lf_trim_free(v);
	if (v->fs)
		ext2fs_free(v->fs);
	lf_mmp_stop(v->mmp); /* after every other write: CLEAN */
	lf_iocache_free(v->cache);
	if (v->bdev)
		lf_bdev_unref(v->bdev);
	pthread_cond_destroy(&v->flusher_cond);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

/* Refuse what we must not serve: needs_recovery, unclean, errors,
 * external journals. */
static int check_state(struct lf_vol *v, char *err, size_t errlen)
{
	struct ext2_super_block *sb = v->fs->super;
	const char *desc = lf_vol_desc(v);

	if (v->opts.read_only && v->opts.held_elsewhere &&
	    !(sb->s_state & EXT2_ERROR_FS)) {
		lf_warn(MOD,
			"%s: in use read-write by another node: served "
			"read-only as it is on the LUN (what that node has not "
			"written yet is not seen, and may change under "
			"readers)",
			desc);
		return 0;
	}
	if (ext2fs_has_feature_journal_needs_recovery(sb))
		return say(err, errlen, -EUCLEAN,
			   "%s needs journal recovery (it was not unmounted "
			   "cleanly): run 'lunfs fsck' on it to repair it",
			   desc);
	if (sb->s_state & EXT2_ERROR_FS)
		return say(err, errlen, -EUCLEAN,
			   "%s has filesystem errors recorded: run 'lunfs "
			   "fsck' on it to repair it",
			   desc);
	if (!(sb->s_state & EXT2_VALID_FS))
		return say(err, errlen, -EUCLEAN,
			   "%s was not unmounted cleanly: run 'lunfs fsck' on "
			   "it to repair it",
			   desc);
	if (ext2fs_has_feature_journal(sb) && !sb->s_journal_inum)
		return say(err, errlen, -EOPNOTSUPP,
			   "%s uses an external journal, which lunfs does not "
			   "support",
			   desc);
	if (ext2fs_has_feature_orphan_present(sb))
		return say(err, errlen, -EUCLEAN,
			   "%s has orphan inodes to clean up: run 'lunfs "
			   "fsck' on it to repair it",
			   desc);
	return 0;
}

/* What the kernel checks at mount and libext2fs does not, then the
 * bitmaps. */
static int check_geometry(struct lf_vol *v, char *err, size_t errlen)
{
	const char *desc = lf_vol_desc(v);
	errcode_t e;

	__atomic_store_n(&v->fs_bytes,
			 ext2fs_blocks_count(v->fs->super) *
				 (uint64_t)v->fs->blocksize,
			 __ATOMIC_RELAXED);
	if (ext2fs_blocks_count(v->fs->super) >
	    lf_bdev_size(v->bdev) / v->fs->blocksize)
		return say(
			err, errlen, -EIO,
			"%s: the filesystem claims %llu blocks but the "
			"device holds %llu: damaged, or the LUN shrank",
			desc,
			(unsigned long long)ext2fs_blocks_count(v->fs->super),
			(unsigned long long)(lf_bdev_size(v->bdev) /
					     v->fs->blocksize));
	e = ext2fs_check_desc(v->fs);
	if (e)
		return say(err, errlen, -EIO,
			   "%s: the group descriptors are damaged: %s ('lunfs "
			   "fsck SPEC' checks it, --repair fixes it)",
			   desc, error_message(e));
	e = ext2fs_read_bitmaps(v->fs);
	if (e)
		return say(
			err, errlen, lf_errno_from_ext2(e),
			"%s: cannot read the allocation bitmaps: %s (damaged? "
			"'lunfs fsck --check SPEC' checks it, --repair fixes "
			"it)",
			desc, error_message(e));
	return 0;
}

/* A journal a crash left behind: replayed straight onto the device, then
 * the filesystem opened again over what it wrote. */
static int replay(struct lf_vol *v, const char *name, int flags, char *err,
		  size_t errlen)
{
	unsigned n = 0;
	errcode_t e;
	int r;

	r = lf_journal_replay(v->fs, v->bdev, &n, err, errlen);
	ext2fs_free(v->fs);
	v->fs = NULL;
	lf_iocache_drop_clean(v->cache);
	if (r < 0)
		return r;
	e = ext2fs_open2(name, NULL, flags, 0, 0, lf_iomgr(), &v->fs);
	if (e) {
		v->fs = NULL;
		return say(err, errlen, lf_errno_from_ext2(e),
			   "%s: cannot open the ext filesystem after journal "
			   "replay: %s ('lunfs fsck --repair SPEC' fixes it)",
			   lf_vol_desc(v), error_message(e));
	}
	/* Recovered: what is left is ours to mark again when serving. */
	ext2fs_clear_feature_journal_needs_recovery(v->fs->super);
	lf_info(MOD, "%s: recovered by journal replay (%u transaction%s)",
		lf_vol_desc(v), n, n == 1 ? "" : "s");
	return 0;
}

static int open_fs(struct lf_vol *v, char *err, size_t errlen)
{
	const char *desc = lf_vol_desc(v);
	char name[64];
	/* MMP is ours (mmp.h): libext2fs's would open the device by name. */
	int flags = EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP;
	bool claimed = false;
	errcode_t e;
	int r;

	if (!v->opts.read_only)
		flags |= EXT2_FLAG_RW;
	lf_iocache_name(v->cache, name, sizeof(name));
	e = ext2fs_open2(name, NULL, flags, 0, 0, lf_iomgr(), &v->fs);
	if (e == EXT2_ET_UNSUPP_FEATURE || e == EXT2_ET_RO_UNSUPP_FEATURE) {
		v->fs = NULL;
		return say(err, errlen, -EOPNOTSUPP,
			   "%s: the ext filesystem uses features lunfs cannot "
			   "%s safely: %s",
			   desc, v->opts.read_only ? "read" : "write",
			   error_message(e));
	}
	if (e) {
		v->fs = NULL;
		return say(err, errlen, lf_errno_from_ext2(e),
			   "%s: cannot open the ext filesystem: %s (damaged? "
			   "'lunfs fsck --check SPEC' checks it, --repair "
			   "fixes it)",
			   desc, error_message(e));
	}
	/* Another node's claim comes before the state it left the volume
	 * in; our own claim (a write) waits for the last check below. */
	if (!v->opts.read_only && ext2fs_has_feature_mmp(v->fs->super)) {
		struct lf_mmp_opts mo = {
			.node = v->opts.mmp_node,
			/* A local image: no other initiator reaches it. */
			.reserved = v->opts.reserved ||
				    lf_bdev_info(v->bdev)->local,
			.stale_known = v->opts.mmp_stale_known,
			.stale_seq = v->opts.mmp_stale_seq,
		};
		r = lf_mmp_check(v->bdev, v->fs, &mo, &v->mmp, err, errlen);
		if (r < 0)
			return r;
	}
	if (ext2fs_has_feature_journal_needs_recovery(v->fs->super) &&
	    !v->opts.read_only && lf_txn_usable(v)) {
		/* The replay writes: the volume must be ours first. */
		if (v->mmp) {
			r = lf_mmp_claim(v->mmp, err, errlen);
			if (r < 0)
				return r;
			claimed = true;
		}
		r = replay(v, name, flags, err, errlen);
		if (r < 0)
			return r;
	}
	r = check_state(v, err, errlen);
	if (r == -EUCLEAN && v->mmp)
		lf_mmp_release_stale(v->mmp); /* the repair comes next */
	if (r < 0)
		return r;
	r = check_geometry(v, err, errlen);
	if (r < 0)
		return r;
	lf_trim_attach(v);
	if (v->opts.read_only)
		return 0;
	if (v->mmp && !claimed) {
		r = lf_mmp_claim(v->mmp, err, errlen);
		if (r < 0)
			return r;
	}
	if (lf_txn_usable(v))
		return lf_txn_start(v, err, errlen);

	/* Not clean while we serve it: a crash leaves it for fsck. Only the
	 * primary superblock, like the kernel at mount. */
	v->fs->super->s_state &= ~EXT2_VALID_FS;
	v->fs->super->s_mnt_count++;
	v->fs->super->s_mtime = (__u32)time(NULL);
	ext2fs_mark_super_dirty(v->fs);
	v->fs->flags |= EXT2_FLAG_MASTER_SB_ONLY;
	e = ext2fs_flush2(v->fs, 0);
	v->fs->flags &= ~EXT2_FLAG_MASTER_SB_ONLY;
	if (e)
		return say(err, errlen, lf_errno_from_ext2(e),
			   "%s: cannot mark the filesystem in use: %s", desc,
			   error_message(e));
	r = lf_iocache_sync(v->cache);
	if (r < 0)
		return say(err, errlen, r,
			   "%s: cannot mark the filesystem in use: %s", desc,
			   strerror(-r));
	return 0;
}

int lf_vol_reopen_locked(struct lf_vol *v, char *err, size_t errlen)
{
	const char *desc = lf_vol_desc(v);
	char name[64];
	errcode_t e;
	int r;

	lf_iocache_name(v->cache, name, sizeof(name));
	e = ext2fs_open2(name, NULL,
			 EXT2_FLAG_64BITS | EXT2_FLAG_RW | EXT2_FLAG_SKIP_MMP,
			 0, 0, lf_iomgr(), &v->fs);
	if (e) {
		v->fs = NULL;
		return say(err, errlen, lf_errno_from_ext2(e),
			   "%s: cannot open the ext filesystem again: %s", desc,
			   error_message(e));
	}
	r = check_geometry(v, err, errlen);
	if (r == 0 && (v->fs->super->s_state & EXT2_VALID_FS)) {
		/* Still ours: not clean while served. */
		v->fs->super->s_state &= ~EXT2_VALID_FS;
		ext2fs_mark_super_dirty(v->fs);
		e = ext2fs_flush2(v->fs, EXT2_FLAG_FLUSH_NO_SYNC);
		if (e)
			r = say(err, errlen, lf_errno_from_ext2(e),
				"%s: cannot mark the filesystem in use: %s",
				desc, error_message(e));
	}
	if (r == 0)
		r = lf_iocache_sync(v->cache);
	if (r < 0) {
		ext2fs_free(v->fs);
		v->fs = NULL;
		return r;
	}
	lf_trim_attach(v);
	return 0;
}

int lf_vol_open(struct lf_bdev *bdev, const struct lf_vol_opts *opts,
		struct lf_vol **out, char *err, size_t errlen)
{
	struct lf_probe_result pr;
	struct lf_vol *v;
	const char *desc = lf_bdev_desc(bdev);
	int r;

	pthread_once(&ext2_errors_once, ext2_errors_init);
	v = calloc(1, sizeof(*v));
	if (!v)
		return say(err, errlen, -ENOMEM, "%s: out of memory", desc);
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->flusher_cond, NULL);
	if (opts)
		v->opts = *opts;
	if (lf_bdev_info(bdev)->read_only)
		v->opts.read_only = true;
	if (!v->opts.flush_interval_ms)
		v->opts.flush_interval_ms = DEFAULT_FLUSH_MS;
	if (!v->opts.cache_bytes)
		v->opts.cache_bytes = LF_IOCACHE_DEFAULT_BYTES;
	v->bdev = lf_bdev_ref(bdev);

	r = lf_iocache_new(bdev, v->opts.cache_bytes, v->opts.read_only,
			   &v->cache);
	if (r < 0) {
		say(err, errlen, r, "%s: cannot set up the block cache", desc);
		goto fail;
	}
	r = lf_probe(bdev, &pr);
	if (r < 0) {
		say(err, errlen, r, "%s: cannot read the device: %s", desc,
		    strerror(-r));
		goto fail;
	}
	switch (pr.kind) {
	case LF_PROBE_OTHER:
		r = say(err, errlen, -EMEDIUMTYPE,
			"%s holds %s, not an ext2/3/4 filesystem: refusing to "
			"format or mount it",
			desc, pr.what);
		goto fail;
	case LF_PROBE_ALL_ZERO:
		if (v->opts.read_only || !v->opts.allow_format) {
			r = say(err, errlen, -EMEDIUMTYPE,
				"%s is empty (not formatted) and %s", desc,
				v->opts.read_only
					? "the mount is read-only"
					: "formatting was not allowed");
			goto fail;
		}
		lf_iocache_assume_zero(v->cache);
		r = lf_format(v->cache, lf_bdev_size(bdev), NULL, desc, err,
			      errlen);
		if (r < 0)
			goto fail;
		v->formatted = true;
		break;
	case LF_PROBE_EXT:
		break;
	}
	r = open_fs(v, err, errlen);
	if (r < 0)
		goto fail;
	if (!v->opts.read_only && !v->txn) {
		if (pthread_create(&v->flusher, NULL, flusher_main, v) != 0) {
			r = say(err, errlen, -EAGAIN,
				"%s: cannot start the flusher thread", desc);
			goto fail;
		}
		v->flusher_running = true;
	}
	lf_info(MOD, "%s: %s %s%s", desc,
		v->formatted ? "formatted and opened" : "opened",
		v->formatted ? "ext4" : pr.what,
		v->opts.read_only ? " read-only" : "");
	*out = v;
	return 0;
fail:
	if (v->txn)
		lf_txn_stop(v);
	if (v->fs) {
		/* Never write on a failed open: drop libext2fs' state. */
		ext2fs_free(v->fs);
		v->fs = NULL;
	}
	vol_free(v);
	return r;
}

int lf_vol_close(struct lf_vol *v)
{
	const char *desc;
	errcode_t e;
	int r = 0, r2;

	if (!v)
		return 0;
	desc = lf_vol_desc(v);
	stop_flusher(v);
	lf_vol_lock(v);
	if (v->fsops_fini)
		v->fsops_fini(v);
	if (lf_vol_fenced(v, NULL, 0)) {
		/* Another node owns the LUN now: not one more byte (the
		 * committer's last writes fail on the fenced bdev), no
		 * UNMAP either. */
		lf_trim_free(v);
		if (v->txn) {
			lf_vol_unlock(v);
			lf_txn_stop(v);
			lf_vol_lock(v);
		}
		ext2fs_free(v->fs);
		v->fs = NULL;
		lf_vol_unlock(v);
		lf_warn(MOD, "%s: fenced: closed without writing", desc);
		vol_free(v);
		return -EIO;
	}
	if (v->txn) {
		/* Everything committed and home, the log empty: only then
		 * may the superblock say there is nothing to recover. */
		lf_vol_unlock(v);
		r = lf_txn_stop(v);
		lf_vol_lock(v);
		if (r == 0)
			ext2fs_clear_feature_journal_needs_recovery(
				v->fs->super);
	}
	if (!v->opts.read_only && r == 0) {
		v->fs->super->s_state |= EXT2_VALID_FS;
		ext2fs_mark_super_dirty(v->fs);
	}
	/* After the last commit, whose frees it unmapped (discard), so
	 * that those of the volume's last transaction go back too. */
	if (r == 0)
		lf_trim_close_locked(v);
	else
		lf_trim_free(v);
	if (r < 0) {
		/* The journal could not take the last commit: write
		 * nothing more; the next open replays what it holds. */
		lf_err(MOD, "%s: closed without writing (the journal failed)",
		       desc);
		ext2fs_free(v->fs);
		v->fs = NULL;
		lf_vol_unlock(v);
		vol_free(v);
		return r;
	}
	e = ext2fs_close2(v->fs, 0);
	if (e) {
		lf_err(MOD, "%s: writing the filesystem at close: %s", desc,
		       error_message(e));
		r = lf_errno_from_ext2(e);
		ext2fs_free(v->fs);
	}
	v->fs = NULL;
	r2 = lf_iocache_sync(v->cache);
	if (r2 < 0 && !r)
		r = r2;
	lf_vol_unlock(v);
	if (r == 0)
		lf_info(MOD, "%s: closed cleanly", desc);
	vol_free(v);
	return r;
}
