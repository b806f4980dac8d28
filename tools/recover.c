/* recover.c — see recover.h. */
#include "tools/recover.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iscsi/log.h"
#include "iscsi/spec.h"
#include "tools/ctl.h"
#include "tools/request.h"

#define MOD "daemon"

struct lf_recovery {
	struct lf_voltable *vt;
	struct json_object *records; /* each with "file" added */
	/* Recorded paths not served yet; vt->lock. */
	char (*pending)[PATH_MAX];
	size_t npending;
};

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* True if some mount in /proc/self/mountinfo sits exactly at path. */
bool lf_mount_point_at(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[8192];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char mp[PATH_MAX];
		/* fields: id parent maj:min root mountpoint ... */
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1)
			continue;
		/* mountinfo escapes space, tab, newline and backslash */
		char un[PATH_MAX], *o = un;
		for (const char *p = mp; *p && o < un + sizeof(un) - 1; p++) {
			if (p[0] == '\\' && p[1] >= '0' && p[1] <= '7' &&
			    p[2] && p[3]) {
				*o++ = (char)((p[1] - '0') * 64 +
					      (p[2] - '0') * 8 + (p[3] - '0'));
				p += 3;
			} else {
				*o++ = *p;
			}
		}
		*o = 0;
		found = strcmp(un, path) == 0;
	}
	fclose(f);
	return found;
}

/* Takes a dead daemon's FUSE mount away from path: it answers ENOTCONN
 * until then, and no request could even resolve the path. */
static void detach_dead(const char *path)
{
	if (!lf_mount_point_at(path) || !umount2(path, MNT_DETACH) ||
	    geteuid() == 0)
		return;
	pid_t pid = fork();
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", path,
		       (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

static void pending_add(struct lf_recovery *r, const char *path)
{
	void *p = realloc(r->pending, (r->npending + 1) * sizeof(*r->pending));

	if (!p)
		return; /* only a request racing the recovery would notice */
	r->pending = p;
	snprintf(r->pending[r->npending++], PATH_MAX, "%s", path);
}

/* Recovery of path is done: the requests waiting for it go on. */
static void pending_done(struct lf_recovery *r, const char *path)
{
	pthread_mutex_lock(&r->vt->lock);
	for (size_t i = 0; i < r->npending; i++) {
		if (strcmp(r->pending[i], path) == 0) {
			memmove(r->pending[i], r->pending[--r->npending],
				PATH_MAX);
			break;
		}
	}
	lf_vt_changed(r->vt);
	pthread_mutex_unlock(&r->vt->lock);
}

struct pending_probe {
	struct lf_recovery *r;
	const char *path;
};

static bool not_pending(void *ctx)
{
	struct pending_probe *pp = ctx;

	for (size_t i = 0; i < pp->r->npending; i++)
		if (!pp->path || strcmp(pp->r->pending[i], pp->path) == 0)
			return false;
	return true;
}

int lf_recovery_wait(struct lf_recovery *r, const char *path,
		     int64_t deadline_ms)
{
	struct pending_probe pp = {r, path};

	if (!r)
		return 0;
	return lf_vt_wait(r->vt, not_pending, &pp, deadline_ms);
}

struct lf_recovery *lf_recovery_load(const char *state_dir,
				     struct lf_voltable *vt)
{
	char dir[PATH_MAX + 16], file[PATH_MAX * 2];
	struct lf_recovery *r = NULL;
	struct dirent *de;
	DIR *dp;

	snprintf(dir, sizeof(dir), "%s/volumes", state_dir);
	dp = opendir(dir);
	if (!dp)
		return NULL;
	while ((de = readdir(dp))) {
		struct json_object *rec = NULL, *mounts;
		size_t n = strlen(de->d_name);
		char *text = NULL;
		int fd;

		if (n < 6 || strcmp(de->d_name + n - 5, ".json"))
			continue;
		snprintf(file, sizeof(file), "%s/%s", dir, de->d_name);
		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || lf_ctl_read_all(fd, LF_CTL_MAX, &text) ||
		    !(rec = json_tokener_parse(text)) ||
		    !json_object_object_get_ex(rec, "mounts", &mounts) ||
		    !json_object_is_type(mounts, json_type_array) ||
		    !jstr(rec, "volume")) {
			lf_err(MOD, "%s: unreadable attach record: removed",
			       file);
			unlink(file);
			json_object_put(rec);
			goto next;
		}
		if (!r && !(r = calloc(1, sizeof(*r)))) {
			json_object_put(rec);
			goto next;
		}
		r->vt = vt;
		for (size_t i = 0; i < json_object_array_length(mounts); i++) {
			const char *path = jstr(
				json_object_array_get_idx(mounts, i), "path");
			if (!path)
				continue;
			detach_dead(path);
			pending_add(r, path);
		}
		json_object_object_add(rec, "file",
				       json_object_new_string(file));
		if (!r->records)
			r->records = json_object_new_array();
		json_object_array_add(r->records, rec);
	next:
		if (fd >= 0)
			close(fd);
		free(text);
	}
	closedir(dp);
	return r;
}

/* Serves the mounts of one record again. Each mount served rewrites the
 * record; a volume left with none loses it. */
static void
recover_record(struct lf_recovery *r, struct json_object *rec,
	       struct json_object *(*mount)(void *ctx, struct json_object *req),
	       void *ctx)
{
	struct json_object *mounts;
	const char *file = jstr(rec, "file"), *key = jstr(rec, "volume");
	struct lf_vt_volume *v;
	char err[512];

	json_object_object_get_ex(rec, "mounts", &mounts);
	for (size_t i = 0; i < json_object_array_length(mounts); i++) {
		struct json_object *req = json_object_array_get_idx(mounts, i);
		struct json_object *ans, *e;
		const char *path = jstr(req, "path");
		const char *sf = jstr(req, "secret_file");

		if (!path)
			continue;
		if (sf) {
			struct lf_secrets sec;
			char *sj;
			if (lf_secrets_load_file(sf, &sec, err, sizeof(err))) {
				lf_err(MOD, "%s: cannot re-attach: %s", path,
				       err);
				pending_done(r, path);
				continue;
			}
			sj = lf_secrets_to_json(&sec);
			lf_secrets_wipe(&sec);
			if (sj) {
				json_object_object_add(req, "secrets",
						       json_tokener_parse(sj));
				explicit_bzero(sj, strlen(sj));
				free(sj);
			}
		}
		json_object_object_add(req, "op",
				       json_object_new_string("mount"));
		/* A record is input like any request: checked the same way. */
		if (lf_request_check(req, err, sizeof(err))) {
			json_object_object_del(req, "secrets");
			lf_err(MOD, "%s: bad attach record: %s (released)",
			       path, err);
			pending_done(r, path);
			continue;
		}
		ans = mount(ctx, req);
		pending_done(r, path);
		json_object_object_del(req, "secrets");
		if (json_object_object_get_ex(ans, "ok", &e) &&
		    json_object_get_boolean(e))
			lf_info(MOD, "%s: re-attached after a restart", path);
		else
			lf_err(MOD,
			       "%s: could not re-attach after a restart: "
			       "%s (released)",
			       path, jstr(ans, "error"));
		json_object_put(ans);
	}
	/* Under the volume's claim, as every record write is. */
	if (!lf_vt_volume_claim(r->vt, key, file, 0, LF_VT_ATTACHING, &v)) {
		if (!v->open)
			unlink(file);
		lf_vt_volume_done(r->vt, v);
	}
}

void lf_recovery_run(struct lf_recovery *r,
		     struct json_object *(*mount)(void *ctx,
						  struct json_object *req),
		     void *ctx)
{
	for (size_t i = 0;
	     r && r->records && i < json_object_array_length(r->records); i++)
		recover_record(r, json_object_array_get_idx(r->records, i),
			       mount, ctx);
}

void lf_recovery_free(struct lf_recovery *r)
{
	if (!r)
		return;
	json_object_put(r->records);
	free(r->pending);
	free(r);
}
