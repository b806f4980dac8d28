/* daemon.h — lunfsd's state and request handling, apart from its sockets.
 *
 * The daemon owns the session registry, the open volumes (one per LUN,
 * shared by all of its mounts) and the mounts. Requests (see ctl.h) are
 * JSON objects with "op": "mount", "umount", "release", "fsck",
 * "status", "shutdown", "ping". lf_daemon_handle() may be called from
 * many threads at once: requests for different paths and volumes run in
 * parallel, two for one path or one volume one after the other, and no
 * daemon-wide lock is held across slow work (voltable.h lists the locks
 * and their order; the registry keeps one per target). "status" never
 * waits for a request in progress.
 *
 * Requests are idempotent: a mount already done as asked, an unmount of
 * what is not mounted, a release of a container with nothing left are
 * success. "timeout_ms" (mount, umount, release) is the request's
 * deadline: a mount not done by then is answered "timed out" at once and
 * leaves nothing behind (deadline.h).
 *
 * Secrets arrive in "secrets" of a mount request, are handed to the
 * registry for the login and wiped; they are never logged or stored.
 */
#ifndef LUNFS_DAEMON_H
#define LUNFS_DAEMON_H

#include <json-c/json.h>
#include <stdbool.h>
#include <sys/types.h>

struct lf_daemon;

struct lf_daemon_opts {
	const char *state_dir;
	const char *socket_path;
	bool allow_other; /* mounts with allow_other (root default) */
	/* Seconds I/O waits for a lost session to come back; 0 = 120. */
	int replacement_timeout;
	/* Metadata cache of each open filesystem volume; 0 = 64 MiB. */
	size_t cache_bytes;
	/* Journal commit period of each volume, ms; 0 = 5000. */
	unsigned commit_ms;
	/* Keep FUSE on /dev/fuse even where the kernel offers io_uring. */
	bool no_fuse_uring;
	/* Every mount of a filesystem volume its own FUSE mount with lunfs's
	 * id maps, never idmapped binds of a shared one (which also need
	 * root). */
	bool per_mount_views;
	/* Called (from any thread) when a shutdown request arrives. */
	void (*on_shutdown)(void *ctx);
	void *ctx;
};

int lf_daemon_new(const struct lf_daemon_opts *o, struct lf_daemon **out);
/* Handles one request that passed lf_request_check() (request.h): types
 * and bounds are not checked again here. Returns the answer (caller puts
 * it). An answer may carry a file descriptor under LF_ANSWER_FD (a
 * "detached" mount's tree): the caller takes the key out, sends the fd
 * with the answer (SCM_RIGHTS) and closes it. */
#define LF_ANSWER_FD "_fd"
struct json_object *lf_daemon_handle(struct lf_daemon *d,
				     struct json_object *req);
/* Unmounts everything, closes every volume, logs out, frees. */
void lf_daemon_free(struct lf_daemon *d);

#endif
