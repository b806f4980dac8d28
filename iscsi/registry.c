/* registry.c — see registry.h.
 *
 * Locks, in precedence order:
 *   entry->lock  one per key, held across login and logout, so one target
 *                is never logged into twice nor out while logging in;
 *   r->lock      the table: entry list, refs, session, pins. Never held
 *                while calling the connector.
 * An entry lives while it has a session or a thread pinned to it (a thread
 * waiting on or holding entry->lock). */
#include "iscsi/registry.h"

#include "iscsi/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define MOD "registry"

struct reg_entry {
	struct reg_entry *next; /* protected by r->lock */
	char *key;
	char iqn[LF_NAME_MAX];
	char initiator[LF_NAME_MAX];
	pthread_mutex_t lock;
	void *session; /* protected by r->lock; NULL = none */
	int refs;      /* protected by r->lock */
	int pins;      /* protected by r->lock */
};

struct lf_registry {
	struct lf_registry_connector conn;
	bool iscsi;    /* conn is session.h's */
	uint64_t salt; /* keeps key digests per registry */
	pthread_mutex_t lock;
	struct reg_entry *entries; /* protected by lock */
};

struct lf_registry *lf_registry_new(const struct lf_registry_connector *c)
{
	struct lf_registry *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->conn = *c;
	if (getrandom(&r->salt, sizeof(r->salt), 0) != sizeof(r->salt))
		r->salt = (uintptr_t)r ^ 0x9e3779b97f4a7c15ull;
	pthread_mutex_init(&r->lock, NULL);
	return r;
}

static int iscsi_login(void *ctx, const struct lf_session_params *p,
		       void **session, char *err, size_t errlen)
{
	struct lf_session *s;
	int rc = lf_session_login(p, &s, err, errlen);

	if (!rc)
		*session = s;
	return rc;
}

static void iscsi_logout(void *ctx, void *session)
{
	lf_session_logout(session);
}

struct lf_registry *lf_registry_new_iscsi(void)
{
	static const struct lf_registry_connector c = {
		.login = iscsi_login,
		.logout = iscsi_logout,
	};
	struct lf_registry *r = lf_registry_new(&c);

	if (r)
		r->iscsi = true;
	return r;
}

static void entry_free(struct reg_entry *e)
{
	pthread_mutex_destroy(&e->lock);
	free(e->key);
	free(e);
}

void lf_registry_free(struct lf_registry *r)
{
	struct reg_entry *e, *next;

	if (!r)
		return;
	for (e = r->entries; e; e = next) {
		next = e->next;
		if (e->session) {
			lf_warn(MOD,
				"%s: freeing the registry with %d reference(s) "
				"held: logging out",
				e->iqn, e->refs);
			r->conn.logout(r->conn.ctx, e->session);
		}
		entry_free(e);
	}
	pthread_mutex_destroy(&r->lock);
	free(r);
}

/* ---- keys ----------------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const char *s)
{
	/* the terminating NUL goes in too, so "ab"+"c" != "a"+"bc" */
	do {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	} while (*s++);
	return h;
}

/* splitmix64's finaliser: spreads FNV's weak high bits. */
static uint64_t mix(uint64_t h)
{
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 31;
	return h;
}

static uint64_t chap_digest(const struct lf_registry *r,
			    const struct lf_session_params *p)
{
	const struct lf_chap *c[] = {&p->chap, &p->discovery_chap};
	uint64_t h = 0xcbf29ce484222325ull ^ r->salt;

	for (int i = 0; i < 2; i++) {
		h = fnv1a(h, c[i]->secret);
		h = fnv1a(h, c[i]->user_in);
		h = fnv1a(h, c[i]->secret_in);
		h = mix(h);
	}
	h = fnv1a(h, p->discovery_chap.user);
	return mix(h ^ r->salt);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "initiator|iqn|addr:port,…|chap user|digest" — malloc'ed, no secret. */
static char *make_key(const struct lf_registry *r,
		      const struct lf_session_params *p)
{
	char portals[LF_MAX_PORTALS][LF_HOST_MAX + 16];
	const char *sorted[LF_MAX_PORTALS];
	char *key = NULL, *plist;
	size_t len = 0;
	FILE *f;
	int n = p->nportals < LF_MAX_PORTALS ? p->nportals : LF_MAX_PORTALS;

	for (int i = 0; i < n; i++) {
		const struct lf_portal *pt = &p->portals[i];

		snprintf(portals[i], sizeof(portals[i]), "%s:%u",
			 pt->addr[0] ? pt->addr : pt->host, pt->port);
		sorted[i] = portals[i];
	}
	qsort(sorted, n, sizeof(sorted[0]), cmp_str);
	f = open_memstream(&plist, &len);
	if (!f)
		return NULL;
	for (int i = 0; i < n; i++)
		fprintf(f, "%s%s", i ? "," : "", sorted[i]);
	if (fclose(f))
		return NULL;
	if (asprintf(&key, "%s|%s|%s|%s|%d|%016llx", p->initiator, p->iqn,
		     plist, p->chap.user, p->discovery,
		     (unsigned long long)chap_digest(r, p)) < 0)
		key = NULL;
	free(plist);
	return key;
}

static struct reg_entry *find_key(struct lf_registry *r, const char *key)
{
	for (struct reg_entry *e = r->entries; e; e = e->next) {
		if (!strcmp(e->key, key))
			return e;
	}
	return NULL;
}

static struct reg_entry *find_session(struct lf_registry *r, void *session)
{
	for (struct reg_entry *e = r->entries; e; e = e->next) {
		if (e->session == session)
			return e;
	}
	return NULL;
}

/* Under r->lock: drops a pin, frees the entry once nothing uses it. */
static void unpin_locked(struct lf_registry *r, struct reg_entry *e)
{
	struct reg_entry **pp;

	if (--e->pins || e->session)
		return;
	for (pp = &r->entries; *pp; pp = &(*pp)->next) {
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	}
	entry_free(e);
}

/* ---- acquire / release ---------------------------------------------- */

int lf_registry_acquire(struct lf_registry *r,
			const struct lf_session_params *p, void **session,
			char *err, size_t errlen)
{
	struct reg_entry *e;
	char *key = make_key(r, p);
	void *s = NULL;
	int rc = 0;

	if (!key) {
		snprintf(err, errlen, "%s: out of memory", p->iqn);
		return -ENOMEM;
	}
	pthread_mutex_lock(&r->lock);
	e = find_key(r, key);
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e) {
			pthread_mutex_unlock(&r->lock);
			free(key);
			snprintf(err, errlen, "%s: out of memory", p->iqn);
			return -ENOMEM;
		}
		e->key = key;
		key = NULL;
		snprintf(e->iqn, sizeof(e->iqn), "%s", p->iqn);
		snprintf(e->initiator, sizeof(e->initiator), "%s",
			 p->initiator);
		pthread_mutex_init(&e->lock, NULL);
		e->next = r->entries;
		r->entries = e;
	}
	free(key);
	e->pins++;
	pthread_mutex_unlock(&r->lock);

	pthread_mutex_lock(&e->lock);
	pthread_mutex_lock(&r->lock);
	if (e->session) {
		e->refs++;
		*session = e->session;
		pthread_mutex_unlock(&r->lock);
		goto out_unlock;
	}
	pthread_mutex_unlock(&r->lock);

	rc = r->conn.login(r->conn.ctx, p, &s, err, errlen);
	if (!rc && !s) {
		snprintf(err, errlen, "%s: login returned no session", p->iqn);
		rc = -EIO;
	}
	pthread_mutex_lock(&r->lock);
	if (!rc) {
		e->session = s;
		e->refs = 1;
		*session = s;
	}
	pthread_mutex_unlock(&r->lock);
	if (!rc)
		lf_dbg(MOD, "%s: logged in as %s", p->iqn, p->initiator);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	pthread_mutex_lock(&r->lock);
	unpin_locked(r, e);
	pthread_mutex_unlock(&r->lock);
	return rc;
}

void lf_registry_release(struct lf_registry *r, void *session)
{
	struct reg_entry *e;
	void *out = NULL;
	bool stale = false;

	if (!session)
		return;
	pthread_mutex_lock(&r->lock);
	e = find_session(r, session);
	if (!e) {
		pthread_mutex_unlock(&r->lock);
		lf_warn(MOD, "release of a session that is not registered "
			     "(already released?): ignored");
		return;
	}
	e->pins++;
	pthread_mutex_unlock(&r->lock);

	pthread_mutex_lock(&e->lock);
	pthread_mutex_lock(&r->lock);
	/* Another release may have logged it out while we waited. */
	if (e->session != session || e->refs <= 0) {
		stale = true;
	} else if (--e->refs == 0) {
		out = e->session;
		e->session = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	if (out) {
		lf_dbg(MOD, "%s: last reference gone: logging out", e->iqn);
		r->conn.logout(r->conn.ctx, out);
	}
	pthread_mutex_unlock(&e->lock);
	if (stale)
		lf_warn(MOD,
			"%s: release of a session already logged out: "
			"ignored",
			e->iqn);
	pthread_mutex_lock(&r->lock);
	unpin_locked(r, e);
	pthread_mutex_unlock(&r->lock);
}

int lf_registry_refs(struct lf_registry *r, const struct lf_session_params *p)
{
	char *key = make_key(r, p);
	struct reg_entry *e;
	int refs = 0;

	if (!key)
		return 0;
	pthread_mutex_lock(&r->lock);
	e = find_key(r, key);
	if (e && e->session)
		refs = e->refs;
	pthread_mutex_unlock(&r->lock);
	free(key);
	return refs;
}

/* ---- LUNs ----------------------------------------------------------- */

/* The bdev handed out: forwards to the session's bdev and holds the
 * registry reference until its last unref. */
struct reg_lun {
	struct lf_registry *r;
	void *session;
	struct lf_bdev *inner;
};

static int reg_lun_submit(void *impl, enum lf_bdev_op op,
			  const struct iovec *iov, int iovcnt, uint64_t off,
			  uint64_t len, lf_bdev_done_fn done, void *opaque)
{
	struct reg_lun *l = impl;

	return lf_bdev_submit(l->inner, op, iov, iovcnt, off, len, done,
			      opaque);
}

static void reg_lun_close(void *impl)
{
	struct reg_lun *l = impl;

	lf_bdev_unref(l->inner);
	lf_registry_release(l->r, l->session);
	free(l);
}

/* The outer size follows the inner one; the outer bdev refuses a
 * shrink itself. */
static int reg_lun_capacity(void *impl, uint64_t *size)
{
	struct reg_lun *l = impl;
	int r = lf_bdev_refresh_size(l->inner, NULL, size);

	return r == -EINVAL ? 0 : r;
}

static struct lf_bdev *reg_lun_below(void *impl)
{
	return ((struct reg_lun *)impl)->inner;
}

static const struct lf_bdev_ops reg_lun_ops = {
	.submit = reg_lun_submit,
	.close = reg_lun_close,
	.capacity = reg_lun_capacity,
	.below = reg_lun_below,
};

int lf_registry_open_lun(struct lf_registry *r,
			 const struct lf_session_params *p, int lun,
			 bool read_only, struct lf_bdev **out, char *err,
			 size_t errlen)
{
	struct lf_bdev *inner = NULL, *b;
	struct reg_lun *l;
	void *session;
	int rc;

	if (!r->iscsi) {
		snprintf(err, errlen,
			 "%s: this registry's connector cannot open LUNs",
			 p->iqn);
		return -EOPNOTSUPP;
	}
	rc = lf_registry_acquire(r, p, &session, err, errlen);
	if (rc)
		return rc;
	rc = lf_session_open_lun(session, lun, read_only, &inner, err, errlen);
	if (rc)
		goto out_release;
	l = calloc(1, sizeof(*l));
	if (!l) {
		rc = -ENOMEM;
		snprintf(err, errlen, "%s/%d: out of memory", p->iqn, lun);
		goto out_unref;
	}
	l->r = r;
	l->session = session;
	l->inner = inner;
	b = lf_bdev_new(&reg_lun_ops, l, lf_bdev_info(inner));
	if (!b) {
		rc = -ENOMEM;
		snprintf(err, errlen, "%s/%d: out of memory", p->iqn, lun);
		goto out_free;
	}
	*out = b;
	return 0;

out_free:
	free(l);
out_unref:
	lf_bdev_unref(inner);
out_release:
	lf_registry_release(r, session);
	return rc;
}

/* ---- status and params ---------------------------------------------- */

void lf_registry_foreach(struct lf_registry *r,
			 void (*fn)(void *ctx,
				    const struct lf_registry_entry *e),
			 void *ctx)
{
	pthread_mutex_lock(&r->lock);
	for (struct reg_entry *e = r->entries; e; e = e->next) {
		struct lf_registry_entry re;

		if (!e->session)
			continue;
		memset(&re, 0, sizeof(re));
		re.refs = e->refs;
		if (r->iscsi) {
			lf_session_get_status(e->session, &re.st);
		} else {
			snprintf(re.st.iqn, sizeof(re.st.iqn), "%s", e->iqn);
			snprintf(re.st.initiator, sizeof(re.st.initiator), "%s",
				 e->initiator);
			re.st.connected = true;
		}
		fn(ctx, &re);
	}
	pthread_mutex_unlock(&r->lock);
}

void lf_registry_params(const struct lf_spec *spec,
			const struct lf_secrets *sec,
			const char *node_initiator, struct lf_session_params *p)
{
	memset(p, 0, sizeof(*p));
	if (spec->initiator_name[0])
		snprintf(p->initiator, sizeof(p->initiator), "%s",
			 spec->initiator_name);
	else if (node_initiator && node_initiator[0])
		snprintf(p->initiator, sizeof(p->initiator), "%s",
			 node_initiator);
	else
		lf_session_default_initiator(p->initiator,
					     sizeof(p->initiator));
	snprintf(p->iqn, sizeof(p->iqn), "%s", spec->iqn);
	p->nportals = spec->nportals;
	memcpy(p->portals, spec->portals,
	       sizeof(p->portals[0]) * (size_t)spec->nportals);
	p->discovery = spec->chap_discovery;
	if (spec->chap_session || spec->url_user[0]) {
		if (sec)
			p->chap = sec->session;
		/* "user@" in a URL names a one-way CHAP user whose secret
		 * comes from the secrets; a username there wins */
		if (!p->chap.user[0])
			snprintf(p->chap.user, sizeof(p->chap.user), "%s",
				 spec->url_user);
	}
	if (spec->chap_discovery && sec)
		p->discovery_chap = sec->discovery;
	p->replacement_timeout = 120;
}
