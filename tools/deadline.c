/* deadline.c — see deadline.h. */
#include "tools/deadline.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "iscsi/log.h"

#define MOD "daemon"

struct lf_deadline {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	int refs;	     /* caller + worker; lock */
	bool done;	     /* lock */
	bool abandoned;	     /* lock */
	bool committed;	     /* lock */
	int64_t deadline_ms;
	lf_deadline_fn fn;
	void *ctx;
	struct json_object *req;
	struct json_object *ans; /* lock */
};

static void unref(struct lf_deadline *dl)
{
	bool last;

	pthread_mutex_lock(&dl->lock);
	last = --dl->refs == 0;
	pthread_mutex_unlock(&dl->lock);
	if (!last)
		return;
	json_object_put(dl->ans);
	json_object_put(dl->req);
	pthread_cond_destroy(&dl->cond);
	pthread_mutex_destroy(&dl->lock);
	free(dl);
}

static void *worker(void *arg)
{
	struct lf_deadline *dl = arg;
	struct json_object *ans = dl->fn(dl->ctx, dl->req, dl);

	pthread_mutex_lock(&dl->lock);
	dl->ans = ans;
	dl->done = true;
	pthread_cond_broadcast(&dl->cond);
	pthread_mutex_unlock(&dl->lock);
	unref(dl);
	return NULL;
}

bool lf_deadline_commit(struct lf_deadline *dl)
{
	bool ok;

	if (!dl)
		return true;
	pthread_mutex_lock(&dl->lock);
	ok = !dl->abandoned;
	dl->committed = ok;
	pthread_mutex_unlock(&dl->lock);
	return ok;
}

int64_t lf_deadline_ms(const struct lf_deadline *dl)
{
	return dl ? dl->deadline_ms : 0;
}

struct json_object *lf_deadline_run(lf_deadline_fn fn, void *ctx,
				    struct json_object *req,
				    int64_t deadline_ms)
{
	struct lf_deadline *dl = calloc(1, sizeof(*dl));
	struct json_object *ans = NULL;
	pthread_condattr_t ca;
	pthread_attr_t attr;
	struct timespec ts;
	pthread_t t;
	int r;

	if (!dl)
		return fn(ctx, req, NULL);
	pthread_mutex_init(&dl->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&dl->cond, &ca);
	pthread_condattr_destroy(&ca);
	dl->refs = 2;
	dl->deadline_ms = deadline_ms;
	dl->fn = fn;
	dl->ctx = ctx;
	/* A copy of its own: json-c's reference counts are not atomic, so
	 * no object may be shared by two threads. */
	if (json_object_deep_copy(req, &dl->req, NULL)) {
		pthread_cond_destroy(&dl->cond);
		pthread_mutex_destroy(&dl->lock);
		free(dl);
		return fn(ctx, req, NULL);
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&t, &attr, worker, dl);
	pthread_attr_destroy(&attr);
	if (r) {
		lf_warn(MOD, "cannot start a request worker: %s: no deadline",
			strerror(r));
		dl->refs = 1;
		unref(dl); /* wipes nothing: the copy's secrets go with it */
		return fn(ctx, req, NULL);
	}
	ts.tv_sec = deadline_ms / 1000;
	ts.tv_nsec = (deadline_ms % 1000) * 1000000;
	pthread_mutex_lock(&dl->lock);
	while (!dl->done) {
		if (dl->committed) {
			pthread_cond_wait(&dl->cond, &dl->lock);
			continue;
		}
		if (pthread_cond_timedwait(&dl->cond, &dl->lock, &ts) ==
			    ETIMEDOUT &&
		    !dl->done && !dl->committed) {
			dl->abandoned = true;
			break;
		}
	}
	if (dl->done) {
		ans = dl->ans;
		dl->ans = NULL;
	}
	pthread_mutex_unlock(&dl->lock);
	unref(dl);
	return ans;
}
