/* session.c — see session.h.
 *
 * Threads: lf_session_login() runs the login with libiscsi's sync calls
 * before the I/O thread exists; from then on only the I/O thread touches
 * the context. Other threads hand it requests (struct sreq) through
 * s->queue and kick s->efd. Setup commands of lf_session_open_lun() go the
 * same way as "raw" requests whose caller waits for the finished task.
 *
 * Retries: a request that completes with UNIT ATTENTION, BUSY, TASK SET
 * FULL, NOT READY, or a transport status (cancelled/error/timeout, what a
 * reconnect leaves behind) is sent again until replacement_timeout seconds
 * after it was first submitted; then it fails with -EIO. libiscsi itself
 * reconnects and resends what was in flight.
 */
#include "iscsi/session.h"
#include "iscsi/log.h"
#include "iscsi/pr.h"

#include <ctype.h>
#include <errno.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define MOD		 "iscsi"
#define LOGIN_TIMEOUT_S	 10   /* per login/discovery PDU */
#define LOGOUT_WAIT_MS	 3000 /* the target may be dead: do not wait more */
#define RETRY_DELAY_MS	 100
#define MAX_TRANSFER_CAP (4u << 20)
#define FAILOVER_MS	 2000 /* down this long with other portals: try them */

enum sreq_kind { SREQ_READ, SREQ_WRITE, SREQ_FLUSH, SREQ_UNMAP, SREQ_RAW };
enum raw_cmd {
	RAW_INQUIRY,
	RAW_READCAP16,
	RAW_MODESENSE6,
	RAW_PRIN,
	RAW_PROUT
};

#define OP_PRIN	 0x5e
#define OP_PROUT 0x5f
/* LUNFS_TEST_NO_PR=1 (tests only): PR commands go out with this opcode,
 * which tgtd does not implement, so the target itself answers INVALID
 * COMMAND OPERATION CODE as a target without PR would. */
#define OP_UNSUPPORTED 0xd9

struct sreq {
	struct sreq *next, *prev; /* queue/free list (next), inflight */
	struct lf_session *s;
	enum sreq_kind kind;
	int lun;
	uint32_t block_size;
	const struct scsi_iovec *iov;
	int iovcnt;
	uint64_t lba;
	uint32_t len; /* bytes (READ/WRITE/UNMAP) */
	struct unmap_list ul;
	enum raw_cmd raw;
	int raw_evpd, raw_page;
	struct scsi_task **raw_out; /* RAW: the finished task, caller frees */
	int pr_sa, pr_type;	    /* RAW_PRIN/RAW_PROUT */
	uint32_t pr_len;	    /* RAW_PRIN: allocation length */
	unsigned char pr_param[24]; /* RAW_PROUT: basic parameter list */
	struct iscsi_data pr_data;
	/* RESERVATION CONFLICT on a write: see pr_recheck(). */
	struct scsi_task *fix_task; /* the recheck's finished step */
	int fix_step;
	bool pr_retried;
	struct lf_bdev *bdev;	/* READ/WRITE/FLUSH/UNMAP: fenced on conflict */
	struct scsi_task *task; /* in flight */
	int64_t deadline_ms, not_before_ms;
	lf_bdev_done_fn done;
	void *opaque;
};

struct lf_session {
	struct lf_session_params p; /* holds secrets: wiped on free */
	struct iscsi_context *ctx;  /* the I/O thread's once it runs */
	pthread_t thread;
	bool thread_started;
	int efd;

	pthread_mutex_t lock;
	/* protected by lock */
	struct sreq *q_head, *q_tail;
	struct sreq *free_list;
	bool stopping;
	bool connected;
	unsigned reconnects;
	char portal[96];

	/* I/O thread only */
	struct sreq *inflight;	  /* doubly linked */
	struct sreq *retry;	  /* waiting for not_before_ms */
	int64_t down_since_ms;	  /* 0 while logged in */
	bool stopped;		  /* shutdown began: no retries */
	int64_t quiet_until_ms;	  /* do not poll the context's fd */
	int64_t last_login_ms;	  /* relogin attempts without ctx */
	int64_t last_failover_ms; /* portal switch attempts while down */
	bool test_no_pr;	  /* LUNFS_TEST_NO_PR: see OP_UNSUPPORTED */
};

struct lf_lun {
	struct lf_session *s;
	int lun;
	uint32_t block_size;
	struct lf_bdev *bdev; /* the bdev that owns us: no reference */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void portal_str(const struct lf_portal *p, char *buf, size_t len)
{
	const char *h = p->addr[0] ? p->addr : p->host;

	if (strchr(h, ':'))
		snprintf(buf, len, "[%s]:%u", h, p->port);
	else
		snprintf(buf, len, "%s:%u", h, p->port);
}

/* ---- login --------------------------------------------------------- */

/* libiscsi's log lines go to ours, at debug level: its errors are
 * reported once, translated, by the caller. */
static void log_cb(int level, const char *msg)
{
	lf_dbg(MOD, "libiscsi(%d): %s", level, msg);
}

static struct iscsi_context *new_context(const struct lf_session_params *p,
					 enum iscsi_session_type type,
					 const struct lf_chap *chap)
{
	struct iscsi_context *ctx = iscsi_create_context(p->initiator);

	if (!ctx)
		return NULL;
	iscsi_set_log_fn(ctx, log_cb);
	iscsi_set_log_level(ctx, lf_log_debug_enabled(MOD) ? 10 : 0);
	iscsi_set_session_type(ctx, type);
	if (type == ISCSI_SESSION_NORMAL)
		iscsi_set_targetname(ctx, p->iqn);
	iscsi_set_header_digest(ctx, ISCSI_HEADER_DIGEST_CRC32C_NONE);
	/* A portal that drops SYNs must fail in seconds, not minutes. */
	iscsi_set_tcp_syncnt(ctx, 2);
	iscsi_set_tcp_user_timeout(ctx, 15000);
	iscsi_set_tcp_keepalive(ctx, 10, 3, 5);
	iscsi_set_timeout(ctx, p->login_timeout > 0 && p->login_timeout <
							       LOGIN_TIMEOUT_S
				       ? p->login_timeout
				       : LOGIN_TIMEOUT_S);
	/* Reconnecting is for established sessions; a failed login must
	 * fail, not loop inside the sync call. */
	iscsi_set_noautoreconnect(ctx, 1);
	if (chap->user[0]) {
		if (iscsi_set_initiator_username_pwd(ctx, chap->user,
						     chap->secret))
			goto fail;
		if (chap->user_in[0] &&
		    iscsi_set_target_username_pwd(ctx, chap->user_in,
						  chap->secret_in))
			goto fail;
	}
	return ctx;
fail:
	iscsi_destroy_context(ctx);
	return NULL;
}

/* Translates libiscsi's login error text into -errno and one line.
 * chap: the credentials this step offered (user "" = none). */
static int login_error(const struct lf_session_params *p,
		       const struct lf_chap *chap, const char *portal,
		       const char *step, const char *why, char *err,
		       size_t errlen)
{
	if (!why)
		why = "unknown error";
	/* A target that wants CHAP answers a login offering only
	 * AuthMethod=None with the same status as a wrong secret (class 2,
	 * detail 1, "Authentication failure"; libiscsi passes it on as text),
	 * so which one it was is known only from what we offered. */
	if ((strcasestr(why, "authentication") || strcasestr(why, "chap")) &&
	    !chap->user[0]) {
		snprintf(err, errlen,
			 "iscsi://%s/%s: %s failed: the target requires CHAP "
			 "and none was offered: name the CHAP user "
			 "(iscsi://USER@host/... or \"%s\": true in a JSON "
			 "spec) and give its secret with --chap-secret-file "
			 "(%s)",
			 portal, p->iqn, step,
			 chap == &p->discovery_chap ? "chapAuthDiscovery"
						    : "chapAuthSession",
			 why);
		return -EACCES;
	}
	if (strcasestr(why, "authentication") || strcasestr(why, "chap")) {
		snprintf(err, errlen,
			 "iscsi://%s/%s: %s failed: CHAP authentication "
			 "failed: check the CHAP user and secret (%s)",
			 portal, p->iqn, step, why);
		return -EACCES;
	}
	if (strcasestr(why, "Target not found") ||
	    strcasestr(why, "not found")) {
		snprintf(err, errlen,
			 "iscsi://%s/%s: %s failed: target IQN not found, or "
			 "this initiator (%s) is not allowed by the target's "
			 "ACL (%s)",
			 portal, p->iqn, step, p->initiator, why);
		return -ENOENT;
	}
	if (strcasestr(why, "refused") ||
	    strcasestr(why, "Can not reconnect")) {
		snprintf(err, errlen,
			 "iscsi://%s/%s: cannot connect to %s: connection "
			 "refused (is the target running and listening "
			 "there?)",
			 portal, p->iqn, portal);
		return -ECONNREFUSED;
	}
	if (strcasestr(why, "unreachable") || strcasestr(why, "no route")) {
		snprintf(err, errlen,
			 "iscsi://%s/%s: cannot connect to %s: host "
			 "unreachable (%s)",
			 portal, p->iqn, portal, why);
		return -EHOSTUNREACH;
	}
	if (strcasestr(why, "timed out") || strcasestr(why, "timeout")) {
		snprintf(err, errlen,
			 "iscsi://%s/%s: cannot connect to %s: timed out "
			 "(%s)",
			 portal, p->iqn, portal, why);
		return -ETIMEDOUT;
	}
	snprintf(err, errlen, "iscsi://%s/%s: %s failed: %s", portal, p->iqn,
		 step, why);
	return -EIO;
}

/* How informative an error is, to report the best one of several
 * portals: a CHAP or ACL answer beats "nothing listens here". */
static int error_rank(int r)
{
	return r == -EACCES ? 3 : r == -ENOENT ? 2 : r == -EIO ? 1 : 0;
}

static int discover(const struct lf_session_params *p, const char *portal,
		    char *err, size_t errlen)
{
	struct iscsi_discovery_address *da, *a;
	struct iscsi_context *ctx;
	bool found = false;
	int r;

	ctx = new_context(p, ISCSI_SESSION_DISCOVERY, &p->discovery_chap);
	if (!ctx) {
		snprintf(err, errlen, "iscsi://%s/%s: cannot set up discovery",
			 portal, p->iqn);
		return -ENOMEM;
	}
	if (iscsi_connect_sync(ctx, portal) || iscsi_login_sync(ctx)) {
		r = login_error(p, &p->discovery_chap, portal,
				"discovery login", iscsi_get_error(ctx), err,
				errlen);
		goto out;
	}
	da = iscsi_discovery_sync(ctx);
	if (!da) {
		r = login_error(p, &p->discovery_chap, portal,
				"SendTargets discovery", iscsi_get_error(ctx),
				err, errlen);
		goto out_logout;
	}
	for (a = da; a; a = a->next)
		if (a->target_name && !strcmp(a->target_name, p->iqn))
			found = true;
	iscsi_free_discovery_data(ctx, da);
	r = 0;
	if (!found) {
		snprintf(err, errlen,
			 "iscsi://%s/%s: discovery: the target does not offer "
			 "this IQN to initiator %s (check the IQN and the "
			 "target's ACL)",
			 portal, p->iqn, p->initiator);
		r = -ENOENT;
	}
out_logout:
	iscsi_logout_sync(ctx);
out:
	iscsi_destroy_context(ctx);
	return r;
}

static int login_portal(struct lf_session *s, const char *portal, char *err,
			size_t errlen)
{
	struct iscsi_context *ctx;
	int r;

	if (s->p.discovery) {
		r = discover(&s->p, portal, err, errlen);
		if (r)
			return r;
	}
	ctx = new_context(&s->p, ISCSI_SESSION_NORMAL, &s->p.chap);
	if (!ctx) {
		snprintf(err, errlen, "iscsi://%s/%s: cannot create context",
			 portal, s->p.iqn);
		return -ENOMEM;
	}
	/* full_connect, not connect + login: only it records the portal
	 * that libiscsi's reconnect dials again. LUN -1: no TEST UNIT
	 * READY, LUNs are checked by lf_session_open_lun(). */
	if (iscsi_full_connect_sync(ctx, portal, -1)) {
		r = login_error(&s->p, &s->p.chap, portal, "login",
				iscsi_get_error(ctx), err, errlen);
		iscsi_destroy_context(ctx);
		return r;
	}
	/* From here on a dropped connection is libiscsi's to repair; our
	 * own deadlines bound how long a command waits for that. */
	iscsi_set_noautoreconnect(ctx, 0);
	iscsi_set_timeout(ctx, 0);
	s->ctx = ctx;
	pthread_mutex_lock(&s->lock);
	snprintf(s->portal, sizeof(s->portal), "%s", portal);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* ---- requests ------------------------------------------------------ */

static struct sreq *sreq_get(struct lf_session *s)
{
	struct sreq *r;

	pthread_mutex_lock(&s->lock);
	r = s->free_list;
	if (r)
		s->free_list = r->next;
	pthread_mutex_unlock(&s->lock);
	if (!r)
		r = malloc(sizeof(*r));
	if (r) {
		memset(r, 0, sizeof(*r));
		r->s = s;
	}
	return r;
}

static void sreq_put(struct lf_session *s, struct sreq *r)
{
	pthread_mutex_lock(&s->lock);
	r->next = s->free_list;
	s->free_list = r;
	pthread_mutex_unlock(&s->lock);
}

static void kick(struct lf_session *s)
{
	uint64_t one = 1;

	if (write(s->efd, &one, sizeof(one)) < 0)
		lf_warn(MOD, "iscsi://%s/%s: eventfd write: %m", s->portal,
			s->p.iqn);
}

static int enqueue(struct lf_session *s, struct sreq *r)
{
	r->next = NULL;
	r->deadline_ms = now_ms() + (int64_t)s->p.replacement_timeout * 1000;
	pthread_mutex_lock(&s->lock);
	if (s->stopping) {
		pthread_mutex_unlock(&s->lock);
		return -EIO;
	}
	if (s->q_tail)
		s->q_tail->next = r;
	else
		s->q_head = r;
	s->q_tail = r;
	pthread_mutex_unlock(&s->lock);
	kick(s);
	return 0;
}

/* I/O thread: completes a request exactly once. */
static void finish(struct lf_session *s, struct sreq *r, int err)
{
	lf_bdev_done_fn done = r->done;
	void *opaque = r->opaque;

	if (r->kind == SREQ_RAW) {
		*r->raw_out = r->task; /* NULL on error: caller sees err */
		r->task = NULL;
	} else if (r->task) {
		scsi_free_scsi_task(r->task);
		r->task = NULL;
	}
	sreq_put(s, r);
	done(opaque, err);
}

static void inflight_add(struct lf_session *s, struct sreq *r)
{
	r->prev = NULL;
	r->next = s->inflight;
	if (s->inflight)
		s->inflight->prev = r;
	s->inflight = r;
}

static void inflight_del(struct lf_session *s, struct sreq *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		s->inflight = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->next = r->prev = NULL;
}

static void retry_later(struct lf_session *s, struct sreq *r, int delay_ms)
{
	r->not_before_ms = now_ms() + delay_ms;
	r->next = s->retry;
	s->retry = r;
}

static void dispatch(struct lf_session *s, struct sreq *r);
static void pr_fence(struct lf_session *s, struct sreq *r);
static void pr_recheck(struct lf_session *s, struct sreq *r, int step);

/* One place where SCSI status and sense become errno. 1 = retry. */
static int task_errno(const struct scsi_task *t, int status)
{
	int key = t ? t->sense.key : 0, ascq = t ? t->sense.ascq : 0;

	switch (status) {
	case SCSI_STATUS_GOOD:
	case SCSI_STATUS_CONDITION_MET:
		return 0;
	case SCSI_STATUS_BUSY:
	case SCSI_STATUS_TASK_SET_FULL:
	case SCSI_STATUS_CANCELLED:
	case SCSI_STATUS_ERROR:
	case SCSI_STATUS_TIMEOUT:
	case SCSI_STATUS_TASK_ABORTED:
		return 1;
	case SCSI_STATUS_RESERVATION_CONFLICT:
		return -EBUSY;
	case SCSI_STATUS_CHECK_CONDITION:
		break;
	default:
		return -EIO;
	}
	switch (key) {
	case SCSI_SENSE_UNIT_ATTENTION:
	case SCSI_SENSE_NOT_READY:
		return ascq == SCSI_SENSE_ASCQ_MEDIUM_NOT_PRESENT ? -ENOMEDIUM
								  : 1;
	case SCSI_SENSE_DATA_PROTECTION:
		/* 27/07: SPACE ALLOCATION FAILED WRITE PROTECT (thin LUN) */
		return ascq == 0x2707 ? -ENOSPC : -EROFS;
	case SCSI_SENSE_ILLEGAL_REQUEST:
		if (ascq == SCSI_SENSE_ASCQ_INVALID_OPERATION_CODE)
			return -EOPNOTSUPP;
		if (ascq == SCSI_SENSE_ASCQ_LOGICAL_UNIT_NOT_SUPPORTED)
			return -ENOENT;
		return -EINVAL;
	case SCSI_SENSE_RECOVERED_ERROR:
		return 0;
	case SCSI_SENSE_COMMAND_ABORTED:
		return 1;
	default:
		return -EIO;
	}
}

static void task_cb(struct iscsi_context *ctx, int status, void *data,
		    void *priv)
{
	struct sreq *r = priv;
	struct lf_session *s = r->s;
	int e;

	(void)data;
	inflight_del(s, r);
	e = task_errno(r->task, status);
	if (e == 1 && r->task &&
	    r->task->sense.key == SCSI_SENSE_UNIT_ATTENTION &&
	    r->task->sense.ascq == 0x2a09)
		lf_info(MOD,
			"iscsi://%s/%s/%d: the target says the capacity "
			"changed: 'lunfs resize' grows the volume",
			s->portal, s->p.iqn, r->lun);
	if (e == 1 && !s->stopped && now_ms() < r->deadline_ms) {
		lf_dbg(MOD,
		       "iscsi://%s/%s/%d: retrying after status 0x%x "
		       "sense %s/0x%04x",
		       s->portal, s->p.iqn, r->lun, status,
		       scsi_sense_key_str(r->task->sense.key),
		       r->task->sense.ascq);
		scsi_free_scsi_task(r->task);
		r->task = NULL;
		retry_later(s, r,
			    status == SCSI_STATUS_BUSY ||
					    status == SCSI_STATUS_TASK_SET_FULL
				    ? RETRY_DELAY_MS
				    : 0);
		return;
	}
	if (e == 1)
		e = -EIO;
	if (r->kind == SREQ_RAW) {
		/* The caller reads status and sense itself. */
		finish(s, r, 0);
		return;
	}
	if (status == SCSI_STATUS_RESERVATION_CONFLICT && r->bdev &&
	    r->kind != SREQ_READ) {
		if (!r->pr_retried && !s->stopped) {
			scsi_free_scsi_task(r->task);
			r->task = NULL;
			pr_recheck(s, r, 0);
			return;
		}
		pr_fence(s, r);
		return;
	}
	if (e)
		lf_dbg(MOD,
		       "iscsi://%s/%s/%d: command failed: %s (status "
		       "0x%x, sense %s/0x%04x)",
		       s->portal, s->p.iqn, r->lun, strerror(-e), status,
		       r->task ? scsi_sense_key_str(r->task->sense.key) : "-",
		       r->task ? r->task->sense.ascq : 0);
	finish(s, r, e);
}

/* PERSISTENT RESERVE IN/OUT with CDBs of our own (SPC-4 6.15, 6.16):
 * libiscsi's helpers would do, but this way the test knob can swap the
 * opcode and let the real target refuse it. */
static struct scsi_task *start_pr(struct lf_session *s, struct sreq *r)
{
	unsigned char cdb[10] = {0};
	struct scsi_task *t;
	bool in = r->raw == RAW_PRIN;

	cdb[0] = s->test_no_pr ? OP_UNSUPPORTED : in ? OP_PRIN : OP_PROUT;
	cdb[1] = (unsigned char)(r->pr_sa & 0x1f);
	if (in) {
		cdb[7] = (unsigned char)(r->pr_len >> 8);
		cdb[8] = (unsigned char)r->pr_len;
	} else {
		cdb[2] = (unsigned char)(r->pr_type & 0x0f); /* LU scope */
		cdb[8] = sizeof(r->pr_param);
	}
	t = scsi_create_task(10, cdb, in ? SCSI_XFER_READ : SCSI_XFER_WRITE,
			     in ? (int)r->pr_len : (int)sizeof(r->pr_param));
	if (!t)
		return NULL;
	r->pr_data.data = r->pr_param;
	r->pr_data.size = sizeof(r->pr_param);
	if (iscsi_scsi_command_async(s->ctx, r->lun, t, task_cb,
				     in ? NULL : &r->pr_data, r)) {
		scsi_free_scsi_task(t);
		return NULL;
	}
	return t;
}

/* A write refused with RESERVATION CONFLICT. Either another initiator
 * holds the LUN (it preempted us: fence), or the reservation is still
 * under our own key but registered by an earlier session of ours, which
 * a reconnect or a portal failover replaced (targets key registrations by
 * I_T nexus, and a new login is a new nexus): then register this session
 * with the same key, PREEMPT our own key (the reservation moves here) and
 * send the write again. Steps run on the I/O thread, one command each:
 * 0 READ RESERVATION, 1 REGISTER AND IGNORE, 2 PREEMPT. */
static void pr_fence(struct lf_session *s, struct sreq *r)
{
	char why[200];

	snprintf(why, sizeof(why),
		 "another initiator: the target answered RESERVATION "
		 "CONFLICT (the reservation of LUN %d is someone else's)",
		 r->lun);
	lf_bdev_fence(r->bdev, why);
	finish(s, r, -EROFS);
}

static void pr_recheck_done(void *opaque, int err);

static void pr_recheck(struct lf_session *s, struct sreq *r, int step)
{
	uint64_t key = lf_pr_key(s->p.initiator);
	struct sreq *c = sreq_get(s);

	if (!c) {
		pr_fence(s, r);
		return;
	}
	r->fix_step = step;
	r->fix_task = NULL;
	c->kind = SREQ_RAW;
	c->lun = r->lun;
	c->raw = step == 0 ? RAW_PRIN : RAW_PROUT;
	c->pr_sa = step == 0 ? 1 : step == 1 ? 6 : 4;
	c->pr_type = step == 2 ? LF_PR_TYPE_WRITE_EXCLUSIVE : 0;
	c->pr_len = 24;
	for (int i = 0; i < 8; i++) {
		unsigned char b = (unsigned char)(key >> (56 - 8 * i));

		c->pr_param[i] = step == 2 ? b : 0; /* REGISTER: key 0 */
		c->pr_param[8 + i] = b;
	}
	c->raw_out = &r->fix_task;
	c->done = pr_recheck_done;
	c->opaque = r;
	c->deadline_ms = now_ms() + (int64_t)s->p.replacement_timeout * 1000;
	dispatch(s, c);
}

static void pr_recheck_done(void *opaque, int err)
{
	struct sreq *r = opaque;
	struct lf_session *s = r->s;
	struct scsi_task *t = r->fix_task;
	bool ok = !err && t && task_errno(t, t->status) == 0;

	r->fix_task = NULL;
	if (ok && r->fix_step == 0) {
		const unsigned char *d = t->datain.data;
		uint64_t holder = 0;

		ok = t->datain.size >= 16 && d &&
		     ((uint32_t)d[4] << 24 | d[5] << 16 | d[6] << 8 | d[7]) >=
			     16;
		for (int i = 0; ok && i < 8; i++)
			holder = holder << 8 | d[8 + i];
		ok = ok && holder == lf_pr_key(s->p.initiator);
	}
	if (t)
		scsi_free_scsi_task(t);
	if (!ok) {
		pr_fence(s, r);
		return;
	}
	if (r->fix_step < 2) {
		pr_recheck(s, r, r->fix_step + 1);
		return;
	}
	lf_warn(MOD,
		"iscsi://%s/%s/%d: the reservation was registered by an "
		"earlier session of ours: moved to this one",
		s->portal, s->p.iqn, r->lun);
	r->pr_retried = true;
	retry_later(s, r, 0);
}

static struct scsi_task *start_task(struct lf_session *s, struct sreq *r)
{
	struct iscsi_context *c = s->ctx;
	struct scsi_iovec *iov = (struct scsi_iovec *)r->iov;
	uint32_t bs = r->block_size;

	switch (r->kind) {
	case SREQ_READ:
		return iscsi_read16_iov_task(c, r->lun, r->lba, r->len, bs, 0,
					     0, 0, 0, 0, task_cb, r, iov,
					     r->iovcnt);
	case SREQ_WRITE:
		return iscsi_write16_iov_task(c, r->lun, r->lba, NULL, r->len,
					      bs, 0, 0, 0, 0, 0, task_cb, r,
					      iov, r->iovcnt);
	case SREQ_FLUSH:
		return iscsi_synchronizecache16_task(c, r->lun, 0, 0, 0, 0,
						     task_cb, r);
	case SREQ_UNMAP:
		return iscsi_unmap_task(c, r->lun, 0, 0, &r->ul, 1, task_cb, r);
	case SREQ_RAW:
		switch (r->raw) {
		case RAW_INQUIRY:
			return iscsi_inquiry_task(c, r->lun, r->raw_evpd,
						  r->raw_page, 255, task_cb, r);
		case RAW_READCAP16:
			return iscsi_readcapacity16_task(c, r->lun, task_cb, r);
		case RAW_MODESENSE6:
			return iscsi_modesense6_task(
				c, r->lun, 1, SCSI_MODESENSE_PC_CURRENT,
				SCSI_MODEPAGE_RETURN_ALL_PAGES, 0, 255, task_cb,
				r);
		case RAW_PRIN:
		case RAW_PROUT:
			return start_pr(s, r);
		}
	}
	return NULL;
}

static void dispatch(struct lf_session *s, struct sreq *r)
{
	int64_t now = now_ms();

	if (s->stopped || now >= r->deadline_ms ||
	    (s->down_since_ms &&
	     now - s->down_since_ms >=
		     (int64_t)s->p.replacement_timeout * 1000)) {
		finish(s, r, -EIO);
		return;
	}
	if (r->bdev && r->kind != SREQ_READ &&
	    lf_bdev_fenced(r->bdev, NULL, 0)) {
		finish(s, r, -EROFS); /* queued before the fence */
		return;
	}
	if (!s->ctx) {
		/* Between contexts of a portal switch: wait for the next. */
		retry_later(s, r, RETRY_DELAY_MS);
		return;
	}
	/* Linked before the call: the callback may run inside it. */
	inflight_add(s, r);
	r->task = start_task(s, r);
	if (!r->task) {
		inflight_del(s, r);
		retry_later(s, r, RETRY_DELAY_MS);
	}
}

/* ---- the I/O thread ------------------------------------------------ */

static void update_state(struct lf_session *s)
{
	bool up = s->ctx && iscsi_is_logged_in(s->ctx);
	bool was;

	pthread_mutex_lock(&s->lock);
	was = s->connected;
	s->connected = up;
	if (was && !up)
		s->reconnects++;
	pthread_mutex_unlock(&s->lock);
	if (was && !up) {
		s->down_since_ms = now_ms();
		lf_warn(MOD, "iscsi://%s/%s: connection lost, reconnecting",
			s->portal, s->p.iqn);
	} else if (!was && up) {
		s->down_since_ms = 0;
		lf_info(MOD, "iscsi://%s/%s: reconnected", s->portal, s->p.iqn);
	}
}

/* Gives up on a context that has not reconnected in replacement_timeout:
 * libiscsi keeps the commands of a pending reconnect where cancelling
 * cannot reach them, but destroying the context completes them. */
static void drop_context(struct lf_session *s)
{
	struct sreq *r;

	lf_warn(MOD,
		"iscsi://%s/%s: no connection for %d s: failing I/O, "
		"will keep trying to log in",
		s->portal, s->p.iqn, s->p.replacement_timeout);
	s->stopped = true; /* no retries from the callbacks */
	iscsi_destroy_context(s->ctx);
	s->ctx = NULL;
	while ((r = s->inflight)) { /* any the destroy did not report */
		inflight_del(s, r);
		finish(s, r, -EIO);
	}
	while ((r = s->retry)) {
		s->retry = r->next;
		finish(s, r, -EIO);
	}
	s->stopped = false;
}

/* Fresh login after drop_context(), on the I/O thread, portals in turn. */
static void relogin(struct lf_session *s)
{
	char portal[96], e[512];

	for (int i = 0; i < s->p.nportals; i++) {
		portal_str(&s->p.portals[i], portal, sizeof(portal));
		if (login_portal(s, portal, e, sizeof(e)) == 0) {
			update_state(s);
			return;
		}
		lf_dbg(MOD, "%s", e);
	}
}

/* libiscsi's reconnect dials only the portal it logged in to: when that
 * one stays down and the spec names others, log in to the next that
 * answers and move the commands over. Destroying the old context completes
 * its commands as cancelled, which task_cb retries on the new one; if no
 * other portal answers, the old context goes on reconnecting. */
static void failover(struct lf_session *s)
{
	struct iscsi_context *old = s->ctx;
	struct sreq *r;
	char cur[96], portal[96], e[512];
	int start = 0;

	pthread_mutex_lock(&s->lock);
	snprintf(cur, sizeof(cur), "%s", s->portal);
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < s->p.nportals; i++) {
		portal_str(&s->p.portals[i], portal, sizeof(portal));
		if (!strcmp(portal, cur))
			start = i + 1;
	}
	s->ctx = NULL;
	for (int k = 0; k < s->p.nportals; k++) {
		portal_str(&s->p.portals[(start + k) % s->p.nportals], portal,
			   sizeof(portal));
		if (!strcmp(portal, cur))
			continue;
		if (login_portal(s, portal, e, sizeof(e)) == 0)
			break;
		lf_dbg(MOD, "%s", e);
	}
	if (!s->ctx) {
		s->ctx = old;
		return;
	}
	lf_warn(MOD, "iscsi://%s/%s: portal %s is down: moved the session here",
		portal, s->p.iqn, cur);
	iscsi_destroy_context(old);
	while ((r = s->inflight)) { /* any the destroy did not report */
		inflight_del(s, r);
		r->task = NULL; /* the old context's: gone with it */
		retry_later(s, r, 0);
	}
	s->quiet_until_ms = 0;
	update_state(s);
}

/* Once a second: libiscsi's timeouts, our deadline for commands the
 * target never answers, and giving up on (or reviving) a dead context. */
static void tick(struct lf_session *s)
{
	int64_t now = now_ms();
	struct sreq *r, *next;

	if (!s->ctx) {
		if (now - s->last_login_ms >= 5000) {
			s->last_login_ms = now;
			relogin(s);
		}
		if (!s->ctx)
			return;
	}
	iscsi_service(s->ctx, 0);
	update_state(s);
	if (s->down_since_ms &&
	    now - s->down_since_ms >=
		    (int64_t)s->p.replacement_timeout * 1000) {
		drop_context(s);
		s->last_login_ms = now;
		return;
	}
	if (s->down_since_ms && s->p.nportals > 1 &&
	    now - s->down_since_ms >= FAILOVER_MS &&
	    now - s->last_failover_ms >= FAILOVER_MS) {
		s->last_failover_ms = now;
		failover(s);
	}
	for (r = s->inflight; r; r = next) {
		next = r->next;
		if (now < r->deadline_ms || !r->task)
			continue;
		/* Calls task_cb with CANCELLED; past the deadline → -EIO.
		 * next may have completed too: restart the walk. */
		if (iscsi_scsi_cancel_task(s->ctx, r->task) == 0) {
			lf_warn(MOD,
				"iscsi://%s/%s: command gave up after "
				"%d s",
				s->portal, s->p.iqn, s->p.replacement_timeout);
			next = s->inflight;
		}
	}
}

static void run_retries(struct lf_session *s)
{
	int64_t now = now_ms();
	struct sreq *r = s->retry, *keep = NULL, *next;

	s->retry = NULL;
	for (; r; r = next) {
		next = r->next;
		if (r->not_before_ms <= now) {
			dispatch(s, r);
		} else {
			r->next = keep;
			keep = r;
		}
	}
	/* dispatch() may have added new retries meanwhile */
	while (keep) {
		next = keep->next;
		keep->next = s->retry;
		s->retry = keep;
		keep = next;
	}
}

static void logout_cb(struct iscsi_context *ctx, int status, void *data,
		      void *priv)
{
	*(bool *)priv = true;
}

static void shutdown_ctx(struct lf_session *s)
{
	struct sreq *r;
	bool done = false;
	int64_t end;

	s->stopped = true;
	while ((r = s->retry)) {
		s->retry = r->next;
		finish(s, r, -EIO);
	}
	if (!s->ctx)
		return;
	iscsi_scsi_cancel_all_tasks(s->ctx);
	/* Only a logged-in context is logged out: logout on one that is
	 * reconnecting or gave up crashed inside libiscsi (DESIGN.md). */
	if (iscsi_is_logged_in(s->ctx)) {
		iscsi_set_timeout(s->ctx, LOGOUT_WAIT_MS / 1000);
		iscsi_set_noautoreconnect(s->ctx, 1);
		if (iscsi_logout_async(s->ctx, logout_cb, &done) == 0) {
			end = now_ms() + LOGOUT_WAIT_MS;
			while (!done && now_ms() < end) {
				struct pollfd pfd = {
					.fd = iscsi_get_fd(s->ctx),
					.events = iscsi_which_events(s->ctx)};
				int n;

				if (pfd.fd < 0 || !pfd.events)
					break;
				n = poll(&pfd, 1, 100);
				if (iscsi_service(s->ctx,
						  n > 0 ? pfd.revents : 0) < 0)
					break;
			}
		}
		if (!done)
			lf_warn(MOD, "iscsi://%s/%s: logout not confirmed",
				s->portal, s->p.iqn);
	}
	iscsi_destroy_context(s->ctx);
	s->ctx = NULL;
	while ((r = s->inflight)) { /* defensive: none should be left */
		inflight_del(s, r);
		r->task = NULL;
		finish(s, r, -EIO);
	}
}

static void *io_thread(void *arg)
{
	struct lf_session *s = arg;
	int64_t next_tick = now_ms() + 1000;

	for (;;) {
		struct pollfd pfd[2] = {{.fd = s->efd, .events = POLLIN}};
		struct sreq *q, *r;
		int64_t now, wait;
		bool stop;
		int n, nfd = 1;
		uint64_t cnt;

		pthread_mutex_lock(&s->lock);
		q = s->q_head;
		s->q_head = s->q_tail = NULL;
		stop = s->stopping;
		pthread_mutex_unlock(&s->lock);
		for (; q; q = r) {
			r = q->next;
			if (stop)
				finish(s, q, -EIO);
			else
				dispatch(s, q);
		}
		if (stop)
			break;
		run_retries(s);

		now = now_ms();
		if (now >= next_tick) {
			tick(s);
			next_tick = now + 1000;
		}
		wait = next_tick - now;
		if (s->retry && wait > RETRY_DELAY_MS)
			wait = RETRY_DELAY_MS / 2;
		pfd[1].fd = s->ctx ? iscsi_get_fd(s->ctx) : -1;
		pfd[1].events = s->ctx ? iscsi_which_events(s->ctx) : 0;
		if (pfd[1].fd >= 0 && pfd[1].events)
			nfd = 2;
		else if (wait > 100)
			wait = 100; /* reconnect pending: see iscsi.h */
		if (now < s->quiet_until_ms) {
			nfd = 1;
			if (wait > s->quiet_until_ms - now)
				wait = s->quiet_until_ms - now;
		}
		n = poll(pfd, nfd, (int)wait);
		if (n < 0)
			continue;
		if (pfd[0].revents & POLLIN) {
			if (read(s->efd, &cnt, sizeof(cnt)) < 0)
				cnt = 0;
		}
		if (nfd == 2 && (pfd[1].revents || n == 0)) {
			/* While libiscsi waits to reconnect, the dead socket
			 * stays readable/hung up: do not spin on it. */
			if (iscsi_service(s->ctx, pfd[1].revents) < 0 ||
			    (pfd[1].revents & (POLLHUP | POLLERR)))
				s->quiet_until_ms = now_ms() + 100;
		} else if (nfd == 1 && n == 0 && s->ctx) {
			iscsi_service(s->ctx, 0); /* drives reconnect */
		}
		if (nfd == 2 && pfd[1].revents)
			update_state(s);
	}
	shutdown_ctx(s);
	return NULL;
}

/* ---- public -------------------------------------------------------- */

static void session_free(struct lf_session *s)
{
	struct sreq *r;

	while ((r = s->free_list)) {
		s->free_list = r->next;
		free(r);
	}
	if (s->efd >= 0)
		close(s->efd);
	pthread_mutex_destroy(&s->lock);
	explicit_bzero(&s->p, sizeof(s->p));
	free(s);
}

int lf_session_login(const struct lf_session_params *params,
		     struct lf_session **out, char *err, size_t errlen)
{
	struct lf_session *s;
	char portal[96], e[512];
	int r = -EINVAL, best = 0;

	*out = NULL;
	if (params->nportals < 1) {
		snprintf(err, errlen, "%s: no portal to log in to",
			 params->iqn);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "%s: out of memory", params->iqn);
		return -ENOMEM;
	}
	s->p = *params;
	s->test_no_pr = getenv("LUNFS_TEST_NO_PR") &&
			!strcmp(getenv("LUNFS_TEST_NO_PR"), "1");
	if (s->p.replacement_timeout <= 0)
		s->p.replacement_timeout = 120;
	pthread_mutex_init(&s->lock, NULL);
	s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->efd < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: eventfd: %s", params->iqn,
			 strerror(-r));
		goto fail;
	}

	for (int i = 0; i < params->nportals; i++) {
		portal_str(&params->portals[i], portal, sizeof(portal));
		r = login_portal(s, portal, e, sizeof(e));
		if (r == 0)
			break;
		lf_dbg(MOD, "%s", e);
		if (!best || error_rank(r) > error_rank(best)) {
			best = r;
			snprintf(err, errlen, "%s", e);
		}
	}
	if (!s->ctx) {
		r = best;
		goto fail;
	}
	s->connected = true;
	r = -pthread_create(&s->thread, NULL, io_thread, s);
	if (r) {
		snprintf(err, errlen, "iscsi://%s/%s: cannot start I/O thread",
			 s->portal, s->p.iqn);
		iscsi_logout_sync(s->ctx);
		iscsi_destroy_context(s->ctx);
		goto fail;
	}
	s->thread_started = true;
	lf_info(MOD, "iscsi://%s/%s: logged in as %s", s->portal, s->p.iqn,
		s->p.initiator);
	*out = s;
	return 0;
fail:
	session_free(s);
	return r;
}

void lf_session_logout(struct lf_session *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	pthread_mutex_unlock(&s->lock);
	kick(s);
	pthread_join(s->thread, NULL);
	lf_info(MOD, "iscsi://%s/%s: logged out", s->portal, s->p.iqn);
	session_free(s);
}

void lf_session_get_status(struct lf_session *s, struct lf_session_status *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&s->lock);
	snprintf(st->iqn, sizeof(st->iqn), "%s", s->p.iqn);
	snprintf(st->initiator, sizeof(st->initiator), "%s", s->p.initiator);
	snprintf(st->portal, sizeof(st->portal), "%s", s->portal);
	st->connected = s->connected;
	st->reconnects = s->reconnects;
	pthread_mutex_unlock(&s->lock);
}

void lf_session_default_initiator(char *buf, size_t len)
{
	char line[512], host[256] = "localhost";
	FILE *f = fopen("/etc/iscsi/initiatorname.iscsi", "re");

	if (f) {
		while (fgets(line, sizeof(line), f)) {
			char *v = line;

			while (isspace((unsigned char)*v))
				v++;
			if (strncmp(v, "InitiatorName=", 14))
				continue;
			v += 14;
			v[strcspn(v, " \t\r\n")] = 0;
			if (*v) {
				snprintf(buf, len, "%s", v);
				fclose(f);
				return;
			}
		}
		fclose(f);
	}
	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = 0;
	/* iSCSI names are lower case: letters, digits, '-', '.', ':' */
	for (char *c = host; *c; c++) {
		*c = (char)tolower((unsigned char)*c);
		if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.')
			*c = '-';
	}
	snprintf(buf, len, "iqn.2004-10.io.lunfs:%s", host);
}

/* ---- LUNs ---------------------------------------------------------- */

struct raw_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int err;
};

static void raw_done(void *opaque, int err)
{
	struct raw_wait *w = opaque;

	pthread_mutex_lock(&w->lock);
	w->err = err;
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/* Runs one setup command on the I/O thread and waits for it. Returns the
 * finished task (caller frees) or NULL with *errp set. */
static struct scsi_task *run_raw(struct lf_session *s, int lun,
				 enum raw_cmd cmd, int evpd, int page,
				 int *errp)
{
	struct raw_wait w = {.lock = PTHREAD_MUTEX_INITIALIZER,
			     .cond = PTHREAD_COND_INITIALIZER};
	struct scsi_task *task = NULL;
	struct sreq *r = sreq_get(s);
	int e;

	if (!r) {
		*errp = -ENOMEM;
		return NULL;
	}
	r->kind = SREQ_RAW;
	r->lun = lun;
	r->raw = cmd;
	r->raw_evpd = evpd;
	r->raw_page = page;
	r->raw_out = &task;
	r->done = raw_done;
	r->opaque = &w;
	e = enqueue(s, r);
	if (e) {
		sreq_put(s, r);
		*errp = e;
		return NULL;
	}
	pthread_mutex_lock(&w.lock);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.lock);
	pthread_mutex_unlock(&w.lock);
	*errp = w.err ? w.err : task ? 0 : -EIO;
	return task;
}

/* Runs one PERSISTENT RESERVE command and waits: 0 or -errno, with
 * RESERVATION CONFLICT as -EBUSY and a target without PR as -EOPNOTSUPP. */
static int run_pr(struct lf_lun *l, enum raw_cmd cmd, int sa, int type,
		  uint64_t key, uint64_t sa_key, void *buf, size_t len)
{
	struct raw_wait w = {.lock = PTHREAD_MUTEX_INITIALIZER,
			     .cond = PTHREAD_COND_INITIALIZER};
	struct scsi_task *task = NULL;
	struct sreq *r = sreq_get(l->s);
	int e;

	if (!r)
		return -ENOMEM;
	r->kind = SREQ_RAW;
	r->lun = l->lun;
	r->raw = cmd;
	r->pr_sa = sa;
	r->pr_type = type;
	r->pr_len = len > 0xffff ? 0xffff : (uint32_t)len;
	for (int i = 0; i < 8; i++) {
		r->pr_param[i] = (unsigned char)(key >> (56 - 8 * i));
		r->pr_param[8 + i] = (unsigned char)(sa_key >> (56 - 8 * i));
	}
	r->raw_out = &task;
	r->done = raw_done;
	r->opaque = &w;
	e = enqueue(l->s, r);
	if (e) {
		sreq_put(l->s, r);
		return e;
	}
	pthread_mutex_lock(&w.lock);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.lock);
	pthread_mutex_unlock(&w.lock);
	if (w.err || !task) {
		if (task)
			scsi_free_scsi_task(task);
		return w.err ? w.err : -EIO;
	}
	e = task_errno(task, task->status);
	if (e == 1)
		e = -EIO;
	if (!e && buf) {
		size_t n =
			task->datain.size < 0 ? 0 : (size_t)task->datain.size;

		memset(buf, 0, len);
		memcpy(buf, task->datain.data, n < len ? n : len);
	}
	scsi_free_scsi_task(task);
	return e;
}

static int lun_pr_in(void *impl, int sa, void *buf, size_t len)
{
	return run_pr(impl, RAW_PRIN, sa, 0, 0, 0, buf, len);
}

static int lun_pr_out(void *impl, int sa, int type, uint64_t key,
		      uint64_t sa_key)
{
	return run_pr(impl, RAW_PROUT, sa, type, key, sa_key, NULL, 0);
}

static int lun_submit(void *impl, enum lf_bdev_op op, const struct iovec *iov,
		      int iovcnt, uint64_t off, uint64_t len,
		      lf_bdev_done_fn done, void *opaque)
{
	struct lf_lun *l = impl;
	struct sreq *r;
	int e;

	if (len > UINT32_MAX)
		return -EINVAL;
	r = sreq_get(l->s);
	if (!r)
		return -ENOMEM;
	r->lun = l->lun;
	r->block_size = l->block_size;
	r->lba = off / l->block_size;
	r->len = (uint32_t)len;
	r->iov = (const struct scsi_iovec *)iov;
	r->iovcnt = iovcnt;
	r->bdev = l->bdev;
	r->done = done;
	r->opaque = opaque;
	switch (op) {
	case LF_BDEV_READ:
		r->kind = SREQ_READ;
		break;
	case LF_BDEV_WRITE:
		r->kind = SREQ_WRITE;
		break;
	case LF_BDEV_FLUSH:
		r->kind = SREQ_FLUSH;
		break;
	case LF_BDEV_UNMAP:
		r->kind = SREQ_UNMAP;
		r->ul.lba = r->lba;
		r->ul.num = (uint32_t)(len / l->block_size);
		break;
	}
	e = enqueue(l->s, r);
	if (e)
		sreq_put(l->s, r);
	return e;
}

static void lun_close(void *impl)
{
	free(impl);
}

/* READ CAPACITY(16) again, for a LUN that grew. */
static int lun_capacity(void *impl, uint64_t *size)
{
	struct lf_lun *l = impl;
	struct scsi_readcapacity16 *rc;
	struct scsi_task *t;
	int e;

	t = run_raw(l->s, l->lun, RAW_READCAP16, 0, 0, &e);
	if (!t)
		return e;
	e = task_errno(t, t->status);
	if (e == 0) {
		rc = scsi_datain_unmarshall(t);
		if (rc && rc->block_length == l->block_size)
			*size = (rc->returned_lba + 1) * rc->block_length;
		else
			e = -EIO;
	}
	scsi_free_scsi_task(t);
	return e == 1 ? -EIO : e;
}

static const struct lf_bdev_ops lun_ops = {
	.submit = lun_submit,
	.close = lun_close,
	.capacity = lun_capacity,
	.pr_in = lun_pr_in,
	.pr_out = lun_pr_out,
};

/* struct scsi_iovec must be struct iovec's twin for the casts above. */
_Static_assert(sizeof(struct scsi_iovec) == sizeof(struct iovec),
	       "scsi_iovec layout");

static int check_inquiry(struct lf_session *s, int lun, const char *url,
			 char *err, size_t errlen)
{
	struct scsi_inquiry_standard *inq;
	struct scsi_task *t;
	int e;

	t = run_raw(s, lun, RAW_INQUIRY, 0, 0, &e);
	if (!t) {
		snprintf(err, errlen, "%s: INQUIRY failed: %s", url,
			 strerror(-e));
		return e;
	}
	e = task_errno(t, t->status);
	if (e == -ENOENT) {
		snprintf(err, errlen, "LUN %d does not exist on %s (at %s)",
			 lun, s->p.iqn, s->portal);
		goto out;
	}
	if (e) {
		snprintf(err, errlen, "%s: INQUIRY failed: %s", url,
			 e == 1 ? "no answer" : strerror(-e));
		e = e == 1 ? -EIO : e;
		goto out;
	}
	inq = scsi_datain_unmarshall(t);
	if (!inq) {
		snprintf(err, errlen, "%s: cannot parse INQUIRY data", url);
		e = -EIO;
		goto out;
	}
	if (inq->qualifier == SCSI_INQUIRY_PERIPHERAL_QUALIFIER_NOT_SUPPORTED) {
		snprintf(err, errlen, "LUN %d does not exist on %s (at %s)",
			 lun, s->p.iqn, s->portal);
		e = -ENOENT;
	} else if (inq->device_type !=
		   SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS) {
		snprintf(err, errlen,
			 "LUN %d of %s at %s is not a disk (peripheral device "
			 "type %d)",
			 lun, s->p.iqn, s->portal, (int)inq->device_type);
		e = -ENODEV;
	}
out:
	scsi_free_scsi_task(t);
	return e;
}

int lf_session_open_lun(struct lf_session *s, int lun, bool read_only,
			struct lf_bdev **out, char *err, size_t errlen)
{
	struct lf_bdev_info info = {.read_only = read_only};
	struct scsi_readcapacity16 *rc;
	struct scsi_task *t;
	struct lf_lun *l;
	char url[sizeof(info.desc)];
	int e;

	*out = NULL;
	snprintf(url, sizeof(url), "iscsi://%s/%s/%d", s->portal, s->p.iqn,
		 lun);
	e = check_inquiry(s, lun, url, err, errlen);
	if (e)
		return e;

	t = run_raw(s, lun, RAW_READCAP16, 0, 0, &e);
	if (t && (e = task_errno(t, t->status)) == 0 &&
	    (rc = scsi_datain_unmarshall(t)) && rc->block_length >= 512 &&
	    !(rc->block_length & (rc->block_length - 1))) {
		info.block_size = rc->block_length;
		info.size = (rc->returned_lba + 1) * rc->block_length;
		info.phys_block_size = rc->block_length
				       << (rc->lbppbe < 16 ? rc->lbppbe : 0);
		info.unmap_zeroes = rc->lbprz;
	} else {
		snprintf(err, errlen, "%s: READ CAPACITY(16) failed%s%s", url,
			 e < 0 ? ": " : "", e < 0 ? strerror(-e) : "");
		if (t)
			scsi_free_scsi_task(t);
		return e < 0 ? e : -EIO;
	}
	scsi_free_scsi_task(t);

	info.max_transfer = MAX_TRANSFER_CAP;
	t = run_raw(s, lun, RAW_INQUIRY, 1, SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS,
		    &e);
	if (t && task_errno(t, t->status) == 0) {
		struct scsi_inquiry_block_limits *bl =
			scsi_datain_unmarshall(t);

		/* Unmap limits in blocks; tgtd reports granularity and
		 * alignment as 0 (not reported) and the count as ~0. */
		if (bl) {
			info.max_unmap =
				(uint64_t)bl->max_unmap * info.block_size;
			info.unmap_granularity =
				bl->opt_unmap_gran &&
						bl->opt_unmap_gran <=
							(1u << 20) /
								info.block_size
					? bl->opt_unmap_gran * info.block_size
					: 0;
			info.unmap_alignment =
				bl->ugavalid && info.unmap_granularity
					? (bl->unmap_gran_align *
					   info.block_size) %
						  info.unmap_granularity
					: 0;
		}
		/* 0 means "not reported" (tgtd): keep our cap. */
		if (bl && bl->max_xfer_len &&
		    (uint64_t)bl->max_xfer_len * info.block_size <
			    info.max_transfer)
			info.max_transfer = bl->max_xfer_len * info.block_size;
	}
	if (t)
		scsi_free_scsi_task(t);
	if (info.max_transfer < info.block_size)
		info.max_transfer = info.block_size;
	info.max_transfer -= info.max_transfer % info.block_size;

	t = run_raw(s, lun, RAW_INQUIRY, 1,
		    SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING, &e);
	if (t && task_errno(t, t->status) == 0) {
		struct scsi_inquiry_logical_block_provisioning *lbp =
			scsi_datain_unmarshall(t);

		info.can_unmap = lbp && lbp->lbpu;
	}
	if (t)
		scsi_free_scsi_task(t);
	if (!info.can_unmap)
		info.unmap_zeroes = false;

	t = run_raw(s, lun, RAW_MODESENSE6, 0, 0, &e);
	if (t && task_errno(t, t->status) == 0) {
		struct scsi_mode_sense *ms = scsi_datain_unmarshall(t);

		if (ms && (ms->device_specific_parameter & 0x80))
			info.read_only = true;
	}
	if (t)
		scsi_free_scsi_task(t);

	snprintf(info.desc, sizeof(info.desc), "%s", url);
	l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(err, errlen, "%s: out of memory", url);
		return -ENOMEM;
	}
	l->s = s;
	l->lun = lun;
	l->block_size = info.block_size;
	*out = lf_bdev_new(&lun_ops, l, &info);
	if (!*out) {
		free(l);
		snprintf(err, errlen, "%s: out of memory", url);
		return -ENOMEM;
	}
	l->bdev = *out;
	lf_info(MOD,
		"%s: %llu bytes, %u-byte blocks (%u physical), max transfer "
		"%u%s%s",
		url, (unsigned long long)info.size, info.block_size,
		info.phys_block_size, info.max_transfer,
		info.can_unmap ? ", unmap" : "",
		info.read_only ? ", read-only" : "");
	return 0;
}
