/* uring.c — FUSE over io_uring: one ring and one thread per CPU queue.
 *
 * Why: on the VMs lunfs was measured on, a FUSE round trip over
 * read()/write() of /dev/fuse costs 18–28 µs, most of it the kernel
 * waking a server thread on the other CPU and then the caller again. Over
 * io_uring the kernel queues a request on the ring of the CPU its caller
 * runs on; that ring's thread, pinned there, answers it without a
 * cross-CPU wakeup: 9 µs for the same bare request (README, "FUSE over
 * io_uring").
 *
 * Each ring entry is a header buffer (the request's fuse_in_header, its
 * per-opcode header and, on return, the fuse_out_header) and a payload
 * buffer (the rest of the request's arguments, then the reply's). The
 * payload sits HDR_ROOM bytes into a larger allocation so the two headers
 * can be copied in front of it and libfuse gets the request contiguous,
 * as read() would give it, without copying the payload.
 *
 * An entry goes back to the kernel (COMMIT_AND_FETCH) with its reply.
 * Most replies are sent while the handler runs on the entry's thread;
 * those are committed when the handler returns, so the kernel cannot hand
 * the entry a new request while the handler may still read the old one.
 * Reads reply later from the device's I/O thread; whichever of that reply
 * and the handler's return comes second commits (ent.state). Requests
 * that can wait long (fsync, fallocate) go to a small pool of workers, so
 * that they do not hold up the other requests of their CPU.
 *
 * Only a queue's own thread submits to its ring: the kernel delivers the
 * next request of an entry as work for the thread that committed it, and
 * cancels an entry whose committer exits. Replies from other threads are
 * handed over through a list and an eventfd the ring reads.
 */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <linux/fuse.h>

#include "fuse/mount_int.h"
#include "fuse/uring.h"
#include "iscsi/log.h"

#define MOD "fuse"

/* The kernel's ABI (include/uapi/linux/fuse.h, 7.42), which Debian 12's
 * header predates. */
#define UR_OP_HDR_MAX 128
struct ur_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};
struct ur_req_header {
	char in_out[128]; /* fuse_in_header, then fuse_out_header */
	char op_in[UR_OP_HDR_MAX];
	struct ur_ent_in_out ent;
};
struct ur_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};
enum { UR_CMD_REGISTER = 1, UR_CMD_COMMIT_AND_FETCH = 2 };

#define HDR_ROOM 4096u
/* Entries per CPU queue: the requests in flight there. 64 per mount in
 * all, at least 4 per queue, so a host with many CPUs does not get
 * hundreds of 1 MiB buffers per mount. */
#define DEPTH_TOTAL  64u
#define DEPTH_MIN    4u
#define DEPTH_MAX    32u
#define SLOW_WORKERS 2

enum ent_state { E_IDLE, E_RUNNING, E_RETURNED, E_REPLIED };

struct ent {
	struct queue *q;
	struct ur_req_header *hdr;
	char *room; /* HDR_ROOM, then the payload */
	struct iovec iov[2];
	_Atomic uint64_t unique; /* the request held, 0 if none */
	_Atomic int state;
	struct ent *next; /* on the slow list or a queue's done list */
};

struct queue {
	struct lf_uring *u;
	unsigned qid;
	struct io_uring ring; /* submitted to by the queue's thread only */
	bool ring_ok;
	int efd;	      /* eventfd: done is non-empty */
	uint64_t efd_buf;     /* what the ring's read of efd reads */
	pthread_mutex_t lock; /* protects done */
	struct ent *done;     /* replied to on other threads, to commit */
	pthread_t thread;
	bool started;
	struct ent *ents;
	int reg_err; /* set by the thread before it posts u->registered */
};

struct lf_uring {
	struct lf_mount *m;
	int fd;
	unsigned nq, depth;
	size_t payload;
	struct queue *qs;
	atomic_bool quit;
	pthread_mutex_t slow_lock;
	pthread_cond_t slow_cond; /* slow_head non-empty, or quit */
	struct ent *slow_head, **slow_tail;
	pthread_t slow[SLOW_WORKERS];
	int nslow;
	sem_t registered; /* posted by each queue's thread */
};

/* The entry whose request this thread is handling, and whether its reply
 * was sent during the handler. */
static __thread struct ent *tl_ent;
static __thread bool tl_replied;

/* The kernel makes one queue per possible CPU and wants them all. */
static unsigned possible_cpus(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
	unsigned a, b, max = 0;
	int c;

	if (!f)
		return (unsigned)get_nprocs_conf();
	while (fscanf(f, "%u", &a) == 1) {
		b = a;
		c = fgetc(f);
		if (c == '-' && fscanf(f, "%u", &b) == 1)
			c = fgetc(f);
		if (b + 1 > max)
			max = b + 1;
		if (c != ',')
			break;
	}
	fclose(f);
	return max ? max : (unsigned)get_nprocs_conf();
}

static struct io_uring_sqe *cmd_sqe(struct queue *q, struct ent *e, int op,
				    uint64_t commit_id)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
	struct ur_cmd_req *c;

	if (!sqe)
		return NULL;
	memset(sqe, 0, 2 * sizeof(*sqe)); /* a 128-byte entry */
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = q->u->fd;
	sqe->cmd_op = (uint32_t)op;
	if (op == UR_CMD_REGISTER) {
		sqe->addr = (uint64_t)(uintptr_t)e->iov;
		sqe->len = 2;
	}
	c = (struct ur_cmd_req *)sqe->cmd;
	c->qid = (uint16_t)q->qid;
	c->commit_id = commit_id;
	io_uring_sqe_set_data(sqe, e);
	return sqe;
}

/* On the queue's thread: hand e back to the kernel with the reply
 * already in its buffers, at the next submit. */
static void commit(struct ent *e)
{
	struct queue *q = e->q;
	uint64_t id = atomic_exchange(&e->unique, 0);

	atomic_store(&e->state, E_IDLE);
	/* The ring has room for a command per entry and the eventfd read
	 * (prepare); should it not, make room. */
	if (!cmd_sqe(q, e, UR_CMD_COMMIT_AND_FETCH, id)) {
		io_uring_submit(&q->ring);
		if (!cmd_sqe(q, e, UR_CMD_COMMIT_AND_FETCH, id))
			lf_err(MOD,
			       "%s: io_uring queue %u: no room for a reply",
			       q->u->m->path, q->qid);
	}
}

/* From any other thread: have e's queue thread commit it. */
static void commit_later(struct ent *e)
{
	struct queue *q = e->q;
	uint64_t one = 1;
	bool wake;

	pthread_mutex_lock(&q->lock);
	wake = !q->done;
	e->next = q->done;
	q->done = e;
	pthread_mutex_unlock(&q->lock);
	if (wake && write(q->efd, &one, sizeof(one)) < 0)
		lf_err(MOD, "%s: io_uring queue %u: cannot wake: %m",
		       q->u->m->path, q->qid);
}

static void arm_wakeup(struct queue *q)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

	io_uring_prep_read(sqe, q->efd, &q->efd_buf, sizeof(q->efd_buf), 0);
	io_uring_sqe_set_data(sqe, &q->efd);
}

static void commit_done(struct queue *q)
{
	struct ent *e;

	pthread_mutex_lock(&q->lock);
	e = q->done;
	q->done = NULL;
	pthread_mutex_unlock(&q->lock);
	while (e) {
		struct ent *next = e->next;

		commit(e);
		e = next;
	}
}

static bool copy_reply(struct ent *e, const struct iovec *iov, int count,
		       size_t *total)
{
	char *hdr = e->hdr->in_out, *pl = e->room + HDR_ROOM;
	size_t hlen = 0, plen = 0, hmax = sizeof(struct fuse_out_header);

	for (int i = 0; i < count; i++) {
		const char *p = iov[i].iov_base;
		size_t n = iov[i].iov_len,
		       h = hmax - hlen < n ? hmax - hlen : n;

		memcpy(hdr + hlen, p, h);
		hlen += h;
		if (n - h > e->q->u->payload - plen)
			return false;
		memcpy(pl + plen, p + h, n - h);
		plen += n - h;
	}
	e->hdr->ent.payload_sz = (uint32_t)plen;
	*total = hlen + plen;
	return hlen == hmax;
}

bool lf_uring_reply(struct lf_uring *u, const struct iovec *iov, int count,
		    ssize_t *ret)
{
	struct fuse_out_header oh;
	struct ent *e = NULL;
	size_t total;

	if (!u || count < 1 || iov[0].iov_len < sizeof(oh))
		return false;
	memcpy(&oh, iov[0].iov_base, sizeof(oh));
	if (oh.unique == 0)
		return false; /* a notification: /dev/fuse only */
	if (tl_ent && tl_ent->q->u == u &&
	    atomic_load(&tl_ent->unique) == oh.unique) {
		e = tl_ent;
	} else {
		for (unsigned i = 0; i < u->nq * u->depth && !e; i++) {
			struct ent *c = &u->qs[i / u->depth].ents[i % u->depth];

			if (atomic_load(&c->unique) == oh.unique)
				e = c;
		}
		if (!e)
			return false; /* came over /dev/fuse */
	}
	if (!copy_reply(e, iov, count, &total)) {
		/* Cannot happen within the negotiated sizes; the request
		 * still gets an answer. */
		lf_err(MOD, "%s: reply to request %llu too large for the ring",
		       u->m->path, (unsigned long long)oh.unique);
		oh.error = -EIO;
		oh.len = sizeof(oh);
		memcpy(e->hdr->in_out, &oh, sizeof(oh));
		e->hdr->ent.payload_sz = 0;
		total = sizeof(oh);
	}
	*ret = (ssize_t)total;
	if (e == tl_ent) {
		tl_replied = true; /* committed when the handler returns */
		return true;
	}
	if (atomic_exchange(&e->state, E_REPLIED) == E_RETURNED)
		commit_later(e);
	return true;
}

/* Run the request held by e on this thread, as libfuse's loop would a
 * request read from /dev/fuse; on_queue: this is e's queue thread. */
static void handle(struct ent *e, bool on_queue)
{
	struct lf_uring *u = e->q->u;
	struct fuse_in_header ih;
	uint32_t psz = e->hdr->ent.payload_sz;
	size_t k;
	char *start;

	memcpy(&ih, e->hdr->in_out, sizeof(ih));
	if (ih.len < sizeof(ih) + psz ||
	    (k = ih.len - sizeof(ih) - psz) > UR_OP_HDR_MAX ||
	    psz > u->payload) {
		lf_err(MOD, "%s: malformed request on io_uring queue %u",
		       u->m->path, e->q->qid);
		ih.len = sizeof(ih);
		k = 0;
		psz = 0;
	}
	start = e->room + HDR_ROOM - k - sizeof(ih);
	memcpy(start, &ih, sizeof(ih));
	memcpy(start + sizeof(ih), e->hdr->op_in, k);

	tl_ent = e;
	tl_replied = false;
	lf_devio_note(u->m, start, ih.len);
	fuse_session_process_buf(u->m->se, &(struct fuse_buf){
						   .mem = start,
						   .size = ih.len,
					   });
	tl_ent = NULL;
	if (tl_replied || atomic_exchange(&e->state, E_RETURNED) == E_REPLIED) {
		if (on_queue)
			commit(e);
		else
			commit_later(e);
	}
}

static bool is_slow(uint32_t opcode)
{
	switch (opcode) {
	case FUSE_FSYNC:
	case FUSE_FSYNCDIR:
	case FUSE_FLUSH:
	case FUSE_SETLKW:
	case FUSE_FALLOCATE:
	case FUSE_IOCTL: /* FITRIM walks the whole volume */
	case 47:	 /* FUSE_COPY_FILE_RANGE */
	case 50:	 /* FUSE_SYNCFS */
		return true;
	default:
		return false;
	}
}

static void *slow_main(void *arg)
{
	struct lf_uring *u = arg;

	pthread_mutex_lock(&u->slow_lock);
	for (;;) {
		struct ent *e = u->slow_head;

		if (!e) {
			if (atomic_load(&u->quit))
				break;
			pthread_cond_wait(&u->slow_cond, &u->slow_lock);
			continue;
		}
		u->slow_head = e->next;
		if (!u->slow_head)
			u->slow_tail = &u->slow_head;
		pthread_mutex_unlock(&u->slow_lock);
		handle(e, false);
		pthread_mutex_lock(&u->slow_lock);
	}
	pthread_mutex_unlock(&u->slow_lock);
	return NULL;
}

static void to_slow(struct ent *e)
{
	struct lf_uring *u = e->q->u;

	e->next = NULL;
	pthread_mutex_lock(&u->slow_lock);
	*u->slow_tail = e;
	u->slow_tail = &e->next;
	pthread_cond_signal(&u->slow_cond);
	pthread_mutex_unlock(&u->slow_lock);
}

/* A request arrived in e: run it here, or on a slow worker. */
static void take(struct ent *e)
{
	struct fuse_in_header ih;

	memcpy(&ih, e->hdr->in_out, sizeof(ih));
	atomic_store(&e->state, E_RUNNING);
	atomic_store(&e->unique, ih.unique);
	if (is_slow(ih.opcode))
		to_slow(e);
	else
		handle(e, true);
}

static void *queue_main(void *arg)
{
	struct queue *q = arg;
	struct lf_uring *u = q->u;
	cpu_set_t cpus;
	struct io_uring_cqe *cqe;
	int r;

	/* Next to the callers the kernel queues here: no cross-CPU wakeup.
	 * Best effort: an offline CPU's queue only gets requests once the
	 * CPU is back. */
	CPU_ZERO(&cpus);
	CPU_SET(q->qid, &cpus);
	pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);

	/* Registered from here: the kernel hands this ring its requests as
	 * work for the thread that submitted the entry. */
	for (unsigned j = 0; j < u->depth; j++)
		cmd_sqe(q, &q->ents[j], UR_CMD_REGISTER, 0);
	r = io_uring_submit(&q->ring);
	/* A refused registration completes at once; a completion without
	 * error is a request already (the ring is ready once the last queue
	 * registers), left for the loop. */
	if (r >= 0 && io_uring_peek_cqe(&q->ring, &cqe) == 0 && cqe->res < 0) {
		r = cqe->res;
		io_uring_cqe_seen(&q->ring, cqe);
	}
	q->reg_err = r < 0 ? r : 0;
	sem_post(&u->registered);
	if (r < 0)
		return NULL;

	arm_wakeup(q);
	while (!atomic_load(&u->quit)) {
		unsigned head, seen = 0;
		bool ended = false;

		/* The commits queued since the last round go out with the
		 * wait, in one system call. No timeout: arming a timer for
		 * every wait cost more than the rest of a round trip here;
		 * lf_uring_stop() wakes the thread through efd instead. */
		r = io_uring_submit_and_wait(&q->ring, 1);
		if (r == -EINTR)
			continue;
		if (r < 0) {
			lf_err(MOD, "%s: io_uring queue %u: %s", u->m->path,
			       q->qid, strerror(-r));
			break;
		}
		io_uring_for_each_cqe(&q->ring, head, cqe)
		{
			void *data = io_uring_cqe_get_data(cqe);
			int res = cqe->res;

			seen++;
			if (data == &q->efd) {
				commit_done(q);
				arm_wakeup(q);
				continue;
			}
			if (res == -ENOTCONN || res == -ECANCELED ||
			    res == -ENODEV) {
				ended = true; /* the connection ended */
				break;
			}
			if (res < 0) {
				/* A reply to a request the kernel already
				 * dropped (aborted): the entry is lost. */
				lf_dbg(MOD, "%s: io_uring queue %u: %s",
				       u->m->path, q->qid, strerror(-res));
				continue;
			}
			take(data);
		}
		io_uring_cq_advance(&q->ring, seen);
		if (ended)
			break;
	}
	lf_dbg(MOD, "%s: io_uring queue %u stopped", u->m->path, q->qid);
	return NULL;
}

struct lf_uring *lf_uring_prepare(struct lf_mount *m, int fd, size_t payload)
{
	struct lf_uring *u = calloc(1, sizeof(*u));
	int r;

	if (!u)
		goto nomem;
	u->m = m;
	u->fd = fd;
	u->payload = payload;
	u->nq = possible_cpus();
	u->depth = DEPTH_TOTAL / u->nq;
	if (u->depth < DEPTH_MIN)
		u->depth = DEPTH_MIN;
	if (u->depth > DEPTH_MAX)
		u->depth = DEPTH_MAX;
	pthread_mutex_init(&u->slow_lock, NULL);
	pthread_cond_init(&u->slow_cond, NULL);
	sem_init(&u->registered, 0, 0);
	u->slow_tail = &u->slow_head;
	u->qs = calloc(u->nq, sizeof(*u->qs));
	if (!u->qs)
		goto nomem;
	for (unsigned i = 0; i < u->nq; i++) {
		u->qs[i].u = u;
		u->qs[i].qid = i;
		u->qs[i].efd = -1;
		pthread_mutex_init(&u->qs[i].lock, NULL);
	}
	for (unsigned i = 0; i < u->nq; i++) {
		struct queue *q = &u->qs[i];

		/* Room for a command per entry, the eventfd read, and more. */
		r = io_uring_queue_init(u->depth * 2, &q->ring,
					IORING_SETUP_SQE128);
		if (r < 0) {
			lf_warn(MOD,
				"%s: cannot create an io_uring (%s); "
				"FUSE stays on /dev/fuse",
				m->path, strerror(-r));
			goto fail;
		}
		q->ring_ok = true;
		q->efd = eventfd(0, EFD_CLOEXEC);
		if (q->efd < 0) {
			lf_warn(MOD, "%s: eventfd: %m; FUSE stays on /dev/fuse",
				m->path);
			goto fail;
		}
		q->ents = calloc(u->depth, sizeof(*q->ents));
		if (!q->ents)
			goto nomem;
		for (unsigned j = 0; j < u->depth; j++) {
			struct ent *e = &q->ents[j];

			e->q = q;
			e->hdr = calloc(1, sizeof(*e->hdr));
			/* Untouched pages cost no memory: only the payload
			 * of the largest requests in flight is resident. */
			e->room = mmap(NULL, HDR_ROOM + payload,
				       PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (e->room == MAP_FAILED)
				e->room = NULL;
			if (!e->hdr || !e->room)
				goto nomem;
			e->iov[0] = (struct iovec){e->hdr, sizeof(*e->hdr)};
			e->iov[1] = (struct iovec){e->room + HDR_ROOM, payload};
		}
	}
	return u;
nomem:
	lf_warn(MOD,
		"%s: no memory for io_uring buffers; FUSE stays on "
		"/dev/fuse",
		m->path);
fail:
	lf_uring_free(u);
	return NULL;
}

int lf_uring_start(struct lf_uring *u)
{
	const char *why;
	sigset_t all, old;
	int r = 0;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned i = 0; i < u->nq && r == 0; i++) {
		r = -pthread_create(&u->qs[i].thread, NULL, queue_main,
				    &u->qs[i]);
		u->qs[i].started = r == 0;
	}
	for (int i = 0; i < SLOW_WORKERS && r == 0; i++) {
		r = -pthread_create(&u->slow[i], NULL, slow_main, u);
		if (r == 0)
			u->nslow++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0) {
		why = "cannot start the io_uring threads";
		goto abort;
	}
	for (unsigned i = 0; i < u->nq; i++) {
		while (sem_wait(&u->registered) < 0)
			;
	}
	for (unsigned i = 0; i < u->nq && r == 0; i++)
		r = u->qs[i].reg_err;
	if (r < 0) {
		why = "the kernel refused the io_uring queues";
		goto abort;
	}
	lf_dbg(MOD, "%s: FUSE over io_uring, %u queues of %u", u->m->path,
	       u->nq, u->depth);
	return 0;
abort:
	lf_err(MOD, "%s: %s (%s); aborting the FUSE connection", u->m->path,
	       why, strerror(-r));
	atomic_store(&u->quit, true);
	lf_mount_abort(u->m);
	return r;
}

void lf_uring_stop(struct lf_uring *u)
{
	if (!u)
		return;
	atomic_store(&u->quit, true);
	pthread_mutex_lock(&u->slow_lock);
	pthread_cond_broadcast(&u->slow_cond);
	pthread_mutex_unlock(&u->slow_lock);
	for (unsigned i = 0; u->qs && i < u->nq; i++) {
		uint64_t one = 1;

		if (u->qs[i].started &&
		    write(u->qs[i].efd, &one, sizeof(one)) < 0)
			lf_err(MOD, "%s: cannot stop io_uring queue %u: %m",
			       u->m->path, i);
	}
	for (int i = 0; i < u->nslow; i++)
		pthread_join(u->slow[i], NULL);
	u->nslow = 0;
	for (unsigned i = 0; u->qs && i < u->nq; i++) {
		if (u->qs[i].started)
			pthread_join(u->qs[i].thread, NULL);
		u->qs[i].started = false;
	}
}

void lf_uring_free(struct lf_uring *u)
{
	if (!u)
		return;
	lf_uring_stop(u);
	for (unsigned i = 0; u->qs && i < u->nq; i++) {
		struct queue *q = &u->qs[i];

		if (q->ring_ok)
			io_uring_queue_exit(&q->ring);
		for (unsigned j = 0; q->ents && j < u->depth; j++) {
			free(q->ents[j].hdr);
			if (q->ents[j].room)
				munmap(q->ents[j].room, HDR_ROOM + u->payload);
		}
		free(q->ents);
		if (q->efd >= 0)
			close(q->efd);
		pthread_mutex_destroy(&q->lock);
	}
	free(u->qs);
	pthread_cond_destroy(&u->slow_cond);
	pthread_mutex_destroy(&u->slow_lock);
	sem_destroy(&u->registered);
	free(u);
}
