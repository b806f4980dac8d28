/* test_mount.c — real FUSE mounts of image files (needs /dev/fuse and
 * root): the block-file view byte for byte, and the filesystem view with
 * two id-mapped mounts of one volume, read-only and fsGroup views. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fsimage/volume.h"
#include "fuse/mount.h"
#include "tests/unit/check.h"

#define IMG_SIZE (64u << 20)

static char tmpdir[] = "/tmp/lunfs-test-mount.XXXXXX";

struct exit_flag {
	atomic_int fired;
};

static void on_exit_cb(void *ctx, struct lf_mount *m)
{
	struct exit_flag *f = ctx;

	atomic_fetch_add(&f->fired, 1);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

static bool mounted(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[4096], pat[1100];
	bool found = false;

	if (!f)
		return false;
	snprintf(pat, sizeof(pat), " %s ", path);
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, pat) && strstr(line, " fuse.lunfs ");
	fclose(f);
	return found;
}

/* Last resort for a test that failed half-way. */
static void force_unmount(const char *path)
{
	char cmd[1200];

	if (!mounted(path))
		return;
	snprintf(cmd, sizeof(cmd),
		 "fusermount3 -u -z '%s' 2>/dev/null || umount -l '%s'", path,
		 path);
	if (system(cmd) != 0)
		fprintf(stderr, "could not unmount %s\n", path);
}

static int make_image(const char *path, bool pattern)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, IMG_SIZE) < 0)
		ret = -errno;
	if (pattern && ret == 0) {
		static unsigned char buf[1 << 20];

		for (unsigned off = 0; off < IMG_SIZE && ret == 0;
		     off += sizeof(buf)) {
			for (size_t i = 0; i < sizeof(buf); i++)
				buf[i] = (unsigned char)((off + i) * 7 / 3);
			if (pwrite(fd, buf, sizeof(buf), off) !=
			    (ssize_t)sizeof(buf))
				ret = -EIO;
		}
	}
	close(fd);
	return ret;
}

/* ---- block volume as a file ---- */

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed + i * 13 + (i >> 9));
}

static void test_block(void)
{
	char img[512], file[512], dir[512], err[256] = "";
	struct lf_mount_opts o;
	struct lf_mount *m = NULL, *m2 = NULL;
	struct lf_bdev *b = NULL;
	struct lf_served *sv = NULL;
	struct exit_flag ef = {0};
	static unsigned char wbuf[300000], rbuf[300000];
	struct stat st;
	int fd = -1, ifd = -1;

	snprintf(img, sizeof(img), "%s/block.img", tmpdir);
	snprintf(file, sizeof(file), "%s/blockfile", tmpdir);
	snprintf(dir, sizeof(dir), "%s/blockdir", tmpdir);
	CHECK_EQ(make_image(img, true), 0);
	close(open(file, O_CREAT | O_WRONLY, 0600));
	mkdir(dir, 0755);
	CHECK_EQ(lf_bdev_open_file(img, false, &b), 0);
	if (!b)
		return;
	sv = lf_served_new_block(b);
	CHECK(sv != NULL);
	if (!sv)
		goto out;

	lf_mount_opts_init(&o);
	o.on_exit = on_exit_cb;
	o.on_exit_ctx = &ef;

	/* Path errors. */
	char missing[600];

	snprintf(missing, sizeof(missing), "%s/nope", tmpdir);
	CHECK_EQ(lf_mount_block(sv, missing, &o, &m, err, sizeof(err)),
		 -ENOENT);
	CHECK(strstr(err, "does not exist") != NULL);
	CHECK(lf_mount_block(sv, dir, &o, &m, err, sizeof(err)) < 0);
	CHECK(strstr(err, "not a regular file") != NULL);
	CHECK(m == NULL);

	CHECK_EQ(lf_mount_block(sv, file, &o, &m, err, sizeof(err)), 0);
	if (!m) {
		fprintf(stderr, "mount: %s\n", err);
		goto out;
	}
	CHECK(mounted(file));
	CHECK_EQ(lf_mount_block(sv, file, &o, &m2, err, sizeof(err)), -EBUSY);
	CHECK(strstr(err, "already a lunfs mount") != NULL);

	CHECK_EQ(stat(file, &st), 0);
	CHECK(S_ISREG(st.st_mode));
	CHECK_EQ(st.st_size, IMG_SIZE);
	CHECK_EQ(st.st_mode & 07777, 0660);
	if (geteuid() == 0) {
		char ra[128], val[16] = "";
		FILE *f;

		snprintf(ra, sizeof(ra), "/sys/class/bdi/%u:%u/read_ahead_kb",
			 major(st.st_dev), minor(st.st_dev));
		f = fopen(ra, "r");
		CHECK(f && fgets(val, sizeof(val), f));
		CHECK_EQ(atoi(val), 4096);
		if (f)
			fclose(f);
	}

	fd = open(file, O_RDWR);
	ifd = open(img, O_RDONLY);
	CHECK(fd >= 0 && ifd >= 0);
	if (fd < 0 || ifd < 0)
		goto out;

	/* Reads see the image. */
	CHECK_EQ(pread(fd, rbuf, 100000, 12345), 100000);
	CHECK_EQ(pread(ifd, wbuf, 100000, 12345), 100000);
	CHECK(memcmp(rbuf, wbuf, 100000) == 0);

	static const struct {
		off_t off;
		size_t len;
	} w[] = {
		{1000, 3000},
		{4096 * 10 + 7, 70000},
		{511, 2},
		{8192, 4096},
		{1 << 20, 1 << 18},
		{IMG_SIZE - 1000, 1000},
		{IMG_SIZE - 4097, 1},
		{5 << 20 | 3, 299999},
	};
	for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
		fill(wbuf, w[i].len, (unsigned)i * 31 + 1);
		CHECK_EQ(pwrite(fd, wbuf, w[i].len, w[i].off),
			 (ssize_t)w[i].len);
	}
	CHECK_EQ(fsync(fd), 0);
	CHECK_EQ(fdatasync(fd), 0);
	for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
		fill(wbuf, w[i].len, (unsigned)i * 31 + 1);
		memset(rbuf, 0, w[i].len);
		CHECK_EQ(pread(ifd, rbuf, w[i].len, w[i].off),
			 (ssize_t)w[i].len);
		if (memcmp(rbuf, wbuf, w[i].len) != 0)
			fprintf(stderr, "image differs for write %zu\n", i);
		CHECK(memcmp(rbuf, wbuf, w[i].len) == 0);
		memset(rbuf, 0, w[i].len);
		CHECK_EQ(pread(fd, rbuf, w[i].len, w[i].off),
			 (ssize_t)w[i].len);
		CHECK(memcmp(rbuf, wbuf, w[i].len) == 0);
	}
	/* Neighbours of an unaligned write are untouched. */
	CHECK_EQ(pread(ifd, rbuf, 2, 999), 2);
	CHECK_EQ(rbuf[0], (unsigned char)(999 * 7 / 3));
	CHECK_EQ(pread(ifd, rbuf, 1, 4000), 1);
	CHECK_EQ(rbuf[0], (unsigned char)(4000 * 7 / 3));

	/* The end of the device. */
	errno = 0;
	CHECK_EQ(pwrite(fd, wbuf, 10, IMG_SIZE), -1);
	CHECK_EQ(errno, ENOSPC);
	CHECK_EQ(pread(fd, rbuf, 10, IMG_SIZE), 0);
	CHECK_EQ(pwrite(fd, wbuf, 10, IMG_SIZE - 4), 4);
	CHECK_EQ(fsync(fd), 0);

	/* Fixed size, fixed owner. */
	errno = 0;
	CHECK_EQ(ftruncate(fd, 4096), -1);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(ftruncate(fd, IMG_SIZE), 0);
	errno = 0;
	CHECK_EQ(chmod(file, 0600), -1);
	CHECK_EQ(errno, EPERM);
	close(fd);
	fd = -1;

	lf_mount_stop(m);
	m = NULL;
	CHECK(!mounted(file));
	CHECK_EQ(atomic_load(&ef.fired), 0);

	/* Read-only block mount. */
	o.read_only = true;
	CHECK_EQ(lf_mount_block(sv, file, &o, &m, err, sizeof(err)), 0);
	if (m) {
		CHECK_EQ(stat(file, &st), 0);
		CHECK_EQ(st.st_mode & 07777, 0440);
		errno = 0;
		CHECK_EQ(open(file, O_RDWR), -1);
		CHECK_EQ(errno, EROFS);
		fd = open(file, O_RDONLY);
		CHECK(fd >= 0);
		CHECK_EQ(pread(fd, rbuf, 4, IMG_SIZE - 4), 4);
		CHECK(memcmp(rbuf, wbuf, 4) == 0);
		close(fd);
		fd = -1;
		lf_mount_stop(m);
		m = NULL;
	}
	o.read_only = false;

	/* Stopped while a file is open: the connection is cut, not waited
	 * for forever. */
	CHECK_EQ(lf_mount_block(sv, file, &o, &m, err, sizeof(err)), 0);
	if (m) {
		fd = open(file, O_RDONLY);
		CHECK(fd >= 0);
		lf_mount_stop(m);
		m = NULL;
		CHECK(!mounted(file));
		CHECK_EQ(pread(fd, rbuf, 4096, 1 << 20), -1);
		close(fd);
		fd = -1;
		CHECK_EQ(atomic_load(&ef.fired), 0);
	}

	/* Unmounted from outside: on_exit fires, stop still works. */
	CHECK_EQ(lf_mount_block(sv, file, &o, &m, err, sizeof(err)), 0);
	if (m) {
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "fusermount3 -u '%s'", file);
		CHECK_EQ(system(cmd), 0);
		for (int i = 0; i < 500 && !atomic_load(&ef.fired); i++)
			sleep_ms(10);
		CHECK_EQ(atomic_load(&ef.fired), 1);
		lf_mount_stop(m);
		m = NULL;
		CHECK_EQ(atomic_load(&ef.fired), 1);
	}
out:
	if (fd >= 0)
		close(fd);
	if (ifd >= 0)
		close(ifd);
	if (m)
		lf_mount_stop(m);
	force_unmount(file);
	if (sv) {
		CHECK_EQ(lf_served_nmounts(sv), 0);
		lf_served_free(sv);
	}
	lf_bdev_unref(b);
	unlink(file);
	rmdir(dir);
	unlink(img);
}

/* Two block mounts of one bdev: a write through one is seen through the
 * other at once, even where the other had the range in its page cache. */
static void test_block_group(void)
{
	char img[512], f1[512], f2[512], err[256] = "";
	struct lf_mount_opts o;
	struct lf_mount *m1 = NULL, *m2 = NULL;
	struct lf_bdev *b = NULL;
	struct lf_served *sv = NULL;
	static unsigned char wbuf[1 << 17], rbuf[1 << 17];
	int fd1 = -1, fd2 = -1, bad = 0;

	snprintf(img, sizeof(img), "%s/group.img", tmpdir);
	snprintf(f1, sizeof(f1), "%s/group1", tmpdir);
	snprintf(f2, sizeof(f2), "%s/group2", tmpdir);
	CHECK_EQ(make_image(img, true), 0);
	close(open(f1, O_CREAT | O_WRONLY, 0600));
	close(open(f2, O_CREAT | O_WRONLY, 0600));
	CHECK_EQ(lf_bdev_open_file(img, false, &b), 0);
	if (!b)
		return;
	sv = lf_served_new_block(b);
	CHECK(sv != NULL);
	lf_mount_opts_init(&o);
	if (sv) {
		CHECK_EQ(lf_mount_block(sv, f1, &o, &m1, err, sizeof(err)), 0);
		CHECK_EQ(lf_mount_block(sv, f2, &o, &m2, err, sizeof(err)), 0);
	}
	if (!m1 || !m2) {
		fprintf(stderr, "group mount: %s\n", err);
		goto out;
	}
	CHECK_EQ(lf_served_nmounts(sv), 2);
	fd1 = open(f1, O_RDWR);
	fd2 = open(f2, O_RDWR);
	CHECK(fd1 >= 0 && fd2 >= 0);
	if (fd1 < 0 || fd2 < 0)
		goto out;
	for (unsigned i = 0; i < 200; i++) {
		off_t off = (off_t)((i * 7919u) % 512) * 4096 + (i % 3) * 100;
		size_t len = 1000 + (i * 4099u) % (sizeof(wbuf) - 1000);
		int w = i % 2 ? fd2 : fd1, r = i % 2 ? fd1 : fd2;

		/* The reader caches the range first. */
		if (pread(r, rbuf, len, off) != (ssize_t)len)
			bad++;
		fill(wbuf, len, i * 17 + 3);
		if (pwrite(w, wbuf, len, off) != (ssize_t)len || fsync(w) < 0)
			bad++;
		if (pread(r, rbuf, len, off) != (ssize_t)len ||
		    memcmp(rbuf, wbuf, len) != 0) {
			if (!bad)
				fprintf(stderr, "stale read at %lld+%zu\n",
					(long long)off, len);
			bad++;
		}
	}
	CHECK_EQ(bad, 0);
out:
	if (fd1 >= 0)
		close(fd1);
	if (fd2 >= 0)
		close(fd2);
	if (m1)
		lf_mount_stop(m1);
	if (m2)
		lf_mount_stop(m2);
	force_unmount(f1);
	force_unmount(f2);
	if (sv) {
		CHECK_EQ(lf_served_nmounts(sv), 0);
		lf_served_free(sv);
	}
	lf_bdev_unref(b);
	unlink(f1);
	unlink(f2);
	unlink(img);
}

/* ---- filesystem volume ---- */

/* Other mounts learn of a change asynchronously: poll briefly. */
#define EVENTUALLY(cond)                                                       \
	({                                                                     \
		bool ok_ = false;                                              \
		for (int i_ = 0; i_ < 300 && !(ok_ = (cond)); i_++)            \
			sleep_ms(10);                                          \
		ok_;                                                           \
	})

static uid_t uid_of(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 ? st.st_uid : (uid_t)-1;
}

static gid_t gid_of(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 ? st.st_gid : (gid_t)-1;
}

static bool exists(const char *p)
{
	struct stat st;

	return lstat(p, &st) == 0;
}

static bool content_is(const char *p, const char *want)
{
	char buf[256];
	int fd = open(p, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return false;
	buf[n] = '\0';
	return strcmp(buf, want) == 0;
}

static int write_file(const char *p, const char *s)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, s, strlen(s));
	if (fsync(fd) < 0)
		n = -1;
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -EIO;
}

static int count_dir(const char *p, const char *want, int *found)
{
	DIR *d = opendir(p);
	struct dirent *de;
	int n = 0;

	*found = 0;
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		n++;
		if (strcmp(de->d_name, want) == 0)
			(*found)++;
	}
	closedir(d);
	return n;
}

static void path_of(char *buf, size_t len, const char *dir, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

/* What a failed step saw, at once and after a while: a late notification
 * (delivered after the call returned) converges, a lost one does not. */
static void report_step(int i, int line, const char *qa, const char *qb,
			const char *pb, const char *want)
{
	struct stat sa, sb;
	bool late;

	memset(&sa, 0, sizeof(sa));
	memset(&sb, 0, sizeof(sb));
	lstat(qa, &sa);
	lstat(qb, &sb);
	late = EVENTUALLY(content_is(qb, want) && !exists(pb));
	fprintf(stderr,
		"coherence: step %d, line %d: through A ino %lu, through B "
		"ino %lu; B %s\n",
		i, line, (unsigned long)sa.st_ino, (unsigned long)sb.st_ino,
		late ? "caught up within 3 s (a late notification)"
		     : "still stale after 3 s (a lost notification)");
}

/* Steps per run: LUNFS_TEST_COHERENCE_STEPS (default 300) to stress it. */
static int coherence_iters(void)
{
	const char *e = getenv("LUNFS_TEST_COHERENCE_STEPS");

	return e && atoi(e) > 0 ? atoi(e) : 300;
}

/* Changes through A must be visible through B right after each call
 * returns: B is looked at before (so it caches) and after every step. */
static int coherence_steps(const char *da, const char *db, int iters)
{
	char pa[700], pb[700], qa[700], qb[700];
	int bad = 0, where = 0;

#define STEP(cond) (bad += !(cond) && !where ? (where = __LINE__, 1) : 0)
	for (int i = 0; i < iters && !bad; i++) {
		const char *want = i % 2 ? "odd" : "even";

		snprintf(pa, sizeof(pa), "%s/st/x%d", da, i);
		snprintf(pb, sizeof(pb), "%s/st/x%d", db, i);
		snprintf(qa, sizeof(qa), "%s/st/y%d", da, i % 7);
		snprintf(qb, sizeof(qb), "%s/st/y%d", db, i % 7);
		STEP(!exists(pb));
		STEP(write_file(pa, want) == 0);
		STEP(exists(pb));
		STEP(content_is(pb, want));
		/* Rename over an entry that B has cached. */
		(void)exists(qb);
		STEP(rename(pa, qa) == 0);
		STEP(!exists(pb));
		STEP(content_is(qb, want));
		if (i % 3 == 0) {
			STEP(unlink(qa) == 0);
			STEP(!exists(qb));
		}
		if (bad)
			report_step(i, where, qa, qb, pb, want);
	}
#undef STEP
	return bad;
}

/* Watches the directory through B all along, so that B's kernel holds
 * its locks while A's changes are being notified. */
struct watcher {
	const char *dir;
	atomic_bool stop;
};

static void *watch_dir(void *arg)
{
	struct watcher *w = arg;
	int found;

	while (!atomic_load(&w->stop))
		count_dir(w->dir, "x0", &found);
	return NULL;
}

/* Both mounts change the same directory at once: no deadlock, and once
 * quiet both agree. */
struct churner {
	const char *dir;
	const char *tag;
	int iters;
	int errors;
};

static void *churn(void *arg)
{
	struct churner *c = arg;
	char p[700], q[700];

	for (int i = 0; i < c->iters; i++) {
		snprintf(p, sizeof(p), "%s/ch/%s-%d", c->dir, c->tag, i % 13);
		snprintf(q, sizeof(q), "%s/ch/%s-r%d", c->dir, c->tag, i % 5);
		if (write_file(p, c->tag) < 0)
			c->errors++;
		if (rename(p, q) < 0)
			c->errors++;
		if (i % 4 == 0 && unlink(q) < 0)
			c->errors++;
		if (i % 17 == 0) {
			snprintf(p, sizeof(p), "%s/ch/d-%s", c->dir, c->tag);
			if (mkdir(p, 0755) < 0 || rmdir(p) < 0)
				c->errors++;
		}
	}
	return NULL;
}

/* da and db: mounts of one volume; dd: another one with da's ids. */
static void test_coherence(const char *da, const char *db, const char *dd)
{
	char p[700], q[700];
	struct watcher w = {.dir = NULL};
	struct churner c[4];
	pthread_t wt, ct[4];
	int found, na, nb;

	path_of(p, sizeof(p), da, "st");
	CHECK_EQ(mkdir(p, 0755), 0);
	path_of(q, sizeof(q), db, "st");
	CHECK(exists(q));
	CHECK_EQ(coherence_steps(da, db, coherence_iters()), 0);

	/* Again while B lists the directory without pause. */
	w.dir = q;
	atomic_store(&w.stop, false);
	CHECK_EQ(pthread_create(&wt, NULL, watch_dir, &w), 0);
	CHECK_EQ(coherence_steps(da, db, coherence_iters()), 0);
	atomic_store(&w.stop, true);
	pthread_join(wt, NULL);

	path_of(p, sizeof(p), da, "ch");
	CHECK_EQ(mkdir(p, 0755), 0);
	for (int i = 0; i < 4; i++) {
		c[i] = (struct churner){
			.dir = i % 2 ? dd : da,
			.tag = (const char *[]){"a", "b", "c", "d"}[i],
			.iters = 200};
		CHECK_EQ(pthread_create(&ct[i], NULL, churn, &c[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(ct[i], NULL);
		CHECK_EQ(c[i].errors, 0);
	}
	/* Deferred notifications (if any) land right after. */
	path_of(p, sizeof(p), da, "ch");
	path_of(q, sizeof(q), dd, "ch");
	CHECK(EVENTUALLY((na = count_dir(p, "a-r0", &found)) ==
			 count_dir(q, "a-r0", &found)));
	nb = count_dir(q, "a-r0", &found);
	CHECK(na == nb && na > 2);
}

static void test_fs(void)
{
	char img[512], da[512], db[512], dc[512], dd[512], err[256] = "";
	char p[700], q[700], r[700];
	struct lf_vol_opts vo = {.allow_format = true};
	struct lf_mount_opts oa, ob, oc, od;
	struct lf_mount *ma = NULL, *mb = NULL, *mc = NULL, *md = NULL;
	struct lf_bdev *b = NULL;
	struct lf_vol *v = NULL;
	struct lf_served *sv = NULL;
	struct stat st;
	int ret, found;

	snprintf(img, sizeof(img), "%s/fs.img", tmpdir);
	snprintf(da, sizeof(da), "%s/a", tmpdir);
	snprintf(db, sizeof(db), "%s/b", tmpdir);
	snprintf(dc, sizeof(dc), "%s/c", tmpdir);
	snprintf(dd, sizeof(dd), "%s/d", tmpdir);
	mkdir(da, 0755);
	mkdir(db, 0755);
	mkdir(dc, 0755);
	mkdir(dd, 0755);
	CHECK_EQ(make_image(img, false), 0);
	CHECK_EQ(lf_bdev_open_file(img, false, &b), 0);
	if (!b)
		return;
	ret = lf_vol_open(b, &vo, &v, err, sizeof(err));
	CHECK_EQ(ret, 0);
	if (ret < 0) {
		fprintf(stderr, "lf_vol_open: %s\n", err);
		goto out;
	}
	sv = lf_served_new(v);
	CHECK(sv != NULL);
	if (!sv)
		goto out;

	lf_mount_opts_init(&oa);
	lf_mount_opts_init(&ob);
	CHECK_EQ(lf_idmap_add(&ob.uidmap, "0:100000:65536", err, sizeof(err)),
		 0);
	CHECK_EQ(lf_idmap_add(&ob.gidmap, "0:200000:65536", err, sizeof(err)),
		 0);
	CHECK_EQ(lf_mount_fs(sv, da, &oa, &ma, err, sizeof(err)), 0);
	if (!ma) {
		fprintf(stderr, "mount A: %s\n", err);
		goto out;
	}
	CHECK_EQ(lf_mount_fs(sv, db, &ob, &mb, err, sizeof(err)), 0);
	if (!mb) {
		fprintf(stderr, "mount B: %s\n", err);
		goto out;
	}
	CHECK_EQ(lf_served_nmounts(sv), 2);
	CHECK_EQ(lf_mount_fs(sv, da, &oa, &mc, err, sizeof(err)), -EBUSY);
	CHECK(mc == NULL);

	/* Root presented through each map. */
	CHECK_EQ(stat(da, &st), 0);
	CHECK(S_ISDIR(st.st_mode));
	CHECK_EQ(st.st_uid, 0);
	CHECK_EQ(uid_of(db), 100000);
	CHECK_EQ(gid_of(db), 200000);

	/* Created through A, seen through B with B's ids. */
	path_of(p, sizeof(p), da, "f");
	path_of(q, sizeof(q), db, "f");
	CHECK_EQ(write_file(p, "hello"), 0);
	CHECK(EVENTUALLY(exists(q)));
	CHECK_EQ(uid_of(q), 100000);
	CHECK_EQ(gid_of(q), 200000);
	CHECK(content_is(q, "hello"));

	/* chown through A: B's cached attributes are invalidated. */
	CHECK_EQ(chown(p, 1000, 1001), 0);
	CHECK(EVENTUALLY(uid_of(q) == 101000));
	CHECK_EQ(gid_of(q), 201001);
	/* B can only store ids inside its map. */
	errno = 0;
	CHECK_EQ(chown(q, 5, -1), -1);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(chown(q, 100005, -1), 0);
	CHECK(EVENTUALLY(uid_of(p) == 5));
	/* Unmapped disk ids show as the overflow id. */
	CHECK_EQ(chown(p, 70000, -1), 0);
	CHECK(EVENTUALLY(uid_of(q) == 65534));

	/* Data written through A replaces B's cached pages. */
	CHECK_EQ(write_file(p, "HELLO!"), 0);
	CHECK(EVENTUALLY(content_is(q, "HELLO!")));

	/* Directory operations. */
	path_of(p, sizeof(p), da, "dir");
	CHECK_EQ(mkdir(p, 0750), 0);
	path_of(q, sizeof(q), db, "dir");
	CHECK(EVENTUALLY(exists(q)));
	CHECK_EQ(stat(q, &st), 0);
	CHECK(S_ISDIR(st.st_mode));
	CHECK_EQ(st.st_mode & 07777, 0750);
	path_of(p, sizeof(p), da, "f");
	path_of(q, sizeof(q), da, "dir/g");
	CHECK_EQ(rename(p, q), 0);
	path_of(p, sizeof(p), db, "f");
	CHECK(EVENTUALLY(!exists(p)));
	path_of(p, sizeof(p), db, "dir/g");
	CHECK(EVENTUALLY(content_is(p, "HELLO!")));
	CHECK(count_dir(db, "dir", &found) >= 3 && found == 1);
	path_of(p, sizeof(p), db, "dir");
	CHECK_EQ(count_dir(p, "g", &found), 3);
	CHECK_EQ(found, 1);

	/* Links. */
	path_of(p, sizeof(p), da, "dir/g");
	path_of(q, sizeof(q), da, "hard");
	CHECK_EQ(link(p, q), 0);
	CHECK_EQ(stat(q, &st), 0);
	CHECK_EQ(st.st_nlink, 2);
	path_of(q, sizeof(q), da, "sym");
	CHECK_EQ(symlink("dir/g", q), 0);
	{
		char t[64] = "";

		path_of(r, sizeof(r), db, "sym");
		CHECK(EVENTUALLY(exists(r)));
		CHECK_EQ(readlink(r, t, sizeof(t) - 1), 5);
		CHECK_STR(t, "dir/g");
		CHECK(content_is(r, "HELLO!"));
	}

	/* xattrs. */
	path_of(p, sizeof(p), da, "hard");
	CHECK_EQ(setxattr(p, "user.color", "blue", 4, 0), 0);
	{
		char xv[16] = "";

		path_of(q, sizeof(q), db, "hard");
		CHECK_EQ(getxattr(q, "user.color", xv, sizeof(xv)), 4);
		CHECK_STR(xv, "blue");
		CHECK(listxattr(q, NULL, 0) >= 11);
		CHECK_EQ(removexattr(q, "user.color"), 0);
		errno = 0;
		CHECK_EQ(getxattr(p, "user.color", xv, sizeof(xv)), -1);
		CHECK_EQ(errno, ENODATA);
	}

	/* Removal seen by the other mount. */
	path_of(p, sizeof(p), da, "dir/g");
	CHECK_EQ(unlink(p), 0);
	path_of(q, sizeof(q), db, "hard");
	CHECK(EVENTUALLY(stat(q, &st) == 0 && st.st_nlink == 1));
	path_of(p, sizeof(p), da, "dir");
	errno = 0;
	path_of(q, sizeof(q), db, "dir/g");
	CHECK(EVENTUALLY(!exists(q)));
	CHECK_EQ(rmdir(p), 0);
	path_of(q, sizeof(q), db, "dir");
	CHECK(EVENTUALLY(!exists(q)));

	/* Truncate through B, seen through A. */
	path_of(p, sizeof(p), da, "hard");
	path_of(q, sizeof(q), db, "hard");
	CHECK_EQ(truncate(q, 2), 0);
	CHECK(EVENTUALLY(content_is(p, "HE")));

	/* Many entries: readdir(plus) continues across reply buffers. */
	for (int i = 0; i < 300; i++) {
		snprintf(p, sizeof(p), "%s/many/entry-with-a-longish-name-%03d",
			 da, i);
		if (i == 0) {
			path_of(q, sizeof(q), da, "many");
			CHECK_EQ(mkdir(q, 0755), 0);
		}
		if (write_file(p, "") < 0) {
			CHECK(!"create many");
			break;
		}
	}
	path_of(q, sizeof(q), db, "many");
	CHECK(EVENTUALLY(
		count_dir(q, "entry-with-a-longish-name-299", &found) == 302));
	CHECK_EQ(found, 1);
	CHECK_EQ(count_dir(q, "entry-with-a-longish-name-000", &found), 302);
	CHECK_EQ(found, 1);

	/* Unlinked while open: the data lives until the last user. */
	{
		char buf[16] = "";
		int fd;

		path_of(p, sizeof(p), da, "doomed");
		CHECK_EQ(write_file(p, "still here"), 0);
		fd = open(p, O_RDONLY);
		CHECK(fd >= 0);
		CHECK_EQ(unlink(p), 0);
		CHECK(!exists(p));
		CHECK_EQ(pread(fd, buf, sizeof(buf) - 1, 0), 10);
		CHECK_STR(buf, "still here");
		close(fd);
	}

	/* A read-only view with fsGroup. */
	lf_mount_opts_init(&oc);
	oc.read_only = true;
	oc.fsgroup = 1234;
	CHECK_EQ(lf_mount_fs(sv, dc, &oc, &mc, err, sizeof(err)), 0);
	if (mc) {
		path_of(p, sizeof(p), dc, "new");
		errno = 0;
		CHECK_EQ(open(p, O_CREAT | O_WRONLY, 0644), -1);
		CHECK_EQ(errno, EROFS);
		errno = 0;
		CHECK_EQ(mkdir(p, 0755), -1);
		CHECK_EQ(errno, EROFS);
		path_of(p, sizeof(p), dc, "hard");
		CHECK_EQ(stat(p, &st), 0);
		CHECK_EQ(st.st_gid, 1234);
		CHECK_EQ(st.st_mode & 07777, 0644 | 0440); /* plugin: |= 0440 */
		CHECK(content_is(p, "HE"));
		CHECK_EQ(stat(dc, &st), 0);
		CHECK_EQ(st.st_gid, 1234);
		CHECK((st.st_mode & (S_ISGID | 0550)) == (S_ISGID | 0550));
		CHECK_EQ(st.st_mode & S_IWGRP, 0);
	}

	/* fsGroup on a read-write mount: new files belong to it on disk. */
	lf_mount_opts_init(&od);
	od.fsgroup = 1234;
	CHECK_EQ(lf_mount_fs(sv, dd, &od, &md, err, sizeof(err)), 0);
	if (md) {
		path_of(p, sizeof(p), dd, "hard");
		CHECK_EQ(stat(p, &st), 0);
		CHECK_EQ(st.st_mode & 07777, 0664); /* 0644 | 0660 */
		path_of(p, sizeof(p), dd, "owned");
		CHECK_EQ(write_file(p, "x"), 0);
		path_of(q, sizeof(q), da, "owned");
		CHECK(EVENTUALLY(gid_of(q) == 1234));
		path_of(q, sizeof(q), db, "owned");
		CHECK(EVENTUALLY(gid_of(q) == 201234));
		CHECK_EQ(stat(dd, &st), 0);
		CHECK((st.st_mode & (S_ISGID | S_IWGRP)) ==
		      (S_ISGID | S_IWGRP));
		test_coherence(da, db, dd);
	}
	{
		struct statvfs sf;

		CHECK_EQ(statvfs(da, &sf), 0);
		CHECK(sf.f_blocks > 0 && sf.f_bfree > 0);
	}
	CHECK_EQ(lf_served_nmounts(sv), 4);
	/* Out of the mounts, so the unmount below is not refused as busy. */
	if (chdir("/") < 0)
		CHECK(!"chdir");

out:
	if (md)
		lf_mount_stop(md);
	if (mc)
		lf_mount_stop(mc);
	if (mb)
		lf_mount_stop(mb);
	if (ma)
		lf_mount_stop(ma);
	force_unmount(da);
	force_unmount(db);
	force_unmount(dc);
	force_unmount(dd);
	if (sv) {
		CHECK_EQ(lf_served_nmounts(sv), 0);
		lf_served_free(sv);
	}
	if (v)
		CHECK_EQ(lf_vol_close(v), 0);
	if (b)
		lf_bdev_unref(b);
	if (v) {
		char cmd[700];

		snprintf(cmd, sizeof(cmd), "e2fsck -fn '%s' >&2", img);
		ret = system(cmd);
		CHECK(WIFEXITED(ret) && WEXITSTATUS(ret) == 0);
	}
	rmdir(da);
	rmdir(db);
	rmdir(dc);
	rmdir(dd);
	unlink(img);
}

int main(int argc, char **argv)
{
	if (access("/dev/fuse", R_OK | W_OK) != 0) {
		printf("test_mount: /dev/fuse not usable, skipped\n");
		return 0;
	}
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	if (argc < 2 || strcmp(argv[1], "fs") != 0) {
		test_block();
		test_block_group();
	}
	if (argc < 2 || strcmp(argv[1], "block") != 0)
		test_fs();
	rmdir(tmpdir);
	return check_report("test_mount");
}
