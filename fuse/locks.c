/* locks.c — a volume's POSIX and flock locks across its FUSE mounts.
 *
 * Held locks and waiters are plain lists: a volume holds few locks at a
 * time (lock files, a database's few byte ranges), and every operation is
 * one pass over them.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>

#include "fuse/locks.h"

struct held {
	struct held *next;
	struct lf_lock_req r;
};

struct waiter {
	struct waiter *next;
	struct lf_lock_req r;
	void *key;
	lf_lock_done_fn done;
};

struct lf_locks {
	pthread_mutex_t lock;
	struct held *held;	/* protected by lock */
	struct waiter *waiters; /* FIFO; protected by lock */
};

struct lf_locks *lf_locks_new(void)
{
	struct lf_locks *t = calloc(1, sizeof(*t));

	if (t)
		pthread_mutex_init(&t->lock, NULL);
	return t;
}

void lf_locks_free(struct lf_locks *t)
{
	if (!t)
		return;
	while (t->held) {
		struct held *h = t->held;

		t->held = h->next;
		free(h);
	}
	while (t->waiters) {
		struct waiter *w = t->waiters;

		t->waiters = w->next;
		free(w);
	}
	pthread_mutex_destroy(&t->lock);
	free(t);
}

static bool same_owner(const struct lf_lock_req *a, const struct lf_lock_req *b)
{
	return a->mount == b->mount && a->owner == b->owner;
}

static bool overlap(const struct lf_lock_req *a, const struct lf_lock_req *b)
{
	return a->start <= b->end && b->start <= a->end;
}

/* Caller holds t->lock. */
static struct held *conflict(struct lf_locks *t, const struct lf_lock_req *r)
{
	for (struct held *h = t->held; h; h = h->next)
		if (h->r.kind == r->kind && h->r.ino == r->ino &&
		    !same_owner(&h->r, r) && overlap(&h->r, r) &&
		    (h->r.type == F_WRLCK || r->type == F_WRLCK))
			return h;
	return NULL;
}

static int add_held(struct lf_locks *t, const struct lf_lock_req *r,
		    uint64_t start, uint64_t end)
{
	struct held *h = malloc(sizeof(*h));

	if (!h)
		return -ENOLCK;
	h->r = *r;
	h->r.start = start;
	h->r.end = end;
	h->next = t->held;
	t->held = h;
	return 0;
}

/* Caller holds t->lock. Takes r's range away from its owner's locks,
 * keeping what lies outside it. */
static int remove_own(struct lf_locks *t, const struct lf_lock_req *r)
{
	int ret = 0;

	for (struct held **pp = &t->held; *pp;) {
		struct held *h = *pp;

		if (h->r.kind != r->kind || h->r.ino != r->ino ||
		    !same_owner(&h->r, r) || !overlap(&h->r, r)) {
			pp = &h->next;
			continue;
		}
		*pp = h->next;
		if (h->r.start < r->start && ret == 0)
			ret = add_held(t, &h->r, h->r.start, r->start - 1);
		if (h->r.end > r->end && ret == 0)
			ret = add_held(t, &h->r, r->end + 1, h->r.end);
		free(h);
	}
	return ret;
}

/* Caller holds t->lock; r is not F_UNLCK and has no conflict. */
static int apply(struct lf_locks *t, const struct lf_lock_req *r)
{
	int ret = remove_own(t, r);

	return ret ? ret : add_held(t, r, r->start, r->end);
}

/* Caller holds t->lock. Grants what the waiters can have now, in order;
 * the granted go to *granted (for done() after unlocking). */
static void wake(struct lf_locks *t, struct waiter **granted)
{
	for (struct waiter **pp = &t->waiters; *pp;) {
		struct waiter *w = *pp;

		if (conflict(t, &w->r) || apply(t, &w->r) < 0) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		w->next = *granted;
		*granted = w;
	}
}

static void finish(struct waiter *list, int err)
{
	while (list) {
		struct waiter *w = list;

		list = w->next;
		w->done(w->key, err);
		free(w);
	}
}

void lf_locks_get(struct lf_locks *t, struct lf_lock_req *r)
{
	struct held *h;

	pthread_mutex_lock(&t->lock);
	h = conflict(t, r);
	if (h) {
		r->type = h->r.type;
		r->pid = h->r.pid;
		r->start = h->r.start;
		r->end = h->r.end;
	} else {
		r->type = F_UNLCK;
	}
	pthread_mutex_unlock(&t->lock);
}

int lf_locks_set(struct lf_locks *t, const struct lf_lock_req *r, void *key,
		 lf_lock_done_fn done)
{
	struct waiter *granted = NULL, *w;
	int ret;

	pthread_mutex_lock(&t->lock);
	if (r->type == F_UNLCK) {
		ret = remove_own(t, r);
	} else if (!conflict(t, r)) {
		ret = apply(t, r);
	} else if (!key) {
		ret = -EAGAIN;
	} else if (!(w = calloc(1, sizeof(*w)))) {
		ret = -ENOLCK;
	} else {
		struct waiter **pp = &t->waiters;

		w->r = *r;
		w->key = key;
		w->done = done;
		while (*pp)
			pp = &(*pp)->next;
		*pp = w;
		ret = 1;
	}
	/* An unlock, or a lock made smaller or shared, may let others in. */
	if (ret == 0)
		wake(t, &granted);
	pthread_mutex_unlock(&t->lock);
	finish(granted, 0);
	return ret;
}

void lf_locks_cancel(struct lf_locks *t, void *key)
{
	struct waiter *found = NULL;

	pthread_mutex_lock(&t->lock);
	for (struct waiter **pp = &t->waiters; *pp; pp = &(*pp)->next) {
		if ((*pp)->key == key) {
			found = *pp;
			*pp = found->next;
			found->next = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&t->lock);
	finish(found, -EINTR);
}

void lf_locks_release(struct lf_locks *t, enum lf_lock_kind kind, uint64_t ino,
		      const void *mount, uint64_t owner)
{
	struct lf_lock_req r = {
		.kind = kind,
		.ino = ino,
		.mount = mount,
		.owner = owner,
		.type = F_UNLCK,
		.start = 0,
		.end = UINT64_MAX,
	};

	struct waiter *gone = NULL;

	/* A waiter of the owner that closes is gone with it: a killed
	 * process's request is never answered, and granting it would leave
	 * a lock nobody releases. */
	pthread_mutex_lock(&t->lock);
	for (struct waiter **pp = &t->waiters; *pp;) {
		struct waiter *w = *pp;

		if (w->r.kind == kind && w->r.ino == ino &&
		    w->r.mount == mount && w->r.owner == owner) {
			*pp = w->next;
			w->next = gone;
			gone = w;
		} else {
			pp = &w->next;
		}
	}
	pthread_mutex_unlock(&t->lock);
	finish(gone, -EINTR);
	lf_locks_set(t, &r, NULL, NULL);
}

void lf_locks_drop_mount(struct lf_locks *t, const void *mount,
			 void (*dropped)(void *key))
{
	struct waiter *gone = NULL, *granted = NULL;

	pthread_mutex_lock(&t->lock);
	for (struct held **pp = &t->held; *pp;) {
		struct held *h = *pp;

		if (h->r.mount == mount) {
			*pp = h->next;
			free(h);
		} else {
			pp = &h->next;
		}
	}
	for (struct waiter **pp = &t->waiters; *pp;) {
		struct waiter *w = *pp;

		if (w->r.mount == mount) {
			*pp = w->next;
			w->next = gone;
			gone = w;
		} else {
			pp = &w->next;
		}
	}
	wake(t, &granted);
	pthread_mutex_unlock(&t->lock);
	while (gone) {
		struct waiter *w = gone;

		gone = w->next;
		if (dropped)
			dropped(w->key);
		free(w);
	}
	finish(granted, 0);
}
