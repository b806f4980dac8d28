/* test_registry.c — session sharing and refcounts with a fake connector. */
#include "iscsi/registry.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define IQN "iqn.2003-01.org.example:disk1"

struct fake {
	atomic_int logins, logouts, live;
	atomic_int fail_next;
	atomic_int concurrent_same; /* logins racing on one key: must be 0 */
	atomic_int in_login;
	int seq;
};

struct fake_session {
	int magic;
	int id;
};

static int fake_login(void *ctx, const struct lf_session_params *p,
		      void **session, char *err, size_t errlen)
{
	struct fake *f = ctx;
	struct fake_session *s;

	if (atomic_fetch_add(&f->in_login, 1))
		atomic_fetch_add(&f->concurrent_same, 1);
	usleep(200); /* widen the window for a racing second login */
	atomic_fetch_sub(&f->in_login, 1);
	if (atomic_exchange(&f->fail_next, 0)) {
		snprintf(err, errlen,
			 "%s: login failed: Authentication "
			 "failure (513)",
			 p->iqn);
		return -EACCES;
	}
	s = malloc(sizeof(*s));
	s->magic = 0x5e55;
	s->id = atomic_fetch_add(&f->logins, 1) + 1;
	atomic_fetch_add(&f->live, 1);
	*session = s;
	return 0;
}

static void fake_logout(void *ctx, void *session)
{
	struct fake *f = ctx;
	struct fake_session *s = session;

	if (s->magic != 0x5e55)
		abort();
	s->magic = 0;
	atomic_fetch_add(&f->logouts, 1);
	atomic_fetch_sub(&f->live, 1);
	free(s);
}

static void make_params(struct lf_session_params *p, const char *initiator,
			const char *user, const char *secret)
{
	struct lf_spec spec;
	struct lf_secrets sec;
	char err[256];

	CHECK_EQ(lf_spec_parse_url("iscsi://127.0.0.1:3260/" IQN "/1", &spec,
				   err, sizeof(err)),
		 0);
	/* two portals in a different order must give the same key */
	spec.nportals = 2;
	snprintf(spec.portals[1].host, sizeof(spec.portals[1].host),
		 "127.0.0.2");
	spec.portals[1].port = 3260;
	spec.chap_session = user != NULL;
	memset(&sec, 0, sizeof(sec));
	if (user) {
		snprintf(sec.session.user, sizeof(sec.session.user), "%s",
			 user);
		snprintf(sec.session.secret, sizeof(sec.session.secret), "%s",
			 secret);
	}
	lf_registry_params(&spec, &sec, initiator, p);
}

struct counter {
	int n, refs;
	char iqn[LF_NAME_MAX];
};

static void count_cb(void *ctx, const struct lf_registry_entry *e)
{
	struct counter *c = ctx;

	c->n++;
	c->refs += e->refs;
	snprintf(c->iqn, sizeof(c->iqn), "%s", e->st.iqn);
}

static void test_params(void)
{
	struct lf_spec spec;
	struct lf_secrets sec;
	struct lf_session_params p;
	char err[256];

	CHECK_EQ(lf_spec_parse_url("iscsi://alice@127.0.0.1/" IQN "/1", &spec,
				   err, sizeof(err)),
		 0);
	memset(&sec, 0, sizeof(sec));
	snprintf(sec.session.secret, sizeof(sec.session.secret), "pw");
	snprintf(sec.discovery.user, sizeof(sec.discovery.user), "d");
	lf_registry_params(&spec, &sec, "iqn.2004-10.io.lunfs:node", &p);
	CHECK_STR(p.initiator, "iqn.2004-10.io.lunfs:node");
	CHECK_STR(p.iqn, IQN);
	CHECK_EQ(p.nportals, 1);
	CHECK_STR(p.chap.user, "alice");
	CHECK_STR(p.chap.secret, "pw");
	CHECK_STR(p.discovery_chap.user, ""); /* chapAuthDiscovery off */
	CHECK(!p.discovery);
	CHECK_EQ(p.replacement_timeout, 120);

	CHECK_EQ(lf_spec_parse_json("{\"targetPortal\":\"h\",\"iqn\":\"" IQN
				    "\",\"chapAuthDiscovery\":true,"
				    "\"initiatorName\":\"iqn.2004-10.io.x:v\"}",
				    &spec, err, sizeof(err)),
		 0);
	lf_registry_params(&spec, &sec, "iqn.2004-10.io.lunfs:node", &p);
	CHECK_STR(p.initiator, "iqn.2004-10.io.x:v");
	CHECK(p.discovery);
	CHECK_STR(p.discovery_chap.user, "d");
	CHECK_STR(p.chap.user, "");
	CHECK_STR(p.chap.secret, "");
}

static void test_sharing(void)
{
	struct fake f = {0};
	struct lf_registry_connector c = {fake_login, fake_logout, &f};
	struct lf_registry *r = lf_registry_new(&c);
	struct lf_session_params a, a2, b, s1, s2;
	void *sa, *sa2, *sb, *ss1, *ss2;
	struct counter cnt = {0};
	char err[256];

	make_params(&a, "iqn.2004-10.io.lunfs:node", NULL, NULL);
	make_params(&a2, "iqn.2004-10.io.lunfs:node", NULL, NULL);
	/* same portal set in the other order */
	a2.portals[0] = a.portals[1];
	a2.portals[1] = a.portals[0];
	make_params(&b, "iqn.2004-10.io.lunfs:other", NULL, NULL);
	make_params(&s1, "iqn.2004-10.io.lunfs:node", "u", "secret-1");
	make_params(&s2, "iqn.2004-10.io.lunfs:node", "u", "secret-2");

	CHECK_EQ(lf_registry_refs(r, &a), 0);
	CHECK_EQ(lf_registry_acquire(r, &a, &sa, err, sizeof(err)), 0);
	CHECK_EQ(lf_registry_acquire(r, &a2, &sa2, err, sizeof(err)), 0);
	CHECK(sa == sa2);
	CHECK_EQ(f.logins, 1);
	CHECK_EQ(lf_registry_refs(r, &a), 2);

	CHECK_EQ(lf_registry_acquire(r, &b, &sb, err, sizeof(err)), 0);
	CHECK(sb != sa);
	CHECK_EQ(f.logins, 2);
	CHECK_EQ(lf_registry_acquire(r, &s1, &ss1, err, sizeof(err)), 0);
	CHECK_EQ(lf_registry_acquire(r, &s2, &ss2, err, sizeof(err)), 0);
	CHECK(ss1 != ss2);
	CHECK(ss1 != sa);
	CHECK_EQ(f.logins, 4);

	lf_registry_foreach(r, count_cb, &cnt);
	CHECK_EQ(cnt.n, 4);
	CHECK_EQ(cnt.refs, 5);
	CHECK_STR(cnt.iqn, IQN);

	lf_registry_release(r, sa);
	CHECK_EQ(f.logouts, 0);
	CHECK_EQ(lf_registry_refs(r, &a), 1);
	lf_registry_release(r, sa2);
	CHECK_EQ(f.logouts, 1);
	CHECK_EQ(lf_registry_refs(r, &a), 0);
	/* harmless: already released, and never handed out */
	lf_registry_release(r, sa);
	lf_registry_release(r, &cnt);
	lf_registry_release(r, NULL);
	CHECK_EQ(f.logouts, 1);

	lf_registry_release(r, sb);
	lf_registry_release(r, ss1);
	lf_registry_release(r, ss2);
	CHECK_EQ(f.logouts, 4);
	CHECK_EQ(f.live, 0);
	cnt.n = 0;
	lf_registry_foreach(r, count_cb, &cnt);
	CHECK_EQ(cnt.n, 0);

	/* a new acquire after the last release logs in again */
	CHECK_EQ(lf_registry_acquire(r, &a, &sa, err, sizeof(err)), 0);
	CHECK_EQ(f.logins, 5);
	lf_registry_release(r, sa);
	CHECK_EQ(f.logouts, 5);
	lf_registry_free(r);
}

static void test_login_failure(void)
{
	struct fake f = {0};
	struct lf_registry_connector c = {fake_login, fake_logout, &f};
	struct lf_registry *r = lf_registry_new(&c);
	struct lf_session_params a;
	struct counter cnt = {0};
	void *s = NULL;
	char err[256] = "";

	make_params(&a, "iqn.2004-10.io.lunfs:node", "u", "wrong");
	f.fail_next = 1;
	CHECK_EQ(lf_registry_acquire(r, &a, &s, err, sizeof(err)), -EACCES);
	CHECK(strstr(err, "Authentication failure") != NULL);
	CHECK(s == NULL);
	CHECK_EQ(lf_registry_refs(r, &a), 0);
	lf_registry_foreach(r, count_cb, &cnt);
	CHECK_EQ(cnt.n, 0);
	CHECK_EQ(f.logouts, 0);
	/* and the key works afterwards */
	CHECK_EQ(lf_registry_acquire(r, &a, &s, err, sizeof(err)), 0);
	CHECK_EQ(lf_registry_refs(r, &a), 1);
	lf_registry_release(r, s);
	CHECK_EQ(f.logins, 1);
	CHECK_EQ(f.logouts, 1);
	/* open_lun needs the iSCSI connector */
	{
		struct lf_bdev *bd = NULL;

		CHECK_EQ(lf_registry_open_lun(r, &a, 1, false, &bd, err,
					      sizeof(err)),
			 -EOPNOTSUPP);
		CHECK(bd == NULL);
	}
	lf_registry_free(r);
}

struct worker {
	struct lf_registry *r;
	const struct lf_session_params *p;
	int errors;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char err[256];
	void *s;

	for (int i = 0; i < 200; i++) {
		if (lf_registry_acquire(w->r, w->p, &s, err, sizeof(err))) {
			w->errors++;
			continue;
		}
		if (((struct fake_session *)s)->magic != 0x5e55)
			w->errors++;
		if (i % 3 == 0)
			sched_yield();
		lf_registry_release(w->r, s);
	}
	return NULL;
}

static void test_threads(void)
{
	struct fake f = {0};
	struct lf_registry_connector c = {fake_login, fake_logout, &f};
	struct lf_registry *r = lf_registry_new(&c);
	struct lf_session_params a;
	struct worker w[8];
	pthread_t t[8];
	int errors = 0;

	make_params(&a, "iqn.2004-10.io.lunfs:node", NULL, NULL);
	for (int i = 0; i < 8; i++) {
		w[i] = (struct worker){r, &a, 0};
		CHECK_EQ(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		errors += w[i].errors;
	}
	CHECK_EQ(errors, 0);
	CHECK(f.logins >= 1);
	CHECK_EQ(f.logins, f.logouts);
	CHECK_EQ(f.live, 0);
	CHECK_EQ(f.concurrent_same, 0);
	CHECK_EQ(lf_registry_refs(r, &a), 0);
	printf("threads: %d logins for 1600 acquires\n", (int)f.logins);
	lf_registry_free(r);
}

int main(void)
{
	test_params();
	test_sharing();
	test_login_failure();
	test_threads();
	return check_report("test_registry");
}
