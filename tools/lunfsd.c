/* lunfsd — the lunfs node daemon: serves the control socket and owns every
 * session, volume and FUSE mount of this node (or of this user, rootless). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "iscsi/log.h"
#include "tools/ctl.h"
#include "tools/daemon.h"
#include "tools/request.h"

#define MOD "lunfsd"

/* The daemon's top level: the only global state lunfs has. */
static struct {
	struct lf_daemon *d;
	int listen_fd;
	int wake[2]; /* shutdown request → main loop */
	pthread_mutex_t lock;
	pthread_cond_t idle;
	int active; /* connections being served */
	bool stopping;
} top = {.listen_fd = -1,
	 .wake = {-1, -1},
	 .lock = PTHREAD_MUTEX_INITIALIZER,
	 .idle = PTHREAD_COND_INITIALIZER};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: lunfsd [OPTIONS]\n"
		"The lunfs node daemon. It logs in to iSCSI targets, opens "
		"volumes and serves\nthem through FUSE; the lunfs command "
		"talks to it (and starts it when needed).\n\n"
		"Options:\n"
		"  --state-dir DIR   state directory (default /run/lunfs as "
		"root,\n"
		"                    $XDG_RUNTIME_DIR/lunfs otherwise; env "
		"LUNFS_STATE_DIR)\n"
		"  --socket PATH     control socket (default "
		"STATE_DIR/lunfsd.sock;\n"
		"                    env LUNFS_SOCKET)\n"
		"  --no-allow-other  mounts are visible to the daemon's user "
		"only\n"
		"  --replacement-timeout SECONDS\n"
		"                    how long I/O waits for a lost session to "
		"come back\n"
		"                    before failing with EIO (default 120; "
		"env\n"
		"                    LUNFS_REPLACEMENT_TIMEOUT)\n"
		"  --cache-size MIB  metadata cache of each open filesystem "
		"volume\n"
		"                    (default 64; env LUNFS_CACHE_MB)\n"
		"  --commit-interval MS\n"
		"                    journal commit period of each volume "
		"(default 5000;\n"
		"                    env LUNFS_COMMIT_MS); fsync always "
		"commits\n"
		"  --no-fuse-uring   serve FUSE over /dev/fuse even where the "
		"kernel offers\n"
		"                    io_uring (fuse.enable_uring=1, Linux >= "
		"6.14; env\n"
		"                    LUNFS_FUSE_URING=0)\n"
		"  --per-mount-views give every mount of a volume its own FUSE "
		"mount with\n"
		"                    lunfs's id maps, instead of idmapped "
		"binds of one\n"
		"                    shared mount (env "
		"LUNFS_PER_MOUNT_VIEWS=1)\n"
		"  -h, --help        this help\n\n"
		"Logs go to stderr. Debug logging: LUNFS_DEBUG=all (or a list "
		"of modules:\niscsi,fsimage,fuse,daemon).\n");
}

static void on_shutdown(void *ctx)
{
	char c = 1;

	(void)ctx;
	if (write(top.wake[1], &c, 1) < 0)
		lf_warn(MOD, "cannot wake the main loop: %m");
}

static void *serve_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	struct json_object *req = NULL, *ans;
	char *text = NULL, err[512];
	size_t len = 0;
	int r;

	r = lf_ctl_read_all_len(fd, LF_CTL_MAX, &text, &len);
	if ((r && r != -EMSGSIZE) || (!r && !*text))
		goto out; /* a liveness probe sends nothing */
	if (!r)
		r = lf_request_parse(text, len, &req, err, sizeof(err));
	else
		snprintf(err, sizeof(err), "request too large");
	if (r) {
		lf_warn(MOD, "refused a request: %s", err);
		ans = json_object_new_object();
		json_object_object_add(ans, "ok", json_object_new_boolean(0));
		json_object_object_add(ans, "errno", json_object_new_int(-r));
		json_object_object_add(ans, "error",
				       json_object_new_string(err));
	} else {
		ans = lf_daemon_handle(top.d, req);
	}
	if (text)
		explicit_bzero(text, len); /* may hold CHAP secrets */
	int passfd = -1;
	struct json_object *jfd;
	if (json_object_object_get_ex(ans, LF_ANSWER_FD, &jfd)) {
		passfd = json_object_get_int(jfd);
		json_object_object_del(ans, LF_ANSWER_FD);
	}
	const char *out =
		json_object_to_json_string_ext(ans, JSON_C_TO_STRING_PLAIN);
	if (passfd >= 0) {
		int sr = lf_ctl_send_fd(fd, out, strlen(out), passfd);
		if (sr)
			lf_warn(MOD, "could not hand a mount tree over: %s",
				strerror(-sr));
		close(passfd);
	} else {
		lf_ctl_write_all(fd, out, strlen(out));
	}
	json_object_put(ans);
out:
	json_object_put(req);
	free(text);
	close(fd);
	pthread_mutex_lock(&top.lock);
	if (--top.active == 0)
		pthread_cond_broadcast(&top.idle);
	pthread_mutex_unlock(&top.lock);
	return NULL;
}

static void *accept_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct ucred cred;
		socklen_t len = sizeof(cred);
		pthread_attr_t attr;
		pthread_t t;
		int fd = accept4(top.listen_fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break; /* listen socket shut down: stopping */
		}
		/* The socket is 0600 already; SO_PEERCRED is the second lock
		 * on the door (a socket passed on, a relaxed umask). */
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) ||
		    (cred.uid != 0 && cred.uid != geteuid())) {
			lf_warn(MOD, "refused a connection from uid %u",
				(unsigned)cred.uid);
			close(fd);
			continue;
		}
		pthread_mutex_lock(&top.lock);
		if (top.stopping) {
			pthread_mutex_unlock(&top.lock);
			close(fd);
			continue;
		}
		top.active++;
		pthread_mutex_unlock(&top.lock);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, serve_conn,
				   (void *)(intptr_t)fd)) {
			lf_err(MOD, "cannot start a connection thread");
			close(fd);
			pthread_mutex_lock(&top.lock);
			top.active--;
			pthread_mutex_unlock(&top.lock);
		}
		pthread_attr_destroy(&attr);
	}
	return NULL;
}

static bool fuse_user_allow_other(void)
{
	FILE *f = fopen("/etc/fuse.conf", "re");
	char line[256];
	bool yes = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "user_allow_other", 16) == 0)
			yes = true;
	fclose(f);
	return yes;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"state-dir", required_argument, NULL, 's'},
		{"socket", required_argument, NULL, 'S'},
		{"no-allow-other", no_argument, NULL, 'n'},
		{"replacement-timeout", required_argument, NULL, 'R'},
		{"cache-size", required_argument, NULL, 'C'},
		{"commit-interval", required_argument, NULL, 'I'},
		{"no-fuse-uring", no_argument, NULL, 'U'},
		{"per-mount-views", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	char state[PATH_MAX], sock[PATH_MAX], lockpath[PATH_MAX + 16],
		pidpath[PATH_MAX + 16];
	const char *state_opt = NULL, *sock_opt = NULL;
	const char *rt_opt = getenv("LUNFS_REPLACEMENT_TIMEOUT");
	const char *cache_opt = getenv("LUNFS_CACHE_MB");
	const char *commit_opt = getenv("LUNFS_COMMIT_MS");
	int replacement_timeout = 0;
	bool allow_other = geteuid() == 0 || fuse_user_allow_other();
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct lf_daemon_opts o = {0};
	const char *uring_env = getenv("LUNFS_FUSE_URING");
	pthread_t acceptor;
	sigset_t sigs;
	int c, r, lockfd = -1, sfd = -1, rc = 1;

	lf_log_init("lunfsd");
	o.no_fuse_uring = uring_env && strcmp(uring_env, "0") == 0;
	o.per_mount_views = getenv("LUNFS_PER_MOUNT_VIEWS") &&
			    strcmp(getenv("LUNFS_PER_MOUNT_VIEWS"), "1") == 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			state_opt = optarg;
			break;
		case 'S':
			sock_opt = optarg;
			break;
		case 'n':
			allow_other = false;
			break;
		case 'R':
			rt_opt = optarg;
			break;
		case 'C':
			cache_opt = optarg;
			break;
		case 'I':
			commit_opt = optarg;
			break;
		case 'U':
			o.no_fuse_uring = true;
			break;
		case 'V':
			o.per_mount_views = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "lunfsd: unexpected argument '%s'\n",
			argv[optind]);
		usage(stderr);
		return 2;
	}
	if (rt_opt && *rt_opt) {
		char *end;
		long v;

		errno = 0;
		v = strtol(rt_opt, &end, 10);
		if (errno || *end || v < 1 || v > 86400) {
			fprintf(stderr,
				"lunfsd: replacement timeout '%s': expected "
				"seconds between 1 and 86400\n",
				rt_opt);
			return 2;
		}
		replacement_timeout = (int)v;
	}
	if (cache_opt && *cache_opt) {
		char *end;
		long v;

		errno = 0;
		v = strtol(cache_opt, &end, 10);
		if (errno || *end || v < 1 || v > 65536) {
			fprintf(stderr,
				"lunfsd: cache size '%s': expected MiB between "
				"1 and 65536\n",
				cache_opt);
			return 2;
		}
		o.cache_bytes = (size_t)v << 20;
	}
	if (commit_opt && *commit_opt) {
		char *end;
		long v;

		errno = 0;
		v = strtol(commit_opt, &end, 10);
		if (errno || *end || v < 1 || v > 600000) {
			fprintf(stderr,
				"lunfsd: commit interval '%s': expected "
				"milliseconds between 1 and 600000\n",
				commit_opt);
			return 2;
		}
		o.commit_ms = (unsigned)v;
	}
	r = lf_ctl_paths(state_opt, sock_opt, state, sizeof(state), sock,
			 sizeof(sock));
	if (r) {
		lf_err(MOD, "state directory or socket path too long");
		return 1;
	}
	r = lf_ctl_mkdirs(state, 0700);
	if (r) {
		lf_err(MOD, "%s: cannot create the state directory: %s", state,
		       strerror(-r));
		return 1;
	}

	/* One daemon per state directory: the lock also makes it safe to
	 * remove a socket file left by a daemon that died. */
	snprintf(lockpath, sizeof(lockpath), "%s/lunfsd.lock", state);
	lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB)) {
		lf_err(MOD, "another lunfsd already serves %s", state);
		return 1;
	}

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* inherited by threads */
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sfd < 0 || pipe2(top.wake, O_CLOEXEC)) {
		lf_err(MOD, "signalfd/pipe: %m");
		goto out;
	}

	o.state_dir = state;
	o.socket_path = sock;
	o.allow_other = allow_other;
	o.replacement_timeout = replacement_timeout;
	o.on_shutdown = on_shutdown;
	r = lf_daemon_new(&o, &top.d);
	if (r) {
		lf_err(MOD, "cannot start: %s", strerror(-r));
		goto out;
	}

	top.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	strcpy(sa.sun_path, sock);
	unlink(sock);
	mode_t old = umask(077);
	r = bind(top.listen_fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r || chmod(sock, 0600) || listen(top.listen_fd, 64)) {
		lf_err(MOD, "%s: cannot listen: %m", sock);
		goto out_daemon;
	}
	snprintf(pidpath, sizeof(pidpath), "%s/lunfsd.pid", state);
	FILE *pf = fopen(pidpath, "we");
	if (pf) {
		fprintf(pf, "%d\n", (int)getpid());
		fclose(pf);
	}
	if (pthread_create(&acceptor, NULL, accept_main, NULL)) {
		lf_err(MOD, "cannot start the accept thread");
		goto out_sock;
	}
	lf_info(MOD, "serving %s (state %s, replacement timeout %d s)%s", sock,
		state, replacement_timeout ? replacement_timeout : 120,
		allow_other ? "" : ", mounts without allow_other");

	for (;;) {
		struct pollfd pfd[2] = {{sfd, POLLIN, 0},
					{top.wake[0], POLLIN, 0}};
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) == sizeof(si))
				lf_info(MOD, "signal %u: shutting down",
					si.ssi_signo);
			break;
		}
		if (pfd[1].revents) {
			lf_info(MOD, "shutdown requested");
			break;
		}
	}
	rc = 0;

	pthread_mutex_lock(&top.lock);
	top.stopping = true;
	pthread_mutex_unlock(&top.lock);
	shutdown(top.listen_fd, SHUT_RDWR);
	pthread_join(acceptor, NULL);
	pthread_mutex_lock(&top.lock);
	while (top.active > 0)
		pthread_cond_wait(&top.idle, &top.lock);
	pthread_mutex_unlock(&top.lock);
out_sock:
	unlink(sock);
	unlink(pidpath);
out_daemon:
	lf_daemon_free(top.d); /* unmounts, closes volumes, logs out */
	lf_info(MOD, "stopped");
out:
	if (top.listen_fd >= 0)
		close(top.listen_fd);
	if (sfd >= 0)
		close(sfd);
	if (lockfd >= 0)
		close(lockfd);
	return rc;
}
