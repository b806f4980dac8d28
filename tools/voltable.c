/* voltable.c — see voltable.h. */
#include "tools/voltable.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lf_vt_state_name(enum lf_vt_state s)
{
	switch (s) {
	case LF_VT_ATTACHED:
		return "attached";
	case LF_VT_ATTACHING:
		return "attaching";
	case LF_VT_RECOVERING:
		return "recovering";
	case LF_VT_DETACHING:
		return "detaching";
	case LF_VT_CHECKING:
		return "checking";
	case LF_VT_RESIZING:
		return "resizing";
	}
	return "?";
}

int64_t lf_vt_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int lf_vt_init(struct lf_voltable *t)
{
	pthread_condattr_t ca;
	int r;

	memset(t, 0, sizeof(*t));
	r = pthread_mutex_init(&t->lock, NULL);
	if (r)
		return -r;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	r = pthread_cond_init(&t->changed, &ca);
	pthread_condattr_destroy(&ca);
	if (r) {
		pthread_mutex_destroy(&t->lock);
		return -r;
	}
	return 0;
}

void lf_vt_destroy(struct lf_voltable *t)
{
	pthread_cond_destroy(&t->changed);
	pthread_mutex_destroy(&t->lock);
}

/* Caller holds t->lock. 0, or -ETIMEDOUT once the deadline has passed. */
static int wait_changed(struct lf_voltable *t, int64_t deadline_ms)
{
	struct timespec ts;

	if (!deadline_ms) {
		pthread_cond_wait(&t->changed, &t->lock);
		return 0;
	}
	if (lf_vt_now_ms() >= deadline_ms)
		return -ETIMEDOUT;
	ts.tv_sec = deadline_ms / 1000;
	ts.tv_nsec = (deadline_ms % 1000) * 1000000;
	pthread_cond_timedwait(&t->changed, &t->lock, &ts);
	return 0;
}

int lf_vt_wait(struct lf_voltable *t, bool (*done)(void *ctx), void *ctx,
	       int64_t deadline_ms)
{
	int r = 0;

	pthread_mutex_lock(&t->lock);
	while (!r && !done(ctx))
		r = wait_changed(t, deadline_ms);
	pthread_mutex_unlock(&t->lock);
	return r;
}

void lf_vt_changed(struct lf_voltable *t)
{
	pthread_cond_broadcast(&t->changed);
}

static void set_since(int64_t *ms, time_t *wall)
{
	*ms = lf_vt_now_ms();
	*wall = time(NULL);
}

/* Caller holds t->lock. */
static void volume_unref_locked(struct lf_voltable *t, struct lf_vt_volume *v)
{
	if (--v->refs > 0)
		return;
	for (struct lf_vt_volume **pp = &t->volumes; *pp; pp = &(*pp)->next) {
		if (*pp == v) {
			*pp = v->next;
			break;
		}
	}
	free(v);
}

int lf_vt_volume_claim(struct lf_voltable *t, const char *key,
		       const char *record_path, int64_t deadline_ms,
		       enum lf_vt_state state, struct lf_vt_volume **out)
{
	struct lf_vt_volume *v;
	int r = 0;

	pthread_mutex_lock(&t->lock);
	for (v = t->volumes; v; v = v->next)
		if (strcmp(v->key, key) == 0)
			break;
	if (!v) {
		v = calloc(1, sizeof(*v));
		if (!v) {
			pthread_mutex_unlock(&t->lock);
			return -ENOMEM;
		}
		snprintf(v->key, sizeof(v->key), "%s", key);
		snprintf(v->record_path, sizeof(v->record_path), "%s",
			 record_path);
		v->next = t->volumes;
		t->volumes = v;
	}
	v->refs++;
	while (v->claimed && !r)
		r = wait_changed(t, deadline_ms);
	if (r) {
		volume_unref_locked(t, v);
		pthread_mutex_unlock(&t->lock);
		return r;
	}
	v->claimed = true;
	/* An open volume stays "attached" while one of its mounts is added
	 * or removed: the mount entry shows that. */
	if (!v->open) {
		v->state = state;
		set_since(&v->since_ms, &v->since_wall);
	}
	pthread_mutex_unlock(&t->lock);
	*out = v;
	return 0;
}

void lf_vt_volume_set_state(struct lf_voltable *t, struct lf_vt_volume *v,
			    enum lf_vt_state state)
{
	pthread_mutex_lock(&t->lock);
	if (v->state != state) {
		v->state = state;
		set_since(&v->since_ms, &v->since_wall);
		pthread_cond_broadcast(&t->changed);
	}
	pthread_mutex_unlock(&t->lock);
}

void lf_vt_volume_set_open(struct lf_voltable *t, struct lf_vt_volume *v,
			   bool open)
{
	pthread_mutex_lock(&t->lock);
	v->open = open;
	pthread_mutex_unlock(&t->lock);
}

int lf_vt_volume_nmounts(struct lf_voltable *t, struct lf_vt_volume *v)
{
	int n;

	pthread_mutex_lock(&t->lock);
	n = v->nmounts;
	pthread_mutex_unlock(&t->lock);
	return n;
}

void lf_vt_volume_done(struct lf_voltable *t, struct lf_vt_volume *v)
{
	pthread_mutex_lock(&t->lock);
	v->claimed = false;
	if (v->open && v->state != LF_VT_ATTACHED) {
		v->state = LF_VT_ATTACHED;
		set_since(&v->since_ms, &v->since_wall);
	}
	volume_unref_locked(t, v);
	pthread_cond_broadcast(&t->changed);
	pthread_mutex_unlock(&t->lock);
}

static struct lf_vt_mount *find_mount(struct lf_voltable *t, const char *path)
{
	for (struct lf_vt_mount *m = t->mounts; m; m = m->next)
		if (strcmp(m->path, path) == 0)
			return m;
	return NULL;
}

int lf_vt_mount_claim(struct lf_voltable *t, const char *path,
		      const char *spec_key, const char *container,
		      int64_t deadline_ms, struct lf_vt_mount **out,
		      bool *existing)
{
	struct lf_vt_mount *m;
	int r = 0;

	pthread_mutex_lock(&t->lock);
	while (!r && (m = find_mount(t, path)) && m->claimed)
		r = wait_changed(t, deadline_ms);
	if (r)
		goto out;
	if (m) {
		m->claimed = true;
		*existing = true;
		*out = m;
		goto out;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		r = -ENOMEM;
		goto out;
	}
	snprintf(m->path, sizeof(m->path), "%s", path);
	snprintf(m->spec_key, sizeof(m->spec_key), "%s", spec_key);
	snprintf(m->container, sizeof(m->container), "%s", container);
	m->fsgroup = -1;
	m->claimed = true;
	m->state = LF_VT_ATTACHING;
	set_since(&m->since_ms, &m->since_wall);
	m->next = t->mounts;
	t->mounts = m;
	*existing = false;
	*out = m;
out:
	pthread_mutex_unlock(&t->lock);
	return r;
}

int lf_vt_mount_claim_detach(struct lf_voltable *t, const char *path,
			     int64_t deadline_ms, struct lf_vt_mount **out)
{
	struct lf_vt_mount *m;
	int r = 0;

	pthread_mutex_lock(&t->lock);
	while (!r && (m = find_mount(t, path)) && m->claimed)
		r = wait_changed(t, deadline_ms);
	if (!r && !m)
		r = -ENOENT;
	if (!r) {
		m->claimed = true;
		m->state = LF_VT_DETACHING;
		set_since(&m->since_ms, &m->since_wall);
		*out = m;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int lf_vt_mount_claim_next(struct lf_voltable *t,
			   bool (*match)(void *ctx,
					 const struct lf_vt_mount *m),
			   void *ctx, int64_t deadline_ms,
			   struct lf_vt_mount **out)
{
	struct lf_vt_mount *m;
	int r = 0;

	pthread_mutex_lock(&t->lock);
	for (;;) {
		bool busy = false;

		for (m = t->mounts; m; m = m->next) {
			if (!match(ctx, m))
				continue;
			if (!m->claimed)
				break;
			busy = true;
		}
		if (m || !busy)
			break;
		r = wait_changed(t, deadline_ms);
		if (r)
			break;
	}
	if (m) {
		m->claimed = true;
		m->state = LF_VT_DETACHING;
		set_since(&m->since_ms, &m->since_wall);
		*out = m;
	} else if (!r) {
		r = -ENOENT;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

void lf_vt_mount_bind(struct lf_voltable *t, struct lf_vt_mount *m,
		      struct lf_vt_volume *v)
{
	pthread_mutex_lock(&t->lock);
	m->v = v;
	v->nmounts++;
	v->refs++;
	pthread_mutex_unlock(&t->lock);
}

bool lf_vt_mount_gone(struct lf_voltable *t, struct lf_vt_mount *m)
{
	bool gone;

	pthread_mutex_lock(&t->lock);
	gone = m->gone;
	pthread_mutex_unlock(&t->lock);
	return gone;
}

void lf_vt_mount_attached(struct lf_voltable *t, struct lf_vt_mount *m)
{
	pthread_mutex_lock(&t->lock);
	m->claimed = false;
	m->state = LF_VT_ATTACHED;
	set_since(&m->since_ms, &m->since_wall);
	pthread_cond_broadcast(&t->changed);
	pthread_mutex_unlock(&t->lock);
}

void lf_vt_mount_unclaim(struct lf_voltable *t, struct lf_vt_mount *m)
{
	/* since stays: the mount has been attached since then. */
	pthread_mutex_lock(&t->lock);
	m->claimed = false;
	pthread_cond_broadcast(&t->changed);
	pthread_mutex_unlock(&t->lock);
}

void lf_vt_mount_remove(struct lf_voltable *t, struct lf_vt_mount *m)
{
	pthread_mutex_lock(&t->lock);
	for (struct lf_vt_mount **pp = &t->mounts; *pp; pp = &(*pp)->next) {
		if (*pp == m) {
			*pp = m->next;
			break;
		}
	}
	if (m->v) {
		m->v->nmounts--;
		volume_unref_locked(t, m->v);
	}
	pthread_cond_broadcast(&t->changed);
	pthread_mutex_unlock(&t->lock);
	json_object_put(m->record);
	free(m);
}
