/* test_session_tgt.c — iscsi/session.c against a real, private tgtd.
 *
 * Starts its own tgtd (control port and iSCSI port chosen free for this
 * run), configures targets with tgtadm, and kills it by PID at the end.
 * A missing tgtd is a failure, not a skip: this is the only test of the
 * I/O path against a target.
 */
#include "iscsi/bdev.h"
#include "iscsi/log.h"
#include "iscsi/session.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IQN1	  "iqn.2026-11.io.lunfs:t1"
#define IQN2	  "iqn.2026-11.io.lunfs:chap"
#define IQN3	  "iqn.2026-11.io.lunfs:acl"
#define INITIATOR "iqn.2026-11.io.lunfs:test-initiator"
#define LUN_SIZE  (64 << 20)

struct tgt {
	pid_t pid;
	int ctl;
	int port;
	char dir[64];
	char img[128];
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &len))
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static int tgtadm(const struct tgt *t, const char *fmt, ...)
{
	char args[512], cmd[640];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof(cmd),
		 "tgtadm -C %d --lld iscsi %s >/dev/null 2>&1", t->ctl, args);
	return system(cmd);
}

static pid_t watchdog_pid;

static int tgt_start_once(struct tgt *t)
{
	char portal[64], ctl[16];

	snprintf(portal, sizeof(portal), "portal=127.0.0.1:%d", t->port);
	snprintf(ctl, sizeof(ctl), "%d", t->ctl);
	t->pid = fork();
	if (t->pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 1);
		dup2(null, 2);
		execlp("tgtd", "tgtd", "-f", "-C", ctl, "--iscsi", portal,
		       (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {
		int st;

		if (waitpid(t->pid, &st, WNOHANG) == t->pid) {
			fprintf(stderr,
				"tgtd exited (status %d): is tgt "
				"installed?\n",
				st);
			t->pid = 0;
			return -1;
		}
		watchdog_pid = t->pid;
		if (tgtadm(t, "--op show --mode target") == 0) {
			/* answered by ours, not by another tgtd on t->ctl? */
			usleep(200000);
			if (waitpid(t->pid, &st, WNOHANG) == 0)
				return 0;
			t->pid = 0;
			return -1;
		}
		usleep(100000);
	}
	return -1;
}

/* Control ports are a small shared space (tgtd takes up to 5 digits):
 * skip ones another tgtd answers on. A restart reuses ctl and port. */
static int tgt_start(struct tgt *t)
{
	for (int i = 0; i < 20; i++) {
		if (tgtadm(t, "--op show --mode target") != 0 &&
		    tgt_start_once(t) == 0)
			return 0;
		if (t->pid) /* ours, but it never answered */
			return -1;
		t->ctl = 5000 + (t->ctl + 37) % 4000;
	}
	return -1;
}

static void tgt_kill(struct tgt *t)
{
	if (t->pid > 0) {
		kill(t->pid, SIGKILL);
		waitpid(t->pid, NULL, 0);
		t->pid = 0;
	}
}

static int tgt_config(struct tgt *t)
{
	int r = 0;

	r |= tgtadm(t, "--op new --mode target --tid 1 -T " IQN1);
	r |= tgtadm(t, "--op new --mode logicalunit --tid 1 --lun 1 -b %s",
		    t->img);
	r |= tgtadm(t, "--op bind --mode target --tid 1 -I ALL");
	r |= tgtadm(t, "--op new --mode target --tid 2 -T " IQN2);
	r |= tgtadm(t, "--op new --mode logicalunit --tid 2 --lun 1 -b %s",
		    t->img);
	r |= tgtadm(t, "--op bind --mode target --tid 2 -I ALL");
	r |= tgtadm(t, "--op new --mode account --user u --password "
		       "secretsecret12");
	r |= tgtadm(t, "--op bind --mode account --tid 2 --user u");
	r |= tgtadm(t, "--op new --mode account --user tu --password "
		       "targetsecret34");
	r |= tgtadm(t, "--op bind --mode account --tid 2 --user tu --outgoing");
	r |= tgtadm(t, "--op new --mode target --tid 3 -T " IQN3);
	r |= tgtadm(t, "--op new --mode logicalunit --tid 3 --lun 1 -b %s",
		    t->img);
	r |= tgtadm(t, "--op bind --mode target --tid 3 -Q "
		       "iqn.2026-11.io.lunfs:someone-else");
	return r ? -1 : 0;
}

static void params_init(struct lf_session_params *p, const struct tgt *t,
			const char *iqn)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->initiator, sizeof(p->initiator), "%s", INITIATOR);
	snprintf(p->iqn, sizeof(p->iqn), "%s", iqn);
	snprintf(p->portals[0].host, sizeof(p->portals[0].host), "127.0.0.1");
	snprintf(p->portals[0].addr, sizeof(p->portals[0].addr), "127.0.0.1");
	p->portals[0].port = (uint16_t)t->port;
	p->nportals = 1;
	p->replacement_timeout = 10;
}

/* Many commands in flight at once: one submit per 64 KiB piece. */
struct batch {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int pending, errors, first_err;
};

static void batch_done(void *opaque, int err)
{
	struct batch *b = opaque;

	pthread_mutex_lock(&b->lock);
	if (err) {
		b->errors++;
		if (!b->first_err)
			b->first_err = err;
	}
	if (--b->pending == 0)
		pthread_cond_signal(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

static int io_batch(struct lf_bdev *b, enum lf_bdev_op op, char *buf,
		    size_t len, uint64_t off, size_t piece)
{
	struct batch bt = {.lock = PTHREAD_MUTEX_INITIALIZER,
			   .cond = PTHREAD_COND_INITIALIZER};
	size_t n = len / piece;
	struct iovec *iov = calloc(n, sizeof(*iov));
	int r;

	bt.pending = (int)n + 1;
	for (size_t i = 0; i < n; i++) {
		iov[i].iov_base = buf + i * piece;
		iov[i].iov_len = piece;
		r = lf_bdev_submit(b, op, &iov[i], 1, off + i * piece, piece,
				   batch_done, &bt);
		if (r)
			batch_done(&bt, r);
	}
	batch_done(&bt, 0);
	pthread_mutex_lock(&bt.lock);
	while (bt.pending)
		pthread_cond_wait(&bt.cond, &bt.lock);
	pthread_mutex_unlock(&bt.lock);
	free(iov);
	return bt.first_err;
}

static void fill(char *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
		memcpy(buf + i, &v, 8);
	}
}

static void test_io(struct tgt *t)
{
	struct lf_session_params p;
	struct lf_session_status st;
	struct lf_session *s;
	struct lf_bdev *b;
	char err[512];
	size_t len = 8 << 20;
	char *wbuf = malloc(len), *rbuf = malloc(len), *fbuf = malloc(len);
	int fd, r;

	params_init(&p, t, IQN1);
	r = lf_session_login(&p, &s, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (r) {
		fprintf(stderr, "login: %s\n", err);
		goto out;
	}
	lf_session_get_status(s, &st);
	CHECK(st.connected);
	CHECK_STR(st.iqn, IQN1);

	r = lf_session_open_lun(s, 1, false, &b, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (r) {
		fprintf(stderr, "open lun: %s\n", err);
		goto out_logout;
	}
	CHECK_EQ(lf_bdev_size(b), LUN_SIZE);
	CHECK_EQ(lf_bdev_block_size(b), 512);
	CHECK_EQ(lf_bdev_info(b)->phys_block_size, 4096);
	CHECK_EQ(lf_bdev_max_transfer(b), 4 << 20);
	CHECK(!strncmp(lf_bdev_desc(b), "iscsi://127.0.0.1:", 18));

	fill(wbuf, len, 1);
	CHECK_EQ(io_batch(b, LF_BDEV_WRITE, wbuf, len, 1 << 20, 64 << 10), 0);
	CHECK_EQ(lf_bdev_flush(b), 0);
	memset(rbuf, 0, len);
	CHECK_EQ(io_batch(b, LF_BDEV_READ, rbuf, len, 1 << 20, 32 << 10), 0);
	CHECK(!memcmp(rbuf, wbuf, len));
	fd = open(t->img, O_RDONLY);
	CHECK(fd >= 0 && pread(fd, fbuf, len, 1 << 20) == (ssize_t)len);
	CHECK(!memcmp(fbuf, wbuf, len));
	close(fd);

	/* One request bigger than max_transfer: split by the bdev layer. */
	fill(wbuf, len, 2);
	CHECK_EQ(lf_bdev_pwrite(b, wbuf, len, 20 << 20), 0);
	CHECK_EQ(lf_bdev_pread(b, rbuf, len, 20 << 20), 0);
	CHECK(!memcmp(rbuf, wbuf, len));
	/* past the end: the bdev layer refuses it */
	CHECK_EQ(lf_bdev_pread(b, rbuf, 4096, LUN_SIZE), -EINVAL);
	if (lf_bdev_info(b)->can_unmap)
		CHECK_EQ(lf_bdev_unmap(b, 40 << 20, 1 << 20), 0);

	lf_bdev_unref(b);

	r = lf_session_open_lun(s, 0, false, &b, err, sizeof(err));
	CHECK_EQ(r, -ENODEV);
	CHECK(strstr(err, "is not a disk") != NULL);
	r = lf_session_open_lun(s, 7, false, &b, err, sizeof(err));
	CHECK_EQ(r, -ENOENT);
	CHECK(strstr(err, "does not exist") != NULL);

out_logout:
	lf_session_logout(s);
	usleep(200000);
	CHECK_EQ(system("test -z \"$(tgtadm -C $LF_TEST_CTL --lld iscsi --op "
			"show --mode conn --tid 1 2>&1)\""),
		 0);
out:
	free(wbuf);
	free(rbuf);
	free(fbuf);
}

static void test_login_errors(struct tgt *t)
{
	struct lf_session_params p;
	struct lf_session *s;
	char err[512];
	double t0;
	int r;

	params_init(&p, t, IQN2);
	r = lf_session_login(&p, &s, err, sizeof(err));
	/* CHAP required, none given: tgtd's answer is a wrong secret's
	 * (Authentication failure), but we know we offered none. */
	CHECK_EQ(r, -EACCES);
	CHECK(strstr(err, "the target requires CHAP") != NULL);
	CHECK(strstr(err, "check the CHAP user") == NULL);
	snprintf(p.chap.user, sizeof(p.chap.user), "u");
	snprintf(p.chap.secret, sizeof(p.chap.secret), "wrongsecret123");
	r = lf_session_login(&p, &s, err, sizeof(err));
	CHECK_EQ(r, -EACCES);
	CHECK(strstr(err, "check the CHAP user and secret") != NULL);
	CHECK(strstr(err, IQN2) != NULL);

	snprintf(p.chap.secret, sizeof(p.chap.secret), "secretsecret12");
	r = lf_session_login(&p, &s, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (r == 0)
		lf_session_logout(s);

	/* mutual CHAP: right target secret, then a wrong one */
	snprintf(p.chap.user_in, sizeof(p.chap.user_in), "tu");
	snprintf(p.chap.secret_in, sizeof(p.chap.secret_in), "targetsecret34");
	r = lf_session_login(&p, &s, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (r == 0)
		lf_session_logout(s);
	else
		fprintf(stderr, "mutual: %s\n", err);
	snprintf(p.chap.secret_in, sizeof(p.chap.secret_in), "targetsecretXX");
	r = lf_session_login(&p, &s, err, sizeof(err));
	CHECK(r < 0);
	if (r == 0)
		lf_session_logout(s);

	params_init(&p, t, IQN3);
	r = lf_session_login(&p, &s, err, sizeof(err));
	CHECK_EQ(r, -ENOENT);
	CHECK(strstr(err, INITIATOR) != NULL);

	params_init(&p, t, "iqn.2026-11.io.lunfs:nosuch");
	r = lf_session_login(&p, &s, err, sizeof(err));
	CHECK_EQ(r, -ENOENT);

	/* discovery offers t1 but not an unknown IQN */
	params_init(&p, t, IQN1);
	p.discovery = true;
	r = lf_session_login(&p, &s, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (r == 0)
		lf_session_logout(s);
	params_init(&p, t, "iqn.2026-11.io.lunfs:nosuch");
	p.discovery = true;
	r = lf_session_login(&p, &s, err, sizeof(err));
	CHECK_EQ(r, -ENOENT);

	/* nothing listens: fails at once, naming the portal */
	params_init(&p, t, IQN1);
	p.portals[0].port = (uint16_t)free_port();
	t0 = now_s();
	r = lf_session_login(&p, &s, err, sizeof(err));
	CHECK_EQ(r, -ECONNREFUSED);
	CHECK(now_s() - t0 < 3);
	CHECK(strstr(err, "connection refused") != NULL);

	/* second portal answers when the first does not */
	params_init(&p, t, IQN1);
	p.portals[1] = p.portals[0];
	p.portals[0].port = (uint16_t)free_port();
	p.nportals = 2;
	r = lf_session_login(&p, &s, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (r == 0)
		lf_session_logout(s);
}

/* I/O keeps going while tgtd is killed and restarted under it. */
struct bg {
	struct lf_bdev *b;
	atomic_bool stop;
	int err, rounds;
};

static void *bg_io(void *arg)
{
	struct bg *g = arg;
	size_t len = 4 << 20;
	char *w = malloc(len), *r = malloc(len);

	while (!atomic_load(&g->stop) && !g->err) {
		fill(w, len, (unsigned)g->rounds);
		g->err = io_batch(g->b, LF_BDEV_WRITE, w, len, 0, 256 << 10);
		if (!g->err)
			g->err = io_batch(g->b, LF_BDEV_READ, r, len, 0,
					  128 << 10);
		if (!g->err && memcmp(r, w, len))
			g->err = -EILSEQ;
		g->rounds++;
	}
	free(w);
	free(r);
	return NULL;
}

static void test_restart(struct tgt *t)
{
	struct lf_session_params p;
	struct lf_session_status st;
	struct lf_session *s;
	struct bg g = {0};
	pthread_t th;
	char err[512];
	char buf[4096];
	double t0;
	int r, rounds;

	params_init(&p, t, IQN1);
	r = lf_session_login(&p, &s, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (r)
		return;
	r = lf_session_open_lun(s, 1, false, &g.b, err, sizeof(err));
	CHECK_EQ(r, 0);
	if (r) {
		lf_session_logout(s);
		return;
	}
	pthread_create(&th, NULL, bg_io, &g);
	usleep(500000);
	tgt_kill(t);
	usleep(500000);
	CHECK_EQ(tgt_start(t), 0);
	CHECK_EQ(tgt_config(t), 0);
	rounds = g.rounds;
	t0 = now_s();
	while (g.rounds < rounds + 3 && !g.err && now_s() - t0 < 30)
		usleep(100000);
	atomic_store(&g.stop, true);
	pthread_join(th, NULL);
	CHECK_EQ(g.err, 0);
	CHECK(g.rounds >= rounds + 3);
	lf_session_get_status(s, &st);
	CHECK(st.connected);
	CHECK(st.reconnects >= 1);

	/* Target gone for good: I/O fails within replacement_timeout and
	 * logout does not hang. (10 s here; the target stays down.) */
	tgt_kill(t);
	t0 = now_s();
	r = lf_bdev_pread(g.b, buf, sizeof(buf), 0);
	CHECK_EQ(r, -EIO);
	CHECK(now_s() - t0 < 15);
	/* new commands fail at once now */
	t0 = now_s();
	CHECK_EQ(lf_bdev_pread(g.b, buf, sizeof(buf), 0), -EIO);
	CHECK(now_s() - t0 < 3);

	/* ... and comes back with a fresh login once the target does */
	CHECK_EQ(tgt_start(t), 0);
	CHECK_EQ(tgt_config(t), 0);
	t0 = now_s();
	do {
		usleep(200000);
		lf_session_get_status(s, &st);
	} while (!st.connected && now_s() - t0 < 15);
	CHECK(st.connected);
	CHECK_EQ(lf_bdev_pread(g.b, buf, sizeof(buf), 0), 0);
	lf_bdev_unref(g.b);
	t0 = now_s();
	lf_session_logout(s);
	CHECK(now_s() - t0 < 5);
}

/* A hung test must not leave its tgtd behind. */
static void watchdog(int sig)
{
	if (watchdog_pid > 0)
		kill(watchdog_pid, SIGKILL);
	_exit(2);
}

int main(void)
{
	struct tgt t = {0};
	char env[16];
	int fd;

	signal(SIGPIPE, SIG_IGN);
	lf_log_init("test_session_tgt");
	t.ctl = 5000 + getpid() % 4000;
	t.port = free_port();
	snprintf(t.dir, sizeof(t.dir), "/tmp/lunfs-session-XXXXXX");
	CHECK(mkdtemp(t.dir) != NULL);
	snprintf(t.img, sizeof(t.img), "%s/lun.img", t.dir);
	fd = open(t.img, O_CREAT | O_RDWR, 0600);
	CHECK(fd >= 0 && ftruncate(fd, LUN_SIZE) == 0);
	close(fd);

	if (tgt_start(&t) || tgt_config(&t)) {
		CHECK(!"tgtd started and configured");
		goto out;
	}
	watchdog_pid = t.pid;
	signal(SIGALRM, watchdog);
	alarm(240);
	snprintf(env, sizeof(env), "%d", t.ctl);
	setenv("LF_TEST_CTL", env, 1);
	if (!getenv("LF_TEST_ONLY")) {
		test_io(&t);
		test_login_errors(&t);
	}
	test_restart(&t);
out:
	tgt_kill(&t);
	unlink(t.img);
	rmdir(t.dir);
	return check_report("test_session_tgt");
}
