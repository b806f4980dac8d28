/* test_fsops.c — fsimage/fsops.h on real images, checked by e2fsck -fn and,
 * when loop mounts work here, by the kernel's ext4. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fsimage/fsops.h"
#include "fsimage/txn.h"
#include "fsimage/volume_int.h"
#include "tests/unit/check.h"

#define MIB  (1024 * 1024)
#define NBIG 10000

static const struct lf_owner owner = {1000, 1000, false, 0};

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static struct lf_vol *open_img(const char *path, uint64_t size, bool fresh)
{
	struct lf_vol_opts o = {.allow_format = true};
	struct lf_bdev *b = NULL;
	struct lf_vol *v = NULL;
	char err[256] = "";
	int fd;

	if (fresh) {
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || ftruncate(fd, size) < 0) {
			perror(path);
			exit(2);
		}
		close(fd);
	}
	if (lf_bdev_open_file(path, false, &b) < 0) {
		fprintf(stderr, "%s: cannot open\n", path);
		exit(2);
	}
	if (lf_vol_open(b, &o, &v, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		exit(2);
	}
	lf_bdev_unref(b);
	return v;
}

static uint64_t mk(struct lf_vol *v, uint64_t dir, const char *name,
		   uint32_t mode)
{
	struct lf_stat st;
	int r = S_ISDIR(mode) ? lf_fs_mkdir(v, dir, name, mode, &owner, &st)
			      : lf_fs_mknod(v, dir, name, mode, 0, &owner, &st);

	CHECK_EQ(r, 0);
	return r ? 0 : st.ino;
}

static uint64_t ino_of(struct lf_vol *v, uint64_t dir, const char *name)
{
	struct lf_stat st;

	return lf_fs_lookup(v, dir, name, &st) == 0 ? st.ino : 0;
}

static uint32_t nlink_of(struct lf_vol *v, uint64_t ino)
{
	struct lf_stat st;

	return lf_fs_getattr(v, ino, &st) == 0 ? st.nlink : 0;
}

static void fill_rand(unsigned char *p, size_t n, unsigned *seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)rand_r(seed);
}

/* The 10 MiB file: random writes against a model, holes, partial blocks. */
/* lf_fs_read_async(), waited for: the completion may run on another
 * thread. */
struct aread_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	ssize_t r;
};

static void aread_wait_done(void *p, ssize_t r)
{
	struct aread_wait *w = p;

	pthread_mutex_lock(&w->mu);
	w->r = r;
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static ssize_t read_async(struct lf_vol *v, uint64_t ino, void *buf,
			  size_t size, uint64_t off)
{
	struct aread_wait w = {PTHREAD_MUTEX_INITIALIZER,
			       PTHREAD_COND_INITIALIZER, false, 0};

	lf_fs_read_async(v, ino, buf, size, off, aread_wait_done, &w);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	return w.r;
}

/*
 * A bdev over an image file whose commands run on a pool of threads after
 * a random delay, so they complete out of order and long after they were
 * started, as they can over iSCSI: fsops' asynchronous reads then really
 * outlive the inode lock, and a later write can reach the disk before an
 * earlier read does.
 */
#define SLOW_THREADS 4

struct slow_req {
	struct slow_req *next;
	enum lf_bdev_op op;
	const struct iovec *iov;
	int iovcnt;
	uint64_t off, len;
	lf_bdev_done_fn done;
	void *opaque;
};

struct slow_bdev {
	int fd;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct slow_req *head;
	bool stop;
	unsigned seed;
	_Atomic uint64_t fail_len; /* writes of exactly this length fail */
	pthread_t th[SLOW_THREADS];
};

static void *slow_main(void *p)
{
	struct slow_bdev *sb = p;

	for (;;) {
		struct slow_req *q;
		unsigned delay;
		ssize_t n = 0;
		int r = 0;

		pthread_mutex_lock(&sb->mu);
		while (!sb->head && !sb->stop)
			pthread_cond_wait(&sb->cv, &sb->mu);
		q = sb->head;
		if (!q) {
			pthread_mutex_unlock(&sb->mu);
			return NULL;
		}
		sb->head = q->next;
		delay = rand_r(&sb->seed) % 400;
		pthread_mutex_unlock(&sb->mu);
		if (q->op == LF_BDEV_READ)
			usleep(delay); /* reads are the ones left behind */
		if (q->op == LF_BDEV_READ)
			n = preadv(sb->fd, q->iov, q->iovcnt, (off_t)q->off);
		else if (q->op == LF_BDEV_WRITE && q->len == sb->fail_len)
			n = -1, errno = EIO;
		else if (q->op == LF_BDEV_WRITE)
			n = pwritev(sb->fd, q->iov, q->iovcnt, (off_t)q->off);
		else if (q->op == LF_BDEV_FLUSH)
			n = fdatasync(sb->fd) ? -1 : 0;
		else
			n = fallocate(sb->fd,
				      FALLOC_FL_PUNCH_HOLE |
					      FALLOC_FL_KEEP_SIZE,
				      (off_t)q->off, (off_t)q->len)
				    ? -1
				    : 0;
		if (n < 0)
			r = -errno;
		else if (q->op <= LF_BDEV_WRITE && (uint64_t)n != q->len)
			r = -EIO;
		q->done(q->opaque, r);
		free(q);
	}
}

static int slow_submit(void *impl, enum lf_bdev_op op, const struct iovec *iov,
		       int iovcnt, uint64_t off, uint64_t len,
		       lf_bdev_done_fn done, void *opaque)
{
	struct slow_bdev *sb = impl;
	struct slow_req *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	*q = (struct slow_req){NULL, op, iov, iovcnt, off, len, done, opaque};
	pthread_mutex_lock(&sb->mu);
	q->next = sb->head; /* LIFO: newer commands overtake older ones */
	sb->head = q;
	pthread_cond_signal(&sb->cv);
	pthread_mutex_unlock(&sb->mu);
	return 0;
}

static void slow_close(void *impl)
{
	struct slow_bdev *sb = impl;

	pthread_mutex_lock(&sb->mu);
	sb->stop = true;
	pthread_cond_broadcast(&sb->cv);
	pthread_mutex_unlock(&sb->mu);
	for (int i = 0; i < SLOW_THREADS; i++)
		pthread_join(sb->th[i], NULL);
	close(sb->fd);
	free(sb);
}

static const struct lf_bdev_ops slow_ops = {.submit = slow_submit,
					    .close = slow_close};

static struct lf_vol *open_slow_img(const char *path, uint64_t size,
				    struct slow_bdev **sbp)
{
	struct lf_vol_opts o = {.allow_format = true};
	struct lf_bdev_info info = {.size = size,
				    .block_size = 512,
				    .phys_block_size = 4096,
				    .max_transfer = 1u << 20,
				    .can_unmap = true,
				    .unmap_zeroes = true};
	struct slow_bdev *sb = calloc(1, sizeof(*sb));
	struct lf_bdev *b;
	struct lf_vol *v = NULL;
	char err[256] = "";

	sb->fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (sb->fd < 0 || ftruncate(sb->fd, (off_t)size) < 0) {
		perror(path);
		exit(2);
	}
	sb->seed = 7;
	pthread_mutex_init(&sb->mu, NULL);
	pthread_cond_init(&sb->cv, NULL);
	for (int i = 0; i < SLOW_THREADS; i++)
		pthread_create(&sb->th[i], NULL, slow_main, sb);
	if (sbp)
		*sbp = sb;
	snprintf(info.desc, sizeof(info.desc), "slow://%s", path);
	b = lf_bdev_new(&slow_ops, sb, &info);
	if (!b || lf_vol_open(b, &o, &v, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		exit(2);
	}
	lf_bdev_unref(b);
	return v;
}

static void test_data(struct lf_vol *v, const char *model_path)
{
	size_t fsz = 10 * MIB;
	unsigned char *model = calloc(1, fsz), *buf = malloc(6 * MIB);
	unsigned seed = 42;
	uint64_t f = mk(v, LF_ROOT_INO, "data", S_IFREG | 0644);
	uint64_t maxend = 0;
	struct lf_stat st;
	FILE *fp;

	CHECK_EQ(lf_fs_open(v, f, O_RDWR), 0);
	for (int i = 0; i < 200; i++) {
		uint64_t off = (uint64_t)rand_r(&seed) % (fsz - 1);
		size_t len = 1 + rand_r(&seed) % (i % 10 == 0 ? MIB : 9000);

		if (off + len > fsz)
			len = fsz - off;
		fill_rand(buf, len, &seed);
		memcpy(model + off, buf, len);
		CHECK_EQ(lf_fs_write(v, f, buf, len, off), (ssize_t)len);
		if (off + len > maxend)
			maxend = off + len;
	}
	/* last byte so the size is exactly 10 MiB */
	CHECK_EQ(lf_fs_write(v, f, "Z", 1, fsz - 1), 1);
	model[fsz - 1] = 'Z';
	CHECK_EQ(lf_fs_getattr(v, f, &st), 0);
	CHECK_EQ(st.size, fsz);
	for (uint64_t off = 0; off < fsz;) {
		size_t len = 1 + rand_r(&seed) % (3 * MIB / 2);
		ssize_t n;

		if (off + len > fsz)
			len = fsz - off;
		n = lf_fs_read(v, f, buf, len, off);
		CHECK_EQ(n, (ssize_t)len);
		CHECK(n == (ssize_t)len && memcmp(buf, model + off, len) == 0);
		/* the asynchronous path, on whole blocks and on anything */
		uint64_t ao = off / 4096 * 4096;
		size_t al = (len + 4095) / 4096 * 4096;

		n = read_async(v, f, buf, al, ao);
		CHECK_EQ(n, (ssize_t)(ao + al > fsz ? fsz - ao : al));
		CHECK(n > 0 && memcmp(buf, model + ao, (size_t)n) == 0);
		n = read_async(v, f, buf, len, off);
		CHECK(n == (ssize_t)len && memcmp(buf, model + off, len) == 0);
		off += len;
	}
	CHECK_EQ(lf_fs_read(v, f, buf, 100, fsz + 5), 0);
	CHECK_EQ(lf_fs_read(v, f, buf, 100, fsz - 10), 10);

	/* truncate shrink to a partial block, then grow: zeros after */
	struct lf_setattr sa = {.size = 3 * MIB + 1234};

	CHECK_EQ(lf_fs_setattr(v, f, LF_SET_SIZE, &sa, &st), 0);
	CHECK_EQ(st.size, 3 * MIB + 1234);
	memset(model + 3 * MIB + 1234, 0, fsz - (3 * MIB + 1234));
	sa.size = 4 * MIB;
	CHECK_EQ(lf_fs_setattr(v, f, LF_SET_SIZE, &sa, &st), 0);
	CHECK_EQ(lf_fs_read(v, f, buf, 2 * MIB, 2 * MIB), 2 * MIB);
	CHECK(memcmp(buf, model + 2 * MIB, 2 * MIB) == 0);

	/* fallocate: punch a hole, zero a range, preallocate past EOF */
	CHECK_EQ(lf_fs_fallocate(v, f,
				 FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				 100000, 50000),
		 0);
	memset(model + 100000, 0, 50000);
	CHECK_EQ(lf_fs_fallocate(v, f, FALLOC_FL_ZERO_RANGE, 300001, 70000), 0);
	memset(model + 300001, 0, 70000);
	CHECK_EQ(lf_fs_fallocate(v, f, FALLOC_FL_KEEP_SIZE, 4 * MIB, MIB), 0);
	/* Collapse and insert: test_fsops_range.c; not block aligned here. */
	CHECK_EQ(lf_fs_fallocate(v, f, FALLOC_FL_COLLAPSE_RANGE, 1, 4096),
		 -EINVAL);
	CHECK_EQ(lf_fs_getattr(v, f, &st), 0);
	CHECK_EQ(st.size, 4 * MIB);
	CHECK_EQ(lf_fs_read(v, f, buf, 4 * MIB, 0), 4 * MIB);
	CHECK(memcmp(buf, model, 4 * MIB) == 0);
	memset(buf, 0x77, 4 * MIB); /* holes must come back as zeros */
	CHECK_EQ(read_async(v, f, buf, 4 * MIB, 0), 4 * MIB);
	CHECK(memcmp(buf, model, 4 * MIB) == 0);
	/* preallocated (unwritten) then written partially */
	CHECK_EQ(lf_fs_fallocate(v, f, 0, 4 * MIB, MIB), 0);
	CHECK_EQ(lf_fs_write(v, f, "hello", 5, 4 * MIB + 10), 5);
	memcpy(model + 4 * MIB + 10, "hello", 5);
	CHECK_EQ(lf_fs_getattr(v, f, &st), 0);
	CHECK_EQ(st.size, 5 * MIB);
	CHECK_EQ(lf_fs_read(v, f, buf, 5 * MIB, 0), 5 * MIB);
	CHECK(memcmp(buf, model, 5 * MIB) == 0);
	memset(buf, 0x77, 5 * MIB); /* unwritten extents too */
	CHECK_EQ(read_async(v, f, buf, 5 * MIB, 0), 5 * MIB);
	CHECK(memcmp(buf, model, 5 * MIB) == 0);
	CHECK_EQ(read_async(v, f, buf, 4096, 5 * MIB), 0);

	fp = fopen(model_path, "w");
	if (fp) {
		fwrite(model, 1, 5 * MIB, fp);
		fclose(fp);
	}

	/* sparse file with far holes */
	uint64_t h = mk(v, LF_ROOT_INO, "holes", S_IFREG | 0600);

	CHECK_EQ(lf_fs_write(v, h, "abc", 3, 5 * MIB), 3);
	CHECK_EQ(lf_fs_read(v, h, buf, 10, 5 * MIB - 5), 8);
	CHECK(memcmp(buf, "\0\0\0\0\0abc", 8) == 0);
	CHECK_EQ(lf_fs_getattr(v, h, &st), 0);
	CHECK_EQ(st.blocks, 8);
	CHECK_EQ(lf_fs_write(v, h, "x", 1, (uint64_t)17 << 40), -EFBIG);
	/* shrink to a size in the hole past the last extent, and in the hole
	 * before the first one */
	{
		struct lf_setattr hs = {.size = 7 * MIB};

		CHECK_EQ(lf_fs_setattr(v, h, LF_SET_SIZE, &hs, NULL), 0);
		hs.size = 6 * MIB;
		CHECK_EQ(lf_fs_setattr(v, h, LF_SET_SIZE, &hs, &st), 0);
		CHECK_EQ(st.blocks, 8);
		hs.size = MIB;
		CHECK_EQ(lf_fs_setattr(v, h, LF_SET_SIZE, &hs, &st), 0);
		CHECK_EQ(st.blocks, 0);
		CHECK_EQ(lf_fs_write(v, h, "abc", 3, 5 * MIB), 3);
	}
	CHECK_EQ(lf_fs_open(v, h, O_WRONLY | O_TRUNC), 0);
	CHECK_EQ(lf_fs_getattr(v, h, &st), 0);
	CHECK_EQ(st.size, 0);
	CHECK_EQ(st.blocks, 0);
	free(model);
	free(buf);
}

static void test_attrs(struct lf_vol *v)
{
	uint64_t f = mk(v, LF_ROOT_INO, "attrs", S_IFREG | 06755);
	struct lf_setattr sa = {0};
	struct lf_stat st;

	sa.mode = 0640;
	sa.uid = 77;
	sa.gid = 88;
	sa.atime = (struct timespec){1234567890, 123456789};
	sa.mtime = (struct timespec){(time_t)5000000000LL, 999999999};
	CHECK_EQ(lf_fs_setattr(v, f,
			       LF_SET_MODE | LF_SET_UID | LF_SET_GID |
				       LF_SET_ATIME | LF_SET_MTIME,
			       &sa, &st),
		 0);
	CHECK_EQ(lf_fs_getattr(v, f, &st), 0);
	CHECK_EQ(st.mode, S_IFREG | 0640);
	CHECK_EQ(st.uid, 77);
	CHECK_EQ(st.gid, 88);
	CHECK_EQ(st.atime.tv_sec, 1234567890);
	CHECK_EQ(st.atime.tv_nsec, 123456789);
	CHECK_EQ(st.mtime.tv_sec, 5000000000LL);
	CHECK_EQ(st.mtime.tv_nsec, 999999999);
	CHECK(st.btime.tv_sec > 1600000000);
	sa.mode = 06755;
	CHECK_EQ(lf_fs_setattr(v, f, LF_SET_MODE, &sa, NULL), 0);
	CHECK_EQ(lf_fs_setattr(v, f, LF_SET_KILL_SUID, &sa, &st), 0);
	CHECK_EQ(st.mode, S_IFREG | 0755);
	CHECK_EQ(lf_fs_open(v, LF_ROOT_INO, O_RDWR), -EISDIR);
	CHECK_EQ(lf_fs_open(v, LF_ROOT_INO, O_RDONLY), 0);

	/* setgid directory: group and bit inherited */
	uint64_t g = mk(v, LF_ROOT_INO, "sgid", S_IFDIR | 02775);

	sa.gid = 4242;
	CHECK_EQ(lf_fs_setattr(v, g, LF_SET_GID, &sa, NULL), 0);
	CHECK_EQ(lf_fs_mkdir(v, g, "sub", 0755, &owner, &st), 0);
	CHECK_EQ(st.gid, 4242);
	CHECK_EQ(st.mode, S_IFDIR | 02755);
	CHECK_EQ(lf_fs_mknod(v, g, "f", S_IFREG | 0644, 0, &owner, &st), 0);
	CHECK_EQ(st.gid, 4242);
	CHECK_EQ(st.mode, S_IFREG | 0644);

	/* special files */
	CHECK_EQ(lf_fs_mknod(v, LF_ROOT_INO, "fifo", S_IFIFO | 0600, 0, &owner,
			     &st),
		 0);
	CHECK_EQ(st.mode, S_IFIFO | 0600);
	CHECK_EQ(lf_fs_mknod(v, LF_ROOT_INO, "sock", S_IFSOCK | 0600, 0, &owner,
			     &st),
		 0);
	CHECK_EQ(lf_fs_mknod(v, LF_ROOT_INO, "null", S_IFCHR | 0666,
			     makedev(1, 3), &owner, &st),
		 0);
	CHECK_EQ(lf_fs_getattr(v, st.ino, &st), 0);
	CHECK_EQ(st.rdev, makedev(1, 3));
	CHECK_EQ(lf_fs_mknod(v, LF_ROOT_INO, "bigdev", S_IFBLK | 0600,
			     makedev(259, 70000), &owner, &st),
		 0);
	CHECK_EQ(lf_fs_getattr(v, st.ino, &st), 0);
	CHECK_EQ(st.rdev, makedev(259, 70000));
	CHECK_EQ(lf_fs_mknod(v, LF_ROOT_INO, "fifo", S_IFREG | 0600, 0, &owner,
			     &st),
		 -EEXIST);
	char longname[300];

	memset(longname, 'n', 256);
	longname[256] = 0;
	CHECK_EQ(lf_fs_mknod(v, LF_ROOT_INO, longname, S_IFREG | 0600, 0,
			     &owner, &st),
		 -ENAMETOOLONG);
	CHECK_EQ(lf_fs_lookup(v, LF_ROOT_INO, longname, &st), -ENAMETOOLONG);
	longname[255] = 0;
	CHECK_EQ(lf_fs_mknod(v, LF_ROOT_INO, longname, S_IFREG | 0600, 0,
			     &owner, &st),
		 0);
}

static void test_links(struct lf_vol *v)
{
	char buf[5000], target[3000];
	struct lf_stat st;
	uint64_t f = mk(v, LF_ROOT_INO, "lnk", S_IFREG | 0644), ino = 0;
	uint64_t d;

	CHECK_EQ(lf_fs_link(v, f, LF_ROOT_INO, "lnk2", &st), 0);
	CHECK_EQ(st.nlink, 2);
	CHECK_EQ(lf_fs_link(v, f, LF_ROOT_INO, "lnk2", &st), -EEXIST);
	CHECK_EQ(lf_fs_link(v, LF_ROOT_INO, LF_ROOT_INO, "rootlink", &st),
		 -EPERM);
	CHECK_EQ(lf_fs_unlink(v, LF_ROOT_INO, "lnk", &ino), 0);
	CHECK_EQ(ino, f);
	CHECK_EQ(nlink_of(v, f), 1);
	CHECK_EQ(lf_fs_unlink(v, LF_ROOT_INO, "lnk", &ino), -ENOENT);

	CHECK_EQ(lf_fs_symlink(v, LF_ROOT_INO, "fast", "short/target", &owner,
			       &st),
		 0);
	CHECK_EQ(st.size, 12);
	CHECK_EQ(lf_fs_readlink(v, st.ino, buf, sizeof(buf)), 12);
	CHECK_STR(buf, "short/target");
	memset(target, 't', 2000);
	target[2000] = 0;
	CHECK_EQ(lf_fs_symlink(v, LF_ROOT_INO, "slow", target, &owner, &st), 0);
	CHECK_EQ(st.size, 2000);
	CHECK_EQ(lf_fs_readlink(v, st.ino, buf, sizeof(buf)), 2000);
	CHECK_STR(buf, target);

	d = mk(v, LF_ROOT_INO, "d1", S_IFDIR | 0755);
	CHECK_EQ(nlink_of(v, d), 2);
	uint32_t rootn = nlink_of(v, LF_ROOT_INO);
	uint64_t sub = mk(v, d, "sub", S_IFDIR | 0755);

	CHECK_EQ(nlink_of(v, d), 3);
	CHECK_EQ(lf_fs_rmdir(v, LF_ROOT_INO, "d1", NULL), -ENOTEMPTY);
	CHECK_EQ(lf_fs_unlink(v, LF_ROOT_INO, "d1", NULL), -EISDIR);
	CHECK_EQ(lf_fs_rmdir(v, LF_ROOT_INO, "lnk2", NULL), -ENOTDIR);
	CHECK_EQ(lf_fs_rmdir(v, d, "sub", &ino), 0);
	CHECK_EQ(ino, sub);
	CHECK_EQ(nlink_of(v, d), 2);
	CHECK_EQ(lf_fs_getattr(v, sub, &st), -ESTALE);
	CHECK_EQ(lf_fs_rmdir(v, LF_ROOT_INO, "d1", NULL), 0);
	CHECK_EQ(nlink_of(v, LF_ROOT_INO), rootn - 1);
}

static void test_rename(struct lf_vol *v)
{
	uint64_t A = mk(v, LF_ROOT_INO, "A", S_IFDIR | 0755);
	uint64_t B = mk(v, LF_ROOT_INO, "B", S_IFDIR | 0755);
	uint64_t a1 = mk(v, A, "f1", S_IFREG | 0644);
	uint64_t a2 = mk(v, A, "f2", S_IFREG | 0644);
	uint64_t ad = mk(v, A, "dir", S_IFDIR | 0755);
	uint64_t add = mk(v, ad, "deep", S_IFDIR | 0755);
	uint64_t bd = mk(v, B, "empty", S_IFDIR | 0755);
	uint64_t rep = 0;
	struct lf_stat st;

	/* plain rename in a directory, then over an existing file */
	CHECK_EQ(lf_fs_rename(v, A, "f1", A, "g1", 0, &rep), 0);
	CHECK_EQ(rep, 0);
	CHECK_EQ(ino_of(v, A, "g1"), a1);
	CHECK_EQ(ino_of(v, A, "f1"), 0);
	CHECK_EQ(lf_fs_rename(v, A, "g1", A, "f2", RENAME_NOREPLACE, &rep),
		 -EEXIST);
	CHECK_EQ(lf_fs_rename(v, A, "g1", A, "f2", 0, &rep), 0);
	CHECK_EQ(rep, a2);
	CHECK_EQ(lf_fs_getattr(v, a2, &st), -ESTALE);
	CHECK_EQ(ino_of(v, A, "f2"), a1);
	/* type mismatches */
	CHECK_EQ(lf_fs_rename(v, A, "f2", B, "empty", 0, NULL), -EISDIR);
	CHECK_EQ(lf_fs_rename(v, B, "empty", A, "f2", 0, NULL), -ENOTDIR);
	/* dir into its own subtree */
	CHECK_EQ(lf_fs_rename(v, A, "dir", add, "x", 0, NULL), -EINVAL);
	CHECK_EQ(lf_fs_rename(v, LF_ROOT_INO, "A", ad, "x", 0, NULL), -EINVAL);
	CHECK_EQ(lf_fs_rename(v, LF_ROOT_INO, "A", A, "x", 0, NULL), -EINVAL);
	/* non-empty target dir */
	mk(v, bd, "occupant", S_IFREG | 0644);
	CHECK_EQ(lf_fs_rename(v, A, "dir", B, "empty", 0, NULL), -ENOTEMPTY);
	CHECK_EQ(lf_fs_unlink(v, bd, "occupant", NULL), 0);
	/* dir over empty dir across parents */
	CHECK_EQ(nlink_of(v, A), 3);
	CHECK_EQ(nlink_of(v, B), 3);
	CHECK_EQ(lf_fs_rename(v, A, "dir", B, "empty", 0, &rep), 0);
	CHECK_EQ(rep, bd);
	CHECK_EQ(nlink_of(v, A), 2);
	CHECK_EQ(nlink_of(v, B), 3);
	CHECK_EQ(ino_of(v, ad, ".."), B);
	CHECK_EQ(ino_of(v, B, "empty"), ad);
	/* dir move to a new name across parents */
	CHECK_EQ(lf_fs_rename(v, B, "empty", A, "back", 0, &rep), 0);
	CHECK_EQ(nlink_of(v, A), 3);
	CHECK_EQ(nlink_of(v, B), 2);
	CHECK_EQ(ino_of(v, ad, ".."), A);
	/* exchange a file and a dir across parents */
	uint64_t bf = mk(v, B, "file", S_IFREG | 0644);

	CHECK_EQ(
		lf_fs_rename(v, A, "back", B, "nothere", RENAME_EXCHANGE, NULL),
		-ENOENT);
	CHECK_EQ(lf_fs_rename(v, A, "back", B, "file", RENAME_EXCHANGE, &rep),
		 0);
	CHECK_EQ(ino_of(v, A, "back"), bf);
	CHECK_EQ(ino_of(v, B, "file"), ad);
	CHECK_EQ(ino_of(v, ad, ".."), B);
	CHECK_EQ(nlink_of(v, A), 2);
	CHECK_EQ(nlink_of(v, B), 3);
	/* exchange within a dir */
	CHECK_EQ(lf_fs_rename(v, A, "back", A, "f2", RENAME_EXCHANGE, NULL), 0);
	CHECK_EQ(ino_of(v, A, "back"), a1);
	CHECK_EQ(ino_of(v, A, "f2"), bf);
	CHECK_EQ(lf_fs_rename(v, A, "f2", A, "f2", 0, NULL), 0);
	CHECK_EQ(lf_fs_rename(v, A, "missing", A, "x", 0, NULL), -ENOENT);
	CHECK_EQ(lf_fs_rename(v, A, "f2", A, "x",
			      RENAME_EXCHANGE | RENAME_NOREPLACE, NULL),
		 -EINVAL);
}

static void test_xattr(struct lf_vol *v)
{
	uint64_t f = mk(v, LF_ROOT_INO, "xa", S_IFREG | 0644);
	char buf[8192], big[6000];

	CHECK_EQ(lf_fs_setxattr(v, f, "user.color", "blue", 4, 0), 0);
	CHECK_EQ(lf_fs_setxattr(v, f, "trusted.t", "tt", 2, 0), 0);
	CHECK_EQ(lf_fs_setxattr(v, f, "security.s", "ss", 2, 0), 0);
	CHECK_EQ(lf_fs_setxattr(v, f, "user.color", "red", 3, XATTR_CREATE),
		 -EEXIST);
	CHECK_EQ(lf_fs_setxattr(v, f, "user.none", "x", 1, XATTR_REPLACE),
		 -ENODATA);
	CHECK_EQ(lf_fs_setxattr(v, f, "user.color", "red", 3, XATTR_REPLACE),
		 0);
	CHECK_EQ(lf_fs_getxattr(v, f, "user.color", NULL, 0), 3);
	CHECK_EQ(lf_fs_getxattr(v, f, "user.color", buf, 2), -ERANGE);
	CHECK_EQ(lf_fs_getxattr(v, f, "user.color", buf, sizeof(buf)), 3);
	CHECK(memcmp(buf, "red", 3) == 0);
	CHECK_EQ(lf_fs_getxattr(v, f, "user.none", buf, sizeof(buf)), -ENODATA);
	ssize_t n = lf_fs_listxattr(v, f, NULL, 0);

	CHECK_EQ(n, (ssize_t)(sizeof("user.color") + sizeof("trusted.t") +
			      sizeof("security.s")));
	CHECK_EQ(lf_fs_listxattr(v, f, buf, 3), -ERANGE);
	CHECK_EQ(lf_fs_listxattr(v, f, buf, sizeof(buf)), n);
	memset(big, 'b', sizeof(big));
	CHECK_EQ(lf_fs_setxattr(v, f, "user.big", big, sizeof(big), 0),
		 -ENOSPC);
	CHECK_EQ(lf_fs_setxattr(v, f, "user.mid", big, 2000, 0), 0);
	CHECK_EQ(lf_fs_getxattr(v, f, "user.mid", buf, sizeof(buf)), 2000);
	CHECK_EQ(lf_fs_removexattr(v, f, "trusted.t"), 0);
	CHECK_EQ(lf_fs_removexattr(v, f, "trusted.t"), -ENODATA);
	CHECK_EQ(lf_fs_setxattr(v, f, "bogus.x", "1", 1, 0), -EOPNOTSUPP);
}

struct rd_ctx {
	unsigned char *seen;
	int count, dups, limit, got;
	uint64_t next;
	uint64_t base;
};

static int rd_cb(void *p, const char *name, size_t len, uint64_t ino,
		 uint32_t type, uint64_t next)
{
	struct rd_ctx *c = p;

	if (c->got == c->limit)
		return 1;
	c->got++;
	c->count++;
	c->next = next;
	if (len > 1 && len < 16 && name[0] == 'f') {
		char n[16];
		int i;

		memcpy(n, name + 1, len - 1);
		n[len - 1] = 0;
		i = atoi(n);
		if (i >= 0 && i < NBIG && c->seen[i]++)
			c->dups++;
	}
	return 0;
}

static void test_bigdir(struct lf_vol *v)
{
	uint64_t d = mk(v, LF_ROOT_INO, "big", S_IFDIR | 0755);
	struct rd_ctx c = {.seen = calloc(1, NBIG), .limit = 97};
	char name[32];
	int bad = 0, missing = 0;
	struct lf_stat st;

	for (int i = 0; i < NBIG; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		if (lf_fs_mknod(v, d, name, S_IFREG | 0644, 0, &owner, &st))
			bad++;
	}
	CHECK_EQ(bad, 0);
	for (int i = 0; i < NBIG; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		if (lf_fs_lookup(v, d, name, &st) || !S_ISREG(st.mode))
			missing++;
	}
	CHECK_EQ(missing, 0);
	CHECK_EQ(lf_fs_lookup(v, d, "f10000", &st), -ENOENT);
	do {
		c.got = 0;
		CHECK_EQ(lf_fs_readdir(v, d, c.next, rd_cb, &c), 0);
		/* Changes elsewhere in the directory must not disturb the
		 * walk: unlink and recreate a name already returned. */
		if (c.count >= 500 && c.count < 500 + 97) {
			CHECK_EQ(lf_fs_unlink(v, d, "f1", NULL), 0);
			CHECK_EQ(lf_fs_mknod(v, d, "zz", S_IFREG | 0644, 0,
					     &owner, &st),
				 0);
		}
	} while (c.got > 0);
	/* the new name may or may not show up */
	CHECK(c.count == NBIG + 2 || c.count == NBIG + 3);
	CHECK_EQ(c.dups, 0);
	free(c.seen);
	/* remove half to exercise unlink in a large directory */
	bad = 0;
	for (int i = 0; i < NBIG; i += 2) {
		snprintf(name, sizeof(name), "f%d", i);
		if (lf_fs_unlink(v, d, name, NULL))
			bad++;
	}
	CHECK_EQ(bad, 0);
	CHECK_EQ(lf_fs_lookup(v, d, "f2", &st), -ENOENT);
	CHECK_EQ(lf_fs_lookup(v, d, "f3", &st), 0);
}

/* Create and unlink rates in one large directory (printed, and bounded
 * loosely so a quadratic regression shows). */
static void test_dir_rates(struct lf_vol *v)
{
	uint64_t d = mk(v, LF_ROOT_INO, "rates", S_IFDIR | 0755);
	char name[32];
	int bad = 0;
	double t0, tc, tu;
	struct lf_stat st;

	t0 = now_s();
	for (int i = 0; i < NBIG; i++) {
		snprintf(name, sizeof(name), "file-%06d", i);
		if (lf_fs_mknod(v, d, name, S_IFREG | 0644, 0, &owner, &st))
			bad++;
	}
	tc = now_s() - t0;
	t0 = now_s();
	for (int i = 0; i < NBIG; i++) {
		/* not in creation order: unlink must not depend on it */
		snprintf(name, sizeof(name), "file-%06d",
			 (int)((i * 7919L) % NBIG));
		if (lf_fs_unlink(v, d, name, NULL))
			bad++;
	}
	tu = now_s() - t0;
	CHECK_EQ(bad, 0);
	printf("directory of %d: create %.0f files/s, unlink %.0f files/s\n",
	       NBIG, NBIG / tc, NBIG / tu);
	CHECK(NBIG / tc > 2000);
	CHECK(NBIG / tu > 2000);
	CHECK_EQ(lf_fs_rmdir(v, LF_ROOT_INO, "rates", NULL), 0);
}

/* Names of every length filling and refilling directory blocks, up to the
 * checksum tail; checked by e2fsck, the kernel and a reopen. */
#define NMIX 600

static void mix_name(char *buf, int i, int gen)
{
	int len = 1 + (i * 37 + gen * 101) % 255;

	memset(buf, 'a' + i % 26, len);
	snprintf(buf, len + 1 < 12 ? len + 1 : 12, "%d_%d", i, gen);
	if (len >= 12)
		buf[11] = '.';
	buf[len] = 0;
}

static void test_dir_mix(struct lf_vol *v)
{
	uint64_t d = mk(v, LF_ROOT_INO, "mix", S_IFDIR | 0755);
	char name[300];
	int bad = 0;
	struct lf_stat st;

	for (int i = 0; i < NMIX; i++) {
		mix_name(name, i, 0);
		if (lf_fs_mknod(v, d, name, S_IFREG | 0644, 0, &owner, &st))
			bad++;
	}
	for (int i = 0; i < NMIX; i += 3) {
		mix_name(name, i, 0);
		if (lf_fs_unlink(v, d, name, NULL))
			bad++;
		mix_name(name, i, 1);
		if (lf_fs_mknod(v, d, name, S_IFREG | 0644, 0, &owner, &st))
			bad++;
	}
	for (int i = 1; i < NMIX; i += 3) {
		mix_name(name, i, 0);
		if (lf_fs_rename(v, d, name, d, i % 2 ? "x" : "y", 0, NULL))
			bad++;
	}
	CHECK_EQ(bad, 0);
	for (int i = 0; i < NMIX; i++) {
		mix_name(name, i, i % 3 == 0);
		if (i % 3 != 1 && lf_fs_lookup(v, d, name, &st))
			bad++;
	}
	CHECK_EQ(bad, 0);
	CHECK(ino_of(v, d, "x") != 0);
	CHECK(ino_of(v, d, "y") != 0);
}

static void test_orphans(struct lf_vol *v)
{
	uint64_t f = mk(v, LF_ROOT_INO, "orphan", S_IFREG | 0644);
	uint64_t g = mk(v, LF_ROOT_INO, "orphan2", S_IFREG | 0644);
	struct lf_stat st;
	char buf[16];

	CHECK_EQ(lf_fs_write(v, f, "still here", 10, 8192), 10);
	CHECK_EQ(lf_fs_write(v, g, "kept open", 9, 0), 9);
	lf_fs_iget(v, f);
	lf_fs_iget(v, f);
	lf_fs_iget(v, g);
	CHECK_EQ(lf_fs_unlink(v, LF_ROOT_INO, "orphan", NULL), 0);
	CHECK_EQ(lf_fs_unlink(v, LF_ROOT_INO, "orphan2", NULL), 0);
	CHECK_EQ(lf_fs_getattr(v, f, &st), 0);
	CHECK_EQ(st.nlink, 0);
	CHECK_EQ(lf_fs_read(v, f, buf, 10, 8192), 10);
	CHECK(memcmp(buf, "still here", 10) == 0);
	CHECK_EQ(lf_fs_write(v, f, "more", 4, 0), 4);
	lf_fs_iput(v, f, 1);
	CHECK_EQ(lf_fs_getattr(v, f, &st), 0);
	lf_fs_iput(v, f, 1);
	CHECK_EQ(lf_fs_getattr(v, f, &st), -ESTALE);
	/* g stays held: lf_vol_close must free it */
}

static void test_statfs(struct lf_vol *v)
{
	struct statvfs s;

	CHECK_EQ(lf_fs_statfs(v, &s), 0);
	CHECK_EQ(s.f_bsize, 4096);
	CHECK_EQ(s.f_namemax, 255);
	CHECK(s.f_blocks > 100000 && s.f_blocks <= 131072);
	CHECK(s.f_bfree < s.f_blocks && s.f_bfree > s.f_blocks / 2);
	CHECK(s.f_bavail <= s.f_bfree);
	CHECK(s.f_files > 10000 && s.f_ffree < s.f_files);
}

static int run(const char *cmd)
{
	int r = system(cmd);

	if (r)
		fprintf(stderr, "command failed (%d): %s\n", r, cmd);
	return r;
}

static void test_enospc(const char *dir)
{
	char img[512], cmd[1100];
	struct lf_vol *v;
	char *buf = malloc(MIB);
	uint64_t f, off = 0;
	ssize_t n = 0;
	int files = 0;

	snprintf(img, sizeof(img), "%s/small.img", dir);
	v = open_img(img, 16 * MIB, true);
	memset(buf, 0xab, MIB);
	f = mk(v, LF_ROOT_INO, "fill", S_IFREG | 0644);
	while ((n = lf_fs_write(v, f, buf, MIB, off)) > 0)
		off += n;
	CHECK_EQ(n, -ENOSPC);
	CHECK(off > 4 * MIB);
	/* full: metadata ops fail cleanly too */
	for (int i = 0; i < 5000; i++) {
		char name[32];
		struct lf_stat st;

		snprintf(name, sizeof(name), "n%d", i);
		if (lf_fs_mknod(v, LF_ROOT_INO, name, S_IFREG, 0, &owner, &st))
			break;
		files++;
	}
	CHECK(files < 5000);
	CHECK_EQ(lf_vol_close(v), 0);
	snprintf(cmd, sizeof(cmd), "e2fsck -fn %s >%s/full.fsck 2>&1", img,
		 dir);
	CHECK_EQ(run(cmd), 0);
	/* Freeing blocks on the full volume: the file ends on the last
	 * block of the filesystem, which ext2fs_punch cannot free. */
	v = open_img(img, 0, false);
	CHECK_EQ(lf_fs_fallocate(v, f,
				 FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				 off - 8192, 8192),
		 0);
	CHECK_EQ(lf_fs_fallocate(v, f,
				 FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				 2 * MIB, MIB),
		 0);
	{
		struct lf_setattr sa = {.size = MIB};
		struct lf_stat st;

		CHECK_EQ(lf_fs_setattr(v, f, LF_SET_SIZE, &sa, &st), 0);
		CHECK_EQ(st.blocks, MIB / 512);
	}
	CHECK_EQ(lf_fs_write(v, f, buf, MIB, MIB), MIB);
	CHECK_EQ(lf_vol_close(v), 0);
	snprintf(cmd, sizeof(cmd), "e2fsck -fn %s >%s/small.fsck 2>&1", img,
		 dir);
	CHECK_EQ(run(cmd), 0);
	/* Fill it up again and unlink the file that filled it. */
	v = open_img(img, 0, false);
	off = 2 * MIB;
	while ((n = lf_fs_write(v, f, buf, MIB, off)) > 0)
		off += n;
	CHECK_EQ(n, -ENOSPC);
	CHECK_EQ(lf_fs_unlink(v, LF_ROOT_INO, "fill", NULL), 0);
	{
		struct statvfs s;

		CHECK_EQ(lf_fs_statfs(v, &s), 0);
		CHECK(s.f_bfree * s.f_bsize >= off);
	}
	f = mk(v, LF_ROOT_INO, "again", S_IFREG | 0644);
	CHECK_EQ(lf_fs_write(v, f, buf, MIB, 0), MIB);
	CHECK_EQ(lf_vol_close(v), 0);
	snprintf(cmd, sizeof(cmd), "e2fsck -fn %s >%s/small2.fsck 2>&1", img,
		 dir);
	CHECK_EQ(run(cmd), 0);
	free(buf);
}

/* ---- the block-range allocation path of lf_fs_write ---- */

#define MAP_SIZE (4 * MIB)

/* Extent records debugfs lists for path (-1 if debugfs failed). */
static int extent_count(const char *img, const char *path)
{
	char cmd[1200];
	FILE *p;
	int n = -1, c;

	snprintf(cmd, sizeof(cmd),
		 "debugfs -R 'ex %s' %s 2>/dev/null | grep -c '^ *[0-9]*/ "
		 "*[0-9]*  *[0-9]*/' ",
		 path, img);
	p = popen(cmd, "r");
	if (p) {
		if (fscanf(p, "%d", &c) == 1)
			n = c;
		pclose(p);
	}
	return n;
}

/* Sparse writes, writes into holes in the middle, appends, overwrites
 * across extents, writes into preallocated (unwritten) ranges, punches
 * and truncates, against a model, while another file takes and frees
 * blocks (0xc3) so that stale bytes would show. */
static void test_alloc_paths(const char *dir)
{
	char img[512], cmd[1100];
	unsigned char *model = calloc(1, MAP_SIZE), *buf = malloc(MAP_SIZE);
	unsigned char *c3 = malloc(MIB);
	unsigned seed = 7;
	uint64_t a, b, seq, msize = 0;
	struct lf_vol *v;
	int bad = 0, nx;

	snprintf(img, sizeof(img), "%s/alloc.img", dir);
	v = open_img(img, 64 * MIB, true);
	a = mk(v, LF_ROOT_INO, "a", S_IFREG | 0644);
	b = mk(v, LF_ROOT_INO, "b", S_IFREG | 0644);
	memset(c3, 0xc3, MIB);
	for (int it = 0; it < 3000 && !bad; it++) {
		int op = rand_r(&seed) % 7;
		uint64_t off = rand_r(&seed) % MAP_SIZE;
		size_t len = 1 + rand_r(&seed) % (300 * 1024);
		ssize_t n;

		if (rand_r(&seed) % 2) {
			off &= ~4095ULL;
			len = (len + 4095) & ~4095ULL;
		}
		if (off + len > MAP_SIZE)
			len = MAP_SIZE - off;
		if (op <= 1) {
			fill_rand(buf, len, &seed);
			n = lf_fs_write(v, a, buf, len, off);
			if (n != (ssize_t)len) {
				CHECK_EQ(n, (ssize_t)len);
				bad++;
			}
			memcpy(model + off, buf, len);
			if (off + len > msize)
				msize = off + len;
		} else if (op == 2) {
			struct lf_setattr sa = {.size = off};

			CHECK_EQ(lf_fs_setattr(v, a, LF_SET_SIZE, &sa, NULL),
				 0);
			if (off < msize)
				memset(model + off, 0, msize - off);
			msize = off;
		} else if (op == 3) {
			uint64_t e = off + len < msize ? off + len : msize;

			CHECK_EQ(lf_fs_fallocate(v, a,
						 FALLOC_FL_PUNCH_HOLE |
							 FALLOC_FL_KEEP_SIZE,
						 off, len),
				 0);
			if (off < e)
				memset(model + off, 0, e - off);
		} else if (op == 4) {
			/* unwritten extents, past EOF too */
			CHECK_EQ(lf_fs_fallocate(v, a, FALLOC_FL_KEEP_SIZE, off,
						 len),
				 0);
		} else if (op == 5) {
			lf_fs_write(v, b, c3, MIB, rand_r(&seed) % 4 * MIB);
			struct lf_setattr sa = {.size = rand_r(&seed) %
							MAP_SIZE};

			lf_fs_setattr(v, b, LF_SET_SIZE, &sa, NULL);
		} else {
			n = lf_fs_read(v, a, buf, MAP_SIZE, 0);
			if (n != (ssize_t)msize || memcmp(buf, model, msize)) {
				fprintf(stderr,
					"alloc paths: mismatch after "
					"step %d\n",
					it);
				bad++;
			}
		}
	}
	CHECK_EQ(bad, 0);

	/* Appends 1 MiB at a time make long extents, not one per write. The
	 * blocks freed above wait for their journal commit (fsimage/txn.h):
	 * released first, since the allocator is under test here. */
	lf_vol_lock(v);
	lf_txn_release_freed(v);
	lf_vol_unlock(v);
	seq = mk(v, LF_ROOT_INO, "seq", S_IFREG | 0644);
	memset(c3, 0x3c, MIB);
	for (int i = 0; i < 24; i++)
		CHECK_EQ(lf_fs_write(v, seq, c3, MIB, (uint64_t)i * MIB), MIB);
	CHECK_EQ(lf_vol_close(v), 0);
	nx = extent_count(img, "/seq");
	printf("24 MiB appended 1 MiB at a time: %d extents\n", nx);
	/* Not one per write. Without a journal 1–4; with one, the blocks
	 * the random steps above freed waited for their commits, so files a
	 * and b were laid out around them and the free space left is cut
	 * into runs of a few hundred blocks (10 or 11 extents seen). */
	CHECK(nx >= 1 && nx <= 12);
	snprintf(cmd, sizeof(cmd),
		 "e2fsck -fn %s >%s/alloc.fsck 2>&1 || "
		 "{ cat %s/alloc.fsck; exit 1; }",
		 img, dir, dir);
	CHECK_EQ(run(cmd), 0);
	free(model);
	free(buf);
	free(c3);
}

/* A write over holes and allocated blocks on a nearly full volume: a short
 * write whose bytes all read back, nothing allocated past it, a clean fs. */
static void test_enospc_mid_range(const char *dir)
{
	char img[512], cmd[1100];
	unsigned char *buf = malloc(8 * MIB), *rd = malloc(8 * MIB);
	uint64_t f, g, off = 0;
	unsigned seed = 9;
	struct lf_stat st;
	struct lf_vol *v;
	ssize_t n;

	snprintf(img, sizeof(img), "%s/midfull.img", dir);
	v = open_img(img, 16 * MIB, true);
	f = mk(v, LF_ROOT_INO, "sparse", S_IFREG | 0644);
	g = mk(v, LF_ROOT_INO, "filler", S_IFREG | 0644);
	fill_rand(buf, 8 * MIB, &seed);
	/* every other 64 KiB of the first 8 MiB allocated */
	for (uint64_t o = 0; o < 8 * MIB; o += 128 * 1024)
		CHECK_EQ(lf_fs_write(v, f, buf + o, 64 * 1024, o), 64 * 1024);
	while ((n = lf_fs_write(v, g, buf, 256 * 1024, off)) > 0)
		off += n;
	CHECK_EQ(n, -ENOSPC);
	/* give back ~1 MiB so part of the holes can be filled */
	CHECK_EQ(lf_fs_fallocate(v, g,
				 FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
				 MIB),
		 0);
	n = lf_fs_write(v, f, buf, 8 * MIB, 0);
	CHECK(n > 0 && n < 8 * MIB);
	if (n > 0) {
		CHECK_EQ(lf_fs_getattr(v, f, &st), 0);
		CHECK(st.size >= (uint64_t)n);
		CHECK_EQ(lf_fs_read(v, f, rd, n, 0), n);
		CHECK(memcmp(rd, buf, n) == 0);
	}
	CHECK_EQ(lf_vol_close(v), 0);
	snprintf(cmd, sizeof(cmd),
		 "e2fsck -fn %s >%s/midfull.fsck 2>&1 || "
		 "{ cat %s/midfull.fsck; exit 1; }",
		 img, dir, dir);
	CHECK_EQ(run(cmd), 0);
	free(buf);
	free(rd);
}

/* ---- reads/writes racing truncate, punch and block reuse ---- */

#define RACE_SIZE (4 * MIB)

struct race {
	struct lf_vol *v;
	uint64_t a, b;
	_Atomic uint64_t c; /* created and unlinked each round */
	_Atomic int stop;
	long reads, writes, truncs, bad;
	_Atomic long errs;
	bool async; /* reads through lf_fs_read_async */
};

/* Reads and writes file a, whose bytes are only ever 0x5a or zero. */
static void *race_io(void *p)
{
	struct race *rc = p;
	unsigned seed = 1;
	unsigned char *buf = malloc(256 * 1024), *pat = malloc(256 * 1024);

	memset(pat, 0x5a, 256 * 1024);
	while (!rc->stop) {
		uint64_t off = rand_r(&seed) % RACE_SIZE;
		size_t len = 1 + rand_r(&seed) % (256 * 1024);
		ssize_t n;

		if (rand_r(&seed) % 4 == 0) {
			if (rand_r(&seed) % 2) { /* whole blocks */
				off &= ~4095ULL;
				len = (len + 4095) & ~4095ULL;
			}
			if (off + len > RACE_SIZE)
				len = RACE_SIZE - off;
			n = lf_fs_write(rc->v, rc->a, pat, len, off);
			if (n != (ssize_t)len && n != -ENOSPC)
				rc->errs++;
			rc->writes++;
			continue;
		}
		if (rand_r(&seed) % 4 == 1 && rc->c) {
			/* c may be unlinked and freed under us */
			n = lf_fs_read(rc->v, rc->c, buf, len, off % MIB);
			if (n == -ESTALE || n == -EINVAL)
				continue;
		} else if (rc->async) {
			/* whole blocks, or it takes the synchronous path */
			off &= ~4095ULL;
			len = (len + 4095) & ~4095ULL;
			n = read_async(rc->v, rc->a, buf, len, off);
		} else {
			n = lf_fs_read(rc->v, rc->a, buf, len, off);
		}
		if (n < 0) {
			rc->errs++;
			continue;
		}
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != 0x5a && buf[i] != 0) {
				rc->bad++;
				break;
			}
		rc->reads++;
	}
	free(buf);
	free(pat);
	return NULL;
}

/* Shrinks, grows and punches file a; churns file b (0xc3 bytes) so that
 * blocks a gives up are quickly reused. */
static void *race_trunc(void *p)
{
	struct race *rc = p;
	unsigned seed = 2;
	unsigned char *c3 = malloc(MIB);

	memset(c3, 0xc3, MIB);
	while (!rc->stop) {
		struct lf_setattr sa = {.size = rand_r(&seed) % RACE_SIZE};
		uint64_t off = rand_r(&seed) % RACE_SIZE;
		struct lf_stat st;

		if (lf_fs_mknod(rc->v, LF_ROOT_INO, "c", S_IFREG | 0644, 0,
				&owner, &st) == 0) {
			memset(c3, 0x5a, MIB);
			if (lf_fs_write(rc->v, st.ino, c3, MIB, 0) != MIB)
				rc->errs++;
			memset(c3, 0xc3, MIB);
			rc->c = st.ino;
		} else {
			rc->errs++;
		}

		if (lf_fs_setattr(rc->v, rc->a, LF_SET_SIZE, &sa, NULL))
			rc->errs++;
		if (lf_fs_write(rc->v, rc->b, c3, MIB,
				rand_r(&seed) % 4 * MIB) != MIB)
			rc->errs++;
		sa.size = RACE_SIZE;
		if (lf_fs_setattr(rc->v, rc->a, LF_SET_SIZE, &sa, NULL))
			rc->errs++;
		if (lf_fs_fallocate(rc->v, rc->a,
				    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				    off, 1 + rand_r(&seed) % MIB))
			rc->errs++;
		if (lf_fs_write(rc->v, rc->b, c3, MIB,
				rand_r(&seed) % 4 * MIB) != MIB)
			rc->errs++;
		sa.size = 0;
		if (lf_fs_setattr(rc->v, rc->b, LF_SET_SIZE, &sa, NULL))
			rc->errs++;
		if (lf_fs_unlink(rc->v, LF_ROOT_INO, "c", NULL))
			rc->errs++;
		rc->truncs++;
	}
	free(c3);
	return NULL;
}

/* Writes of up to 1 MiB are acknowledged before the device has them
 * (write-behind): a failure there must reach the next fsync, once, and
 * what was written must read back before and after it lands. */
static void test_write_behind(const char *dir)
{
	char img[512];
	struct slow_bdev *sb = NULL;
	unsigned char *a = malloc(MIB), *b = malloc(MIB), *rd = malloc(MIB);
	struct lf_vol *v;
	uint64_t f;

	snprintf(img, sizeof(img), "%s/wb.img", dir);
	v = open_slow_img(img, 64 * MIB, &sb);
	f = mk(v, LF_ROOT_INO, "wb", S_IFREG | 0644);
	memset(a, 0xa1, MIB);
	memset(b, 0xb2, MIB);
	/* read after write, while the write may still be in flight */
	for (int i = 0; i < 8; i++) {
		CHECK_EQ(lf_fs_write(v, f, i % 2 ? b : a, MIB,
				     (uint64_t)i * MIB),
			 MIB);
		CHECK_EQ(lf_fs_read(v, f, rd, MIB, (uint64_t)i * MIB), MIB);
		CHECK(memcmp(rd, i % 2 ? b : a, MIB) == 0);
	}
	/* overwrites of one range keep their order */
	for (int i = 0; i < 16; i++)
		CHECK_EQ(lf_fs_write(v, f, i % 2 ? b : a, MIB, 0), MIB);
	CHECK_EQ(lf_fs_fsync(v, f, false), 0);
	CHECK_EQ(read_async(v, f, rd, MIB, 0), MIB);
	CHECK(memcmp(rd, b, MIB) == 0);

	/* the device refuses 1 MiB writes: acknowledged, then fsync fails */
	sb->fail_len = MIB;
	CHECK_EQ(lf_fs_write(v, f, a, MIB, 2 * MIB), MIB);
	CHECK_EQ(lf_fs_fsync(v, f, false), -EIO);
	CHECK_EQ(lf_fs_fsync(v, f, false), 0); /* reported once */
	/* and the next failure by the next fsync */
	CHECK_EQ(lf_fs_write(v, f, a, MIB, 3 * MIB), MIB);
	CHECK_EQ(lf_fs_fsync(v, f, false), -EIO);
	sb->fail_len = 0;
	CHECK_EQ(lf_fs_write(v, f, a, MIB, 4 * MIB), MIB);
	CHECK_EQ(lf_fs_fsync(v, f, false), 0);
	CHECK_EQ(lf_fs_read(v, f, rd, MIB, 4 * MIB), MIB);
	CHECK(memcmp(rd, a, MIB) == 0);
	CHECK_EQ(lf_vol_close(v), 0);
	free(a);
	free(b);
	free(rd);
}

/* async: asynchronous reads over a bdev that completes late and out of
 * order (open_slow_img): truncates must wait for reads still in flight. */
static void test_race(const char *dir, bool async)
{
	char img[512], cmd[1100];
	struct race rc = {.async = async};
	pthread_t t1, t2;
	double t0;

	snprintf(img, sizeof(img), "%s/race%s.img", dir, async ? "-async" : "");
	rc.v = async ? open_slow_img(img, 64 * MIB, NULL)
		     : open_img(img, 64 * MIB, true);
	rc.a = mk(rc.v, LF_ROOT_INO, "a", S_IFREG | 0644);
	rc.b = mk(rc.v, LF_ROOT_INO, "b", S_IFREG | 0644);
	t0 = now_s();
	pthread_create(&t1, NULL, race_io, &rc);
	pthread_create(&t2, NULL, race_trunc, &rc);
	while (now_s() - t0 < 2.0)
		usleep(50000);
	rc.stop = 1;
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	printf("race%s: %ld reads, %ld writes, %ld truncate rounds in 2 s\n",
	       async ? " (async reads, slow bdev)" : "", rc.reads, rc.writes,
	       rc.truncs);
	CHECK(rc.reads > 100 && rc.truncs > 10);
	CHECK_EQ(rc.bad, 0);
	CHECK_EQ(rc.errs, 0);
	CHECK_EQ(lf_vol_close(rc.v), 0);
	snprintf(cmd, sizeof(cmd), "e2fsck -fn %s >%s/race.fsck 2>&1", img,
		 dir);
	CHECK_EQ(run(cmd), 0);
}

static void kernel_check(const char *dir, const char *img, const char *model)
{
	char cmd[4096], mnt[600];

	snprintf(mnt, sizeof(mnt), "%s/mnt", dir);
	mkdir(mnt, 0755);
	snprintf(cmd, sizeof(cmd), "mount -o loop,ro %s %s 2>/dev/null", img,
		 mnt);
	if (system(cmd) != 0) {
		printf("kernel mount not available here: skipped\n");
		return;
	}
	snprintf(cmd, sizeof(cmd),
		 "set -e; cd %s; cmp data %s; test \"$(readlink fast)\" = "
		 "short/target; x=$(readlink slow); test ${#x} = 2000;"
		 "test $(ls big | wc -l) = %d; test -p fifo; test -S sock;"
		 "test $(ls mix | wc -l) = %d; test -f mix/x; test -f mix/y;"
		 "test \"$(stat -c %%t:%%T null)\" = 1:3;"
		 "test \"$(stat -c %%u:%%g:%%a attrs)\" = 77:88:755;"
		 "test \"$(stat -c %%Y attrs)\" = 5000000000;"
		 "test \"$(stat -c %%g:%%a sgid/sub)\" = 4242:2755;"
		 "test ! -e orphan; test ! -e orphan2;"
		 "/usr/bin/python3 -c 'import os; "
		 "assert os.getxattr(\"xa\", \"user.color\") == b\"red\"; "
		 "assert os.getxattr(\"xa\", \"security.s\") == b\"ss\"; "
		 "assert len(os.getxattr(\"xa\", \"user.mid\")) == 2000'",
		 mnt, model, NBIG / 2, NMIX - NMIX / 3 + 2);
	CHECK_EQ(run(cmd), 0);
	snprintf(cmd, sizeof(cmd), "umount %s", mnt);
	CHECK_EQ(run(cmd), 0);
}

int main(void)
{
	char dir[] = "/tmp/test_fsops.XXXXXX", img[600], model[600];
	char cmd[2048];
	struct lf_vol *v;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 2;
	}
	snprintf(img, sizeof(img), "%s/vol.img", dir);
	snprintf(model, sizeof(model), "%s/model", dir);
	v = open_img(img, 512 * MIB, true);
	test_data(v, model);
	test_attrs(v);
	test_links(v);
	test_rename(v);
	test_xattr(v);
	test_bigdir(v);
	test_dir_rates(v);
	test_dir_mix(v);
	test_orphans(v);
	test_statfs(v);
	CHECK_EQ(lf_fs_fsync(v, LF_ROOT_INO, false), 0);
	CHECK_EQ(lf_vol_close(v), 0);
	snprintf(cmd, sizeof(cmd),
		 "e2fsck -fn %s >%s/fsck.out 2>&1 || "
		 "{ cat %s/fsck.out; exit 1; }",
		 img, dir, dir);
	CHECK_EQ(run(cmd), 0);
	kernel_check(dir, img, model);

	/* reopen: everything still there through our own code */
	v = open_img(img, 0, false);
	{
		struct lf_stat st;
		uint64_t big = ino_of(v, LF_ROOT_INO, "big");

		CHECK(big != 0);
		CHECK_EQ(lf_fs_lookup(v, big, "f9999", &st), 0);
		CHECK_EQ(lf_fs_lookup(v, LF_ROOT_INO, "orphan2", &st), -ENOENT);
		uint64_t mix = ino_of(v, LF_ROOT_INO, "mix");
		char name[300];
		int bad = 0;

		for (int i = 0; i < NMIX; i++) {
			mix_name(name, i, i % 3 == 0);
			if (i % 3 != 1 && lf_fs_lookup(v, mix, name, &st))
				bad++;
		}
		CHECK_EQ(bad, 0);
		/* unlink through positions found by a fresh index build */
		for (int i = 0; i < NMIX; i += 3) {
			mix_name(name, i, 1);
			if (lf_fs_unlink(v, mix, name, NULL))
				bad++;
		}
		CHECK_EQ(bad, 0);
	}
	CHECK_EQ(lf_vol_close(v), 0);
	snprintf(cmd, sizeof(cmd),
		 "e2fsck -fn %s >%s/fsck2.out 2>&1 || "
		 "{ cat %s/fsck2.out; exit 1; }",
		 img, dir, dir);
	CHECK_EQ(run(cmd), 0);

	/* Hashed (htree) directories, as e2fsck -D or the kernel make them:
	 * changes go through libext2fs's paths and stay consistent. */
	snprintf(cmd, sizeof(cmd),
		 "e2fsck -fyD %s >%s/fsckD.out 2>&1; "
		 "debugfs -R 'htree big' %s 2>/dev/null | grep -q 'Root node'",
		 img, dir, img);
	if (run(cmd) == 0) {
		struct lf_stat st;
		char name[32];
		int bad = 0;
		uint64_t big;

		v = open_img(img, 0, false);
		big = ino_of(v, LF_ROOT_INO, "big");
		for (int i = 3; i < NBIG; i += 4) { /* f1 is gone */
			snprintf(name, sizeof(name), "f%d", i);
			if (lf_fs_unlink(v, big, name, NULL))
				bad++;
			snprintf(name, sizeof(name), "new%d", i);
			if (lf_fs_mknod(v, big, name, S_IFREG | 0644, 0, &owner,
					&st))
				bad++;
		}
		CHECK_EQ(bad, 0);
		CHECK_EQ(lf_fs_lookup(v, big, "new9999", &st), 0);
		CHECK_EQ(lf_fs_lookup(v, big, "f9999", &st), -ENOENT);
		CHECK_EQ(lf_fs_lookup(v, big, "f9997", &st), 0);
		CHECK_EQ(lf_vol_close(v), 0);
		snprintf(cmd, sizeof(cmd),
			 "e2fsck -fn %s >%s/fsck3.out 2>&1 || "
			 "{ cat %s/fsck3.out; exit 1; }",
			 img, dir, dir);
		CHECK_EQ(run(cmd), 0);
	} else {
		printf("no hashed directory after e2fsck -D: skipped\n");
	}

	test_enospc(dir);
	test_alloc_paths(dir);
	test_enospc_mid_range(dir);
	test_race(dir, false);
	test_race(dir, true);
	test_write_behind(dir);

	if (!check_failed) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		run(cmd);
	} else {
		fprintf(stderr, "images kept in %s\n", dir);
	}
	return check_report("test_fsops");
}
