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

#include "fuse/mount_int.h"
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

struct lf_mount *lf_mount_alloc(enum lf_mount_kind kind,
				const struct lf_mount_opts *o)
{
	struct lf_mount *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->kind = kind;
	m->opts = *o;
	pthread_mutex_init(&m->ilock, NULL);
	pthread_rwlock_init(&m->rmw, NULL);
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
	if (m->se)
		fuse_session_destroy(m->se);
	if (m->bufkey_ok)
		pthread_key_delete(m->bufkey);
	pthread_mutex_destroy(&m->ilock);
	pthread_rwlock_destroy(&m->rmw);
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
	conn->want &= ~(unsigned)(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
				  FUSE_CAP_SPLICE_MOVE);
	/* The kernel's own write-through path keeps fsync exact, and it
	 * clears setuid on write itself. */
	conn->want &= ~(unsigned)(FUSE_CAP_WRITEBACK_CACHE |
				  FUSE_CAP_HANDLE_KILLPRIV);
	if (!atomic_trunc)
		conn->want &= ~(unsigned)FUSE_CAP_ATOMIC_O_TRUNC;
	unsigned wanted = FUSE_CAP_ASYNC_READ | FUSE_CAP_PARALLEL_DIROPS;

	if (atomic_trunc)
		wanted |= FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_READDIRPLUS |
			  FUSE_CAP_READDIRPLUS_AUTO;
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
	if (write(fd, "1024", 4) != 4)
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
		fuse_loop_cfg_set_max_threads(cfg, 16);
	}
	ret = fuse_session_loop_mt(m->se, cfg);
	if (cfg)
		fuse_loop_cfg_destroy(cfg);
	lf_dbg(MOD, "%s: session loop ended (%d)", m->path, ret);
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
	atomic_store(&m->claimed, true);
	if (m->kind == LF_MOUNT_FS && m->sv)
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
