/* test_trim.c — fsimage/trim.h and resize.h on image files, below FUSE:
 * FITRIM keeps the LUN's unmap granularity, alignment and maximum per
 * command (what tgtd cannot show: it reports them as 0), discard waits
 * for a durable point, a LUN without UNMAP is refused, growth through a
 * grower that runs resize2fs, shrink refused. e2fsck -fn is the oracle. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "fsimage/fsops.h"
#include "fsimage/resize.h"
#include "fsimage/trim.h"
#include "fsimage/volume.h"
#include "iscsi/bdev.h"
#include "tests/unit/check.h"

#define MiB   (1024ull * 1024)
#define GRAN  (64 * 1024)
#define ALIGN (8 * 1024)
#define MAXU  (1 * MiB)

static char tmpdir[64];
static const struct lf_owner owner = {1000, 1000, false, 0};

/* A bdev that records the UNMAPs reaching the backend, on its way to a
 * file bdev, and reports the Block Limits it was given. */
struct rec {
	struct lf_bdev *inner;
	pthread_mutex_t mu;
	unsigned n, bad_gran, bad_max;
	uint64_t bytes;
};

static int rec_submit(void *impl, enum lf_bdev_op op, const struct iovec *iov,
		      int iovcnt, uint64_t off, uint64_t len,
		      lf_bdev_done_fn done, void *opaque)
{
	struct rec *r = impl;

	if (op == LF_BDEV_UNMAP) {
		pthread_mutex_lock(&r->mu);
		r->n++;
		r->bytes += len;
		if (off % GRAN != ALIGN || len % GRAN)
			r->bad_gran++;
		if (len > MAXU)
			r->bad_max++;
		pthread_mutex_unlock(&r->mu);
	}
	return lf_bdev_submit(r->inner, op, iov, iovcnt, off, len, done,
			      opaque);
}

static void rec_close(void *impl)
{
	struct rec *r = impl;

	lf_bdev_unref(r->inner);
}

static int rec_capacity(void *impl, uint64_t *size)
{
	struct rec *r = impl;

	int e = lf_bdev_refresh_size(r->inner, NULL, size);

	return e == -EINVAL ? 0 : e;
}

static const struct lf_bdev_ops rec_ops = {
	.submit = rec_submit,
	.close = rec_close,
	.capacity = rec_capacity,
};

static struct lf_bdev *open_rec(const char *path, struct rec *r, bool can_unmap)
{
	struct lf_bdev_info info;

	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	if (lf_bdev_open_file(path, false, &r->inner) < 0)
		return NULL;
	info = *lf_bdev_info(r->inner);
	info.can_unmap = can_unmap;
	info.max_unmap = MAXU;
	info.unmap_granularity = GRAN;
	info.unmap_alignment = ALIGN;
	return lf_bdev_new(&rec_ops, r, &info);
}

static void rec_reset(struct rec *r)
{
	pthread_mutex_lock(&r->mu);
	r->n = r->bad_gran = r->bad_max = 0;
	r->bytes = 0;
	pthread_mutex_unlock(&r->mu);
}

static uint64_t rec_bytes(struct rec *r)
{
	uint64_t b;

	pthread_mutex_lock(&r->mu);
	b = r->bytes;
	pthread_mutex_unlock(&r->mu);
	return b;
}

static uint64_t allocated(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : (uint64_t)st.st_blocks * 512;
}

static uint64_t make_file(struct lf_vol *v, const char *name, size_t size)
{
	static char buf[1 << 20];
	struct lf_stat st;

	memset(buf, 0x5a, sizeof(buf));
	CHECK_EQ(lf_fs_mknod(v, LF_ROOT_INO, name, S_IFREG | 0644, 0, &owner,
			     &st),
		 0);
	for (size_t off = 0; off < size; off += sizeof(buf))
		CHECK_EQ(lf_fs_write(v, st.ino, buf, sizeof(buf), off),
			 (ssize_t)sizeof(buf));
	CHECK_EQ(lf_fs_fsync(v, st.ino, false), 0);
	return st.ino;
}

static void test_fitrim_limits_and_discard(void)
{
	char img[128];
	char err[512];
	struct lf_vol_opts o = {.allow_format = true};
	struct lf_vol *v = NULL;
	struct lf_bdev *b;
	struct rec r;
	uint64_t trimmed = 0, before;

	snprintf(img, sizeof(img), "%s/trim.img", tmpdir);
	CHECK_EQ(sh("truncate -s 64M %s", img), 0);
	b = open_rec(img, &r, true);
	CHECK(b != NULL);
	CHECK_EQ(lf_vol_open(b, &o, &v, err, sizeof(err)), 0);
	lf_bdev_unref(b);
	if (!v)
		return;
	make_file(v, "keep", 2 * MiB);
	make_file(v, "big", 16 * MiB);
	before = allocated(img);
	CHECK_EQ(lf_fs_unlink(v, LF_ROOT_INO, "big", NULL), 0);

	/* FITRIM: every command on the granularity and alignment, none
	 * larger than the maximum; the answer is what was unmapped. */
	rec_reset(&r);
	CHECK_EQ(lf_vol_trim(v, 0, UINT64_MAX, 0, &trimmed), 0);
	CHECK(trimmed >= 16 * MiB && trimmed < 64 * MiB);
	CHECK_EQ(rec_bytes(&r), trimmed);
	CHECK_EQ(r.bad_gran, 0);
	CHECK_EQ(r.bad_max, 0);
	CHECK(r.n > 1);
	CHECK(before - allocated(img) >= 15 * MiB);
	/* A range past the end, and one shorter than a block: EINVAL. */
	CHECK_EQ(lf_vol_trim(v, 1ull << 40, MiB, 0, &trimmed), -EINVAL);
	CHECK_EQ(lf_vol_trim(v, 0, 100, 0, &trimmed), -EINVAL);
	/* minlen larger than any free extent: nothing sent. */
	rec_reset(&r);
	CHECK_EQ(lf_vol_trim(v, 0, UINT64_MAX, 63 * MiB, &trimmed), 0);
	CHECK_EQ(trimmed, 0);
	CHECK_EQ(r.n, 0);

	/* Discard: nothing before a durable point, then the freed extent. */
	CHECK_EQ(lf_vol_set_discard(v, true), 0);
	make_file(v, "d", 8 * MiB);
	rec_reset(&r);
	CHECK_EQ(lf_fs_unlink(v, LF_ROOT_INO, "d", NULL), 0);
	CHECK_EQ(r.n, 0);
	CHECK_EQ(lf_vol_sync(v), 0);
	for (int i = 0; i < 100 && rec_bytes(&r) < 7 * MiB; i++)
		usleep(100000); /* the flusher sends them */
	CHECK(rec_bytes(&r) >= 7 * MiB && rec_bytes(&r) <= 8 * MiB);
	CHECK_EQ(r.bad_gran, 0);
	CHECK_EQ(lf_vol_close(v), 0);
	CHECK_EQ(sh("e2fsck -fn %s >/dev/null 2>&1", img), 0);
}

static void test_no_unmap(void)
{
	char img[128], err[512];
	struct lf_vol_opts o = {.allow_format = true};
	struct lf_vol *v = NULL;
	struct lf_bdev *b;
	struct rec r;
	uint64_t trimmed = 1;

	snprintf(img, sizeof(img), "%s/thick.img", tmpdir);
	CHECK_EQ(sh("truncate -s 32M %s", img), 0);
	b = open_rec(img, &r, false);
	CHECK_EQ(lf_vol_open(b, &o, &v, err, sizeof(err)), 0);
	lf_bdev_unref(b);
	if (!v)
		return;
	CHECK_EQ(lf_vol_trim(v, 0, UINT64_MAX, 0, &trimmed), -EOPNOTSUPP);
	CHECK_EQ(trimmed, 0);
	CHECK_EQ(lf_vol_set_discard(v, true), -EOPNOTSUPP);
	CHECK(!lf_vol_discard(v));
	CHECK_EQ(r.n, 0);
	CHECK_EQ(lf_vol_close(v), 0);
}

static char grow_img[128];

static int grow_fn(void *ctx, uint64_t new_bytes, char *err, size_t errlen)
{
	(void)ctx;
	if (sh("resize2fs -f %s %lluK >/dev/null 2>&1", grow_img,
	       (unsigned long long)(new_bytes >> 10))) {
		snprintf(err, errlen, "resize2fs failed");
		return -EIO;
	}
	return 0;
}

static void test_grow(void)
{
	char err[512];
	struct lf_vol_opts o = {.allow_format = true};
	struct lf_vol *v = NULL;
	struct lf_bdev *b;
	struct rec r;
	struct statvfs sv;
	uint64_t lun = 0;

	snprintf(grow_img, sizeof(grow_img), "%s/grow.img", tmpdir);
	CHECK_EQ(sh("truncate -s 32M %s", grow_img), 0);
	b = open_rec(grow_img, &r, true);
	CHECK_EQ(lf_vol_open(b, &o, &v, err, sizeof(err)), 0);
	if (!v) {
		lf_bdev_unref(b);
		return;
	}
	make_file(v, "old", 4 * MiB);
	CHECK_EQ(lf_vol_fs_bytes(v), 32 * MiB);
	CHECK_EQ(sh("truncate -s 160M %s", grow_img), 0);
	CHECK_EQ(lf_bdev_refresh_size(b, NULL, &lun), 0);
	CHECK_EQ(lun, 160 * MiB);
	/* Shrink and more than the device: refused, nothing run. */
	CHECK_EQ(lf_vol_grow(v, 16 * MiB, grow_fn, NULL, err, sizeof(err)),
		 -EINVAL);
	CHECK(strstr(err, "not supported") != NULL);
	CHECK_EQ(lf_vol_grow(v, 1ull << 30, grow_fn, NULL, err, sizeof(err)),
		 -ENOSPC);
	CHECK_EQ(lf_vol_fs_bytes(v), 32 * MiB);
	CHECK_EQ(lf_vol_grow(v, lun, grow_fn, NULL, err, sizeof(err)), 0);
	CHECK_EQ(lf_vol_fs_bytes(v), 160 * MiB);
	CHECK_EQ(lf_fs_statfs(v, &sv), 0);
	CHECK((uint64_t)sv.f_blocks * sv.f_frsize > 150 * MiB);
	/* The new space is usable, the old file is still there. */
	make_file(v, "new", 100 * MiB);
	{
		struct lf_stat st;

		CHECK_EQ(lf_fs_lookup(v, LF_ROOT_INO, "old", &st), 0);
		CHECK_EQ(st.size, 4 * MiB);
	}
	CHECK_EQ(lf_vol_close(v), 0);
	lf_bdev_unref(b);
	CHECK_EQ(sh("e2fsck -fn %s >/dev/null 2>&1", grow_img), 0);
}

int main(void)
{
	strcpy(tmpdir, "/tmp/lunfs-test-trim.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_fitrim_limits_and_discard();
	test_no_unmap();
	test_grow();
	sh("rm -rf %s", tmpdir);
	return check_report("test_trim");
}
