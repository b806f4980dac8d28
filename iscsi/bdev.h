/* bdev.h — a block device: the one interface fsimage/ and fuse/ use to reach
 * a LUN's bytes, whatever carries them (an iSCSI LUN, or a local image file
 * for demos and side-by-side comparisons).
 *
 * Contract:
 *  - Offsets and lengths are in bytes and must be multiples of
 *    lf_bdev_block_size() (the LUN's logical block size, 512 on tgtd);
 *    anything else is -EINVAL. Callers that need byte granularity keep
 *    their own read-modify-write (fsimage's cache does).
 *  - A request larger than lf_bdev_max_transfer() is split by the bdev;
 *    the pieces are in flight at the same time.
 *  - Synchronous calls return 0 or -errno (-EIO for a medium/transport
 *    error after retries, -ENOSPC for a full thin LUN, -EROFS for a
 *    write-protected LUN, -ENOTSUP for UNMAP on a LUN without it).
 *  - lf_bdev_submit() starts a request and returns at once; `done` runs
 *    exactly once, on the bdev's I/O thread (or inline for backends
 *    without one), with 0 or -errno. The iovec array and the buffers it
 *    points at must stay valid until then. `done` must not block.
 *  - Thread-safe: any thread may call any function at any time, except
 *    that lf_bdev_unref() must not race with calls on the same reference.
 *  - Reference counted: lf_bdev_ref()/lf_bdev_unref(); the last unref
 *    releases the LUN (and, for iSCSI, its registry reference).
 */
#ifndef LUNFS_BDEV_H
#define LUNFS_BDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct lf_bdev;

enum lf_bdev_op { LF_BDEV_READ, LF_BDEV_WRITE, LF_BDEV_FLUSH, LF_BDEV_UNMAP };

typedef void (*lf_bdev_done_fn)(void *opaque, int err);

/* What a backend implements; lf_bdev_new() wraps it. */
struct lf_bdev_ops {
	/* Start one request no larger than max_transfer (already split and
	 * aligned by the generic layer). */
	int (*submit)(void *impl, enum lf_bdev_op op, const struct iovec *iov,
		      int iovcnt, uint64_t off, uint64_t len,
		      lf_bdev_done_fn done, void *opaque);
	void (*close)(void *impl);
	/* Optional: ask the device for its size again (READ CAPACITY). */
	int (*capacity)(void *impl, uint64_t *size);
	/* Optional: SCSI-3 persistent reservations (pr.h). pr_in runs
	 * PERSISTENT RESERVE IN service action sa into buf (len bytes);
	 * pr_out runs PERSISTENT RESERVE OUT with a basic parameter list.
	 * 0 or -errno: -EOPNOTSUPP when the target lacks PR (INVALID
	 * COMMAND OPERATION CODE), -EBUSY on RESERVATION CONFLICT. */
	int (*pr_in)(void *impl, int sa, void *buf, size_t len);
	int (*pr_out)(void *impl, int sa, int type, uint64_t key,
		      uint64_t sa_key);
	/* Optional, for a bdev stacked on another (the registry's): the
	 * one below, which PR commands and fencing reach through. */
	struct lf_bdev *(*below)(void *impl);
};

struct lf_bdev_info {
	uint64_t size;	     /* bytes */
	uint32_t block_size; /* logical block size, bytes */
	uint32_t phys_block_size;
	uint32_t max_transfer; /* bytes per command, already capped */
	bool can_unmap;
	bool unmap_zeroes; /* LBPRZ: unmapped blocks read back as zeros */
	/* Block Limits VPD, in bytes: the most one UNMAP may cover (0 from
	 * the target means "not reported": capped at LF_BDEV_UNMAP_CAP),
	 * and the granularity and alignment an unmapped range should keep
	 * (block_size and 0 when not reported). */
	uint64_t max_unmap;
	uint32_t unmap_granularity;
	uint32_t unmap_alignment;
	bool read_only;
	bool local;	/* a file or device of this host: no other initiator */
	char desc[160]; /* for messages: "iscsi://127.0.0.1:3260/iqn…/1" */
};

/* Our own bound on one UNMAP command, so each stays short. */
#define LF_BDEV_UNMAP_CAP (256ull << 20)

struct lf_bdev *lf_bdev_new(const struct lf_bdev_ops *ops, void *impl,
			    const struct lf_bdev_info *info);

/* Local image file backend (file:///path.img specs, benchmarks, tests). */
int lf_bdev_open_file(const char *path, bool read_only, struct lf_bdev **out);

const struct lf_bdev_info *lf_bdev_info(const struct lf_bdev *b);
static inline uint64_t lf_bdev_size(const struct lf_bdev *b)
{
	return __atomic_load_n(&lf_bdev_info(b)->size, __ATOMIC_RELAXED);
}
static inline uint32_t lf_bdev_block_size(const struct lf_bdev *b)
{
	return lf_bdev_info(b)->block_size;
}
static inline uint32_t lf_bdev_max_transfer(const struct lf_bdev *b)
{
	return lf_bdev_info(b)->max_transfer;
}
static inline const char *lf_bdev_desc(const struct lf_bdev *b)
{
	return lf_bdev_info(b)->desc;
}

int lf_bdev_submit(struct lf_bdev *b, enum lf_bdev_op op,
		   const struct iovec *iov, int iovcnt, uint64_t off,
		   uint64_t len, lf_bdev_done_fn done, void *opaque);

int lf_bdev_preadv(struct lf_bdev *b, const struct iovec *iov, int iovcnt,
		   uint64_t off);
int lf_bdev_pwritev(struct lf_bdev *b, const struct iovec *iov, int iovcnt,
		    uint64_t off);
int lf_bdev_pread(struct lf_bdev *b, void *buf, size_t len, uint64_t off);
int lf_bdev_pwrite(struct lf_bdev *b, const void *buf, size_t len,
		   uint64_t off);
/* SYNCHRONIZE CACHE: everything acknowledged before is on stable storage. */
int lf_bdev_flush(struct lf_bdev *b);
/* UNMAP; a range larger than max_unmap is split into several commands,
 * in flight together. The caller keeps granularity and alignment. */
int lf_bdev_unmap(struct lf_bdev *b, uint64_t off, uint64_t len);
/* Asks the device for its capacity again (after the LUN grew): a larger
 * size is taken and 0 returned; a LUN that shrank keeps the old size and
 * gets -EINVAL; -ENOTSUP for a backend that cannot tell. old_size and
 * new_size (either may be NULL) get what was and what the device said.
 * The size only ever grows, so readers racing with it see either. */
int lf_bdev_refresh_size(struct lf_bdev *b, uint64_t *old_size,
			 uint64_t *new_size);

/* Persistent reservations through the backend; -EOPNOTSUPP without. */
int lf_bdev_pr_in(struct lf_bdev *b, int sa, void *buf, size_t len);
int lf_bdev_pr_out(struct lf_bdev *b, int sa, int type, uint64_t key,
		   uint64_t sa_key);

/* Fencing. Once fenced, a bdev sends nothing that writes: WRITE, UNMAP
 * and SYNCHRONIZE CACHE fail with -EROFS before they reach the device,
 * for every holder of a reference; reads go on. A backend fences its
 * bdev itself when the target answers a write with RESERVATION CONFLICT
 * (another initiator preempted us); fsimage's MMP fences it when another
 * node rewrote the MMP block. `why` says by whom, for logs and status.
 * Never undone: a fenced volume is closed and attached again. */
void lf_bdev_fence(struct lf_bdev *b, const char *why);
/* True once fenced; why (if not NULL) gets the reason. */
bool lf_bdev_fenced(struct lf_bdev *b, char *why, size_t len);

struct lf_bdev *lf_bdev_ref(struct lf_bdev *b);
void lf_bdev_unref(struct lf_bdev *b);

#endif
