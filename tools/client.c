/* client.c — talking to lunfsd, starting it on demand. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#include "iscsi/spec.h"
#include "tools/client.h"
#include "tools/ctl.h"

int lf_client_init(struct lf_client *c, const char *state_opt,
		   const char *sock_opt)
{
	return lf_ctl_paths(state_opt, sock_opt, c->state, sizeof(c->state),
			    c->sock, sizeof(c->sock));
}

bool lf_client_daemon_running(const struct lf_client *c)
{
	int fd;

	if (lf_ctl_connect(c->sock, &fd))
		return false;
	close(fd);
	return true;
}

#ifndef LF_SBIN_FROM_BIN
#define LF_SBIN_FROM_BIN "../sbin"
#endif

/* lunfsd next to us (the build tree), else in the sbin of our install
 * prefix (lunfs in PREFIX/bin, lunfsd in PREFIX/sbin, which a user's PATH
 * may lack), else from PATH. */
static void find_daemon(char *buf, size_t len)
{
	const char *env = getenv("LUNFS_DAEMON");
	char self[PATH_MAX];
	const char *dir;
	ssize_t n;

	if (env && *env) {
		snprintf(buf, len, "%s", env);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		dir = dirname(self);
		snprintf(buf, len, "%s/lunfsd", dir);
		if (access(buf, X_OK) == 0)
			return;
		snprintf(buf, len, "%s/" LF_SBIN_FROM_BIN "/lunfsd", dir);
		if (access(buf, X_OK) == 0)
			return;
	}
	snprintf(buf, len, "lunfsd");
}

static void log_tail(const char *log, char *buf, size_t len)
{
	char line[1024];
	FILE *f = fopen(log, "re");

	*buf = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		snprintf(buf, len, "%s", line);
	}
	fclose(f);
}

int lf_client_start_daemon(const struct lf_client *c, char *err, size_t errlen)
{
	char daemon[PATH_MAX], log[PATH_MAX + 16], tail[512];
	pid_t pid;
	int r, status;

	r = lf_ctl_mkdirs(c->state, 0700);
	if (r) {
		snprintf(err, errlen,
			 "%s: cannot create the state directory: %s", c->state,
			 strerror(-r));
		return r;
	}
	find_daemon(daemon, sizeof(daemon));
	snprintf(log, sizeof(log), "%s/lunfsd.log", c->state);
	pid = fork();
	if (pid < 0) {
		r = -errno;
		snprintf(err, errlen, "fork: %s", strerror(errno));
		return r;
	}
	if (pid == 0) {
		/* Double fork: the daemon must not be our child (nor the
		 * runtime's, when we run as a hook) nor in our session. */
		int fd;
		setsid();
		if (fork() != 0)
			_exit(0);
		fd = open("/dev/null", O_RDWR);
		dup2(fd, 0);
		fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		/* Nothing else inherited: a runtime that starts us as a
		 * hook (crun) waits for EOF on pipes it handed down. */
		close_range(3, ~0U, 0);
		/* Secrets handed to this command in the environment must not
		 * live on in the daemon's /proc/PID/environ. */
		for (char **e = environ; *e;) {
			if (strncmp(*e, "LUNFS_CHAP_", 11) == 0 ||
			    strncmp(*e, "LUNFS_DISCOVERY_CHAP_", 21) == 0) {
				char name[64];
				snprintf(name, sizeof(name), "%.*s",
					 (int)strcspn(*e, "="), *e);
				unsetenv(name);
				continue; /* environ shifted down */
			}
			e++;
		}
		execl(daemon, "lunfsd", "--state-dir", c->state, "--socket",
		      c->sock, (char *)NULL);
		execlp("lunfsd", "lunfsd", "--state-dir", c->state, "--socket",
		       c->sock, (char *)NULL);
		fprintf(stderr, "lunfs: cannot run %s: %s\n", daemon,
			strerror(errno));
		_exit(127);
	}
	waitpid(pid, &status, 0);
	for (int i = 0; i < 200; i++) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		if (lf_client_daemon_running(c))
			return 0;
		nanosleep(&ts, NULL);
	}
	log_tail(log, tail, sizeof(tail));
	snprintf(err, errlen, "lunfsd did not start (%s; see %s)",
		 *tail ? tail : "no output", log);
	return -ETIMEDOUT;
}

int lf_client_call(const struct lf_client *c, struct json_object *req,
		   bool autostart, struct json_object **ans, char *err,
		   size_t errlen)
{
	return lf_client_call_within(c, req, autostart, 0, ans, err, errlen);
}

int lf_client_call_within(const struct lf_client *c, struct json_object *req,
			  bool autostart, int timeout_ms,
			  struct json_object **ans, char *err, size_t errlen)
{
	return lf_client_call_fd(c, req, autostart, timeout_ms, ans, NULL, err,
				 errlen);
}

int lf_client_call_fd(const struct lf_client *c, struct json_object *req,
		      bool autostart, int timeout_ms, struct json_object **ans,
		      int *passed, char *err, size_t errlen)
{
	struct json_object *a = NULL, *e;
	int r;

	if (passed)
		*passed = -1;
	if (autostart && !lf_client_daemon_running(c)) {
		r = lf_client_start_daemon(c, err, errlen);
		if (r) {
			json_object_put(req);
			return r;
		}
	}
	r = lf_ctl_call_fd(c->sock, req, timeout_ms, &a, passed, err, errlen);
	json_object_put(req);
	if (r)
		return r;
	if (json_object_object_get_ex(a, "ok", &e) &&
	    json_object_get_boolean(e)) {
		*ans = a;
		return 0;
	}
	r = -EIO;
	if (json_object_object_get_ex(a, "errno", &e) &&
	    json_object_get_int(e) > 0)
		r = -json_object_get_int(e);
	if (json_object_object_get_ex(a, "error", &e))
		snprintf(err, errlen, "%s", json_object_get_string(e));
	else
		snprintf(err, errlen,
			 "lunfsd refused the request without a "
			 "reason");
	json_object_put(a);
	if (passed && *passed >= 0) {
		close(*passed);
		*passed = -1;
	}
	return r;
}

int lf_client_mount_request(struct lf_mount_req *m, struct json_object **out,
			    char *err, size_t errlen)
{
	struct lf_spec *spec = m->spec;
	struct json_object *req = NULL;
	struct lf_secrets sec;
	char *sj = NULL, *secj = NULL, abs[PATH_MAX], e2[512];
	int r;

	memset(&sec, 0, sizeof(sec));
	if (m->secret_file)
		r = lf_secrets_load_file(m->secret_file, &sec, err, errlen);
	else
		r = lf_secrets_from_env(&sec, err, errlen);
	if (r)
		goto out;
	if (spec->url_user[0]) {
		/* iscsi://user@… names the CHAP user; the secret file or the
		 * environment holds the password. */
		spec->chap_session = true;
		if (!sec.session.user[0])
			snprintf(sec.session.user, sizeof(sec.session.user),
				 "%s", spec->url_user);
	}
	if (m->secret_file) {
		/* A file named on purpose for a volume without CHAP is a
		 * mistake (the target would see no CHAP and refuse). */
		r = lf_spec_check_secrets(spec, &sec, e2, sizeof(e2));
		if (r) {
			snprintf(err, errlen, "%s: %s", m->secret_file, e2);
			goto out;
		}
	} else {
		/* The environment serves every mount: keep only what this
		 * spec uses. */
		if (!spec->chap_session)
			explicit_bzero(&sec.session, sizeof(sec.session));
		if (!spec->chap_discovery)
			explicit_bzero(&sec.discovery, sizeof(sec.discovery));
	}
	r = -EINVAL;
	if (spec->chap_session && !sec.session.secret[0]) {
		snprintf(err, errlen,
			 "the spec asks for CHAP but no CHAP secret was given: "
			 "use --chap-secret-file FILE or LUNFS_CHAP_USERNAME "
			 "and LUNFS_CHAP_PASSWORD");
		goto out;
	}
	if (spec->chap_discovery && !sec.discovery.secret[0]) {
		snprintf(err, errlen,
			 "the spec asks for discovery CHAP but no "
			 "discovery.sendtargets.auth.password was given");
		goto out;
	}
	r = -ENOMEM;
	sj = lf_spec_to_json(spec);
	req = json_object_new_object();
	if (!sj || !req)
		goto out;
	json_object_object_add(req, "op", json_object_new_string("mount"));
	json_object_object_add(req, "spec", json_tokener_parse(sj));
	if (!lf_secrets_empty(&sec)) {
		secj = lf_secrets_to_json(&sec);
		if (!secj)
			goto out;
		json_object_object_add(req, "secrets",
				       json_tokener_parse(secj));
	}
	/* The file's name (never its content) lets a restarted daemon log
	 * in again. */
	if (m->secret_file && realpath(m->secret_file, abs))
		json_object_object_add(req, "secret_file",
				       json_object_new_string(abs));
	json_object_object_add(req, "path", json_object_new_string(m->path));
	json_object_object_add(req, "block", json_object_new_boolean(m->block));
	json_object_object_add(req, "read_only",
			       json_object_new_boolean(m->read_only));
	if (m->discard)
		json_object_object_add(req, "discard",
				       json_object_new_boolean(1));
	if (m->takeover)
		json_object_object_add(req, "takeover",
				       json_object_new_boolean(1));
	if (m->uidmap)
		json_object_object_add(req, "uidmap", m->uidmap);
	if (m->gidmap)
		json_object_object_add(req, "gidmap", m->gidmap);
	m->uidmap = m->gidmap = NULL;
	if (m->fsgroup >= 0)
		json_object_object_add(req, "fsgroup",
				       json_object_new_int64(m->fsgroup));
	if (m->container)
		json_object_object_add(req, "container",
				       json_object_new_string(m->container));
	if (m->detached)
		json_object_object_add(req, "detached",
				       json_object_new_boolean(1));
	if (m->timeout_ms > 0)
		json_object_object_add(req, "timeout_ms",
				       json_object_new_int64(m->timeout_ms));
	*out = req;
	req = NULL;
	r = 0;
out:
	json_object_put(m->uidmap);
	json_object_put(m->gidmap);
	m->uidmap = m->gidmap = NULL;
	json_object_put(req);
	free(sj);
	if (secj) {
		explicit_bzero(secj, strlen(secj));
		free(secj);
	}
	lf_secrets_wipe(&sec);
	return r;
}
