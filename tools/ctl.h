/* ctl.h — the control channel between lunfs (CLI, hook) and lunfsd.
 *
 * Transport: a unix stream socket. One request per connection: the client
 * writes one JSON object and shuts down its writing side; the daemon
 * answers with one JSON object and closes. Requests and answers are at
 * most LF_CTL_MAX bytes. Answers carry "ok": true, or "ok": false with
 * "errno" (positive) and "error" (one line for the user).
 *
 * Paths: the state directory is --state-dir, else $LUNFS_STATE_DIR, else
 * /run/lunfs for root and $XDG_RUNTIME_DIR/lunfs (or /tmp/lunfs-UID)
 * otherwise. The socket is --socket, else $LUNFS_SOCKET, else
 * STATE_DIR/lunfsd.sock.
 */
#ifndef LUNFS_CTL_H
#define LUNFS_CTL_H

#include <json-c/json.h>
#include <stddef.h>

#define LF_CTL_MAX (1u << 20)

int lf_ctl_paths(const char *state_opt, const char *socket_opt, char *state,
		 size_t statelen, char *sock, size_t socklen);
/* mkdir -p with the given mode for the last component. */
int lf_ctl_mkdirs(const char *path, unsigned mode);

/* 0 = connected fd in *fd; -errno otherwise. */
int lf_ctl_connect(const char *sock, int *fd);
int lf_ctl_write_all(int fd, const char *buf, size_t len);
/* Reads until EOF; -EMSGSIZE past max. Returns a malloc'ed string, and
 * in *len (if not NULL) its length, which is how a caller notices a NUL
 * inside. */
int lf_ctl_read_all(int fd, size_t max, char **out);
int lf_ctl_read_all_len(int fd, size_t max, char **out, size_t *len);
/* The same, taking the first file descriptor sent along (SCM_RIGHTS)
 * into *passed (left as it is when none came; O_CLOEXEC). */
int lf_ctl_read_all_fd(int fd, size_t max, char **out, size_t *len,
		       int *passed);
/* Writes buf with passfd attached to its first byte (SCM_RIGHTS). */
int lf_ctl_send_fd(int fd, const char *buf, size_t len, int passfd);

/* Sends req and waits for the answer. -errno on transport failure with a
 * message; a daemon-side failure is a normal answer with ok=false. */
int lf_ctl_call(const char *sock, struct json_object *req,
		struct json_object **resp, char *err, size_t errlen);
/* The same, giving up with -ETIMEDOUT when the answer has not come
 * within timeout_ms (0 = wait for ever). */
int lf_ctl_call_within(const char *sock, struct json_object *req,
		       int timeout_ms, struct json_object **resp, char *err,
		       size_t errlen);
/* The same, also taking a file descriptor the answer carries (-1 in
 * *passed when none; the caller closes it): a detached mount tree. */
int lf_ctl_call_fd(const char *sock, struct json_object *req, int timeout_ms,
		   struct json_object **resp, int *passed, char *err,
		   size_t errlen);

#endif
