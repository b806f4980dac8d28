/* client.h — the client side of lunfsd's control channel, shared by the
 * CLI commands and the OCI hook: find the daemon, start it when none
 * answers, send one request and return the answer.
 *
 * Errors: 0 or -errno; err[] gets one line for the user (the daemon's own
 * reason when it refused the request).
 */
#ifndef LUNFS_CLIENT_H
#define LUNFS_CLIENT_H

#include <json-c/json.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

struct lf_client {
	char state[PATH_MAX];
	char sock[PATH_MAX];
};

int lf_client_init(struct lf_client *c, const char *state_opt,
		   const char *sock_opt);
/* True if a daemon answers on the socket. */
bool lf_client_daemon_running(const struct lf_client *c);
/* Starts lunfsd detached (log in STATE/lunfsd.log) and waits for it. */
int lf_client_start_daemon(const struct lf_client *c, char *err, size_t errlen);
/* Takes ownership of req. On success *ans is the ok answer. */
int lf_client_call(const struct lf_client *c, struct json_object *req,
		   bool autostart, struct json_object **ans, char *err,
		   size_t errlen);
/* The same, giving up with -ETIMEDOUT past timeout_ms (0 = never). */
int lf_client_call_within(const struct lf_client *c, struct json_object *req,
			  bool autostart, int timeout_ms,
			  struct json_object **ans, char *err, size_t errlen);
/* The same, with the file descriptor an ok answer carries in *passed
 * (-1 when none; the caller's to close). */
int lf_client_call_fd(const struct lf_client *c, struct json_object *req,
		      bool autostart, int timeout_ms, struct json_object **ans,
		      int *passed, char *err, size_t errlen);

/* A mount request for lunfsd. Secrets come from secret_file, else the
 * environment; a URL's user@ names the CHAP user. uidmap/gidmap are JSON
 * arrays of "DISK:HOST:COUNT" strings (taken over; NULL = none). */
struct lf_spec;
struct lf_mount_req {
	struct lf_spec *spec;
	const char *secret_file;
	const char *path;
	bool block, read_only;
	bool discard;  /* online discard of freed extents */
	bool takeover; /* preempt a dead holder (lunfs mount --takeover) */
	struct json_object *uidmap, *gidmap;
	long long fsgroup;     /* -1 = none */
	const char *container; /* OCI container id, or NULL */
	long long timeout_ms;  /* the request's deadline; 0 = none */
	/* A filesystem volume for the hook: lunfsd answers with the
	 * detached tree (lf_client_call_fd) instead of mounting at path
	 * where it can (answer "attach": "direct"). */
	bool detached;
};
int lf_client_mount_request(struct lf_mount_req *m, struct json_object **req,
			    char *err, size_t errlen);

#endif
