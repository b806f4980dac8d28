/* recover.h — a dead daemon's attach records, served again.
 *
 * When lunfsd dies (kill -9, OOM) with volumes attached, the next daemon
 * serves every mount its attach records name (the .json files in
 * STATE_DIR/volumes, written by daemon.c) again:
 *  - lf_recovery_load(), before the daemon answers any request, reads the
 *    records and takes the dead FUSE mounts away from their paths (they
 *    answer ENOTCONN until then, so no request could even resolve them).
 *    Quick: no I/O to any target.
 *  - lf_recovery_run(), on a thread of its own, hands each recorded mount
 *    (with secrets read again from its secret file) to the caller's mount
 *    function, and removes the record of a volume left with no mount.
 *  - lf_recovery_wait() holds a request for a recorded path until that
 *    path's mount has been served again (or failed), so that a retried
 *    "mount" meets the re-served mount and an "umount" unmounts it.
 *
 * Thread-safe: the pending paths are kept under the volume table's lock
 * (voltable.h) and waited for on its condition. A NULL lf_recovery (no
 * record) is valid everywhere.
 */
#ifndef LUNFS_RECOVER_H
#define LUNFS_RECOVER_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "tools/voltable.h"

struct lf_recovery;

/* NULL when there is nothing to recover. */
struct lf_recovery *lf_recovery_load(const char *state_dir,
				     struct lf_voltable *vt);
/* mount(ctx, req) serves one recorded mount request and returns its
 * answer ("ok" true or false), taking nothing from req. */
void lf_recovery_run(struct lf_recovery *r,
		     struct json_object *(*mount)(void *ctx,
						  struct json_object *req),
		     void *ctx);
/* Waits while path's recorded mount (any, for NULL) is still to be
 * served; -ETIMEDOUT past deadline_ms (0 = none). */
int lf_recovery_wait(struct lf_recovery *r, const char *path,
		     int64_t deadline_ms);
void lf_recovery_free(struct lf_recovery *r);

/* True if some mount in /proc/self/mountinfo sits exactly at path. */
bool lf_mount_point_at(const char *path);

#endif
