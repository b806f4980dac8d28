/* perf_fsops.c — micro-benchmark of fsimage/fsops.h on a file-backed volume.
 *
 * Not a CTest test (the name does not start with test_): build by hand,
 * linking the lunfs libraries of a build directory, with
 *   -Wl,--wrap=ext2fs_bmap2,--wrap=ext2fs_read_inode_full,
 *   --wrap=ext2fs_write_inode_full,--wrap=ext2fs_new_inode
 * so it can count how often fsops calls into libext2fs per operation:
 *
 *   B=build-fsspeed; cc -O2 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I. \
 *     -I/usr/include/ext2fs tests/unit/perf_fsops.c -o $B/perf_fsops \
 *     -Wl,--wrap=ext2fs_bmap2 -Wl,--wrap=ext2fs_read_inode_full \
 *     -Wl,--wrap=ext2fs_write_inode_full -Wl,--wrap=ext2fs_new_inode \
 *     $B/tools/liblunfs_ctl.a $B/fuse/liblunfs_fuse.a \
 *     $B/fsimage/liblunfs_fsimage.a $B/iscsi/liblunfs_iscsi.a \
 *     -liscsi -ljson-c -lext2fs -lcom_err -lfuse3 -lpthread
 *   $B/perf_fsops [/dev/shm/perf_fsops.img]
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsimage/fsops.h"
#include "fsimage/iomgr.h"
#include "fsimage/volume_int.h"

#define MIB   (1024 * 1024)
#define NBIG  256
#define NRAND 10000
#define NFILE 10000

static unsigned long n_bmap, n_iread, n_iwrite, n_newino;

errcode_t __real_ext2fs_bmap2(ext2_filsys, ext2_ino_t, struct ext2_inode *,
			      char *, int, blk64_t, int *, blk64_t *);
errcode_t __wrap_ext2fs_bmap2(ext2_filsys, ext2_ino_t, struct ext2_inode *,
			      char *, int, blk64_t, int *, blk64_t *);
errcode_t __wrap_ext2fs_bmap2(ext2_filsys fs, ext2_ino_t ino,
			      struct ext2_inode *in, char *bb, int flags,
			      blk64_t b, int *rf, blk64_t *pb)
{
	n_bmap++;
	return __real_ext2fs_bmap2(fs, ino, in, bb, flags, b, rf, pb);
}

errcode_t __real_ext2fs_read_inode_full(ext2_filsys, ext2_ino_t,
					struct ext2_inode *, int);
errcode_t __wrap_ext2fs_read_inode_full(ext2_filsys, ext2_ino_t,
					struct ext2_inode *, int);
errcode_t __wrap_ext2fs_read_inode_full(ext2_filsys fs, ext2_ino_t ino,
					struct ext2_inode *in, int sz)
{
	n_iread++;
	return __real_ext2fs_read_inode_full(fs, ino, in, sz);
}

errcode_t __real_ext2fs_write_inode_full(ext2_filsys, ext2_ino_t,
					 struct ext2_inode *, int);
errcode_t __wrap_ext2fs_write_inode_full(ext2_filsys, ext2_ino_t,
					 struct ext2_inode *, int);
errcode_t __wrap_ext2fs_write_inode_full(ext2_filsys fs, ext2_ino_t ino,
					 struct ext2_inode *in, int sz)
{
	n_iwrite++;
	return __real_ext2fs_write_inode_full(fs, ino, in, sz);
}

errcode_t __real_ext2fs_new_inode(ext2_filsys, ext2_ino_t, int,
				  ext2fs_inode_bitmap, ext2_ino_t *);
errcode_t __wrap_ext2fs_new_inode(ext2_filsys, ext2_ino_t, int,
				  ext2fs_inode_bitmap, ext2_ino_t *);
errcode_t __wrap_ext2fs_new_inode(ext2_filsys fs, ext2_ino_t dir, int mode,
				  ext2fs_inode_bitmap map, ext2_ino_t *ret)
{
	n_newino++;
	return __real_ext2fs_new_inode(fs, dir, mode, map, ret);
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

struct mark {
	double t;
	unsigned long bmap, iread, iwrite, newino;
	struct lf_iocache_stats st;
};

static void mark(struct lf_vol *v, struct mark *m)
{
	m->t = now_s();
	m->bmap = n_bmap;
	m->iread = n_iread;
	m->iwrite = n_iwrite;
	m->newino = n_newino;
	lf_iocache_get_stats(v->cache, &m->st);
}

static void report(struct lf_vol *v, const char *what, const struct mark *a,
		   unsigned long ops, double mib)
{
	struct mark b;
	double dt;

	mark(v, &b);
	dt = b.t - a->t;
	printf("%-28s %8.1f ms", what, dt * 1e3);
	if (mib > 0)
		printf(" %8.0f MiB/s", mib / dt);
	else
		printf(" %8.0f op/s ", ops / dt);
	printf("  per op: bmap %.1f iread %.1f iwrite %.1f  cache miss %lu "
	       "hit %lu devR %.1f MiB devW %.1f MiB\n",
	       (double)(b.bmap - a->bmap) / ops,
	       (double)(b.iread - a->iread) / ops,
	       (double)(b.iwrite - a->iwrite) / ops,
	       (unsigned long)(b.st.misses - a->st.misses),
	       (unsigned long)(b.st.hits - a->st.hits),
	       (b.st.bytes_read - a->st.bytes_read) / (double)MIB,
	       (b.st.bytes_written - a->st.bytes_written) / (double)MIB);
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
		if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
			perror(path);
			exit(2);
		}
		close(fd);
	}
	if (lf_bdev_open_file(path, false, &b) < 0)
		exit(2);
	if (lf_vol_open(b, &o, &v, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		exit(2);
	}
	lf_bdev_unref(b);
	return v;
}

static void die(const char *what, long r)
{
	fprintf(stderr, "%s failed: %ld\n", what, r);
	exit(1);
}

int main(int argc, char **argv)
{
	const char *img = argc > 1 ? argv[1] : "/dev/shm/perf_fsops.img";
	const struct lf_owner o = {1000, 1000, false, 0};
	struct lf_vol *v = open_img(img, 2048ull * MIB, true);
	char *buf = malloc(MIB), name[64];
	struct lf_stat st;
	unsigned seed = 1;
	struct mark m;
	uint64_t f, d;
	ssize_t r;

	memset(buf, 0xa5, MIB);
	if (lf_fs_mknod(v, LF_ROOT_INO, "big", S_IFREG | 0644, 0, &o, &st))
		die("mknod", 0);
	f = st.ino;

	mark(v, &m);
	for (int i = 0; i < NBIG; i++)
		if ((r = lf_fs_write(v, f, buf, MIB, (uint64_t)i * MIB)) != MIB)
			die("write", r);
	report(v, "seq write 1 MiB (new)", &m, NBIG, NBIG);
	mark(v, &m);
	if (lf_fs_fsync(v, f, false))
		die("fsync", 0);
	report(v, "fsync", &m, 1, 0);

	mark(v, &m);
	for (int i = 0; i < NBIG; i++)
		if ((r = lf_fs_write(v, f, buf, MIB, (uint64_t)i * MIB)) != MIB)
			die("overwrite", r);
	report(v, "seq overwrite 1 MiB", &m, NBIG, NBIG);

	mark(v, &m);
	for (int i = 0; i < NBIG; i++)
		if ((r = lf_fs_read(v, f, buf, MIB, (uint64_t)i * MIB)) != MIB)
			die("read", r);
	report(v, "seq read 1 MiB", &m, NBIG, NBIG);

	mark(v, &m);
	for (int i = 0; i < NBIG * 8; i++)
		if ((r = lf_fs_read(v, f, buf, 128 << 10,
				    (uint64_t)i * (128 << 10))) != 128 << 10)
			die("read", r);
	report(v, "seq read 128 KiB", &m, NBIG * 8, NBIG);

	mark(v, &m);
	for (int i = 0; i < NRAND; i++) {
		uint64_t blk = (uint64_t)rand_r(&seed) % (NBIG * 256);

		if ((r = lf_fs_read(v, f, buf, 4096, blk * 4096)) != 4096)
			die("rand read", r);
	}
	report(v, "rand read 4 KiB", &m, NRAND, 0);

	if (lf_fs_mkdir(v, LF_ROOT_INO, "d", 0755, &o, &st))
		die("mkdir", 0);
	d = st.ino;
	mark(v, &m);
	for (int i = 0; i < NFILE; i++) {
		snprintf(name, sizeof(name), "file-%06d", i);
		if (lf_fs_mknod(v, d, name, S_IFREG | 0644, 0, &o, &st))
			die("create", i);
		if ((r = lf_fs_write(v, st.ino, buf, 4096, 0)) != 4096)
			die("small write", r);
	}
	report(v, "create+write 4 KiB", &m, NFILE, 0);

	/* Cold: reopen so neither the name index nor the block cache holds
	 * anything. */
	if (lf_vol_close(v))
		die("close", 0);
	v = open_img(img, 0, false);
	mark(v, &m);
	for (int i = 0; i < NFILE; i++) {
		snprintf(name, sizeof(name), "file-%06d", i);
		if (lf_fs_lookup(v, d, name, &st))
			die("lookup", i);
	}
	report(v, "lookup+stat (cold)", &m, NFILE, 0);
	mark(v, &m);
	for (int i = 0; i < NFILE; i++) {
		snprintf(name, sizeof(name), "file-%06d", i);
		if (lf_fs_unlink(v, d, name, NULL))
			die("unlink", i);
	}
	report(v, "unlink", &m, NFILE, 0);
	mark(v, &m);
	if (lf_vol_close(v))
		die("close", 0);
	printf("%-28s %8.1f ms\n", "close", (now_s() - m.t) * 1e3);
	free(buf);
	return 0;
}
