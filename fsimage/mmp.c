/* mmp.c — see mmp.h. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <et/com_err.h>

#include "fsimage/iomgr.h"
#include "fsimage/mmp.h"
#include "iscsi/log.h"

#define MOD "mmp"

struct lf_mmp {
	struct lf_bdev *bdev; /* a reference of our own */
	uint64_t off;	      /* byte offset of the MMP block */
	uint32_t blocksize;
	unsigned interval; /* s_mmp_update_interval, seconds */
	bool csum;
	uint32_t csum_seed;
	char node[64];
	char desc[160];

	pthread_t thread;
	bool running;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;	   /* protected by lock */
	uint32_t seen_seq; /* what lf_mmp_check() found, proven stale */
	bool reserved;
	bool claimed;	   /* we wrote our seq: release writes CLEAN */
	uint32_t last_seq; /* update thread, then lf_mmp_stop */
	void *buf;	   /* blocksize, the update thread's */
};

static unsigned wait_for(unsigned update_interval, unsigned block_ci)
{
	unsigned ci = 2 * (update_interval ? update_interval : 5);

	if (block_ci > ci)
		ci = block_ci;
	return 2 * ci + 1 < ci + 60 ? 2 * ci + 1 : ci + 60;
}

static uint32_t new_seq(void)
{
	uint32_t s = 0;

	while (s == 0 || s > EXT4_MMP_SEQ_MAX) {
		if (getrandom(&s, sizeof(s), 0) != sizeof(s))
			s = (uint32_t)time(NULL) ^ (uint32_t)getpid();
		s &= 0x7fffffff;
	}
	return s;
}

static void sleep_s(unsigned s)
{
	struct timespec ts = {.tv_sec = s};

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void node_of(const struct mmp_struct *mp, char *buf, size_t len)
{
	size_t n = strnlen((const char *)mp->mmp_nodename,
			   sizeof(mp->mmp_nodename));

	snprintf(buf, len, "%.*s", (int)n, (const char *)mp->mmp_nodename);
	if (!buf[0])
		snprintf(buf, len, "(unnamed)");
}

static int mmp_read(struct lf_mmp *m, struct mmp_struct *mp)
{
	int r = lf_bdev_pread(m->bdev, mp, m->blocksize, m->off);

	if (r)
		return r;
	if (ext2fs_le32_to_cpu(mp->mmp_magic) != EXT4_MMP_MAGIC)
		return -EUCLEAN;
	if (m->csum &&
	    ext2fs_le32_to_cpu(mp->mmp_checksum) !=
		    ext2fs_crc32c_le(m->csum_seed, (unsigned char *)mp,
				     offsetof(struct mmp_struct, mmp_checksum)))
		return -EBADMSG;
	return 0;
}

static int mmp_write(struct lf_mmp *m, struct mmp_struct *mp, uint32_t seq)
{
	mp->mmp_magic = ext2fs_cpu_to_le32(EXT4_MMP_MAGIC);
	mp->mmp_seq = ext2fs_cpu_to_le32(seq);
	mp->mmp_time = ext2fs_cpu_to_le64((uint64_t)time(NULL));
	memset(mp->mmp_nodename, 0, sizeof(mp->mmp_nodename));
	memcpy(mp->mmp_nodename, m->node, strnlen(m->node, sizeof(m->node)));
	memset(mp->mmp_bdevname, 0, sizeof(mp->mmp_bdevname));
	memcpy(mp->mmp_bdevname, "lunfs", 5);
	mp->mmp_check_interval =
		ext2fs_cpu_to_le16((uint16_t)(2 * m->interval));
	mp->mmp_checksum = ext2fs_cpu_to_le32(
		m->csum ? ext2fs_crc32c_le(
				  m->csum_seed, (unsigned char *)mp,
				  offsetof(struct mmp_struct, mmp_checksum))
			: 0);
	return lf_bdev_pwrite(m->bdev, mp, m->blocksize, m->off);
}

static void *update_main(void *arg)
{
	struct lf_mmp *m = arg;
	struct mmp_struct *mp = m->buf;
	struct timespec ts;
	char node[80], why[256];
	int r;

	pthread_mutex_lock(&m->lock);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += m->interval;
		while (!m->stopping &&
		       pthread_cond_timedwait(&m->cond, &m->lock, &ts) == 0)
			;
		if (m->stopping)
			break;
		pthread_mutex_unlock(&m->lock);
		if (lf_bdev_fenced(m->bdev, NULL, 0)) {
			pthread_mutex_lock(&m->lock);
			break;
		}
		r = mmp_read(m, mp);
		if (r == 0 && ext2fs_le32_to_cpu(mp->mmp_seq) != m->last_seq) {
			node_of(mp, node, sizeof(node));
			snprintf(why, sizeof(why),
				 "node %s: it rewrote the MMP block (took "
				 "the volume over)",
				 node);
			lf_bdev_fence(m->bdev, why);
			pthread_mutex_lock(&m->lock);
			break;
		}
		if (r) {
			/* The kernel counts failed updates and goes on. */
			lf_warn(MOD, "%s: reading the MMP block: %s", m->desc,
				strerror(-r));
		} else {
			uint32_t seq = m->last_seq + 1;

			if (seq > EXT4_MMP_SEQ_MAX)
				seq = 1;
			r = mmp_write(m, mp, seq);
			if (r == 0)
				m->last_seq = seq;
			else if (!lf_bdev_fenced(m->bdev, NULL, 0))
				lf_warn(MOD, "%s: updating the MMP block: %s",
					m->desc, strerror(-r));
		}
		pthread_mutex_lock(&m->lock);
	}
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

static void mmp_free(struct lf_mmp *m)
{
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free(m->buf);
	lf_bdev_unref(m->bdev);
	free(m);
}

static int busy(char *err, size_t errlen, const char *desc,
		const struct mmp_struct *mp)
{
	char node[80];

	node_of(mp, node, sizeof(node));
	snprintf(err, errlen,
		 "%s is in use by another node: its ext4 MMP block is being "
		 "updated by %s; unmount it there first (or, if that node is "
		 "dead, mount with --takeover)",
		 desc, node);
	return -EBUSY;
}

int lf_mmp_check(struct lf_bdev *b, ext2_filsys fs, const struct lf_mmp_opts *o,
		 struct lf_mmp **out, char *err, size_t errlen)
{
	struct ext2_super_block *sb = fs->super;
	struct lf_mmp *m;
	struct mmp_struct *mp;
	uint32_t seq;
	unsigned w;
	int r;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	{
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&m->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	m->bdev = lf_bdev_ref(b);
	snprintf(m->desc, sizeof(m->desc), "%s", lf_bdev_desc(b));
	m->blocksize = fs->blocksize;
	m->off = sb->s_mmp_block * (uint64_t)fs->blocksize;
	m->interval = sb->s_mmp_update_interval ? sb->s_mmp_update_interval
						: EXT4_MMP_UPDATE_INTERVAL;
	m->csum = ext2fs_has_feature_metadata_csum(sb);
	m->csum_seed = fs->csum_seed;
	m->reserved = o && o->reserved;
	if (o && o->node && *o->node)
		snprintf(m->node, sizeof(m->node), "%s", o->node);
	else if (gethostname(m->node, sizeof(m->node) - 1))
		snprintf(m->node, sizeof(m->node), "unknown");
	if (sb->s_mmp_block < sb->s_first_data_block ||
	    sb->s_mmp_block >= ext2fs_blocks_count(sb) ||
	    posix_memalign(&m->buf, 4096, m->blocksize)) {
		r = -EUCLEAN;
		snprintf(err, errlen,
			 "%s: the MMP block number %llu is out of range: run "
			 "'lunfs fsck --repair SPEC'",
			 m->desc, (unsigned long long)sb->s_mmp_block);
		m->buf = NULL;
		goto fail;
	}
	mp = m->buf;

	r = mmp_read(m, mp);
	if (r) {
		snprintf(err, errlen,
			 "%s: cannot read the MMP block: %s ('lunfs fsck "
			 "--repair SPEC' rewrites it)",
			 m->desc,
			 r == -EUCLEAN	 ? "bad magic"
			 : r == -EBADMSG ? "bad checksum"
					 : strerror(-r));
		r = r == -EBADMSG ? -EUCLEAN : r;
		goto fail;
	}
	seq = ext2fs_le32_to_cpu(mp->mmp_seq);
	w = wait_for(m->interval, ext2fs_le16_to_cpu(mp->mmp_check_interval));
	if (seq == EXT4_MMP_SEQ_FSCK) {
		r = -EBUSY;
		snprintf(err, errlen,
			 "%s: e2fsck is running on it (or was interrupted: "
			 "run 'lunfs fsck --repair SPEC')",
			 m->desc);
		goto fail;
	}
	if (seq > EXT4_MMP_SEQ_MAX && seq != EXT4_MMP_SEQ_CLEAN) {
		r = -EUCLEAN;
		snprintf(err, errlen,
			 "%s: unknown MMP sequence 0x%08x: run 'lunfs fsck "
			 "--repair SPEC'",
			 m->desc, seq);
		goto fail;
	}
	if (seq != EXT4_MMP_SEQ_CLEAN &&
	    !(o && o->stale_known && o->stale_seq == seq)) {
		lf_info(MOD,
			"%s: MMP block in use (seq 0x%08x): waiting %u s to "
			"see whether its holder is alive",
			m->desc, seq, w);
		sleep_s(w);
		r = mmp_read(m, mp);
		if (r == 0 && ext2fs_le32_to_cpu(mp->mmp_seq) != seq) {
			r = busy(err, errlen, m->desc, mp);
			goto fail;
		}
		if (r) {
			snprintf(err, errlen,
				 "%s: cannot read the MMP block: %s", m->desc,
				 strerror(-r));
			goto fail;
		}
	}
	m->seen_seq = seq;
	*out = m;
	return 0;
fail:
	lf_err(MOD, "%s", err);
	mmp_free(m);
	return r;
}

int lf_mmp_claim(struct lf_mmp *m, char *err, size_t errlen)
{
	struct mmp_struct *mp = m->buf;
	int r;

	r = mmp_read(m, mp);
	if (r == 0 && ext2fs_le32_to_cpu(mp->mmp_seq) != m->seen_seq)
		r = busy(err, errlen, m->desc, mp);
	else if (r)
		snprintf(err, errlen, "%s: cannot read the MMP block: %s",
			 m->desc, strerror(-r));
	if (r)
		goto fail;
	m->last_seq = new_seq();
	r = mmp_write(m, mp, m->last_seq);
	if (r) {
		snprintf(err, errlen, "%s: cannot write the MMP block: %s",
			 m->desc, strerror(-r));
		goto fail;
	}
	m->claimed = true;
	if (!(m->reserved && m->seen_seq == EXT4_MMP_SEQ_CLEAN)) {
		sleep_s(wait_for(m->interval, 0));
		r = mmp_read(m, mp);
		if (r == 0 && ext2fs_le32_to_cpu(mp->mmp_seq) != m->last_seq) {
			r = busy(err, errlen, m->desc, mp);
			goto fail;
		}
		if (r) {
			snprintf(err, errlen,
				 "%s: cannot read the MMP block: %s", m->desc,
				 strerror(-r));
			goto fail;
		}
	}
	r = -pthread_create(&m->thread, NULL, update_main, m);
	if (r) {
		snprintf(err, errlen, "%s: cannot start the MMP thread",
			 m->desc);
		goto fail;
	}
	m->running = true;
	lf_info(MOD, "%s: MMP claimed as %s (update every %u s)", m->desc,
		m->node, m->interval);
	return 0;
fail:
	lf_err(MOD, "%s", err);
	return r;
}

static void stop_thread(struct lf_mmp *m)
{
	if (!m->running)
		return;
	pthread_mutex_lock(&m->lock);
	m->stopping = true;
	pthread_cond_signal(&m->cond);
	pthread_mutex_unlock(&m->lock);
	pthread_join(m->thread, NULL);
	m->running = false;
	m->stopping = false;
}

int lf_mmp_pause(struct lf_mmp *m)
{
	struct mmp_struct *mp = m->buf;
	int r;

	stop_thread(m);
	if (!m->claimed)
		return 0;
	r = mmp_read(m, mp);
	if (r == 0 && ext2fs_le32_to_cpu(mp->mmp_seq) != m->last_seq)
		r = -EBUSY; /* the update thread saw it too: fenced */
	if (r == 0)
		r = mmp_write(m, mp, EXT4_MMP_SEQ_CLEAN);
	if (r == 0)
		r = lf_bdev_flush(m->bdev);
	if (r == 0)
		m->claimed = false;
	return r;
}

int lf_mmp_resume(struct lf_mmp *m, char *err, size_t errlen)
{
	m->seen_seq = EXT4_MMP_SEQ_CLEAN;
	return lf_mmp_claim(m, err, errlen);
}

void lf_mmp_release_stale(struct lf_mmp *m)
{
	struct mmp_struct *mp = m->buf;

	if (m->claimed || m->seen_seq == EXT4_MMP_SEQ_CLEAN)
		return;
	if (mmp_read(m, mp) == 0 &&
	    ext2fs_le32_to_cpu(mp->mmp_seq) == m->seen_seq &&
	    mmp_write(m, mp, EXT4_MMP_SEQ_CLEAN) == 0) {
		lf_bdev_flush(m->bdev);
		lf_info(MOD,
			"%s: stale MMP block (its holder is gone) marked "
			"clean for the repair",
			m->desc);
	}
}

void lf_mmp_stop(struct lf_mmp *m)
{
	struct mmp_struct *mp;

	if (!m)
		return;
	stop_thread(m);
	mp = m->buf;
	if (m->claimed && !lf_bdev_fenced(m->bdev, NULL, 0) &&
	    mmp_read(m, mp) == 0 &&
	    ext2fs_le32_to_cpu(mp->mmp_seq) == m->last_seq) {
		if (mmp_write(m, mp, EXT4_MMP_SEQ_CLEAN) == 0)
			lf_bdev_flush(m->bdev);
	}
	mmp_free(m);
}

int lf_mmp_probe(struct lf_bdev *b, struct lf_mmp_seen *seen)
{
	struct ext2_super_block *sb;
	struct mmp_struct *mp;
	void *buf = NULL;
	uint32_t bs;
	int r;

	memset(seen, 0, sizeof(*seen));
	if (posix_memalign(&buf, 4096, 65536))
		return -ENOMEM;
	r = lf_bdev_pread(b, buf, 4096, 0);
	if (r)
		goto out;
	sb = (struct ext2_super_block *)((char *)buf + 1024);
	if (ext2fs_le16_to_cpu(sb->s_magic) != EXT2_SUPER_MAGIC ||
	    !(ext2fs_le32_to_cpu(sb->s_feature_incompat) &
	      EXT4_FEATURE_INCOMPAT_MMP) ||
	    ext2fs_le32_to_cpu(sb->s_log_block_size) > 6)
		goto out; /* no MMP */
	bs = 1024u << ext2fs_le32_to_cpu(sb->s_log_block_size);
	{
		uint64_t blk = ext2fs_le64_to_cpu(sb->s_mmp_block);
		unsigned ui = ext2fs_le16_to_cpu(sb->s_mmp_update_interval);

		if (blk == 0 || blk * bs + bs > lf_bdev_size(b)) {
			r = -EUCLEAN;
			goto out;
		}
		r = lf_bdev_pread(b, buf, bs, blk * bs);
		if (r)
			goto out;
		mp = buf;
		if (ext2fs_le32_to_cpu(mp->mmp_magic) != EXT4_MMP_MAGIC) {
			r = -EUCLEAN;
			goto out;
		}
		seen->has_mmp = true;
		seen->seq = ext2fs_le32_to_cpu(mp->mmp_seq);
		seen->wait_s =
			wait_for(ui ? ui : EXT4_MMP_UPDATE_INTERVAL,
				 ext2fs_le16_to_cpu(mp->mmp_check_interval));
		node_of(mp, seen->node, sizeof(seen->node));
	}
out:
	free(buf);
	return r;
}

int lf_mmp_wait_stale(struct lf_bdev *b, struct lf_mmp_seen *seen, char *err,
		      size_t errlen)
{
	const char *desc = lf_bdev_desc(b);
	uint32_t seq;
	int r = lf_mmp_probe(b, seen);

	if (r) {
		snprintf(err, errlen, "%s: cannot read the MMP block: %s", desc,
			 strerror(-r));
		return r;
	}
	if (!seen->has_mmp)
		return -ENOENT;
	if (seen->seq == EXT4_MMP_SEQ_CLEAN)
		return 0;
	seq = seen->seq;
	lf_info(MOD,
		"%s: takeover: watching the MMP block (seq 0x%08x, by %s) "
		"for %u s",
		desc, seq, seen->node, seen->wait_s);
	sleep_s(seen->wait_s);
	r = lf_mmp_probe(b, seen);
	if (r) {
		snprintf(err, errlen, "%s: cannot read the MMP block: %s", desc,
			 strerror(-r));
		return r;
	}
	if (seen->seq != seq) {
		snprintf(err, errlen,
			 "%s: refusing to take over: its holder (%s) is alive "
			 "(its ext4 MMP block changed within %u s); unmount it "
			 "there first",
			 desc, seen->node, seen->wait_s);
		return -EBUSY;
	}
	return 0;
}

int lf_mmp_enable(struct lf_bdev *b, char *err, size_t errlen)
{
	const char *desc = lf_bdev_desc(b);
	struct lf_iocache *c = NULL;
	ext2_filsys fs = NULL;
	char name[64];
	errcode_t e;
	int r;

	r = lf_iocache_new(b, 0, false, &c);
	if (r) {
		snprintf(err, errlen, "%s: cannot set up the block cache",
			 desc);
		return r;
	}
	lf_iocache_name(c, name, sizeof(name));
	e = ext2fs_open2(name, NULL,
			 EXT2_FLAG_RW | EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP,
			 0, 0, lf_iomgr(), &fs);
	if (e) {
		snprintf(err, errlen, "%s: cannot open the ext filesystem: %s",
			 desc, error_message(e));
		r = -EMEDIUMTYPE;
		fs = NULL;
		goto out;
	}
	if (ext2fs_has_feature_mmp(fs->super)) {
		r = 1;
		goto out;
	}
	if (!(fs->super->s_state & EXT2_VALID_FS) ||
	    ext2fs_has_feature_journal_needs_recovery(fs->super)) {
		snprintf(err, errlen,
			 "%s was not unmounted cleanly: run 'lunfs fsck SPEC' "
			 "first",
			 desc);
		r = -EUCLEAN;
		goto out;
	}
	e = ext2fs_read_bitmaps(fs);
	if (!e) {
		fs->super->s_mmp_update_interval = LF_MMP_UPDATE_INTERVAL;
		e = ext2fs_mmp_init(fs);
	}
	if (e) {
		snprintf(err, errlen, "%s: cannot add an MMP block: %s", desc,
			 error_message(e));
		r = -EIO;
		goto out;
	}
	ext2fs_set_feature_mmp(fs->super);
	ext2fs_mark_super_dirty(fs);
	e = ext2fs_close2(fs, 0);
	fs = NULL;
	if (!e)
		r = lf_iocache_sync(c);
	else
		r = -EIO;
	if (r)
		snprintf(err, errlen, "%s: writing the filesystem: %s", desc,
			 e ? error_message(e) : strerror(-r));
	else
		lf_info(MOD, "%s: mmp feature enabled", desc);
out:
	if (fs)
		ext2fs_free(fs);
	lf_iocache_free(c);
	return r;
}
