/* ctl.c — control channel plumbing shared by lunfs and lunfsd. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "tools/ctl.h"

int lf_ctl_paths(const char *state_opt, const char *socket_opt, char *state,
		 size_t statelen, char *sock, size_t socklen)
{
	const char *s = state_opt, *k = socket_opt;
	int n;

	if (!s || !*s)
		s = getenv("LUNFS_STATE_DIR");
	if (s && *s) {
		n = snprintf(state, statelen, "%s", s);
	} else if (geteuid() == 0) {
		n = snprintf(state, statelen, "/run/lunfs");
	} else if (getenv("XDG_RUNTIME_DIR") && *getenv("XDG_RUNTIME_DIR")) {
		n = snprintf(state, statelen, "%s/lunfs",
			     getenv("XDG_RUNTIME_DIR"));
	} else {
		n = snprintf(state, statelen, "/tmp/lunfs-%u",
			     (unsigned)geteuid());
	}
	if (n < 0 || (size_t)n >= statelen)
		return -ENAMETOOLONG;
	if (!k || !*k)
		k = getenv("LUNFS_SOCKET");
	if (k && *k)
		n = snprintf(sock, socklen, "%s", k);
	else
		n = snprintf(sock, socklen, "%s/lunfsd.sock", state);
	if (n < 0 || (size_t)n >= socklen ||
	    (size_t)n >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return -ENAMETOOLONG;
	return 0;
}

int lf_ctl_mkdirs(const char *path, unsigned mode)
{
	char buf[4096];
	size_t len = strlen(path);

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

int lf_ctl_connect(const char *sock, int *fd)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int s, r;

	if (strlen(sock) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, sock);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa))) {
		r = -errno;
		close(s);
		return r;
	}
	*fd = s;
	return 0;
}

int lf_ctl_write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int lf_ctl_read_all(int fd, size_t max, char **out)
{
	return lf_ctl_read_all_len(fd, max, out, NULL);
}

int lf_ctl_read_all_len(int fd, size_t max, char **out, size_t *lenp)
{
	return lf_ctl_read_all_fd(fd, max, out, lenp, NULL);
}

/* One read that also takes a file descriptor passed with SCM_RIGHTS (the
 * first one only; any other is closed). */
static ssize_t read_fd(int fd, char *buf, size_t len, int *passed)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b)};
	ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);

	if (n < 0)
		return n;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c;
	     c = CMSG_NXTHDR(&msg, c)) {
		int got;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len != CMSG_LEN(sizeof(int)))
			continue;
		memcpy(&got, CMSG_DATA(c), sizeof(int));
		if (*passed < 0)
			*passed = got;
		else
			close(got);
	}
	return n;
}

int lf_ctl_read_all_fd(int fd, size_t max, char **out, size_t *lenp,
		       int *passed)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);

	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (len + 1 >= cap) {
			char *nb;
			if (cap > max) {
				free(buf);
				return -EMSGSIZE;
			}
			nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t n =
			passed ? read_fd(fd, buf + len, cap - len - 1, passed)
			       : read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;
			free(buf);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			free(buf);
			return -EMSGSIZE;
		}
	}
	buf[len] = 0;
	*out = buf;
	if (lenp)
		*lenp = len;
	return 0;
}

int lf_ctl_call(const char *sock, struct json_object *req,
		struct json_object **resp, char *err, size_t errlen)
{
	return lf_ctl_call_within(sock, req, 0, resp, err, errlen);
}

int lf_ctl_send_fd(int fd, const char *buf, size_t len, int passfd)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	ssize_t n;

	memset(ctl.b, 0, sizeof(ctl.b));
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &passfd, sizeof(int));
	do
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return lf_ctl_write_all(fd, buf + n, len - (size_t)n);
}

int lf_ctl_call_within(const char *sock, struct json_object *req,
		       int timeout_ms, struct json_object **resp, char *err,
		       size_t errlen)
{
	return lf_ctl_call_fd(sock, req, timeout_ms, resp, NULL, err, errlen);
}

int lf_ctl_call_fd(const char *sock, struct json_object *req, int timeout_ms,
		   struct json_object **resp, int *passed, char *err,
		   size_t errlen)
{
	const char *text =
		json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	char *answer = NULL;
	int fd = -1, r;

	r = lf_ctl_connect(sock, &fd);
	if (r) {
		snprintf(err, errlen, "cannot connect to lunfsd at %s: %s",
			 sock, strerror(-r));
		return r;
	}
	if (timeout_ms > 0) {
		/* The daemon answers with one write at the end, so one
		 * read's timeout bounds the wait. */
		struct timeval tv = {.tv_sec = timeout_ms / 1000,
				     .tv_usec = (timeout_ms % 1000) * 1000};
		if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
		    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))) {
			r = -errno;
			close(fd);
			snprintf(err, errlen, "lunfsd at %s: %s", sock,
				 strerror(-r));
			return r;
		}
	}
	r = lf_ctl_write_all(fd, text, strlen(text));
	if (!r && shutdown(fd, SHUT_WR))
		r = -errno;
	if (passed)
		*passed = -1;
	if (!r)
		r = lf_ctl_read_all_fd(fd, LF_CTL_MAX, &answer, NULL, passed);
	close(fd);
	if (r == -EAGAIN || r == -EWOULDBLOCK) {
		snprintf(err, errlen,
			 "lunfsd at %s did not answer within %d ms", sock,
			 timeout_ms);
		r = -ETIMEDOUT;
		goto fail;
	}
	if (r) {
		snprintf(err, errlen, "lunfsd at %s: %s", sock, strerror(-r));
		goto fail;
	}
	*resp = json_tokener_parse(answer);
	free(answer);
	if (!*resp || !json_object_is_type(*resp, json_type_object)) {
		json_object_put(*resp);
		*resp = NULL;
		snprintf(err, errlen,
			 "lunfsd at %s sent a malformed answer "
			 "(did it crash? see its log)",
			 sock);
		r = -EPROTO;
		goto fail;
	}
	return 0;
fail:
	if (passed && *passed >= 0) {
		close(*passed);
		*passed = -1;
	}
	return r;
}
