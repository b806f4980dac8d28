/* test_journal.c — crash safety through the jbd2 journal.
 *
 * A crash simulator below the volume: a bdev that lets the first N write
 * commands through and drops every later one (a power cut after the Nth
 * write, on a device without a volatile cache). A metadata-heavy workload
 * (mkdir, create, write, append + fsync, rename, unlink) runs through
 * fsops; N is stepped over all of its writes. After each cut:
 *  - e2fsck's own replay (-E journal_only) then `e2fsck -fn` is clean
 *    (the oracle for our on-disk format and for consistency);
 *  - lunfs's replay (lf_vol_open) gives exactly the tree of one moment
 *    between the last fsync that returned before the cut and the end,
 *    every file's bytes are what was written (ordered data), and
 *    `e2fsck -fn` is clean after it;
 *  - for a sample of cuts, the kernel's ext4 mounts the crashed image
 *    (replaying our journal) and shows such a tree too.
 * And the reverse: a journal the kernel wrote is replayed by lunfs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsimage/fsops.h"
#include "fsimage/txn.h"
#include "fsimage/volume.h"
#include "iscsi/bdev.h"
#include "tests/unit/check.h"

#define IMG_BYTES (32u << 20)
#define NDIRS	  4
#define MAXENT	  64
#define MAXSTATE  512
/* Every write of the workload; every second one under the sanitizers
 * (3-4 times slower), so that the suite keeps well inside its timeout. */
#if defined(__SANITIZE_ADDRESS__)
#define CUT_STEP 2
#else
#define CUT_STEP 1
#endif

static char dir[64];
/* The volume's settings for a pass of the power-cut test. */
static unsigned pass_interval_ms = 600000;
static size_t pass_cache_bytes;
static unsigned pass_write_delay_us; /* a slower device */
static unsigned pass_think_us;	     /* time between operations */
static const struct lf_owner owner = {.uid = 0, .gid = 0};

/* ---- the power cut ---- */

struct cut {
	struct lf_bdev *inner;
	atomic_long writes;
	long limit; /* < 0: no cut */
};

static int cut_submit(void *impl, enum lf_bdev_op op, const struct iovec *iov,
		      int iovcnt, uint64_t off, uint64_t len,
		      lf_bdev_done_fn done, void *opaque)
{
	struct cut *c = impl;

	if (op == LF_BDEV_WRITE || op == LF_BDEV_UNMAP) {
		long n = atomic_fetch_add(&c->writes, 1) + 1;

		if (c->limit >= 0 && n > c->limit) {
			done(opaque, 0); /* acknowledged, never stored */
			return 0;
		}
		if (pass_write_delay_us)
			usleep(pass_write_delay_us);
	}
	return lf_bdev_submit(c->inner, op, iov, iovcnt, off, len, done,
			      opaque);
}

static void cut_close(void *impl)
{
	struct cut *c = impl;

	lf_bdev_unref(c->inner);
}

static const struct lf_bdev_ops cut_ops = {.submit = cut_submit,
					   .close = cut_close};

static struct lf_bdev *open_cut(const char *path, struct cut *c, long limit)
{
	memset(c, 0, sizeof(*c));
	c->limit = limit;
	if (lf_bdev_open_file(path, false, &c->inner) < 0)
		return NULL;
	return lf_bdev_new(&cut_ops, c, lf_bdev_info(c->inner));
}

static int copy_file(const char *from, const char *to)
{
	return sh("cp --sparse=always %s %s", from, to);
}

/* ---- the model: which names exist, with how many bytes ---- */

struct ment {
	int8_t dir; /* -1: the root */
	char name[16];
	int id; /* content generator; -1: a directory */
	long len;
};

struct mstate {
	int n;
	struct ment e[MAXENT];
};

static uint8_t byte_of(int id, long k)
{
	return (uint8_t)(id * 131 + k * 7 + (k >> 9));
}

static void fill(uint8_t *p, int id, long from, long len)
{
	for (long k = 0; k < len; k++)
		p[k] = byte_of(id, from + k);
}

static int ment_cmp(const void *a, const void *b)
{
	const struct ment *x = a, *y = b;

	if (x->dir != y->dir)
		return x->dir - y->dir;
	return strcmp(x->name, y->name);
}

static bool state_eq(struct mstate *a, struct mstate *b)
{
	if (a->n != b->n)
		return false;
	qsort(a->e, a->n, sizeof(a->e[0]), ment_cmp);
	qsort(b->e, b->n, sizeof(b->e[0]), ment_cmp);
	for (int i = 0; i < a->n; i++)
		if (ment_cmp(&a->e[i], &b->e[i]) || a->e[i].len != b->e[i].len)
			return false;
	return true;
}

struct run {
	struct mstate cur;
	struct mstate states[MAXSTATE]; /* after each operation */
	int nstates;
	/* fsyncs: state index it covers, write count when it returned */
	int fs_state[MAXSTATE];
	long fs_writes[MAXSTATE];
	int nfs;
	uint64_t dino[NDIRS];
	struct cut *cut;
	struct lf_vol *v;
	struct lf_txn_stats txn;
};

static void snap(struct run *r)
{
	if (pass_think_us)
		usleep(pass_think_us);
	if (r->nstates < MAXSTATE)
		r->states[r->nstates++] = r->cur;
}

static struct ment *mfind(struct run *r, int d, const char *name)
{
	for (int i = 0; i < r->cur.n; i++)
		if (r->cur.e[i].dir == d && !strcmp(r->cur.e[i].name, name))
			return &r->cur.e[i];
	return NULL;
}

static uint64_t dino(struct run *r, int d)
{
	return d < 0 ? 2 : r->dino[d];
}

static void op_create(struct run *r, int d, const char *name, int id, long len)
{
	struct lf_stat st;
	uint8_t *buf;

	if (lf_fs_mknod(r->v, dino(r, d), name, S_IFREG | 0644, 0, &owner, &st))
		return;
	struct ment *m = &r->cur.e[r->cur.n++];

	*m = (struct ment){.dir = (int8_t)d, .id = id, .len = 0};
	snprintf(m->name, sizeof(m->name), "%s", name);
	snap(r);
	if (!len)
		return;
	buf = malloc((size_t)len);
	fill(buf, id, 0, len);
	if (lf_fs_write(r->v, st.ino, buf, (size_t)len, 0) == len) {
		m->len = len;
		snap(r);
	}
	free(buf);
}

static void op_append_fsync(struct run *r, int d, const char *name, long len)
{
	struct ment *m = mfind(r, d, name);
	struct lf_stat st;
	uint8_t *buf;

	if (!m || lf_fs_lookup(r->v, dino(r, d), name, &st))
		return;
	buf = malloc((size_t)len);
	fill(buf, m->id, m->len, len);
	if (lf_fs_write(r->v, st.ino, buf, (size_t)len, (uint64_t)m->len) ==
	    len) {
		m->len += len;
		snap(r);
	}
	free(buf);
	if (lf_fs_fsync(r->v, st.ino, false) == 0 && r->nfs < MAXSTATE) {
		r->fs_state[r->nfs] = r->nstates - 1;
		r->fs_writes[r->nfs++] = atomic_load(&r->cut->writes);
	}
}

static void op_rename(struct run *r, int d, const char *name, int nd,
		      const char *nname)
{
	struct ment *m = mfind(r, d, name);

	if (!m ||
	    lf_fs_rename(r->v, dino(r, d), name, dino(r, nd), nname, 0, NULL))
		return;
	m->dir = (int8_t)nd;
	snprintf(m->name, sizeof(m->name), "%s", nname);
	snap(r);
}

static void op_unlink(struct run *r, int d, const char *name)
{
	struct ment *m = mfind(r, d, name);

	if (!m || lf_fs_unlink(r->v, dino(r, d), name, NULL))
		return;
	*m = r->cur.e[--r->cur.n];
	snap(r);
}

static const long sizes[] = {300, 5000, 70000, 200000, 12288};

/* The workload. Deterministic, so that two runs write in the same order
 * up to the threads' interleaving. */
static void workload(struct run *r)
{
	char name[16], nname[16];
	struct lf_stat st;

	for (int d = 0; d < NDIRS; d++) {
		snprintf(name, sizeof(name), "d%d", d);
		if (lf_fs_mkdir(r->v, 2, name, 040755, &owner, &st))
			return;
		r->dino[d] = st.ino;
		r->cur.e[r->cur.n++] =
			(struct ment){.dir = -1, .id = -1, .len = 0};
		snprintf(r->cur.e[r->cur.n - 1].name, 16, "%s", name);
		snap(r);
	}
	op_create(r, -1, "log", 0, 0);
	for (int i = 1; i <= 40; i++) {
		int d = i % NDIRS;

		snprintf(name, sizeof(name), "f%d", i);
		op_create(r, d, name, i, sizes[i % 5]);
		if (i % 3 == 0 && i > 2) {
			int k = i - 2;

			snprintf(name, sizeof(name), "f%d", k);
			snprintf(nname, sizeof(nname), "r%d", k);
			op_rename(r, k % NDIRS, name, (k + 1) % NDIRS, nname);
		}
		if (i % 4 == 0 && i > 3) {
			int k = i - 3;

			snprintf(name, sizeof(name), "f%d", k);
			if (mfind(r, k % NDIRS, name)) {
				op_unlink(r, k % NDIRS, name);
			} else {
				snprintf(name, sizeof(name), "r%d", k);
				op_unlink(r, (k + 1) % NDIRS, name);
			}
		}
		if (i % 2 == 0)
			op_append_fsync(r, -1, "log", 1000 + 37 * i);
	}
}

/* ---- reading a tree back ---- */

/* A file's bytes must be its generator's: ordered data. */
static bool content_ok(int id, const uint8_t *p, long len)
{
	for (long k = 0; k < len; k++)
		if (p[k] != byte_of(id, k))
			return false;
	return true;
}

static int id_of(const char *name)
{
	if (!strcmp(name, "log"))
		return 0;
	return atoi(name + 1);
}

struct dent {
	char name[16];
	uint64_t ino;
	bool isdir;
};

struct dump_ctx {
	struct dent e[MAXENT];
	int n;
};

/* Runs under the volume lock: collects only. */
static int dump_ent(void *vctx, const char *name, size_t namelen, uint64_t ino,
		    uint32_t type, uint64_t next)
{
	struct dump_ctx *c = vctx;

	(void)next;
	if (c->n == MAXENT || namelen >= sizeof(c->e[0].name))
		return 0;
	snprintf(c->e[c->n].name, sizeof(c->e[0].name), "%.*s", (int)namelen,
		 name);
	c->e[c->n].ino = ino;
	c->e[c->n].isdir = S_ISDIR(type);
	c->n++;
	return 0;
}

static int dump_lunfs_dir(struct lf_vol *v, uint64_t dino_, int d,
			  struct mstate *out)
{
	struct dump_ctx *c = calloc(1, sizeof(*c));
	int bad = 0;

	lf_fs_readdir(v, dino_, 0, dump_ent, c);
	for (int i = 0; i < c->n; i++) {
		const char *nm = c->e[i].name;
		struct lf_stat st;

		if (!strcmp(nm, ".") || !strcmp(nm, "..") ||
		    !strcmp(nm, "lost+found"))
			continue;
		if (out->n == MAXENT || lf_fs_getattr(v, c->e[i].ino, &st)) {
			bad++;
			continue;
		}
		struct ment *m = &out->e[out->n++];

		*m = (struct ment){.dir = (int8_t)d, .id = -1};
		snprintf(m->name, sizeof(m->name), "%s", nm);
		if (c->e[i].isdir)
			continue;
		m->id = id_of(nm);
		m->len = (long)st.size;
		uint8_t *buf = malloc(st.size + 1);

		if (lf_fs_read(v, c->e[i].ino, buf, st.size, 0) !=
			    (ssize_t)st.size ||
		    !content_ok(m->id, buf, m->len)) {
			fprintf(stderr, "%s: wrong bytes (%ld)\n", nm, m->len);
			bad++;
		}
		free(buf);
	}
	free(c);
	return bad;
}

static int dump_lunfs(struct lf_vol *v, struct mstate *out)
{
	struct lf_stat st;
	char name[16];
	int bad;

	out->n = 0;
	bad = dump_lunfs_dir(v, 2, -1, out);
	for (int d = 0; d < NDIRS; d++) {
		snprintf(name, sizeof(name), "d%d", d);
		if (lf_fs_lookup(v, 2, name, &st))
			continue;
		bad += dump_lunfs_dir(v, st.ino, d, out);
	}
	return bad;
}

static int dump_posix_dir(const char *path, int d, struct mstate *out)
{
	DIR *dp = opendir(path);
	struct dirent *de;
	int bad = 0;

	if (!dp)
		return d < 0;
	while ((de = readdir(dp))) {
		char p[512];
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    !strcmp(de->d_name, "lost+found"))
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
		if (out->n == MAXENT || lstat(p, &st)) {
			bad++;
			continue;
		}
		struct ment *m = &out->e[out->n++];

		*m = (struct ment){.dir = (int8_t)d, .id = -1};
		snprintf(m->name, sizeof(m->name), "%s", de->d_name);
		if (S_ISDIR(st.st_mode))
			continue;
		m->id = id_of(de->d_name);
		m->len = (long)st.st_size;
		uint8_t *buf = malloc((size_t)st.st_size + 1);
		int fd = open(p, O_RDONLY);

		if (fd < 0 || read(fd, buf, (size_t)st.st_size) != st.st_size ||
		    !content_ok(m->id, buf, m->len)) {
			fprintf(stderr, "%s: wrong bytes (kernel)\n", p);
			bad++;
		}
		if (fd >= 0)
			close(fd);
		free(buf);
	}
	closedir(dp);
	return bad;
}

static int dump_posix(const char *mnt, struct mstate *out)
{
	char p[512];
	int bad;

	out->n = 0;
	bad = dump_posix_dir(mnt, -1, out);
	for (int d = 0; d < NDIRS; d++) {
		snprintf(p, sizeof(p), "%s/d%d", mnt, d);
		bad += dump_posix_dir(p, d, out);
	}
	return bad;
}

/* The recovered tree is the model's after some operation at or after
 * `from`. */
static int matching_state(struct run *r, struct mstate *got, int from)
{
	for (int j = from; j < r->nstates; j++)
		if (state_eq(got, &r->states[j]))
			return j;
	if (from == 0) {
		struct mstate empty = {0};

		if (state_eq(got, &empty))
			return 0;
	}
	return -1;
}

/* The first state a crash after `limit` writes must reach. */
static int durable_from(struct run *r, long limit)
{
	int from = 0;

	for (int k = 0; k < r->nfs; k++)
		if (r->fs_writes[k] <= limit)
			from = r->fs_state[k];
	return from;
}

static struct lf_vol *open_vol(struct lf_bdev *b, bool fmt)
{
	struct lf_vol_opts o = {.allow_format = fmt,
				.flush_interval_ms = pass_interval_ms,
				.cache_bytes = pass_cache_bytes};
	struct lf_vol *v = NULL;
	char err[256];

	if (lf_vol_open(b, &o, &v, err, sizeof(err)) < 0) {
		fprintf(stderr, "open: %s\n", err);
		return NULL;
	}
	return v;
}

/* One run of the workload with a cut after `limit` writes (< 0: none).
 * Returns the writes it made. */
static long run_once(const char *base, const char *img, long limit,
		     struct run *r)
{
	struct lf_bdev *b;
	struct cut c;
	long n;

	memset(r, 0, sizeof(*r));
	CHECK_EQ(copy_file(base, img), 0);
	b = open_cut(img, &c, limit);
	r->cut = &c;
	r->v = open_vol(b, false);
	CHECK(r->v != NULL);
	if (!r->v) {
		lf_bdev_unref(b);
		return 0;
	}
	workload(r);
	lf_txn_get_stats(r->v, &r->txn);
	/* The power cut: nothing after `limit` reaches the image, whatever
	 * the close writes. */
	if (limit >= 0)
		c.limit = limit < atomic_load(&c.writes)
				  ? limit
				  : atomic_load(&c.writes);
	lf_vol_close(r->v);
	n = atomic_load(&c.writes);
	r->v = NULL;
	lf_bdev_unref(b);
	return n;
}

static unsigned kernel_checks, lunfs_checks;

static void check_cut(const char *base, long limit, bool kernel)
{
	char img[128], copy[128], mnt[128];
	struct run *r = calloc(1, sizeof(*r));
	struct mstate got;
	struct lf_bdev *b;
	struct lf_vol *v;
	int from, j;

	snprintf(img, sizeof(img), "%s/cut.img", dir);
	snprintf(copy, sizeof(copy), "%s/copy.img", dir);
	snprintf(mnt, sizeof(mnt), "%s/mnt", dir);
	run_once(base, img, limit, r);
	from = durable_from(r, limit);
	if (getenv("LF_JOURNAL_KEEP"))
		sh("cp --sparse=always %s %s/crash.img", img, dir);

	/* e2fsck's replay of our journal, then a check. */
	CHECK_EQ(copy_file(img, copy), 0);
	CHECK_EQ(sh("e2fsck -E journal_only -y %s >%s/jo.log 2>&1; "
		    "e2fsck -fn %s >%s/fsck.log 2>&1 || { echo cut %ld; "
		    "cat %s/jo.log %s/fsck.log; exit 1; }",
		    copy, dir, copy, dir, limit, dir, dir),
		 0);

	if (kernel) {
		CHECK_EQ(copy_file(img, copy), 0);
		CHECK_EQ(sh("mkdir -p %s && mount -o loop %s %s", mnt, copy,
			    mnt),
			 0);
		CHECK_EQ(dump_posix(mnt, &got), 0);
		j = matching_state(r, &got, from);
		if (j < 0)
			fprintf(stderr,
				"cut %ld: the kernel's tree (%d names) is no "
				"state from %d on\n",
				limit, got.n, from);
		CHECK(j >= 0);
		CHECK_EQ(sh("umount %s", mnt), 0);
		CHECK_EQ(sh("e2fsck -fn %s >%s/fsck.log 2>&1 || { cat "
			    "%s/fsck.log; exit 1; }",
			    copy, dir, dir),
			 0);
		kernel_checks++;
	}

	/* Ours. */
	struct cut c;

	b = open_cut(img, &c, -1);
	v = open_vol(b, false);
	CHECK(v != NULL);
	if (v) {
		CHECK_EQ(dump_lunfs(v, &got), 0);
		j = matching_state(r, &got, from);
		if (j < 0)
			fprintf(stderr,
				"cut %ld: the replayed tree (%d names) is no "
				"state from %d on (of %d)\n",
				limit, got.n, from, r->nstates);
		CHECK(j >= 0);
		CHECK_EQ(lf_vol_close(v), 0);
	}
	lf_bdev_unref(b);
	CHECK_EQ(sh("e2fsck -fn %s >%s/fsck.log 2>&1 || { echo cut %ld; cat "
		    "%s/fsck.log; exit 1; }",
		    img, dir, limit, dir),
		 0);
	lunfs_checks++;
	free(r);
}

static void test_power_cuts(const char *what, long step)
{
	char base[128], img[128];
	struct run *r = calloc(1, sizeof(*r));
	long total;
	struct timespec t0, t1;

	snprintf(base, sizeof(base), "%s/base.img", dir);
	snprintf(img, sizeof(img), "%s/run.img", dir);
	/* mke2fs's ext4 (4 KiB blocks, metadata_csum, 64bit, a 4 MiB
	 * journal), without MMP: every recovery would otherwise wait out the
	 * crashed holder's MMP interval (mmp.h), not what this is about. */
	CHECK_EQ(sh("truncate -s %u %s && mkfs.ext4 -q -F -b 4096 %s",
		    IMG_BYTES, base, base),
		 0);

	/* A run without a cut: how many writes, and the end state. */
	total = run_once(base, img, -1, r);
	printf("%s: %ld write commands, %d operations, %d fsyncs, %llu "
	       "commits\n",
	       what, total, r->nstates, r->nfs, r->txn.commits);
	CHECK(r->txn.commits >= (unsigned long long)r->nfs);
	CHECK(total > 50);
	CHECK(r->nfs >= 10);
	free(r);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (getenv("LF_JOURNAL_CUT_STEP"))
		step = atol(getenv("LF_JOURNAL_CUT_STEP"));
	if (step < 1)
		step = 1;
	lunfs_checks = kernel_checks = 0;
	if (getenv("LF_JOURNAL_CUT_ONLY")) {
		check_cut(base, atol(getenv("LF_JOURNAL_CUT_ONLY")), false);
		return;
	}
	for (long n = 0; n <= total; n += step)
		check_cut(base, n, (n / step) % 10 == 3 || n == total);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%s: %u cuts replayed by lunfs, %u by the kernel, %.1f s\n",
	       what, lunfs_checks, kernel_checks,
	       (double)(t1.tv_sec - t0.tv_sec) +
		       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
}

/* The reverse: a journal the kernel wrote, replayed by lunfs. */
static void test_kernel_journal(void)
{
	char img[128], copy[128], mnt[128];
	struct mstate got = {0};
	struct lf_bdev *b;
	struct lf_vol *v;
	struct cut c;
	unsigned char inc[4];
	int fd;

	snprintf(img, sizeof(img), "%s/kern.img", dir);
	snprintf(copy, sizeof(copy), "%s/kcopy.img", dir);
	snprintf(mnt, sizeof(mnt), "%s/kmnt", dir);
	CHECK_EQ(sh("truncate -s 64M %s && mkfs.ext4 -q -F -b 4096 %s", img,
		    img),
		 0);
	/* Metadata the kernel committed to its journal (sync) but has not
	 * checkpointed yet when the image is copied: the copy needs a
	 * replay, as after a crash. */
	CHECK_EQ(sh("mkdir -p %s && mount -o loop,commit=60 %s %s && "
		    "mkdir %s/d0 %s/d1 && "
		    "for i in 1 2 3 4 5 6 7 8; do head -c $((i * 3000)) "
		    "/dev/zero >%s/d$((i %% 2))/k$i; done && rm %s/d1/k3 && "
		    "mv %s/d0/k2 %s/d1/k2m && sync -f %s && cp --sparse=always "
		    "%s %s && umount %s",
		    mnt, img, mnt, mnt, mnt, mnt, mnt, mnt, mnt, mnt, img, copy,
		    mnt),
		 0);
	fd = open(copy, O_RDONLY);
	CHECK(pread(fd, inc, 4, 1024 + 0x60) == 4);
	close(fd);
	CHECK(inc[0] & 4); /* needs_recovery in the copy */
	b = open_cut(copy, &c, -1);
	v = open_vol(b, false);
	CHECK(v != NULL);
	if (v) {
		struct lf_stat st, d0, d1;
		static const int want[] = {1, 4, 5, 6, 7, 8};

		CHECK_EQ(lf_fs_lookup(v, 2, "d0", &d0), 0);
		CHECK_EQ(lf_fs_lookup(v, 2, "d1", &d1), 0);
		for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
			char name[16];
			int k = want[i];

			snprintf(name, sizeof(name), "k%d", k);
			CHECK_EQ(lf_fs_lookup(v, k % 2 ? d1.ino : d0.ino, name,
					      &st),
				 0);
			CHECK_EQ(st.size, 3000 * k);
		}
		CHECK_EQ(lf_fs_lookup(v, d1.ino, "k2m", &st), 0);
		CHECK_EQ(lf_fs_lookup(v, d1.ino, "k3", &st), -ENOENT);
		CHECK_EQ(lf_fs_lookup(v, d0.ino, "k2", &st), -ENOENT);
		CHECK_EQ(lf_vol_close(v), 0);
	}
	lf_bdev_unref(b);
	(void)got;
	CHECK_EQ(sh("e2fsck -fn %s >%s/fsck.log 2>&1 || { cat %s/fsck.log; "
		    "exit 1; }",
		    copy, dir, dir),
		 0);
}

struct fsync_arg {
	struct lf_vol *v;
	uint64_t ino;
	atomic_int done;
	double secs;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *fsync_main(void *arg)
{
	struct fsync_arg *a = arg;
	double t0 = now_s();

	CHECK_EQ(lf_fs_fsync(a->v, a->ino, false), 0);
	a->secs = now_s() - t0;
	atomic_store(&a->done, 1);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* A figure, not an assertion: stat latency while a large transaction
 * commits on a slow device (20 ms a write command). The volume lock is
 * held only for the snapshot, never across the commit's I/O. */
static void measure_stat_during_commit(void)
{
	char img[128], name[32];
	struct fsync_arg a = {0};
	struct lf_stat st, d;
	struct lf_txn_stats ts;
	struct lf_bdev *b;
	struct lf_vol *v;
	struct cut c;
	pthread_t th;
	double lat[20000];
	int n = 0;

	snprintf(img, sizeof(img), "%s/stat.img", dir);
	CHECK_EQ(sh("truncate -s 256M %s", img), 0);
	pass_interval_ms = 600000;
	pass_cache_bytes = 0;
	pass_write_delay_us = 0;
	pass_think_us = 0;
	b = open_cut(img, &c, -1);
	v = open_vol(b, true);
	CHECK(v != NULL);
	if (!v) {
		lf_bdev_unref(b);
		return;
	}
	CHECK_EQ(lf_fs_mkdir(v, 2, "many", 040755, &owner, &d), 0);
	for (int i = 0; i < 12000; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		CHECK_EQ(lf_fs_mknod(v, d.ino, name, S_IFREG | 0644, 0, &owner,
				     &st),
			 0);
	}
	pass_write_delay_us = 20000;
	a.v = v;
	a.ino = st.ino;
	pthread_create(&th, NULL, fsync_main, &a);
	while (!atomic_load(&a.done) && n < 20000) {
		double t0 = now_s();

		snprintf(name, sizeof(name), "f%d", n % 12000);
		lf_fs_lookup(v, d.ino, name, &st);
		lat[n++] = now_s() - t0;
		usleep(200);
	}
	pthread_join(th, NULL);
	pass_write_delay_us = 0;
	lf_txn_get_stats(v, &ts);
	qsort(lat, (size_t)n, sizeof(lat[0]), cmp_double);
	printf("stat during a commit of %llu blocks (fsync %.1f ms on a "
	       "device taking 20 ms a write): %d lookups, median %.0f us, "
	       "max %.0f us; longest snapshot under the lock %.0f us\n",
	       ts.blocks, a.secs * 1e3, n, n ? lat[n / 2] * 1e6 : 0.0,
	       n ? lat[n - 1] * 1e6 : 0.0, (double)ts.lock_ns_max / 1e3);
	CHECK_EQ(lf_vol_close(v), 0);
	lf_bdev_unref(b);
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	snprintf(dir, sizeof(dir), "/tmp/lunfs-test-journal.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 2;
	}
	test_kernel_journal();
	/* Commits only when fsync asks: the workload's writes in a
	 * repeatable order. */
	test_power_cuts("fsync commits", CUT_STEP);
	/* Commits every 2 ms on a device taking 0.3 ms a write, running
	 * beside operations 0.5 ms apart, and a cache of 1 MiB: the
	 * interleavings vary, so a dense sample. */
	pass_interval_ms = 2;
	pass_cache_bytes = 1u << 20;
	pass_write_delay_us = 300;
	pass_think_us = 500;
	test_power_cuts("periodic commits, small cache", 3 * CUT_STEP);
	measure_stat_during_commit();
	if (!getenv("LF_JOURNAL_KEEP"))
		sh("rm -rf %s", dir);
	return check_report("test_journal");
}
