/* devio.c — a mount's reads and writes of /dev/fuse, through libfuse's
 * custom I/O hooks.
 *
 * Debian 12's libfuse (3.14) neither offers FUSE_HANDLE_KILLPRIV_V2 nor
 * passes on the flags that come with it. Without it the kernel asks for
 * security.capability (a GETXATTR round trip) before every write to a
 * file, because it may not remember that a FUSE inode has none; with it
 * the kernel asks once per inode and leaves clearing setuid, setgid and
 * capabilities on write, truncate and chown to the filesystem. So the
 * INIT reply gets the flag here, and the "kill" flag of a WRITE or OPEN
 * (libfuse passes SETATTR's on) is noted for its handler, which runs next
 * on the same thread: libfuse's loop receives and dispatches a request in
 * one worker.
 *
 * Every request read is also counted by opcode here (lf_mount_requests),
 * the one place that sees them all, those libfuse answers itself included.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/fuse.h>

#include "fuse/mount_int.h"
#include "fuse/uring.h"

/* FUSE_OVER_IO_URING (1 << 41) as a flags2 bit; newer than Debian 12's
 * header. */
#define LF_FUSE_OVER_IO_URING2 (1u << 9)
/* FUSE_ALLOW_IDMAP (1 << 40) as a flags2 bit (kernel 6.12, protocol 7.40),
 * newer than Debian 12's header too. */
#define LF_FUSE_ALLOW_IDMAP2 (1u << 8)

/* Per FUSE worker thread: the request just read, until the next. */
static __thread bool req_kill;

bool lf_devio_kill_suidgid(void)
{
	return req_kill;
}

/* The kernel's opcodes (linux/fuse.h), numbered explicitly because
 * Debian 12's header predates the last ones. */
static const char *const op_names[LF_MOUNT_REQUEST_KINDS] = {
	[0] = "OTHER",	       [1] = "LOOKUP",
	[2] = "FORGET",	       [3] = "GETATTR",
	[4] = "SETATTR",       [5] = "READLINK",
	[6] = "SYMLINK",       [8] = "MKNOD",
	[9] = "MKDIR",	       [10] = "UNLINK",
	[11] = "RMDIR",	       [12] = "RENAME",
	[13] = "LINK",	       [14] = "OPEN",
	[15] = "READ",	       [16] = "WRITE",
	[17] = "STATFS",       [18] = "RELEASE",
	[20] = "FSYNC",	       [21] = "SETXATTR",
	[22] = "GETXATTR",     [23] = "LISTXATTR",
	[24] = "REMOVEXATTR",  [25] = "FLUSH",
	[26] = "INIT",	       [27] = "OPENDIR",
	[28] = "READDIR",      [29] = "RELEASEDIR",
	[30] = "FSYNCDIR",     [31] = "GETLK",
	[32] = "SETLK",	       [33] = "SETLKW",
	[34] = "ACCESS",       [35] = "CREATE",
	[36] = "INTERRUPT",    [37] = "BMAP",
	[38] = "DESTROY",      [39] = "IOCTL",
	[40] = "POLL",	       [41] = "NOTIFY_REPLY",
	[42] = "BATCH_FORGET", [43] = "FALLOCATE",
	[44] = "READDIRPLUS",  [45] = "RENAME2",
	[46] = "LSEEK",	       [47] = "COPY_FILE_RANGE",
	[48] = "SETUPMAPPING", [49] = "REMOVEMAPPING",
	[50] = "SYNCFS",       [51] = "TMPFILE",
	[52] = "STATX",
};

/* Where opcode is counted: its own slot, or [0] for one we do not name. */
static unsigned kind_of(uint32_t opcode)
{
	return opcode < LF_MOUNT_REQUEST_KINDS && op_names[opcode] ? opcode : 0;
}

size_t lf_mount_requests(struct lf_mount *m, const char **names,
			 uint64_t *counts, size_t n)
{
	size_t k = 0;

	if (m->kind == LF_MOUNT_BIND)
		m = m->view->fuse;
	for (unsigned op = 0; op < LF_MOUNT_REQUEST_KINDS && k < n; op++) {
		uint64_t c = atomic_load_explicit(&m->nreq[op],
						  memory_order_relaxed);

		if (!c)
			continue;
		names[k] = op_names[op]; /* only named kinds and [0] count */
		counts[k++] = c;
	}
	return k;
}

static bool arg_flags(const void *arg, size_t alen, size_t off, uint32_t *out)
{
	if (alen < off + sizeof(*out))
		return false;
	memcpy(out, (const char *)arg + off, sizeof(*out));
	return true;
}

/* Whether the 32-bit flags word at off in a request's argument has flag. */
static bool arg_has(const void *arg, size_t alen, size_t off, uint32_t flag)
{
	uint32_t f;

	return arg_flags(arg, alen, off, &f) && (f & flag);
}

void lf_devio_note(struct lf_mount *m, const void *buf, size_t n)
{
	struct fuse_in_header ih;
	const char *arg = (const char *)buf + sizeof(ih);
	size_t alen;
	uint32_t f = 0;

	req_kill = false;
	if (n < sizeof(ih))
		return;
	memcpy(&ih, buf, sizeof(ih));
	atomic_fetch_add_explicit(&m->nreq[kind_of(ih.opcode)], 1,
				  memory_order_relaxed);
	alen = n - sizeof(ih);
	switch (ih.opcode) {
	case FUSE_INIT:
		if (arg_flags(arg, alen, offsetof(struct fuse_init_in, flags),
			      &f)) {
			m->init_unique = ih.unique;
			m->kernel_killpriv_v2 = f & FUSE_HANDLE_KILLPRIV_V2;
			m->kernel_uring =
				(f & FUSE_INIT_EXT) &&
				arg_has(arg, alen,
					offsetof(struct fuse_init_in, flags2),
					LF_FUSE_OVER_IO_URING2);
			m->kernel_idmap =
				(f & FUSE_INIT_EXT) &&
				arg_has(arg, alen,
					offsetof(struct fuse_init_in, flags2),
					LF_FUSE_ALLOW_IDMAP2);
			/* Last: it publishes the fields above. */
			atomic_store(&m->init_pending, true);
		}
		break;
	case FUSE_WRITE:
		req_kill = arg_has(arg, alen,
				   offsetof(struct fuse_write_in, write_flags),
				   FUSE_WRITE_KILL_SUIDGID);
		break;
	case FUSE_OPEN:
		req_kill = arg_has(arg, alen,
				   offsetof(struct fuse_open_in, open_flags),
				   FUSE_OPEN_KILL_SUIDGID);
		break;
	default:
		break;
	}
}

static ssize_t dev_read(int fd, void *buf, size_t len, void *userdata)
{
	struct lf_mount *m = userdata;
	ssize_t n = read(fd, buf, len);

	lf_devio_note(m, buf, n > 0 ? (size_t)n : 0);
	return n;
}

static uint32_t get32(const struct iovec *v, size_t off)
{
	uint32_t x;

	memcpy(&x, (const char *)v->iov_base + off, sizeof(x));
	return x;
}

static void put32(struct iovec *v, size_t off, uint32_t x)
{
	memcpy((char *)v->iov_base + off, &x, sizeof(x));
}

/* Allow idmapped mounts of this one (a mount served as a single view of
 * its volume), if the kernel offers it, in the INIT reply v. From then on
 * the kernel sends the caller's ids only with requests that create an
 * inode (through the idmap of the mount used) and -1 with all others. */
static void init_idmap(struct lf_mount *m, struct iovec *v)
{
	size_t fl = offsetof(struct fuse_init_out, flags),
	       f2 = offsetof(struct fuse_init_out, flags2);

	if (!m->opts.allow_idmap || !m->kernel_idmap ||
	    v->iov_len < f2 + sizeof(uint32_t))
		return;
	put32(v, fl, get32(v, fl) | FUSE_INIT_EXT);
	put32(v, f2, get32(v, f2) | LF_FUSE_ALLOW_IDMAP2);
	atomic_store(&m->idmap, true);
}

/* Set up FUSE over io_uring if the kernel offers it and the mount wants
 * it, and ask for it in the INIT reply v. */
static struct lf_uring *init_uring(struct lf_mount *m, int fd, struct iovec *v)
{
	size_t fl = offsetof(struct fuse_init_out, flags),
	       f2 = offsetof(struct fuse_init_out, flags2);
	size_t payload, mw, mp;
	uint16_t pages;
	struct lf_uring *u;

	if (!m->kernel_uring || m->opts.no_fuse_uring ||
	    v->iov_len < f2 + sizeof(uint32_t))
		return NULL;
	mw = get32(v, offsetof(struct fuse_init_out, max_write));
	memcpy(&pages,
	       (char *)v->iov_base + offsetof(struct fuse_init_out, max_pages),
	       sizeof(pages));
	/* The kernel's own bound: max(8 KiB, max_write, max_pages pages). */
	mp = pages * (size_t)sysconf(_SC_PAGESIZE);
	payload = mw > mp ? mw : mp;
	if (payload < 8192)
		payload = 8192;
	u = lf_uring_prepare(m, fd, payload);
	if (!u)
		return NULL;
	put32(v, fl, get32(v, fl) | FUSE_INIT_EXT);
	put32(v, f2, get32(v, f2) | LF_FUSE_OVER_IO_URING2);
	return u;
}

static ssize_t dev_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct lf_mount *m = userdata;
	struct lf_uring *u = atomic_load(&m->uring);
	ssize_t n;

	if (u && lf_uring_reply(u, iov, count, &n))
		return n;
	if (atomic_load(&m->init_pending) && count >= 2 &&
	    iov[0].iov_len >= sizeof(struct fuse_out_header)) {
		struct fuse_out_header oh;

		memcpy(&oh, iov[0].iov_base, sizeof(oh));
		if (oh.unique == m->init_unique) {
			size_t at = offsetof(struct fuse_init_out, flags);
			uint32_t f;

			atomic_store(&m->init_pending, false);
			if (oh.error == 0 && m->want_killpriv_v2 &&
			    m->kernel_killpriv_v2 &&
			    iov[1].iov_len >= at + sizeof(f)) {
				memcpy(&f, (char *)iov[1].iov_base + at,
				       sizeof(f));
				f |= FUSE_HANDLE_KILLPRIV_V2;
				memcpy((char *)iov[1].iov_base + at, &f,
				       sizeof(f));
				atomic_store(&m->killpriv_v2, true);
			}
			if (oh.error == 0) {
				init_idmap(m, &iov[1]);
				u = init_uring(m, fd, &iov[1]);
			}
			n = writev(fd, iov, count);
			if (u && n < 0) {
				lf_uring_free(u);
			} else if (u) {
				/* The kernel now holds every request until the
				 * queues are registered. */
				atomic_store(&m->uring, u);
				lf_uring_start(u);
			}
			return n;
		}
	}
	return writev(fd, iov, count);
}

int lf_devio_install(struct lf_mount *m)
{
	static const struct fuse_custom_io io = {
		.writev = dev_writev,
		.read = dev_read,
	};

	return fuse_session_custom_io(m->se, &io, fuse_session_fd(m->se));
}
