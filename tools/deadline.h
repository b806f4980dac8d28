/* deadline.h — a request answered by its deadline, whatever it waits for.
 *
 * lf_deadline_run() runs fn on a worker thread and waits for it until
 * deadline_ms (CLOCK_MONOTONIC, lf_vt_now_ms()). If fn finishes in time,
 * its answer is returned. If not, the request is abandoned: NULL is
 * returned at the deadline, so the caller answers "timed out" at once,
 * and fn runs on to its end in the background.
 *
 * An abandoned request must leave nothing behind. fn asks
 * lf_deadline_commit() right before it makes its change visible (a mount
 * attached): false means the caller has been told "timed out", and fn
 * undoes what it did instead. Once a commit said true, the caller waits
 * for fn's answer (committing is quick), so "timed out" is never said of
 * a request that took effect, and an answer is never lost.
 *
 * fn gets a deep copy of the request (json-c's reference counts are not
 * atomic: no object may be used by two threads), freed after it returns;
 * fn must not keep it. Thread-safe; one worker per call.
 */
#ifndef LUNFS_DEADLINE_H
#define LUNFS_DEADLINE_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

struct lf_deadline;

typedef struct json_object *(*lf_deadline_fn)(void *ctx,
					      struct json_object *req,
					      struct lf_deadline *dl);

/* NULL: abandoned at the deadline (or the worker could not start: then
 * fn runs on the caller's thread without a deadline). */
struct json_object *lf_deadline_run(lf_deadline_fn fn, void *ctx,
				    struct json_object *req,
				    int64_t deadline_ms);
/* In fn: true if the change may take effect; dl may be NULL (no
 * deadline: always true). */
bool lf_deadline_commit(struct lf_deadline *dl);
/* In fn: the deadline, 0 if none. */
int64_t lf_deadline_ms(const struct lf_deadline *dl);

#endif
