/* test_volume.c — fsimage: probe, format, open/close, refusals, cache
 * coherence. e2fsck -fn is the oracle for every volume we wrote. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsimage/iomgr.h"
#include "fsimage/probe.h"
#include "fsimage/volume_int.h"
#include "iscsi/bdev.h"
#include "tests/unit/check.h"

static char tmpdir[64];

/* A bdev that counts writes on its way to a file bdev. */
struct counting {
	struct lf_bdev *inner;
	atomic_ulong writes;
};

static int count_submit(void *impl, enum lf_bdev_op op, const struct iovec *iov,
			int iovcnt, uint64_t off, uint64_t len,
			lf_bdev_done_fn done, void *opaque)
{
	struct counting *c = impl;

	if (op != LF_BDEV_READ)
		atomic_fetch_add(&c->writes, 1);
	return lf_bdev_submit(c->inner, op, iov, iovcnt, off, len, done,
			      opaque);
}

static void count_close(void *impl)
{
	struct counting *c = impl;

	lf_bdev_unref(c->inner);
}

static const struct lf_bdev_ops count_ops = {
	.submit = count_submit,
	.close = count_close,
};

/* c is the caller's and must outlive the bdev. */
static struct lf_bdev *open_counting(const char *path, bool ro,
				     struct counting *c, uint32_t lbs)
{
	struct lf_bdev_info info;

	memset(c, 0, sizeof(*c));
	if (lf_bdev_open_file(path, ro, &c->inner) < 0)
		return NULL;
	info = *lf_bdev_info(c->inner);
	if (lbs)
		info.block_size = lbs;
	return lf_bdev_new(&count_ops, c, &info);
}

static void make_sparse(const char *path, off_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

	CHECK(fd >= 0);
	CHECK(ftruncate(fd, size) == 0);
	close(fd);
}

static int fsck_clean(const char *img)
{
	return sh("e2fsck -fn %s >%s/fsck.log 2>&1 || { cat %s/fsck.log; "
		  "exit 1; }",
		  img, tmpdir, tmpdir);
}

static unsigned sb_state(const char *img)
{
	unsigned char b[2] = {0, 0};
	int fd = open(img, O_RDONLY);

	if (pread(fd, b, 2, 1024 + 58) != 2)
		b[0] = 0xff;
	close(fd);
	return b[0] | b[1] << 8;
}

/* s_feature_incompat; 0x4 is needs_recovery. */
static unsigned sb_incompat(const char *img)
{
	unsigned char b[4] = {0, 0, 0, 0};
	int fd = open(img, O_RDONLY);

	if (pread(fd, b, 4, 1024 + 0x60) != 4)
		b[0] = 0xff;
	close(fd);
	return b[0] | b[1] << 8 | (unsigned)b[2] << 16 | (unsigned)b[3] << 24;
}

/* cnt may be NULL; if not, it counts the device writes of this open and
 * must outlive the volume. */
static int open_img(const char *img, bool ro, bool fmt, struct lf_vol **v,
		    struct counting *cnt, char *err, size_t errlen)
{
	struct lf_vol_opts o = {.read_only = ro, .allow_format = fmt};
	struct lf_bdev *b;
	int r;

	if (cnt)
		b = open_counting(img, ro, cnt, 0);
	else if (lf_bdev_open_file(img, ro, &b) < 0)
		b = NULL;
	if (!b)
		return -EIO;
	err[0] = 0;
	r = lf_vol_open(b, &o, v, err, errlen);
	lf_bdev_unref(b);
	return r;
}

static void test_probe_buf(void)
{
	static unsigned char buf[1 << 20];
	struct lf_probe_result r;

	memset(buf, 0, sizeof(buf));
	lf_probe_buf(buf, sizeof(buf), &r);
	CHECK_EQ(r.kind, LF_PROBE_ALL_ZERO);
	memcpy(buf, "XFSB", 4);
	lf_probe_buf(buf, sizeof(buf), &r);
	CHECK_EQ(r.kind, LF_PROBE_OTHER);
	CHECK(strstr(r.what, "xfs") != NULL);
	memset(buf, 0, 4);
	memcpy(buf + 512, "EFI PART", 8);
	lf_probe_buf(buf, sizeof(buf), &r);
	CHECK(strstr(r.what, "GPT") != NULL);
	memset(buf + 512, 0, 8);
	memcpy(buf + 0x10040, "_BHRfS_M", 8);
	lf_probe_buf(buf, sizeof(buf), &r);
	CHECK(strstr(r.what, "btrfs") != NULL);
	memset(buf + 0x10040, 0, 8);
	memcpy(buf + 4086, "SWAPSPACE2", 10);
	lf_probe_buf(buf, sizeof(buf), &r);
	CHECK(strstr(r.what, "swap") != NULL);
	memset(buf + 4086, 0, 10);
	buf[1024 + 56] = 0x53;
	buf[1024 + 57] = 0xef;
	lf_probe_buf(buf, sizeof(buf), &r);
	CHECK_EQ(r.kind, LF_PROBE_EXT);
	CHECK_STR(r.what, "ext2");
	buf[1024 + 56] = buf[1024 + 57] = 0;
	buf[999999] = 1;
	lf_probe_buf(buf, sizeof(buf), &r);
	CHECK_EQ(r.kind, LF_PROBE_OTHER);
}

static void test_format_256m(void)
{
	char img[128], mnt[128], err[256];
	struct counting cnt;
	struct lf_vol *v = NULL;
	int r;

	snprintf(img, sizeof(img), "%s/fmt.img", tmpdir);
	snprintf(mnt, sizeof(mnt), "%s/mnt", tmpdir);
	make_sparse(img, 256 << 20);
	r = open_img(img, false, true, &v, &cnt, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (r)
		return;
	CHECK(lf_vol_formatted(v));
	CHECK(!lf_vol_read_only(v));
	/* Journaled: valid, but needs_recovery while open, as the kernel's
	 * ext4 leaves it. */
	CHECK_EQ(sb_state(img) & 1, 1);
	CHECK_EQ(sb_incompat(img) & 4, 4);
	CHECK_EQ(lf_vol_sync(v), 0);
	CHECK_EQ(sb_incompat(img) & 4, 4);
	CHECK_EQ(lf_vol_close(v), 0);
	CHECK_EQ(sb_state(img) & 1, 1);
	CHECK_EQ(sb_incompat(img) & 4, 0);
	CHECK_EQ(fsck_clean(img), 0);
	CHECK_EQ(sh("mkdir -p %s && mount -o loop,ro %s %s", mnt, img, mnt), 0);
	CHECK_EQ(sh("ls -ld %s/lost+found >/dev/null", mnt), 0);
	CHECK_EQ(sh("umount %s", mnt), 0);

	/* Reopen read-write: still clean after; read-only: no writes. */
	r = open_img(img, false, false, &v, NULL, err, sizeof(err));
	CHECK_EQ(r, 0);
	CHECK(r || !lf_vol_formatted(v));
	if (!r)
		CHECK_EQ(lf_vol_close(v), 0);
	CHECK_EQ(fsck_clean(img), 0);
	r = open_img(img, true, false, &v, &cnt, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (!r) {
		CHECK_EQ(lf_vol_sync(v), 0);
		CHECK_EQ(lf_vol_close(v), 0);
		CHECK_EQ(atomic_load(&cnt.writes), 0);
	}
}

static void test_format_16g(void)
{
	char img[128], err[256];
	struct lf_vol *v = NULL;
	struct stat st;
	int r;

	snprintf(img, sizeof(img), "%s/big.img", tmpdir);
	make_sparse(img, 16ll << 30);
	r = open_img(img, false, true, &v, NULL, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (r)
		return;
	CHECK_EQ(lf_vol_close(v), 0);
	CHECK_EQ(stat(img, &st), 0);
	fprintf(stderr, "16 GiB format: %lld KiB allocated\n",
		(long long)st.st_blocks / 2);
	CHECK(st.st_blocks * 512ll < (64ll << 20));
	CHECK_EQ(fsck_clean(img), 0);
	unlink(img);
}

static void test_kernel_image(void)
{
	char img[128], mnt[128], err[256];
	struct lf_vol *v = NULL;
	int r;

	snprintf(img, sizeof(img), "%s/kern.img", tmpdir);
	snprintf(mnt, sizeof(mnt), "%s/mnt", tmpdir);
	make_sparse(img, 128 << 20);
	CHECK_EQ(sh("mkfs.ext4 -q -F -b 4096 %s", img), 0);
	CHECK_EQ(sh("mkdir -p %s && mount -o loop %s %s && cp -a "
		    "/usr/include/ext2fs %s/ && umount %s",
		    mnt, img, mnt, mnt, mnt),
		 0);
	r = open_img(img, false, true, &v, NULL, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (!r) {
		CHECK(!lf_vol_formatted(v));
		CHECK_EQ(sb_incompat(img) & 4, 4);
		CHECK_EQ(lf_vol_close(v), 0);
	}
	CHECK_EQ(sb_state(img) & 1, 1);
	CHECK_EQ(fsck_clean(img), 0);

	/* needs_recovery: replayed (here an empty log) read-write, refused
	 * read-only; an unclean state is refused. */
	CHECK_EQ(sh("debugfs -w -R 'feature needs_recovery' %s >/dev/null "
		    "2>&1",
		    img),
		 0);
	r = open_img(img, true, false, &v, NULL, err, sizeof(err));
	CHECK_EQ(r, -EUCLEAN);
	CHECK(strstr(err, "journal recovery") != NULL);
	r = open_img(img, false, true, &v, NULL, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (!r)
		CHECK_EQ(lf_vol_close(v), 0);
	CHECK_EQ(fsck_clean(img), 0);
	CHECK_EQ(sh("debugfs -w -R 'feature ^needs_recovery' %s >/dev/null "
		    "2>&1 && debugfs -w -R 'ssv state 0' %s >/dev/null 2>&1",
		    img, img),
		 0);
	r = open_img(img, true, false, &v, NULL, err, sizeof(err));
	CHECK_EQ(r, -EUCLEAN);
	CHECK(strstr(err, "not unmounted cleanly") != NULL);
	unlink(img);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;

	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(*len);
	if (fread(buf, 1, *len, f) != *len)
		*len = 0;
	fclose(f);
	return buf;
}

static void refuse_one(const char *name, void (*poke)(int fd))
{
	char img[128], err[256];
	struct counting cnt;
	struct lf_vol *v = NULL;
	size_t l1, l2;
	char *before, *after;
	int fd, r;

	snprintf(img, sizeof(img), "%s/%s.img", tmpdir, name);
	make_sparse(img, 8 << 20);
	fd = open(img, O_RDWR);
	poke(fd);
	close(fd);
	before = slurp(img, &l1);
	r = open_img(img, false, true, &v, &cnt, err, sizeof(err));
	CHECK_EQ(r, -EMEDIUMTYPE);
	CHECK(strstr(err, "refusing") != NULL);
	CHECK_EQ(atomic_load(&cnt.writes), 0);
	after = slurp(img, &l2);
	CHECK(l1 == l2 && memcmp(before, after, l1) == 0);
	free(before);
	free(after);
	unlink(img);
}

static void poke_xfs(int fd)
{
	CHECK_EQ(pwrite(fd, "XFSB", 4, 0), 4);
}

static void poke_mbr(int fd)
{
	CHECK_EQ(pwrite(fd, "\x55\xaa", 2, 510), 2);
}

static void poke_random(int fd)
{
	char buf[4096];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)rand();
	CHECK_EQ(pwrite(fd, buf, sizeof(buf), 300000), (ssize_t)sizeof(buf));
}

static void test_refusals(void)
{
	char img[128], err[256];
	struct counting cnt;
	struct lf_vol *v = NULL;
	int r;

	refuse_one("xfs", poke_xfs);
	refuse_one("mbr", poke_mbr);
	refuse_one("random", poke_random);

	snprintf(img, sizeof(img), "%s/empty.img", tmpdir);
	make_sparse(img, 64 << 20);
	r = open_img(img, true, true, &v, &cnt, err, sizeof(err));
	CHECK_EQ(r, -EMEDIUMTYPE);
	CHECK(strstr(err, "empty") != NULL);
	CHECK_EQ(atomic_load(&cnt.writes), 0);
	r = open_img(img, false, false, &v, &cnt, err, sizeof(err));
	CHECK_EQ(r, -EMEDIUMTYPE);
	CHECK_EQ(atomic_load(&cnt.writes), 0);
	unlink(img);
}

static void test_data_coherence(void)
{
	char img[128], err[256];
	struct lf_vol *v = NULL;
	unsigned char *a, *b;
	blk64_t blk;
	uint64_t off;
	int r, fd;

	snprintf(img, sizeof(img), "%s/coh.img", tmpdir);
	make_sparse(img, 64 << 20);
	r = open_img(img, false, true, &v, NULL, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (r)
		return;
	a = malloc(4096);
	b = malloc(4096);
	lf_vol_lock(v);
	blk = ext2fs_blocks_count(v->fs->super) - 3;
	CHECK(!ext2fs_test_block_bitmap2(v->fs->block_map, blk));
	off = blk * 4096;
	/* A dirty cached block is what data reads see. */
	memset(a, 0xA5, 4096);
	CHECK_EQ(io_channel_write_blk64(v->fs->io, blk, 1, a), 0);
	lf_vol_unlock(v);
	memset(b, 0, 4096);
	CHECK_EQ(lf_vol_data_pread(v, b, 4096, off), 0);
	CHECK(memcmp(a, b, 4096) == 0);
	/* A data write replaces the cached copy. */
	memset(a, 0x3C, 4096);
	CHECK_EQ(lf_vol_data_pwrite(v, a, 4096, off), 0);
	lf_vol_lock(v);
	CHECK_EQ(io_channel_read_blk64(v->fs->io, blk, 1, b), 0);
	lf_vol_unlock(v);
	CHECK(memcmp(a, b, 4096) == 0);
	CHECK_EQ(lf_vol_sync(v), 0);
	fd = open(img, O_RDONLY);
	CHECK_EQ(pread(fd, b, 4096, (off_t)off), 4096);
	close(fd);
	CHECK(memcmp(a, b, 4096) == 0);
	/* Large data reads with a dirty block in the middle. */
	{
		size_t len = 1 << 20;
		unsigned char *big = malloc(len);
		uint64_t boff = off - 253 * 4096;

		memset(a, 0x77, 4096);
		lf_vol_lock(v);
		CHECK_EQ(io_channel_write_blk64(v->fs->io, blk, 1, a), 0);
		lf_vol_unlock(v);
		CHECK_EQ(lf_vol_data_pread(v, big, len, boff), 0);
		CHECK(memcmp(big + (off - boff), a, 4096) == 0);
		free(big);
	}
	CHECK_EQ(lf_vol_close(v), 0);
	CHECK_EQ(fsck_clean(img), 0);
	free(a);
	free(b);
	unlink(img);
}

struct racer {
	struct lf_vol *v;
	uint64_t off; /* 64 free blocks from here */
	int errors;
};

static void *data_racer(void *arg)
{
	struct racer *rc = arg;
	unsigned char *buf = malloc(64 * 4096), *back = malloc(64 * 4096);

	for (int i = 0; i < 200; i++) {
		memset(buf, i, 64 * 4096);
		if (lf_vol_data_pwrite(rc->v, buf, 64 * 4096, rc->off) < 0 ||
		    lf_vol_data_pread(rc->v, back, 64 * 4096, rc->off) < 0 ||
		    memcmp(buf, back, 64 * 4096))
			rc->errors++;
	}
	free(buf);
	free(back);
	return NULL;
}

/* File data moves outside the volume lock while metadata goes through
 * the cache, the flusher runs and syncs happen. */
static void test_concurrent(void)
{
	struct lf_vol_opts o = {.allow_format = true,
				.cache_bytes = 1 << 20,
				.flush_interval_ms = 1};
	char img[128], err[256];
	struct lf_bdev *b = NULL;
	struct lf_vol *v = NULL;
	struct racer rc = {0};
	struct counting cnt;
	unsigned char blk[4096];
	pthread_t t;
	blk64_t base;
	int r;

	snprintf(img, sizeof(img), "%s/conc.img", tmpdir);
	make_sparse(img, 128 << 20);
	/* And a 4 KiB-LBA device: the superblock is read-modify-written. */
	b = open_counting(img, false, &cnt, 4096);
	CHECK(b != NULL);
	r = lf_vol_open(b, &o, &v, err, sizeof(err));
	lf_bdev_unref(b);
	CHECK_EQ(r, 0);
	if (r)
		return;
	base = ext2fs_blocks_count(v->fs->super) - 1024;
	rc.v = v;
	rc.off = (base + 512) * 4096;
	pthread_create(&t, NULL, data_racer, &rc);
	for (int i = 0; i < 2000; i++) {
		memset(blk, i, sizeof(blk));
		lf_vol_lock(v);
		CHECK_EQ(io_channel_write_blk64(v->fs->io, base + i % 256, 1,
						blk),
			 0);
		lf_vol_unlock(v);
		if (i % 500 == 0)
			CHECK_EQ(lf_vol_sync(v), 0);
	}
	pthread_join(t, NULL);
	CHECK_EQ(rc.errors, 0);
	CHECK_EQ(lf_vol_close(v), 0);
	CHECK_EQ(fsck_clean(img), 0);
	unlink(img);
}

/* A cache far smaller than the metadata forces eviction and merged
 * write-back during format and close. */
static void test_small_cache(void)
{
	struct lf_vol_opts o = {.allow_format = true,
				.cache_bytes = 1 << 20,
				.flush_interval_ms = 50};
	char img[128], err[256];
	struct lf_bdev *b = NULL;
	struct lf_vol *v = NULL;
	int r;

	snprintf(img, sizeof(img), "%s/small.img", tmpdir);
	make_sparse(img, 512 << 20);
	CHECK_EQ(lf_bdev_open_file(img, false, &b), 0);
	r = lf_vol_open(b, &o, &v, err, sizeof(err));
	lf_bdev_unref(b);
	CHECK_EQ(r, 0);
	if (r)
		return;
	usleep(200 * 1000); /* let the flusher run */
	CHECK_EQ(lf_vol_close(v), 0);
	CHECK_EQ(fsck_clean(img), 0);
	unlink(img);
}

int main(void)
{
	strcpy(tmpdir, "/tmp/lunfs-test-volume.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_probe_buf();
	test_format_256m();
	test_format_16g();
	test_kernel_image();
	test_refusals();
	test_data_coherence();
	test_small_cache();
	test_concurrent();
	sh("umount %s/mnt 2>/dev/null; rm -rf %s", tmpdir, tmpdir);
	return check_report("test_volume");
}
