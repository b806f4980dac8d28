/* test_fsops_range.c — FALLOC_FL_COLLAPSE_RANGE / FALLOC_FL_INSERT_RANGE in
 * fsops: a byte model under random writes, punches, collapses, inserts and
 * truncates of a file with a deep extent tree, read back after every step,
 * then e2fsck -fn and the kernel's ext4 reading the result; and the error
 * rules, case by case, against the kernel's ext4 on a loop mount. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsimage/fsops.h"
#include "tests/unit/check.h"

#define MIB   (1024 * 1024)
#define BS    4096
#define STEPS 400
#define MAXSZ (24 * MIB)

static const struct lf_owner owner = {0, 0, false, 0};

static int run(const char *cmd)
{
	int r = system(cmd);

	return r == -1 ? -1 : WEXITSTATUS(r);
}

static struct lf_vol *open_img(const char *path, uint64_t size)
{
	struct lf_vol_opts o = {.allow_format = true};
	struct lf_bdev *b = NULL;
	struct lf_vol *v = NULL;
	char err[256] = "";
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		perror(path);
		exit(2);
	}
	close(fd);
	if (lf_bdev_open_file(path, false, &b) < 0 ||
	    lf_vol_open(b, &o, &v, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: cannot open: %s\n", path, err);
		exit(2);
	}
	lf_bdev_unref(b);
	return v;
}

static uint64_t mkfile(struct lf_vol *v, const char *name)
{
	struct lf_stat st;

	if (lf_fs_mknod(v, LF_ROOT_INO, name, S_IFREG | 0644, 0, &owner, &st) !=
	    0) {
		fprintf(stderr, "cannot create %s\n", name);
		exit(2);
	}
	return st.ino;
}

/* The model: the file's bytes and size. */
static unsigned char *model;
static uint64_t msize;

static bool same_as_model(struct lf_vol *v, uint64_t ino, unsigned char *buf)
{
	struct lf_stat st;
	ssize_t n;

	if (lf_fs_getattr(v, ino, &st) != 0 || st.size != msize) {
		fprintf(stderr, "size %llu, model %llu\n",
			(unsigned long long)st.size, (unsigned long long)msize);
		return false;
	}
	memset(buf, 0xA5, MAXSZ);
	n = lf_fs_read(v, ino, buf, MAXSZ, 0);
	if (n != (ssize_t)msize) {
		fprintf(stderr, "read %zd of %llu\n", n,
			(unsigned long long)msize);
		return false;
	}
	for (uint64_t i = 0; i < msize; i++)
		if (buf[i] != model[i]) {
			fprintf(stderr, "byte %llu differs\n",
				(unsigned long long)i);
			return false;
		}
	return true;
}

static uint64_t rnd(unsigned *seed, uint64_t n)
{
	return n ? ((uint64_t)rand_r(seed) << 16 ^ (uint64_t)rand_r(seed)) % n
		 : 0;
}

static const char *const opname[] = {"write", "punch",	"collapse", "insert",
				     "trunc", "falloc", "bad-coll", "bad-ins"};

/* One random step on file and model; returns what fsops said. */
static int step(struct lf_vol *v, uint64_t ino, unsigned *seed, int op,
		unsigned char *scratch)
{
	uint64_t blocks = msize / BS, off, len;
	int r;

	switch (op) {
	case 0: /* write: small scattered ones keep the tree deep */
		len = rnd(seed, 3) ? 1 + rnd(seed, 2 * BS) : 1 + rnd(seed, MIB);
		off = rnd(seed, msize + 2 * MIB);
		if (off + len > MAXSZ - 2 * MIB)
			return 0;
		for (uint64_t i = 0; i < len; i++)
			scratch[i] = (unsigned char)rand_r(seed);
		r = (int)lf_fs_write(v, ino, scratch, len, off);
		if (r == (int)len) {
			if (off > msize)
				memset(model + msize, 0, off - msize);
			memcpy(model + off, scratch, len);
			if (off + len > msize)
				msize = off + len;
			r = 0;
		}
		return r;
	case 1: /* punch */
		off = rnd(seed, msize + 1);
		len = 1 + rnd(seed, 64 * BS);
		r = lf_fs_fallocate(v, ino,
				    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				    off, len);
		if (r == 0 && off < msize)
			memset(model + off, 0,
			       (off + len > msize ? msize : off + len) - off);
		return r;
	case 2: /* collapse */
		if (blocks < 2)
			return 0;
		off = rnd(seed, blocks - 1) * BS;
		len = (1 + rnd(seed, (msize - off - 1) / BS)) * BS;
		if (off + len >= msize)
			return 0;
		r = lf_fs_fallocate(v, ino, FALLOC_FL_COLLAPSE_RANGE, off, len);
		if (r == 0) {
			memmove(model + off, model + off + len,
				msize - off - len);
			msize -= len;
		}
		return r;
	case 3: /* insert */
		if (blocks < 1)
			return 0;
		off = rnd(seed, blocks) * BS;
		len = (1 + rnd(seed, rnd(seed, 2) ? 8 : 256)) * BS;
		if (msize + len > MAXSZ - 2 * MIB)
			return 0;
		if (off >= msize)
			return 0;
		r = lf_fs_fallocate(v, ino, FALLOC_FL_INSERT_RANGE, off, len);
		if (r == 0) {
			memmove(model + off + len, model + off, msize - off);
			memset(model + off, 0, len);
			msize += len;
		}
		return r;
	case 4: { /* truncate, now and then */
		struct lf_setattr sa = {.size = rnd(seed, msize + MIB)};
		struct lf_stat st;

		if (rnd(seed, 4))
			return 0;
		r = lf_fs_setattr(v, ino, LF_SET_SIZE, &sa, &st);
		if (r == 0) {
			if (sa.size > msize)
				memset(model + msize, 0, sa.size - msize);
			msize = sa.size;
		}
		return r;
	}
	case 5: /* preallocate, sometimes past the end (KEEP_SIZE) */
		off = rnd(seed, msize + MIB);
		len = 1 + rnd(seed, 32 * BS);
		if (off + len > MAXSZ - 2 * MIB)
			return 0;
		r = lf_fs_fallocate(v, ino,
				    rnd(seed, 2) ? FALLOC_FL_KEEP_SIZE : 0, off,
				    len);
		if (r == 0) {
			struct lf_stat st;

			r = lf_fs_getattr(v, ino, &st);
			if (r == 0 && st.size > msize) {
				memset(model + msize, 0, st.size - msize);
				msize = st.size;
			}
		}
		return r;
	case 6: /* a collapse reaching EOF, or unaligned: refused, no change */
		off = msize / BS * BS;
		r = lf_fs_fallocate(v, ino, FALLOC_FL_COLLAPSE_RANGE,
				    rnd(seed, 2) ? off : 512, BS);
		return r == -EINVAL ? 0 : (r ? r : -1000);
	default: /* insert at or past EOF: refused */
		r = lf_fs_fallocate(v, ino, FALLOC_FL_INSERT_RANGE,
				    (msize + BS - 1) / BS * BS, BS);
		return r == -EINVAL ? 0 : (r ? r : -1000);
	}
}

static void test_model(const char *dir)
{
	char img[600], mpath[600], cmd[2048];
	unsigned char *buf = malloc(MAXSZ), *scratch = malloc(MIB + 2 * BS);
	unsigned seed = 19;
	struct lf_vol *v;
	uint64_t ino;
	int counts[8] = {0};
	FILE *f;

	model = calloc(1, MAXSZ);
	if (!buf || !scratch || !model)
		exit(2);
	snprintf(img, sizeof(img), "%s/model.img", dir);
	v = open_img(img, 128 * MIB);
	ino = mkfile(v, "f");
	/* Every other block written: ~1,000 extents, a tree of depth 1
	 * whose index entries must follow every move. */
	for (int i = 0; i < 1000; i++) {
		for (int j = 0; j < BS; j++)
			scratch[j] = (unsigned char)rand_r(&seed);
		CHECK_EQ(lf_fs_write(v, ino, scratch, BS, (uint64_t)i * 2 * BS),
			 BS);
		memcpy(model + (uint64_t)i * 2 * BS, scratch, BS);
	}
	msize = 1999 * BS;
	CHECK(same_as_model(v, ino, buf));
	for (int i = 0; i < STEPS; i++) {
		int op = (int)rnd(&seed, 8);
		int r = step(v, ino, &seed, op, scratch);

		counts[op]++;
		if (r != 0) {
			fprintf(stderr, "step %d (%s): %d\n", i, opname[op], r);
			CHECK_EQ(r, 0);
			break;
		}
		if (!same_as_model(v, ino, buf)) {
			fprintf(stderr, "step %d (%s): file differs\n", i,
				opname[op]);
			CHECK(0);
			break;
		}
		check_passed++;
	}
	printf("model steps:");
	for (int i = 0; i < 8; i++)
		printf(" %s %d", opname[i], counts[i]);
	printf("; final size %llu\n", (unsigned long long)msize);
	CHECK_EQ(lf_vol_close(v), 0);
	snprintf(cmd, sizeof(cmd),
		 "e2fsck -fn %s >%s/model.fsck 2>&1 || "
		 "{ cat %s/model.fsck; exit 1; }",
		 img, dir, dir);
	CHECK_EQ(run(cmd), 0);
	/* The kernel's ext4 reads back what the model holds. */
	snprintf(mpath, sizeof(mpath), "%s/model.bytes", dir);
	f = fopen(mpath, "wb");
	CHECK(f && fwrite(model, 1, msize, f) == msize);
	if (f)
		fclose(f);
	snprintf(cmd, sizeof(cmd),
		 "mkdir -p %s/km && mount -o loop,ro %s %s/km && "
		 "{ cmp %s/km/f %s; r=$?; umount %s/km; exit $r; }",
		 dir, img, dir, dir, mpath, dir);
	CHECK_EQ(run(cmd), 0);
	free(buf);
	free(scratch);
	free(model);
}

/* ---- the rules, against the kernel's ext4 ---- */

struct rcase {
	int mode;
	uint64_t off, len;
};

#define C  FALLOC_FL_COLLAPSE_RANGE
#define I  FALLOC_FL_INSERT_RANGE
#define K  FALLOC_FL_KEEP_SIZE
#define FS (10 * BS) /* the file's size before each case */

static const struct rcase rcases[] = {
	{C, 0, BS},
	{C, BS, 2 * BS},
	{C, 8 * BS, BS},
	{C, 9 * BS, BS},
	{C, 0, FS},
	{C, FS, BS},
	{C, 1, BS},
	{C, 0, BS - 1},
	{C, 512, 4096},
	{C | K, 0, BS},
	{C | FALLOC_FL_PUNCH_HOLE | K, 0, BS},
	{C | I, 0, BS},
	{C, 0, 0},
	{I, 0, BS},
	{I, 3 * BS, 5 * BS},
	{I, 9 * BS, BS},
	{I, FS, BS},
	{I, FS + BS, BS},
	{I, BS, 1},
	{I, 100, BS},
	{I | K, 0, BS},
	{I, 0, 0},
	{I, 0, 0xFFFFFFFull * BS},
	{I, 0, 0xFFFFFFF6ull * BS},
	{I, 0, 0xFFFFFFFFull * BS - FS + BS},
	{I, BS, 0xFFFFFFFFull * BS - FS - BS},
	{I, BS, 0xFFFFFFFFull * BS - FS},
};

static void fill_file(unsigned char *p)
{
	for (int i = 0; i < FS; i++)
		p[i] = (unsigned char)(i * 7 + i / BS);
}

static void test_rules(const char *dir)
{
	char kimg[600], kmnt[600], kfile[700], cmd[2048], img[600];
	unsigned char data[FS], kbuf[3 * FS], lbuf[3 * FS];
	size_t ncase = sizeof(rcases) / sizeof(rcases[0]);
	struct lf_vol *v;
	int mounted;

	fill_file(data);
	snprintf(kimg, sizeof(kimg), "%s/kernel.img", dir);
	snprintf(kmnt, sizeof(kmnt), "%s/kmnt", dir);
	snprintf(kfile, sizeof(kfile), "%s/f", kmnt);
	snprintf(cmd, sizeof(cmd),
		 "truncate -s 64M %s && mkfs.ext4 -q -F -b 4096 %s && "
		 "mkdir -p %s && mount -o loop %s %s",
		 kimg, kimg, kmnt, kimg, kmnt);
	mounted = run(cmd) == 0;
	CHECK(mounted);
	if (!mounted)
		return;
	snprintf(img, sizeof(img), "%s/rules.img", dir);
	v = open_img(img, 64 * MIB);
	for (size_t i = 0; i < ncase; i++) {
		const struct rcase *c = &rcases[i];
		char name[32];
		uint64_t ino;
		struct lf_stat st;
		struct stat kst;
		int kfd, kr, lr;
		ssize_t kn, ln;

		snprintf(name, sizeof(name), "f%zu", i);
		ino = mkfile(v, name);
		CHECK_EQ(lf_fs_write(v, ino, data, FS, 0), FS);
		kfd = open(kfile, O_RDWR | O_CREAT | O_TRUNC, 0644);
		CHECK(kfd >= 0);
		if (kfd < 0)
			break;
		CHECK_EQ(pwrite(kfd, data, FS, 0), FS);
		fsync(kfd);
		kr = fallocate(kfd, c->mode, (off_t)c->off, (off_t)c->len) == 0
			     ? 0
			     : -errno;
		lr = lf_fs_fallocate(v, ino, c->mode, c->off, c->len);
		if (kr != lr)
			fprintf(stderr,
				"case %zu (mode %#x off %llu len %llu): "
				"kernel %d, lunfs %d\n",
				i, c->mode, (unsigned long long)c->off,
				(unsigned long long)c->len, kr, lr);
		CHECK_EQ(lr, kr);
		memset(kbuf, 0xA5, sizeof(kbuf));
		memset(lbuf, 0x5A, sizeof(lbuf));
		kn = pread(kfd, kbuf, sizeof(kbuf), 0);
		ln = lf_fs_read(v, ino, lbuf, sizeof(lbuf), 0);
		CHECK_EQ(ln, kn);
		CHECK(kn >= 0 && ln == kn &&
		      memcmp(kbuf, lbuf, (size_t)kn) == 0);
		CHECK_EQ(fstat(kfd, &kst), 0);
		CHECK_EQ(lf_fs_getattr(v, ino, &st), 0);
		CHECK_EQ(st.size, (uint64_t)kst.st_size);
		printf("case %2zu: mode %#x off %llu len %llu: %d, size %llu\n",
		       i, c->mode, (unsigned long long)c->off,
		       (unsigned long long)c->len, lr,
		       (unsigned long long)st.size);
		close(kfd);
	}
	snprintf(cmd, sizeof(cmd), "umount %s", kmnt);
	CHECK_EQ(run(cmd), 0);
	CHECK_EQ(lf_vol_close(v), 0);
	snprintf(cmd, sizeof(cmd),
		 "e2fsck -fn %s >%s/rules.fsck 2>&1 || "
		 "{ cat %s/rules.fsck; exit 1; }",
		 img, dir, dir);
	CHECK_EQ(run(cmd), 0);
}

int main(void)
{
	char dir[] = "/tmp/test_fsops_range.XXXXXX", cmd[700];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 2;
	}
	test_rules(dir);
	test_model(dir);
	printf("%d passed, %d failed\n", check_passed, check_failed);
	if (check_failed == 0) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		run(cmd);
	}
	return check_failed ? 1 : 0;
}
