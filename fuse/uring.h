/* uring.h — a mount's FUSE requests over io_uring instead of read() and
 * write() on /dev/fuse (Linux >= 6.14 with the fuse module's
 * enable_uring parameter set).
 *
 * Contract, in the order devio.c calls it while INIT is answered:
 *  - lf_uring_prepare() before the INIT reply goes out: creates one ring
 *    and its buffers per CPU the kernel may queue on. NULL (logged once)
 *    if that is not possible; then the reply does not ask for io_uring
 *    and the mount keeps /dev/fuse. Once the reply asks for it, the
 *    kernel holds every request until each CPU's queue has an entry.
 *  - lf_uring_start() right after the reply was written: registers the
 *    entries and starts the threads. On failure it aborts the connection
 *    (the kernel would otherwise hold every request forever) and returns
 *    the negative errno.
 *  - lf_uring_reply() from the reply hook, on any thread: if unique is a
 *    request that came over a ring, copies the reply there, sends it and
 *    returns true.
 *  - lf_uring_stop() when the session loop has ended: no handler runs on
 *    the rings' threads after it returns (replies still pending, those of
 *    reads, can still be sent). Requests that still arrive wait until
 *    the connection is aborted or the rings are freed.
 *  - lf_uring_free() before the session is destroyed: stops if need be,
 *    then frees the rings.
 * Requests that still come over /dev/fuse (FORGET, INTERRUPT) and
 * notifications are not this module's.
 */
#ifndef LUNFS_URING_H
#define LUNFS_URING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct lf_mount;
struct lf_uring;

/* payload: the largest request or reply argument the kernel will pass,
 * max(8 KiB, max_write, max_pages pages) as negotiated. */
struct lf_uring *lf_uring_prepare(struct lf_mount *m, int fd, size_t payload);
int lf_uring_start(struct lf_uring *u);
bool lf_uring_reply(struct lf_uring *u, const struct iovec *iov, int count,
		    ssize_t *ret);
void lf_uring_stop(struct lf_uring *u);
void lf_uring_free(struct lf_uring *u);

#endif
