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

static ssize_t dev_read(int fd, void *buf, size_t len, void *userdata)
{
	struct lf_mount *m = userdata;
	ssize_t n = read(fd, buf, len);
	struct fuse_in_header ih;
	const char *arg = (const char *)buf + sizeof(ih);
	size_t alen;
	uint32_t f = 0;

	req_kill = false;
	if (n < (ssize_t)sizeof(ih))
		return n;
	memcpy(&ih, buf, sizeof(ih));
	atomic_fetch_add_explicit(&m->nreq[kind_of(ih.opcode)], 1,
				  memory_order_relaxed);
	alen = (size_t)n - sizeof(ih);
	switch (ih.opcode) {
	case FUSE_INIT:
		if (arg_flags(arg, alen, offsetof(struct fuse_init_in, flags),
			      &f)) {
			m->init_unique = ih.unique;
			m->init_pending = true;
			m->kernel_killpriv_v2 = f & FUSE_HANDLE_KILLPRIV_V2;
		}
		break;
	case FUSE_WRITE:
		req_kill =
			arg_flags(arg, alen,
				  offsetof(struct fuse_write_in, write_flags),
				  &f) &&
			(f & FUSE_WRITE_KILL_SUIDGID);
		break;
	case FUSE_OPEN:
		req_kill = arg_flags(arg, alen,
				     offsetof(struct fuse_open_in, open_flags),
				     &f) &&
			   (f & FUSE_OPEN_KILL_SUIDGID);
		break;
	default:
		break;
	}
	return n;
}

static ssize_t dev_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct lf_mount *m = userdata;

	if (m->init_pending && count >= 2 &&
	    iov[0].iov_len >= sizeof(struct fuse_out_header)) {
		struct fuse_out_header oh;

		memcpy(&oh, iov[0].iov_base, sizeof(oh));
		if (oh.unique == m->init_unique) {
			size_t at = offsetof(struct fuse_init_out, flags);
			uint32_t f;

			m->init_pending = false;
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
