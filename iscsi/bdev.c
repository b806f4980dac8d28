/* bdev.c — the generic block layer (checks, splitting, sync waits,
 * reference counting) and the local image file backend. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iscsi/bdev.h"
#include "iscsi/log.h"

struct lf_bdev {
	const struct lf_bdev_ops *ops;
	void *impl;
	struct lf_bdev_info info;
	atomic_int refs;
	atomic_bool fenced;
	pthread_mutex_t why_lock;
	char why[256]; /* protected by why_lock */
};

struct lf_bdev *lf_bdev_new(const struct lf_bdev_ops *ops, void *impl,
			    const struct lf_bdev_info *info)
{
	struct lf_bdev *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->ops = ops;
	b->impl = impl;
	b->info = *info;
	if (!b->info.block_size)
		b->info.block_size = 512;
	if (!b->info.phys_block_size)
		b->info.phys_block_size = b->info.block_size;
	/* A transfer limit that is not a block multiple would make every
	 * split piece misaligned. */
	if (!b->info.max_transfer)
		b->info.max_transfer = 4u << 20;
	b->info.max_transfer -= b->info.max_transfer % b->info.block_size;
	if (!b->info.max_transfer)
		b->info.max_transfer = b->info.block_size;
	if (!b->info.max_unmap || b->info.max_unmap > LF_BDEV_UNMAP_CAP)
		b->info.max_unmap = LF_BDEV_UNMAP_CAP;
	b->info.max_unmap -= b->info.max_unmap % b->info.block_size;
	if (!b->info.max_unmap)
		b->info.max_unmap = b->info.block_size;
	if (b->info.unmap_granularity < b->info.block_size)
		b->info.unmap_granularity = b->info.block_size;
	atomic_init(&b->refs, 1);
	atomic_init(&b->fenced, false);
	pthread_mutex_init(&b->why_lock, NULL);
	return b;
}

const struct lf_bdev_info *lf_bdev_info(const struct lf_bdev *b)
{
	return &b->info;
}

struct lf_bdev *lf_bdev_ref(struct lf_bdev *b)
{
	atomic_fetch_add(&b->refs, 1);
	return b;
}

void lf_bdev_unref(struct lf_bdev *b)
{
	if (!b || atomic_fetch_sub(&b->refs, 1) != 1)
		return;
	if (b->ops->close)
		b->ops->close(b->impl);
	pthread_mutex_destroy(&b->why_lock);
	free(b);
}

/* One request cut into pieces of at most max_transfer: the pieces go out
 * together and the caller's callback runs once, after the last one. */
struct split {
	atomic_int pending;
	atomic_int err;
	lf_bdev_done_fn done;
	void *opaque;
	struct iovec iov[]; /* every piece's iovecs, back to back */
};

static void split_piece_done(void *opaque, int err)
{
	struct split *s = opaque;

	if (err) {
		int zero = 0;
		atomic_compare_exchange_strong(&s->err, &zero, err);
	}
	if (atomic_fetch_sub(&s->pending, 1) == 1) {
		s->done(s->opaque, atomic_load(&s->err));
		free(s);
	}
}

static size_t iov_total(const struct iovec *iov, int iovcnt)
{
	size_t n = 0;

	for (int i = 0; i < iovcnt; i++)
		n += iov[i].iov_len;
	return n;
}

static int check_range(struct lf_bdev *b, enum lf_bdev_op op, uint64_t off,
		       uint64_t len)
{
	if (op == LF_BDEV_FLUSH)
		return atomic_load(&b->fenced) ? -EROFS : 0;
	if (off % b->info.block_size || len % b->info.block_size)
		return -EINVAL;
	uint64_t size = lf_bdev_size(b);

	if (off > size || len > size - off)
		return -EINVAL;
	if (op != LF_BDEV_READ && b->info.read_only)
		return -EROFS;
	if (op != LF_BDEV_READ && atomic_load(&b->fenced))
		return -EROFS;
	if (op == LF_BDEV_UNMAP && !b->info.can_unmap)
		return -ENOTSUP;
	return 0;
}

int lf_bdev_submit(struct lf_bdev *b, enum lf_bdev_op op,
		   const struct iovec *iov, int iovcnt, uint64_t off,
		   uint64_t len, lf_bdev_done_fn done, void *opaque)
{
	uint64_t max =
		op == LF_BDEV_UNMAP ? b->info.max_unmap : b->info.max_transfer;
	struct split *s;
	int npieces, r;

	r = check_range(b, op, off, len);
	if (r)
		return r;
	if ((op == LF_BDEV_READ || op == LF_BDEV_WRITE) &&
	    iov_total(iov, iovcnt) != len)
		return -EINVAL;
	if (op == LF_BDEV_FLUSH || len <= max)
		return b->ops->submit(b->impl, op, iov, iovcnt, off, len, done,
				      opaque);

	npieces = (int)((len + max - 1) / max);
	/* Worst case each piece needs every source iovec plus one split. */
	s = malloc(sizeof(*s) +
		   sizeof(struct iovec) * (size_t)(iovcnt + npieces) + 16);
	if (!s)
		return -ENOMEM;
	atomic_init(&s->pending, npieces + 1); /* +1: ours, until all sent */
	atomic_init(&s->err, 0);
	s->done = done;
	s->opaque = opaque;

	int vi = 0;
	size_t vo = 0; /* offset inside iov[vi] */
	struct iovec *out = s->iov;
	for (uint64_t pos = 0; pos < len; pos += max) {
		uint64_t plen = len - pos < max ? len - pos : max;
		struct iovec *first = out;
		int cnt = 0;

		if (op != LF_BDEV_UNMAP) {
			uint64_t need = plen;
			while (need) {
				size_t avail = iov[vi].iov_len - vo;
				size_t take = avail < need ? avail : need;
				out->iov_base = (char *)iov[vi].iov_base + vo;
				out->iov_len = take;
				out++;
				cnt++;
				need -= take;
				vo += take;
				if (vo == iov[vi].iov_len) {
					vi++;
					vo = 0;
				}
			}
		}
		r = b->ops->submit(b->impl, op, first, cnt, off + pos, plen,
				   split_piece_done, s);
		if (r)
			split_piece_done(s, r);
	}
	split_piece_done(s, 0);
	return 0;
}

/* Synchronous calls wait on a completion that the I/O thread signals. */
struct waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int err;
};

static void waiter_done(void *opaque, int err)
{
	struct waiter *w = opaque;

	pthread_mutex_lock(&w->lock);
	w->err = err;
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static int submit_wait(struct lf_bdev *b, enum lf_bdev_op op,
		       const struct iovec *iov, int iovcnt, uint64_t off,
		       uint64_t len)
{
	struct waiter w = {.lock = PTHREAD_MUTEX_INITIALIZER,
			   .cond = PTHREAD_COND_INITIALIZER};
	int r;

	r = lf_bdev_submit(b, op, iov, iovcnt, off, len, waiter_done, &w);
	if (r)
		return r;
	pthread_mutex_lock(&w.lock);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.lock);
	pthread_mutex_unlock(&w.lock);
	pthread_cond_destroy(&w.cond);
	pthread_mutex_destroy(&w.lock);
	return w.err;
}

int lf_bdev_preadv(struct lf_bdev *b, const struct iovec *iov, int iovcnt,
		   uint64_t off)
{
	return submit_wait(b, LF_BDEV_READ, iov, iovcnt, off,
			   iov_total(iov, iovcnt));
}

int lf_bdev_pwritev(struct lf_bdev *b, const struct iovec *iov, int iovcnt,
		    uint64_t off)
{
	return submit_wait(b, LF_BDEV_WRITE, iov, iovcnt, off,
			   iov_total(iov, iovcnt));
}

int lf_bdev_pread(struct lf_bdev *b, void *buf, size_t len, uint64_t off)
{
	struct iovec iov = {buf, len};

	return lf_bdev_preadv(b, &iov, 1, off);
}

int lf_bdev_pwrite(struct lf_bdev *b, const void *buf, size_t len, uint64_t off)
{
	struct iovec iov = {(void *)buf, len};

	return lf_bdev_pwritev(b, &iov, 1, off);
}

int lf_bdev_flush(struct lf_bdev *b)
{
	return submit_wait(b, LF_BDEV_FLUSH, NULL, 0, 0, 0);
}

int lf_bdev_unmap(struct lf_bdev *b, uint64_t off, uint64_t len)
{
	return submit_wait(b, LF_BDEV_UNMAP, NULL, 0, off, len);
}

int lf_bdev_refresh_size(struct lf_bdev *b, uint64_t *old_size,
			 uint64_t *new_size)
{
	uint64_t old = lf_bdev_size(b), now = 0;
	int r;

	if (old_size)
		*old_size = old;
	if (new_size)
		*new_size = old;
	if (!b->ops->capacity)
		return -ENOTSUP;
	r = b->ops->capacity(b->impl, &now);
	if (r < 0)
		return r;
	now -= now % b->info.block_size;
	if (new_size)
		*new_size = now;
	if (now < old)
		return -EINVAL;
	if (now > old) {
		__atomic_store_n(&b->info.size, now, __ATOMIC_RELAXED);
		lf_info("bdev", "%s: capacity now %llu bytes (was %llu)",
			b->info.desc, (unsigned long long)now,
			(unsigned long long)old);
	}
	return 0;
}

static struct lf_bdev *below(struct lf_bdev *b)
{
	return b->ops->below ? b->ops->below(b->impl) : NULL;
}

int lf_bdev_pr_in(struct lf_bdev *b, int sa, void *buf, size_t len)
{
	if (!b->ops->pr_in)
		return below(b) ? lf_bdev_pr_in(below(b), sa, buf, len)
				: -EOPNOTSUPP;
	return b->ops->pr_in(b->impl, sa, buf, len);
}

int lf_bdev_pr_out(struct lf_bdev *b, int sa, int type, uint64_t key,
		   uint64_t sa_key)
{
	if (!b->ops->pr_out)
		return below(b)
			       ? lf_bdev_pr_out(below(b), sa, type, key, sa_key)
			       : -EOPNOTSUPP;
	return b->ops->pr_out(b->impl, sa, type, key, sa_key);
}

void lf_bdev_fence(struct lf_bdev *b, const char *why)
{
	bool was;

	if (below(b))
		lf_bdev_fence(below(b), why);
	pthread_mutex_lock(&b->why_lock);
	was = atomic_exchange(&b->fenced, true);
	if (!was)
		snprintf(b->why, sizeof(b->why), "%s", why);
	pthread_mutex_unlock(&b->why_lock);
	if (!was && !below(b))
		lf_err("bdev", "%s: fenced by %s; no more writes to it",
		       b->info.desc, why);
}

bool lf_bdev_fenced(struct lf_bdev *b, char *why, size_t len)
{
	if (!atomic_load(&b->fenced))
		return below(b) ? lf_bdev_fenced(below(b), why, len) : false;
	if (why && len) {
		pthread_mutex_lock(&b->why_lock);
		snprintf(why, len, "%s", b->why);
		pthread_mutex_unlock(&b->why_lock);
	}
	return true;
}

/* ---- local image files ---- */

struct file_bdev {
	int fd;
};

static int file_submit(void *impl, enum lf_bdev_op op, const struct iovec *iov,
		       int iovcnt, uint64_t off, uint64_t len,
		       lf_bdev_done_fn done, void *opaque)
{
	struct file_bdev *f = impl;
	struct iovec local[64];
	int r = 0;

	switch (op) {
	case LF_BDEV_READ:
	case LF_BDEV_WRITE: {
		/* preadv may return short; walk a private copy of the iovecs.
		 */
		struct iovec *v =
			iovcnt <= 64 ? local : malloc(sizeof(*v) * iovcnt);
		int vi = 0;
		if (!v) {
			r = -ENOMEM;
			break;
		}
		memcpy(v, iov, sizeof(*v) * iovcnt);
		while (len) {
			ssize_t n = op == LF_BDEV_READ
					    ? preadv(f->fd, v + vi, iovcnt - vi,
						     (off_t)off)
					    : pwritev(f->fd, v + vi,
						      iovcnt - vi, (off_t)off);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				r = -errno;
				break;
			}
			if (n == 0) { /* file shrank under us */
				r = -EIO;
				break;
			}
			off += n;
			len -= n;
			while (n && vi < iovcnt) {
				size_t t = (size_t)n < v[vi].iov_len
						   ? (size_t)n
						   : v[vi].iov_len;
				v[vi].iov_base = (char *)v[vi].iov_base + t;
				v[vi].iov_len -= t;
				n -= t;
				if (!v[vi].iov_len)
					vi++;
			}
		}
		if (v != local)
			free(v);
		break;
	}
	case LF_BDEV_FLUSH:
		if (fdatasync(f->fd))
			r = -errno;
		break;
	case LF_BDEV_UNMAP:
		if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)off, (off_t)len))
			r = -errno;
		break;
	}
	done(opaque, r);
	return 0;
}

static void file_close(void *impl)
{
	struct file_bdev *f = impl;

	close(f->fd);
	free(f);
}

static int file_capacity(void *impl, uint64_t *size)
{
	struct file_bdev *f = impl;
	struct stat st;

	if (fstat(f->fd, &st))
		return -errno;
	if (S_ISBLK(st.st_mode))
		return ioctl(f->fd, BLKGETSIZE64, size) ? -errno : 0;
	*size = (uint64_t)st.st_size;
	return 0;
}

static const struct lf_bdev_ops file_ops = {
	.submit = file_submit,
	.close = file_close,
	.capacity = file_capacity,
};

int lf_bdev_open_file(const char *path, bool read_only, struct lf_bdev **out)
{
	struct lf_bdev_info info = {0};
	struct file_bdev *f;
	struct stat st;
	int fd, r;

	fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		lf_err("bdev", "%s: cannot open: %m", path);
		return r;
	}
	if (fstat(fd, &st)) {
		r = -errno;
		goto fail;
	}
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz;
		if (ioctl(fd, BLKGETSIZE64, &sz)) {
			r = -errno;
			goto fail;
		}
		info.size = sz;
	} else if (S_ISREG(st.st_mode)) {
		info.size = (uint64_t)st.st_size;
		info.can_unmap = true;
		info.unmap_zeroes = true;
	} else {
		lf_err("bdev", "%s: not a regular file or block device", path);
		r = -EINVAL;
		goto fail;
	}
	info.block_size = 512;
	info.phys_block_size = 4096;
	info.max_transfer = 4u << 20;
	info.read_only = read_only;
	info.local = true;
	info.size -= info.size % info.block_size;
	snprintf(info.desc, sizeof(info.desc), "file://%s", path);

	f = calloc(1, sizeof(*f));
	if (!f) {
		r = -ENOMEM;
		goto fail;
	}
	f->fd = fd;
	*out = lf_bdev_new(&file_ops, f, &info);
	if (!*out) {
		free(f);
		r = -ENOMEM;
		goto fail;
	}
	return 0;
fail:
	close(fd);
	return r;
}
