/* fuse_common.c — what every lunfs FUSE mount does the same way: check the
 * path, create and mount the session, run its loop on its own threads,
 * raise the readahead, and take it all down again. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fuse/locks.h"
#include "fuse/mount_int.h"
#include "fuse/uring.h"
#include "iscsi/log.h"

#define MOD "fuse"

void lf_mount_opts_init(struct lf_mount_opts *o)
{
	memset(o, 0, sizeof(*o));
	lf_idmap_init(&o->uidmap);
	lf_idmap_init(&o->gidmap);
	o->fsgroup = -1;
}

const char *lf_mount_path(const struct lf_mount *m)
{
	return m->path;
}

const char *lf_mount_transport(struct lf_mount *m)
{
	if (m->kind == LF_MOUNT_BIND)
		m = m->view->fuse;
	return atomic_load(&m->uring) ? "io_uring" : "/dev/fuse";
}

static void fuse_log_hook(enum fuse_log_level level, const char *fmt,
			  va_list ap)
{
	char line[512];
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	if (level <= FUSE_LOG_ERR)
		lf_err("libfuse", "%s", line);
	else if (level == FUSE_LOG_WARNING)
		lf_warn("libfuse", "%s", line);
	else if (level <= FUSE_LOG_INFO)
		lf_info("libfuse", "%s", line);
	else
		lf_dbg("libfuse", "%s", line);
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
	char *d = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
				      (s[3] - '0'));
			s += 3;
		} else {
			*d++ = *s;
		}
	}
	*d = '\0';
}

static bool is_lunfs_mount(const char *canon)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	bool found = false;

	if (!f)
		return false;
	while (!found && getline(&line, &cap, f) > 0) {
		char *save = NULL, *tok, *mnt = NULL, *sep;
		int i = 0;

		sep = strstr(line, " - ");
		if (!sep)
			continue;
		*sep = '\0';
		for (tok = strtok_r(line, " ", &save); tok;
		     tok = strtok_r(NULL, " ", &save), i++) {
			if (i == 4) {
				mnt = tok;
				break;
			}
		}
		if (!mnt)
			continue;
		unescape_octal(mnt);
		if (strcmp(mnt, canon) == 0 &&
		    strncmp(sep + 3, "fuse.lunfs ", 11) == 0)
			found = true;
	}
	free(line);
	fclose(f);
	return found;
}

/* ---- groups: invalidating the other mounts of a volume ---- */

/* A notification the worker delivers later. */
struct lf_inval_item {
	struct lf_inval_item *next;
	struct lf_mount *m;
	struct lf_inval iv; /* iv.name points at name[] */
	char name[];
};

/* At most this many other mounts are notified from the handler itself;
 * the rest go through the worker. */
#define LF_SYNC_MOUNTS 32
#define LF_INVAL_MAX   8

static void deliver(struct lf_mount *m, const struct lf_inval *iv)
{
	int ret;

	if (iv->name)
		ret = fuse_lowlevel_notify_inval_entry(m->se, iv->ino, iv->name,
						       strlen(iv->name));
	else
		ret = fuse_lowlevel_notify_inval_inode(m->se, iv->ino, iv->off,
						       iv->len);
	/* ENOENT: that kernel has nothing cached for it. Anything else
	 * leaves that mount stale: say so. */
	if (ret < 0 && ret != -ENOENT && ret != -ENOTCONN && ret != -ENODEV)
		lf_warn(MOD, "%s: invalidate %lu%s%s: %s", m->path,
			(unsigned long)iv->ino, iv->name ? "/" : "",
			iv->name ? iv->name : "", strerror(-ret));
}

static void *inval_worker(void *arg)
{
	struct lf_served *sv = arg;

	pthread_mutex_lock(&sv->lock);
	for (;;) {
		struct lf_inval_item *it;

		while (!sv->head && !sv->quit)
			pthread_cond_wait(&sv->wake, &sv->lock);
		if (!sv->head)
			break;
		it = sv->head;
		sv->head = it->next;
		if (!sv->head)
			sv->tail = &sv->head;
		sv->busy = it->m;
		pthread_mutex_unlock(&sv->lock);

		deliver(it->m, &it->iv);
		free(it);

		pthread_mutex_lock(&sv->lock);
		sv->busy = NULL;
		pthread_cond_broadcast(&sv->idle);
	}
	pthread_mutex_unlock(&sv->lock);
	return NULL;
}

/* Caller holds sv->lock. */
static void defer(struct lf_served *sv, struct lf_mount *m,
		  const struct lf_inval *iv)
{
	size_t namelen = iv->name ? strlen(iv->name) : 0;
	struct lf_inval_item *it = malloc(sizeof(*it) + namelen + 1);

	if (!it) {
		lf_warn(MOD, "%s: out of memory: cache not invalidated",
			m->path);
		return;
	}
	lf_dbg(MOD, "%s: invalidation of %lu%s%s deferred", m->path,
	       (unsigned long)iv->ino, iv->name ? "/" : "",
	       iv->name ? iv->name : "");
	it->next = NULL;
	it->m = m;
	it->iv = *iv;
	memcpy(it->name, iv->name ? iv->name : "", namelen + 1);
	it->iv.name = iv->name ? it->name : NULL;
	*sv->tail = it;
	sv->tail = &it->next;
	pthread_cond_signal(&sv->wake);
}

/* Caller holds sv->lock. Could notifying m about iv wait for a request
 * m's kernel has sent us? Attribute-only invalidation takes no lock; an
 * entry one takes the directory's i_rwsem, a data one the page locks. */
static bool may_wait(struct lf_served *sv, struct lf_mount *m,
		     const struct lf_inval *iv)
{
	if (!iv->name && iv->off < 0)
		return false;
	for (struct lf_op *op = sv->ops; op; op = op->next)
		if (op->m == m &&
		    (op->keys[0] == iv->ino || op->keys[1] == iv->ino))
			return true;
	return false;
}

void lf_op_begin(struct lf_mount *m, struct lf_op *op, fuse_ino_t k1,
		 fuse_ino_t k2)
{
	struct lf_served *sv = m->sv;

	op->m = m;
	op->keys[0] = k1;
	op->keys[1] = k2;
	op->next = NULL;
	if (!sv)
		return;
	pthread_mutex_lock(&sv->lock);
	op->next = sv->ops;
	sv->ops = op;
	pthread_mutex_unlock(&sv->lock);
}

void lf_op_end(struct lf_mount *m, struct lf_op *op)
{
	struct lf_served *sv = m->sv;

	if (!sv)
		return;
	pthread_mutex_lock(&sv->lock);
	for (struct lf_op **pp = &sv->ops; *pp; pp = &(*pp)->next) {
		if (*pp == op) {
			*pp = op->next;
			break;
		}
	}
	pthread_mutex_unlock(&sv->lock);
}

/*
 * Notify every other mount of the group before the caller replies, with
 * no lock held. Deadlock freedom: a notification is delivered here only
 * if the target mount has no registered request holding the kernel lock
 * it needs; requests that do not notify never wait on us. Two handlers
 * that would wait on each other's mount: the one that checks second sees
 * the first registered (registration precedes the check) and defers.
 */
void lf_op_notify(struct lf_mount *src, const struct lf_op *op,
		  const struct lf_inval *iv, int n)
{
	struct lf_served *sv = src->sv;
	struct lf_mount *targets[LF_SYNC_MOUNTS];
	unsigned now[LF_SYNC_MOUNTS]; /* bit i: deliver iv[i] here */
	int nt = 0;

	(void)op;
	if (!sv || n <= 0)
		return;
	if (n > LF_INVAL_MAX)
		n = LF_INVAL_MAX;
	pthread_mutex_lock(&sv->lock);
	if (sv->nmounts < 2 && (!sv->mounts || sv->mounts == src)) {
		pthread_mutex_unlock(&sv->lock);
		return;
	}
	for (struct lf_mount *m = sv->mounts; m; m = m->next) {
		unsigned bits = 0;

		if (m == src)
			continue;
		for (int i = 0; i < n; i++) {
			if (nt < LF_SYNC_MOUNTS && !may_wait(sv, m, &iv[i]))
				bits |= 1u << i;
			else
				defer(sv, m, &iv[i]);
		}
		if (!bits)
			continue;
		m->pins++;
		targets[nt] = m;
		now[nt++] = bits;
	}
	pthread_mutex_unlock(&sv->lock);

	for (int t = 0; t < nt; t++)
		for (int i = 0; i < n; i++)
			if (now[t] & (1u << i))
				deliver(targets[t], &iv[i]);

	if (!nt)
		return;
	pthread_mutex_lock(&sv->lock);
	for (int t = 0; t < nt; t++)
		targets[t]->pins--;
	pthread_cond_broadcast(&sv->idle);
	pthread_mutex_unlock(&sv->lock);
}

struct lf_served *lf_served_alloc(void)
{
	struct lf_served *sv = calloc(1, sizeof(*sv));
	sigset_t all, old;
	int ret;

	if (!sv)
		return NULL;
	sv->tail = &sv->head;
	pthread_mutex_init(&sv->lock, NULL);
	pthread_mutex_init(&sv->vlock, NULL);
	pthread_cond_init(&sv->wake, NULL);
	pthread_cond_init(&sv->idle, NULL);
	pthread_rwlock_init(&sv->rmw, NULL);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(&sv->worker, NULL, inval_worker, sv);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret != 0) {
		pthread_mutex_destroy(&sv->lock);
		pthread_mutex_destroy(&sv->vlock);
		pthread_cond_destroy(&sv->wake);
		pthread_cond_destroy(&sv->idle);
		pthread_rwlock_destroy(&sv->rmw);
		free(sv);
		return NULL;
	}
	return sv;
}

struct lf_served *lf_served_new(struct lf_vol *v)
{
	struct lf_served *sv = lf_served_alloc();

	if (!sv)
		return NULL;
	sv->vol = v;
	sv->locks = lf_locks_new();
	if (!sv->locks) {
		lf_served_free(sv);
		return NULL;
	}
	return sv;
}

struct lf_served *lf_served_new_block(struct lf_bdev *b)
{
	struct lf_served *sv = lf_served_alloc();

	if (sv)
		sv->bdev = b;
	return sv;
}

void lf_served_free(struct lf_served *sv)
{
	if (!sv)
		return;
	pthread_mutex_lock(&sv->lock);
	if (sv->nmounts)
		lf_err(MOD, "%s: freed with %d mounts left (bug)",
		       sv->vol ? lf_vol_desc(sv->vol) : lf_bdev_desc(sv->bdev),
		       sv->nmounts);
	sv->quit = true;
	pthread_cond_signal(&sv->wake);
	pthread_mutex_unlock(&sv->lock);
	pthread_join(sv->worker, NULL);
	lf_locks_free(sv->locks);
	pthread_mutex_destroy(&sv->lock);
	pthread_mutex_destroy(&sv->vlock);
	pthread_cond_destroy(&sv->wake);
	pthread_cond_destroy(&sv->idle);
	pthread_rwlock_destroy(&sv->rmw);
	free(sv);
}

void lf_served_size_changed(struct lf_served *sv)
{
	pthread_mutex_lock(&sv->lock);
	/* Attributes only (offset -1): no page is locked, so sending it
	 * with the lock held cannot wait for one of our own requests. */
	for (struct lf_mount *m = sv->mounts; m; m = m->next)
		fuse_lowlevel_notify_inval_inode(m->se, FUSE_ROOT_ID, -1, 0);
	pthread_mutex_unlock(&sv->lock);
}

int lf_served_nmounts(struct lf_served *sv)
{
	int n;

	pthread_mutex_lock(&sv->lock);
	n = sv->nmounts;
	pthread_mutex_unlock(&sv->lock);
	return n;
}

/* Joins the group only once m->se is final. */
void lf_served_link_mount(struct lf_served *sv, struct lf_mount *m)
{
	pthread_mutex_lock(&sv->lock);
	m->next = sv->mounts;
	sv->mounts = m;
	/* Atomic: fill_entry() reads it without the lock. */
	__atomic_add_fetch(&sv->nmounts, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&sv->lock);
}

void lf_served_unlink_mount(struct lf_served *sv, struct lf_mount *m)
{
	struct lf_inval_item **pp;
	bool found = false;

	pthread_mutex_lock(&sv->lock);
	for (struct lf_mount **mp = &sv->mounts; *mp; mp = &(*mp)->next) {
		if (*mp == m) {
			*mp = m->next;
			__atomic_sub_fetch(&sv->nmounts, 1, __ATOMIC_RELAXED);
			found = true;
			break;
		}
	}
	sv->tail = &sv->head;
	for (pp = &sv->head; *pp;) {
		struct lf_inval_item *it = *pp;

		if (it->m == m) {
			*pp = it->next;
			free(it);
		} else {
			pp = &it->next;
			sv->tail = pp;
		}
	}
	while (found && (sv->busy == m || m->pins > 0))
		pthread_cond_wait(&sv->idle, &sv->lock);
	pthread_mutex_unlock(&sv->lock);
}

struct thread_buf {
	void *p;
	size_t cap;
};

static void free_thread_buf(void *p)
{
	struct thread_buf *tb = p;

	free(tb->p);
	free(tb);
}

/* A buffer per loop thread, kept across requests: a malloc per 1 MiB
 * request costs an mmap/munmap pair (DESIGN.md, "Buffers"). */
void *lf_mount_buf(struct lf_mount *m, size_t size)
{
	struct thread_buf *tb = pthread_getspecific(m->bufkey);

	if (!tb) {
		tb = calloc(1, sizeof(*tb));
		if (!tb)
			return NULL;
		if (pthread_setspecific(m->bufkey, tb) != 0) {
			free(tb);
			return NULL;
		}
	}
	if (tb->cap < size) {
		size_t cap = size < LF_FUSE_IO_MAX ? LF_FUSE_IO_MAX : size;
		void *p;

		if (posix_memalign(&p, 4096, cap) != 0)
			return NULL;
		free(tb->p);
		tb->p = p;
		tb->cap = cap;
	}
	return tb->p;
}

#define IOBUF_SMALL (64u << 10)
#define IOBUF_HDR   4096u
/* Kept per pool: enough for the reads one sequential reader keeps in flight
 * (4 MiB of readahead, and the replies still being copied) plus a few
 * readers; a fresh 1 MiB buffer per request costs an mmap and 256 page
 * faults (DESIGN.md, "Buffers"), which halved sequential reads. */
static const unsigned iobuf_keep[2] = {32, 16};

struct lf_bufpool {
	pthread_mutex_t lock;
	struct lf_iobuf *spare[2]; /* small, large */
	unsigned nspare[2];
};

struct lf_bufpool *lf_bufpool_new(void)
{
	struct lf_bufpool *p = calloc(1, sizeof(*p));

	if (p)
		pthread_mutex_init(&p->lock, NULL);
	return p;
}

void lf_bufpool_free(struct lf_bufpool *p)
{
	if (!p)
		return;
	for (int cls = 0; cls < 2; cls++) {
		struct lf_iobuf *b = p->spare[cls], *n;

		for (; b; b = n) {
			n = b->next;
			free(b);
		}
	}
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static void iobuf_done(struct lf_mount *m)
{
	pthread_mutex_lock(&m->iolock);
	if (--m->inflight == 0)
		pthread_cond_broadcast(&m->iodone);
	pthread_mutex_unlock(&m->iolock);
}

struct lf_iobuf *lf_iobuf_get(struct lf_mount *m, size_t size)
{
	struct lf_bufpool *p = m->pool;
	int cls = size > IOBUF_SMALL;
	size_t cap = cls ? (size > LF_FUSE_IO_MAX ? size : LF_FUSE_IO_MAX)
			 : IOBUF_SMALL;
	struct lf_iobuf *b;
	void *mem;

	pthread_mutex_lock(&m->iolock);
	m->inflight++;
	pthread_mutex_unlock(&m->iolock);
	pthread_mutex_lock(&p->lock);
	b = p->spare[cls];
	if (b && b->cap >= cap) {
		p->spare[cls] = b->next;
		p->nspare[cls]--;
	} else {
		b = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	if (!b) {
		/* The header in the first page keeps the data page aligned. */
		if (posix_memalign(&mem, IOBUF_HDR, IOBUF_HDR + cap) != 0) {
			iobuf_done(m);
			return NULL;
		}
		b = mem;
		b->cap = cap;
		b->data = (char *)mem + IOBUF_HDR;
	}
	b->m = m;
	b->next = NULL;
	return b;
}

void lf_iobuf_put(struct lf_iobuf *b)
{
	struct lf_mount *m;
	struct lf_bufpool *p;
	int cls;

	if (!b)
		return;
	m = b->m;
	p = m->pool;
	cls = b->cap > IOBUF_SMALL;
	pthread_mutex_lock(&p->lock);
	if (p->nspare[cls] < iobuf_keep[cls]) {
		b->next = p->spare[cls];
		p->spare[cls] = b;
		p->nspare[cls]++;
		b = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	free(b);
	iobuf_done(m); /* last: m may go once nothing is in flight */
}

/* The loop has ended: wait for the replies still owed by the device. */
static void iobuf_wait_idle(struct lf_mount *m)
{
	pthread_mutex_lock(&m->iolock);
	while (m->inflight)
		pthread_cond_wait(&m->iodone, &m->iolock);
	pthread_mutex_unlock(&m->iolock);
}

struct lf_mount *lf_mount_alloc(enum lf_mount_kind kind,
				const struct lf_mount_opts *o)
{
	struct lf_mount *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->kind = kind;
	m->opts = *o;
	m->tree = -1;
	pthread_mutex_init(&m->ilock, NULL);
	pthread_mutex_init(&m->iolock, NULL);
	pthread_cond_init(&m->iodone, NULL);
	m->pool = o->pool;
	if (!m->pool) {
		m->own_pool = lf_bufpool_new();
		m->pool = m->own_pool;
		if (!m->pool) {
			lf_mount_free(m);
			return NULL;
		}
	}
	if (kind == LF_MOUNT_BIND) /* no FUSE session, no buffers */
		return m;
	if (pthread_key_create(&m->bufkey, free_thread_buf) == 0)
		m->bufkey_ok = true;
	if (!m->bufkey_ok) {
		lf_mount_free(m);
		return NULL;
	}
	return m;
}

void lf_mount_free(struct lf_mount *m)
{
	if (!m)
		return;
	/* Its threads use the session. */
	lf_uring_free(atomic_load(&m->uring));
	if (m->se)
		fuse_session_destroy(m->se);
	if (m->bufkey_ok)
		pthread_key_delete(m->bufkey);
	pthread_mutex_destroy(&m->ilock);
	lf_bufpool_free(m->own_pool);
	pthread_cond_destroy(&m->iodone);
	pthread_mutex_destroy(&m->iolock);
	free(m->icount.ino);
	free(m->icount.cnt);
	free(m->path);
	free(m->desc);
	free(m);
}

void lf_mount_init_conn(struct fuse_conn_info *conn, bool atomic_trunc)
{
	/* Large requests: libfuse derives max_pages from max_write. */
	conn->max_write = LF_FUSE_IO_MAX;
	conn->max_read = LF_FUSE_IO_MAX; /* must equal the max_read option */
	conn->max_readahead = LF_FUSE_IO_MAX;
	/* Readahead and async O_DIRECT are the kernel's background requests,
	 * 12 in flight by default: fewer than a depth-32 reader asks for,
	 * and replies no longer tie up a thread each. */
	conn->max_background = LF_FUSE_MAX_BACKGROUND;
	conn->congestion_threshold = LF_FUSE_MAX_BACKGROUND * 3 / 4;
	conn->want &= ~(unsigned)(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
				  FUSE_CAP_SPLICE_MOVE);
	/* No writeback cache: dirty pages would sit in this mount's kernel
	 * where the volume's other mounts cannot see them (there is no
	 * notification that makes a kernel write back), and the kernel
	 * would trust its own size and mtime over the invalidations they
	 * send. Write-through keeps "visible through the others at once"
	 * and fsync exact. The kernel clears setuid on write itself. */
	conn->want &= ~(unsigned)(FUSE_CAP_WRITEBACK_CACHE |
				  FUSE_CAP_HANDLE_KILLPRIV);
	if (!atomic_trunc)
		conn->want &= ~(unsigned)FUSE_CAP_ATOMIC_O_TRUNC;
	/* ASYNC_DIO: O_DIRECT aio (fio, databases) keeps its queue depth. */
	unsigned wanted = FUSE_CAP_ASYNC_READ | FUSE_CAP_PARALLEL_DIROPS |
			  FUSE_CAP_ASYNC_DIO;

	/* Filesystems: no round trip for opendir/releasedir (ours would
	 * do nothing); symlink targets never change for an inode. */
	if (atomic_trunc)
		wanted |= FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_READDIRPLUS |
			  FUSE_CAP_READDIRPLUS_AUTO |
			  FUSE_CAP_NO_OPENDIR_SUPPORT | FUSE_CAP_CACHE_SYMLINKS;
	conn->want |= wanted & conn->capable;
}

/* Kernel readahead for FUSE comes from the bdi, not from init's
 * max_readahead (DESIGN.md, "FUSE readahead"): an optimisation only. */
static void raise_readahead(struct lf_mount *m)
{
	char p[96];
	int fd;

	if (!m->dev)
		return;
	snprintf(p, sizeof(p), "/sys/class/bdi/%u:%u/read_ahead_kb",
		 major(m->dev), minor(m->dev));
	fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		lf_dbg(MOD, "%s: cannot open %s: %m", m->path, p);
		return;
	}
	if (write(fd, LF_FUSE_READAHEAD_KB, strlen(LF_FUSE_READAHEAD_KB)) !=
	    (ssize_t)strlen(LF_FUSE_READAHEAD_KB))
		lf_dbg(MOD, "%s: cannot raise %s: %m", m->path, p);
	close(fd);
}

static void *mount_thread(void *arg)
{
	struct lf_mount *m = arg;
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int ret;

	if (cfg) {
		fuse_loop_cfg_set_clone_fd(cfg, 0);
		fuse_loop_cfg_set_idle_threads(cfg, 8);
		fuse_loop_cfg_set_max_threads(cfg, 32);
	}
	ret = fuse_session_loop_mt(m->se, cfg);
	if (cfg)
		fuse_loop_cfg_destroy(cfg);
	lf_dbg(MOD, "%s: session loop ended (%d)", m->path, ret);
	/* Handlers on the rings could still start reads. */
	lf_uring_stop(atomic_load(&m->uring));
	iobuf_wait_idle(m);
	atomic_store(&m->loop_done, true);
	if (!atomic_exchange(&m->claimed, true)) {
		lf_info(MOD, "%s: unmounted from outside", m->path);
		if (m->opts.on_exit)
			m->opts.on_exit(m->opts.on_exit_ctx, m);
	}
	return NULL;
}

static int run_fusermount_unmount(const char *path)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-q", "-z", "--",
		       path, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static bool connection_dead(struct lf_mount *m)
{
	struct pollfd pfd = {.fd = fuse_session_fd(m->se), .events = 0};

	if (pfd.fd < 0)
		return true;
	return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLERR);
}

static void abort_connection(struct lf_mount *m)
{
	char p[96];
	int fd;

	if (!m->dev)
		return;
	/* Named by the kernel's dev_t encoding, not the stat one. */
	snprintf(p, sizeof(p), "/sys/fs/fuse/connections/%u/abort",
		 (major(m->dev) << 20) | minor(m->dev));
	fd = open(p, O_WRONLY | O_CLOEXEC);
	/* fusectl is not always mounted (containers, minimal hosts). */
	if (fd < 0 && errno == ENOENT && geteuid() == 0 &&
	    mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, NULL) ==
		    0)
		fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		lf_err(MOD,
		       "%s: cannot abort the FUSE connection: %s: %m; "
		       "waiting for its files to be closed",
		       m->path, p);
		return;
	}
	if (write(fd, "1", 1) != 1)
		lf_warn(MOD, "%s: abort the FUSE connection: %m", m->path);
	close(fd);
}

/* The mount's device number from mountinfo, for when it cannot be
 * stat()ed: while INIT is answered, a stat would wait for it. */
static dev_t mountinfo_dev(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096], mp[4096];
	unsigned maj, min;
	dev_t d = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, mp) ==
			    3 &&
		    strcmp(mp, path) == 0)
			d = makedev(maj, min); /* the last one is on top */
	fclose(f);
	return d;
}

void lf_mount_abort(struct lf_mount *m)
{
	if (!m->dev)
		m->dev = mountinfo_dev(m->path);
	abort_connection(m);
}

/* Detach the mount; the kernel then ends the connection once the last
 * user is gone, which wakes the loop's reads with ENODEV. */
static void detach(struct lf_mount *m)
{
	if (atomic_load(&m->loop_done) || connection_dead(m))
		return;
	if (geteuid() == 0) {
		if (umount2(m->path, MNT_DETACH) < 0 && errno != EINVAL)
			lf_warn(MOD, "%s: umount: %m", m->path);
	} else if (run_fusermount_unmount(m->path) < 0) {
		lf_warn(MOD, "%s: fusermount3 -u failed", m->path);
	}
}

/* A connection cut from outside (a fusectl abort, or rings the kernel
 * refused) ends the loop but leaves the mount in place, answering
 * ENOTCONN, and libfuse does not unmount a dead connection. Take ours
 * away, so that the path can be mounted again; a mount someone else put
 * there since has another device number. */
static void remove_dead(struct lf_mount *m)
{
	if (!m->dev || mountinfo_dev(m->path) != m->dev)
		return;
	lf_info(MOD, "%s: removing the mount of the dead connection", m->path);
	if (geteuid() == 0) {
		if (umount2(m->path, MNT_DETACH) < 0)
			lf_warn(MOD, "%s: umount: %m", m->path);
	} else if (run_fusermount_unmount(m->path) < 0) {
		lf_warn(MOD, "%s: fusermount3 -u failed", m->path);
	}
}

static void join_loop(struct lf_mount *m)
{
	struct timespec ts;

	if (!m->thread_started)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 2;
	if (pthread_timedjoin_np(m->thread, NULL, &ts) == 0)
		goto joined;
	/* Still busy: a lazily detached mount with open files keeps the
	 * connection alive. Cut it. */
	lf_warn(MOD, "%s: still in use after unmount, aborting the connection",
		m->path);
	abort_connection(m);
	pthread_join(m->thread, NULL);
joined:
	m->thread_started = false;
}

void lf_mount_stop(struct lf_mount *m)
{
	if (!m)
		return;
	if (m->kind == LF_MOUNT_BIND) {
		lf_view_unbind(m);
		return;
	}
	atomic_store(&m->claimed, true);
	if (m->sv)
		lf_served_unlink_mount(m->sv, m);
	if (m->se) {
		fuse_session_exit(m->se);
		if (m->thread_started)
			detach(m);
		join_loop(m);
		/* A request can end the loop (exit flag) while open files
		 * keep the detached connection alive; libfuse would then
		 * umount a second time. Cut it first. */
		if (!connection_dead(m))
			abort_connection(m);
		fuse_session_unmount(m->se);
		remove_dead(m);
		if (m->kind == LF_MOUNT_FS)
			lf_fslocks_drop_mount(m);
	}
	if (m->kind == LF_MOUNT_FS)
		lf_mount_drop_counts(m);
	if (m->bdev)
		lf_bdev_unref(m->bdev);
	lf_info(MOD, "%s: unmounted", m->path ? m->path : "(none)");
	lf_mount_free(m);
}

static void sanitize_fsname(char *s)
{
	/* ',' separates mount options and blanks break mountinfo readers. */
	for (; *s; s++)
		if (*s == ',' || *s == ' ' || *s == '\t' || *s == '\n' ||
		    *s == '\\')
			*s = '_';
}

int lf_mount_start(struct lf_mount *m, const char *path, bool want_dir,
		   const struct fuse_lowlevel_ops *ops, size_t opsize,
		   char *err, size_t errlen)
{
	struct stat st;
	char opts[512];
	char *argv[] = {"lunfs", "-o", opts, NULL};
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);
	sigset_t all, old;
	int ret;

	if (stat(path, &st) < 0) {
		ret = -errno;
		if (ret == -ENOENT)
			snprintf(err, errlen, "%s does not exist", path);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(-ret));
		return ret;
	}
	if (want_dir && !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s is not a directory", path);
		return -ENOTDIR;
	}
	if (!want_dir && !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s is not a regular file", path);
		return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	}
	m->path = realpath(path, NULL);
	if (!m->path) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
		return ret;
	}
	if (is_lunfs_mount(m->path)) {
		snprintf(err, errlen, "%s is already a lunfs mount", m->path);
		return -EBUSY;
	}

	sanitize_fsname(m->desc);
	snprintf(opts, sizeof(opts),
		 "fsname=lunfs:%s,subtype=lunfs,default_permissions,"
		 "max_read=%u%s%s",
		 m->desc, LF_FUSE_IO_MAX,
		 m->opts.allow_other ? ",allow_other" : "",
		 m->opts.read_only ? ",ro" : "");
	fuse_set_log_func(fuse_log_hook);
	m->se = fuse_session_new(&args, ops, opsize, m);
	fuse_opt_free_args(&args);
	if (!m->se) {
		snprintf(err, errlen, "%s: cannot create a FUSE session",
			 m->path);
		return -EINVAL;
	}
	if (fuse_session_mount(m->se, m->path) != 0) {
		snprintf(
			err, errlen,
			"%s: FUSE mount failed (is /dev/fuse usable? "
			"allow_other needs user_allow_other in /etc/fuse.conf)",
			m->path);
		fuse_session_destroy(m->se);
		m->se = NULL;
		return -EIO;
	}
	m->want_killpriv_v2 = want_dir;
	ret = lf_devio_install(m);
	if (ret != 0) {
		snprintf(err, errlen, "%s: cannot set up FUSE I/O: %s", m->path,
			 strerror(-ret));
		fuse_session_unmount(m->se);
		fuse_session_destroy(m->se);
		m->se = NULL;
		return ret < 0 ? ret : -EIO;
	}

	/* The loop threads inherit this mask: signals are the daemon's. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(&m->thread, NULL, mount_thread, m);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret != 0) {
		snprintf(err, errlen, "%s: cannot start the FUSE thread: %s",
			 m->path, strerror(ret));
		fuse_session_unmount(m->se);
		fuse_session_destroy(m->se);
		m->se = NULL;
		return -ret;
	}
	m->thread_started = true;

	/* Served by the loop just started. */
	if (stat(m->path, &st) == 0)
		m->dev = st.st_dev;
	raise_readahead(m);
	lf_info(MOD, "%s: mounted lunfs:%s%s", m->path, m->desc,
		m->opts.read_only ? " (read-only)" : "");
	return 0;
}
