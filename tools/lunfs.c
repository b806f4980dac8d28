/* lunfs — the command line: mounts and unmounts volumes through lunfsd and
 * shows what is attached. Starts lunfsd by itself when none answers. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuse/idmap.h"
#include "iscsi/spec.h"
#include "tools/client.h"
#include "tools/ctl.h"
#include "tools/hook.h"

static void die(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

static void die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("lunfs: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static const char main_usage[] =
	"Usage: lunfs [--socket PATH] [--state-dir DIR] COMMAND [ARGS]\n"
	"Present iSCSI LUNs as filesystems or block files, in userspace.\n\n"
	"Commands:\n"
	"  mount SPEC PATH   attach a volume and serve it at PATH\n"
	"  umount PATH       stop serving PATH; the target's last volume "
	"logs out\n"
	"  status [--json]   sessions, volumes and mounts\n"
	"  shutdown          unmount everything and stop lunfsd\n"
	"  fsck [--repair | --enable-mmp] SPEC  check (or repair) an unmounted "
	"volume\n"
	"  resize PATH|SPEC  grow a volume to its LUN's new size\n"
	"  hook [STAGE]      OCI runtime hook (createRuntime, poststop)\n"
	"  help [COMMAND]    help on a command\n\n"
	"SPEC is iscsi://[user@]host[:port]/IQN/LUN, file:///path/to/image, "
	"or a JSON\nfile with Kubernetes ISCSIVolumeSource fields "
	"(targetPortal, portals, iqn, lun,\nfsType, readOnly, "
	"chapAuthSession, chapAuthDiscovery, initiatorName) and\n"
	"volumeMode (Filesystem or Block).\n\n"
	"Global options (also env LUNFS_SOCKET, LUNFS_STATE_DIR):\n"
	"  --socket PATH     lunfsd's control socket (default "
	"STATE_DIR/lunfsd.sock)\n"
	"  --state-dir DIR   state directory (default /run/lunfs as root, "
	"else\n"
	"                    $XDG_RUNTIME_DIR/lunfs)\n"
	"lunfsd is started on demand; its log is STATE_DIR/lunfsd.log.\n";

static const char mount_usage[] =
	"Usage: lunfs mount [OPTIONS] SPEC PATH\n"
	"Attach the volume SPEC and serve it at PATH.\n\n"
	"A filesystem volume (the default) is served on the directory PATH: "
	"an empty\nLUN is formatted ext4 first; a LUN holding anything else "
	"is refused and left\nuntouched. A block volume (--block, or "
	"volumeMode Block) is served as one\nregular file at PATH (create it "
	"first: touch PATH) whose bytes are the LUN's.\n\n"
	"Options:\n"
	"  --block                 serve the raw LUN as one file\n"
	"  --read-only             refuse writes (EROFS); never formats\n"
	"  --discard               unmap freed extents once their freeing is "
	"durable\n"
	"                          (ext4's -o discard; fstrim works "
	"without it)\n"
	"  --uidmap DISK:HOST:N    present DISK uids DISK..DISK+N-1 as HOST.. "
	"(repeatable)\n"
	"  --gidmap DISK:HOST:N    the same for gids\n"
	"  --fsgroup GID           present every file with group GID, "
	"group-writable\n"
	"  --chap-secret-file F    CHAP secrets, as Kubernetes writes them:\n"
	"                          node.session.auth.username, "
	"node.session.auth.password\n"
	"                          (+ _in for mutual CHAP, "
	"discovery.sendtargets.auth.*)\n"
	"                          as key=value lines, JSON, or a Secret "
	"directory\n"
	"  --initiator-name IQN    log in as IQN (its own session)\n"
	"  --timeout SECONDS       give up after SECONDS (a login that "
	"cannot finish\n"
	"                          in time fails; nothing is left behind)\n"
	"  --takeover              take a read-write volume over from a node "
	"that died\n"
	"                          holding it: refused while its ext4 MMP "
	"block still\n"
	"                          changes (that node is alive); then "
	"preempts its\n"
	"                          persistent reservation\n"
	"  -h, --help              this help\n\n"
	"Secrets are never taken from the command line; without "
	"--chap-secret-file\nthey come from LUNFS_CHAP_USERNAME, "
	"LUNFS_CHAP_PASSWORD (and _IN variants,\nLUNFS_DISCOVERY_CHAP_*).\n";

static const char umount_usage[] =
	"Usage: lunfs umount [--timeout SECONDS] PATH\n"
	"Stop serving PATH. When it was the volume's last mount the volume "
	"is flushed\nand closed; when it was the target's last volume the "
	"session logs out.\nA PATH that is not mounted is not an error. "
	"--timeout: give up waiting for\nanother request on PATH (a mount "
	"or unmount in progress) after SECONDS.\n";

static const char status_usage[] =
	"Usage: lunfs status [--json]\n"
	"Show the daemon's sessions (target, portal, initiator, reference "
	"count),\nvolumes and mounts, and what each is doing when it is not "
	"serving yet or\nany more (attaching, recovering, detaching, "
	"checking: since when). Secrets\nare never shown. --json adds, "
	"for each mount,\nthe FUSE requests its kernel has sent since it was "
	"mounted, by kind\n(\"fuse_requests\"), and how they reach lunfsd "
	"(\"fuse_transport\": \"io_uring\"\nor \"/dev/fuse\"). Each mount "
	"shows how it is served: \"view\": \"idmapped\"\n(an idmapped bind "
	"of the volume's one FUSE mount, sharing its counts) or\n"
	"\"fuse-map\" (a FUSE mount of its own, ids mapped by lunfs), and "
	"where it\nis attached: \"attach\": \"path\" (mounted at its path) or "
	"\"direct\" (the OCI\nhook moved it into the container's own mount "
	"namespace; nothing is mounted\nat the path on the host).\n";

static const char shutdown_usage[] =
	"Usage: lunfs shutdown\n"
	"Unmount every volume, log out of every target and stop lunfsd.\n";

/* Sends req (taking it); exits with the reason on any failure. */
static struct json_object *call(const struct lf_client *c,
				struct json_object *req, bool autostart)
{
	struct json_object *ans;
	char err[1024];

	if (lf_client_call(c, req, autostart, &ans, err, sizeof(err)))
		die(1, "%s", err);
	return ans;
}

static bool want_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "-h") == 0 ||
		    strcmp(argv[i], "--help") == 0)
			return true;
	}
	return false;
}

static void usage_error(const char *usage, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

static void usage_error(const char *usage, const char *fmt, ...)
{
	va_list ap;

	fputs("lunfs: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n\n%s", usage);
	exit(2);
}

/* --timeout SECONDS (fractions allowed) as milliseconds. */
static int parse_timeout(const char *s, long long *ms)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0.001 && v <= 86400))
		return -EINVAL;
	*ms = (long long)(v * 1000 + 0.5);
	return 0;
}

static int cmd_mount(const struct lf_client *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"block", no_argument, NULL, 'b'},
		{"read-only", no_argument, NULL, 'r'},
		{"discard", no_argument, NULL, 'D'},
		{"uidmap", required_argument, NULL, 'u'},
		{"gidmap", required_argument, NULL, 'g'},
		{"fsgroup", required_argument, NULL, 'G'},
		{"chap-secret-file", required_argument, NULL, 'c'},
		{"initiator-name", required_argument, NULL, 'i'},
		{"timeout", required_argument, NULL, 't'},
		{"takeover", no_argument, NULL, 'T'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct json_object *req = NULL;
	struct json_object *uidmap = json_object_new_array();
	struct json_object *gidmap = json_object_new_array();
	const char *secret_file = NULL, *initiator = NULL;
	bool block = false, ro = false, discard = false, takeover = false;
	long long fsgroup = -1, timeout_ms = 0;
	struct lf_spec spec;
	struct lf_idmap scratch;
	char err[1024], path[PATH_MAX];
	int opt, r;

	if (want_help(argc, argv)) {
		fputs(mount_usage, stdout);
		return 0;
	}
	lf_idmap_init(&scratch);
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'b':
			block = true;
			break;
		case 'r':
			ro = true;
			break;
		case 'D':
			discard = true;
			break;
		case 'u':
		case 'g': {
			struct lf_idmap one;
			lf_idmap_init(&one);
			if (lf_idmap_add(&one, optarg, err, sizeof(err)))
				usage_error(mount_usage, "--%s: %s",
					    opt == 'u' ? "uidmap" : "gidmap",
					    err);
			json_object_array_add(opt == 'u' ? uidmap : gidmap,
					      json_object_new_string(optarg));
			break;
		}
		case 'G': {
			char *end;
			errno = 0;
			fsgroup = strtoll(optarg, &end, 10);
			if (errno || *end || end == optarg || fsgroup < 0 ||
			    fsgroup > 4294967294LL)
				usage_error(mount_usage,
					    "--fsgroup: '%s' is not a group id",
					    optarg);
			break;
		}
		case 'c':
			secret_file = optarg;
			break;
		case 'i':
			initiator = optarg;
			break;
		case 't':
			if (parse_timeout(optarg, &timeout_ms))
				usage_error(mount_usage,
					    "--timeout: '%s' is not a number "
					    "of seconds (0.001 to 86400)",
					    optarg);
			break;
		case 'T':
			takeover = true;
			break;
		default:
			fprintf(stderr, "\n%s", mount_usage);
			exit(2);
		}
	}
	if (argc - optind != 2)
		usage_error(mount_usage, "mount needs SPEC and PATH");

	r = lf_spec_load(argv[optind], &spec, err, sizeof(err));
	if (r)
		die(1, "%s", err);
	if (initiator) {
		r = lf_spec_check_name(initiator, "--initiator-name", err,
				       sizeof(err));
		if (r)
			die(1, "%s", err);
		snprintf(spec.initiator_name, sizeof(spec.initiator_name), "%s",
			 initiator);
	}
	if (!realpath(argv[optind + 1], path)) {
		char cwd[PATH_MAX];
		const char *p = argv[optind + 1];

		/* A mount whose daemon died: the daemon started for this
		 * request takes the dead mount away and resolves it. */
		if (errno != ENOTCONN)
			die(1, "%s: %s", p, strerror(errno));
		if (p[0] == '/' || !getcwd(cwd, sizeof(cwd)))
			snprintf(path, sizeof(path), "%s", p);
		else
			snprintf(path, sizeof(path), "%s/%s", cwd, p);
	}

	struct lf_mount_req mr = {
		.spec = &spec,
		.secret_file = secret_file,
		.path = path,
		.block = block,
		.read_only = ro,
		.discard = discard,
		.takeover = takeover,
		.uidmap = uidmap,
		.gidmap = gidmap,
		.fsgroup = fsgroup,
		.timeout_ms = timeout_ms,
	};
	if (lf_client_mount_request(&mr, &req, err, sizeof(err)))
		die(1, "%s", err);
	struct json_object *ans = call(c, req, true), *w;
	if (json_object_object_get_ex(ans, "warning", &w))
		fprintf(stderr, "lunfs: warning: %s\n",
			json_object_get_string(w));
	json_object_put(ans);
	return 0;
}

static bool has_attach_records(const struct lf_client *c)
{
	char dir[PATH_MAX + 16];
	struct dirent *de;
	bool found = false;
	DIR *dp;

	snprintf(dir, sizeof(dir), "%s/volumes", c->state);
	dp = opendir(dir);
	if (!dp)
		return false;
	while (!found && (de = readdir(dp)))
		found = strstr(de->d_name, ".json") != NULL;
	closedir(dp);
	return found;
}

static int cmd_umount(const struct lf_client *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"timeout", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct json_object *req;
	long long timeout_ms = 0;
	const char *arg;
	int opt;

	if (want_help(argc, argv)) {
		fputs(umount_usage, stdout);
		return 0;
	}
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		if (opt != 't') {
			fprintf(stderr, "\n%s", umount_usage);
			exit(2);
		}
		if (parse_timeout(optarg, &timeout_ms))
			usage_error(umount_usage,
				    "--timeout: '%s' is not a number of "
				    "seconds (0.001 to 86400)",
				    optarg);
	}
	if (argc - optind != 1)
		usage_error(umount_usage, "umount needs PATH");
	arg = argv[optind];
	/* The daemon wants an absolute path. A dead mount point may not
	 * resolve: then make it absolute by hand. */
	char path[PATH_MAX], cwd[PATH_MAX];
	if (!realpath(arg, path)) {
		if (arg[0] == '/' || !getcwd(cwd, sizeof(cwd)))
			snprintf(path, sizeof(path), "%s", arg);
		else
			snprintf(path, sizeof(path), "%s/%s", cwd, arg);
	}
	/* Nothing runs and nothing is recorded: nothing is mounted, which is
	 * what the caller wants. Records of a dead daemon: start one, it
	 * serves them again, then unmount. */
	if (!lf_client_daemon_running(c) && !has_attach_records(c))
		return 0;
	req = json_object_new_object();
	json_object_object_add(req, "op", json_object_new_string("umount"));
	json_object_object_add(req, "path", json_object_new_string(path));
	if (timeout_ms)
		json_object_object_add(req, "timeout_ms",
				       json_object_new_int64(timeout_ms));
	json_object_put(call(c, req, true));
	return 0;
}

static const char *jget(struct json_object *o, const char *k)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, k, &v))
		return "";
	return json_object_get_string(v);
}

/* Ends a status line: what a volume or mount is doing, if not serving. */
static void print_state(struct json_object *o)
{
	const char *st = jget(o, "state");

	if (*st && strcmp(st, "attached"))
		printf("  %s since %s (%.1f s)", st, jget(o, "since"),
		       atof(jget(o, "elapsed_ms")) / 1000.0);
	putchar('\n');
}

static int cmd_status(const struct lf_client *c, int argc, char **argv)
{
	struct json_object *req, *ans, *arr;
	bool as_json = false;
	int fd;

	if (want_help(argc, argv)) {
		fputs(status_usage, stdout);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			as_json = true;
		else
			usage_error(status_usage, "unknown argument '%s'",
				    argv[i]);
	}
	if (lf_ctl_connect(c->sock, &fd) && has_attach_records(c)) {
		/* A daemon died with volumes attached: starting one serves
		 * them again (or releases them), and then status is true. */
		char err[1024];
		if (lf_client_start_daemon(c, err, sizeof(err)))
			die(1, "%s", err);
	}
	if (lf_ctl_connect(c->sock, &fd)) {
		/* No daemon: nothing is attached. Say so without starting one.
		 */
		if (as_json)
			puts("{\"sessions\":[],\"volumes\":[],\"mounts\":[],"
			     "\"daemon\":false}");
		else
			printf("lunfsd is not running (%s): nothing attached\n",
			       c->sock);
		return 0;
	}
	close(fd);
	req = json_object_new_object();
	json_object_object_add(req, "op", json_object_new_string("status"));
	ans = call(c, req, false);
	json_object_object_del(ans, "ok");
	if (as_json) {
		puts(json_object_to_json_string_ext(ans,
						    JSON_C_TO_STRING_PRETTY));
		json_object_put(ans);
		return 0;
	}
	printf("lunfsd pid %s, initiator %s\n", jget(ans, "pid"),
	       jget(ans, "initiator"));
	json_object_object_get_ex(ans, "sessions", &arr);
	printf("\nSESSIONS (%zu)\n", json_object_array_length(arr));
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *s = json_object_array_get_idx(arr, i);
		printf("  %s  portal %s  initiator %s  refs %s%s\n",
		       jget(s, "target"), jget(s, "portal"),
		       jget(s, "initiator"), jget(s, "refs"),
		       strcmp(jget(s, "connected"), "true") ? "  (reconnecting)"
							    : "");
	}
	json_object_object_get_ex(ans, "volumes", &arr);
	printf("\nVOLUMES (%zu)\n", json_object_array_length(arr));
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *v = json_object_array_get_idx(arr, i);
		if (*jget(v, "mode"))
			printf("  %s  %s%s%s  LUN %s bytes, filesystem %s "
			       "bytes  mounts %s%s%s",
			       jget(v, "spec"), jget(v, "mode"),
			       strcmp(jget(v, "read_only"), "true") ? ""
								    : " ro",
			       strcmp(jget(v, "discard"), "true") ? ""
								  : " discard",
			       jget(v, "lun_bytes"), jget(v, "fs_bytes"),
			       jget(v, "mounts"),
			       *jget(v, "fencing") ? "  fencing " : "",
			       jget(v, "fencing"));
		else
			printf("  %s", jget(v, "spec"));
		print_state(v);
		if (*jget(v, "fenced"))
			printf("    FENCED (read-only, nothing more written): "
			       "fenced by %s\n",
			       jget(v, "fenced"));
	}
	json_object_object_get_ex(ans, "mounts", &arr);
	printf("\nMOUNTS (%zu)\n", json_object_array_length(arr));
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *m = json_object_array_get_idx(arr, i);
		printf("  %s  %s  %s%s%s%s%s%s%s%s%s%s", jget(m, "path"),
		       jget(m, "spec"), jget(m, "mode"),
		       strcmp(jget(m, "read_only"), "true") ? "" : " ro",
		       *jget(m, "uidmap") ? " uidmap=" : "", jget(m, "uidmap"),
		       *jget(m, "gidmap") ? " gidmap=" : "", jget(m, "gidmap"),
		       *jget(m, "view") ? " view=" : "", jget(m, "view"),
		       *jget(m, "attach") ? " attach=" : "", jget(m, "attach"));
		print_state(m);
	}
	json_object_put(ans);
	return 0;
}

/* The daemon's pid from STATE/lunfsd.pid, or 0. */
static pid_t daemon_pid(const struct lf_client *c)
{
	char path[PATH_MAX + 16];
	FILE *f;
	int pid = 0;

	snprintf(path, sizeof(path), "%s/lunfsd.pid", c->state);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fscanf(f, "%d", &pid) != 1)
		pid = 0;
	fclose(f);
	return pid;
}

/* pid is alive and still a lunfsd (not a reused pid, not a zombie that
 * its parent, say a test harness, has yet to reap). */
static bool is_lunfsd(pid_t pid)
{
	char path[64], stat[128] = "", *p;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (!fgets(stat, sizeof(stat), f))
		stat[0] = 0;
	fclose(f);
	/* "PID (COMM) STATE ..." */
	p = strrchr(stat, ')');
	return strstr(stat, "(lunfsd)") && p && p[1] == ' ' && p[2] != 'Z' &&
	       p[2] != 'X';
}

static int cmd_shutdown(const struct lf_client *c, int argc, char **argv)
{
	struct json_object *req;
	pid_t pid;
	int fd;

	if (want_help(argc, argv)) {
		fputs(shutdown_usage, stdout);
		return 0;
	}
	if (argc != 1)
		usage_error(shutdown_usage, "shutdown takes no arguments");
	if (lf_ctl_connect(c->sock, &fd))
		return 0; /* nothing running: already the wanted state */
	close(fd);
	pid = daemon_pid(c);
	req = json_object_new_object();
	json_object_object_add(req, "op", json_object_new_string("shutdown"));
	json_object_put(call(c, req, false));
	/* Return once the daemon has let go of everything and exited: a
	 * daemon started right after must not meet the old one's exit (it
	 * removes the socket path on its way out). */
	for (int i = 0; i < 600; i++) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		bool listening = !lf_ctl_connect(c->sock, &fd);

		if (listening)
			close(fd);
		else if (pid <= 0 || !is_lunfsd(pid))
			return 0;
		nanosleep(&ts, NULL);
	}
	die(1, "lunfsd did not stop within 30 s");
}

static const char hook_usage[] =
	"Usage: lunfs hook [createRuntime|prestart|poststop]\n"
	"OCI runtime hook. Reads the container state on stdin and mounts "
	"(createRuntime,\nprestart) or releases (poststop) the volumes that "
	"the annotation\n" LF_HOOK_ANNOTATION " names; without a stage the "
	"state's status decides (creating:\nmount, stopped: release). See "
	"the README for the annotation's format.\n";

static int cmd_hook(const struct lf_client *c, int argc, char **argv)
{
	if (want_help(argc, argv)) {
		fputs(hook_usage, stdout);
		return 0;
	}
	if (argc > 2)
		usage_error(hook_usage, "hook takes at most one stage");
	return lf_hook_run(c, argc == 2 ? argv[1] : NULL, stdin);
}

static const char fsck_usage[] =
	"Usage: lunfs fsck [--check | --repair | --enable-mmp] "
	"[--chap-secret-file F] SPEC\n"
	"Check and recover the filesystem of a volume that is not mounted, "
	"with e2fsck\nreading the LUN through lunfs. By default it does what "
	"attaching an unclean\nvolume does: replay the journal and fix what "
	"is safe to fix (e2fsck -fp).\n  --check    write nothing, only "
	"report (e2fsck -fn)\n  --repair   fix everything e2fsck finds, "
	"answering yes (e2fsck -fy)\n  --enable-mmp  add ext4 multi-mount "
	"protection to a clean volume\n             (volumes lunfs formats "
	"have it)\nExit status is e2fsck's: 0 clean, 1 "
	"errors fixed, 4 errors left (try --repair),\n8 operational error.\n";

static int cmd_fsck(const struct lf_client *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"repair", no_argument, NULL, 'y'},
		{"check", no_argument, NULL, 'n'},
		{"enable-mmp", no_argument, NULL, 'M'},
		{"chap-secret-file", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct json_object *req = NULL, *ans, *e;
	const char *secret_file = NULL;
	const char *mode = "preen";
	struct lf_spec spec;
	char err[1024];
	int opt, rc;

	if (want_help(argc, argv)) {
		fputs(fsck_usage, stdout);
		return 0;
	}
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+hyn", longopts, NULL)) != -1) {
		if (opt == 'y')
			mode = "repair";
		else if (opt == 'n')
			mode = "check";
		else if (opt == 'M')
			mode = "enable-mmp";
		else if (opt == 'c')
			secret_file = optarg;
		else {
			fprintf(stderr, "\n%s", fsck_usage);
			exit(2);
		}
	}
	if (argc - optind != 1)
		usage_error(fsck_usage, "fsck needs SPEC");
	if (lf_spec_load(argv[optind], &spec, err, sizeof(err)))
		die(1, "%s", err);
	struct lf_mount_req mr = {
		.spec = &spec,
		.secret_file = secret_file,
		.path = "",
		.fsgroup = -1,
	};
	if (lf_client_mount_request(&mr, &req, err, sizeof(err)))
		die(1, "%s", err);
	json_object_object_add(req, "op", json_object_new_string("fsck"));
	json_object_object_add(req, "mode", json_object_new_string(mode));
	ans = call(c, req, true);
	if (!strcmp(mode, "enable-mmp")) {
		if (json_object_object_get_ex(ans, "summary", &e))
			printf("%s\n", json_object_get_string(e));
		json_object_put(ans);
		return 0;
	}
	rc = json_object_object_get_ex(ans, "exit", &e) ? json_object_get_int(e)
							: 8;
	if (json_object_object_get_ex(ans, "summary", &e))
		printf("%s\n", json_object_get_string(e));
	printf("e2fsck exit status %d (%s); full output in %s/lunfsd.log\n", rc,
	       rc == 0	 ? "clean"
	       : rc == 1 ? "errors fixed"
	       : rc < 4	 ? "fixed, see log"
			 : "errors left",
	       c->state);
	json_object_put(ans);
	return rc;
}

static const char resize_usage[] =
	"Usage: lunfs resize [--size SIZE] [--chap-secret-file F] PATH|SPEC\n"
	"Grow a volume after its LUN grew: READ CAPACITY again, then grow the "
	"ext4\nfilesystem to the LUN's size (or to SIZE: bytes, or with K, M, "
	"G, T).\nPATH is a mount: the volume grows online and every mount of "
	"it sees the new\nsize at once (requests wait meanwhile). SPEC is a "
	"volume that is not mounted:\nit grows offline. A block volume's "
	"file grows with its LUN. Shrinking is\nrefused. Growth is done by "
	"resize2fs on a private view of the LUN.\n";

static int parse_size(const char *s, long long *out)
{
	char *end;
	double mult = 1;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || v <= 0)
		return -1;
	switch (*end) {
	case 0:
		break;
	case 'k':
	case 'K':
		mult = 1024.0;
		break;
	case 'm':
	case 'M':
		mult = 1024.0 * 1024;
		break;
	case 'g':
	case 'G':
		mult = 1024.0 * 1024 * 1024;
		break;
	case 't':
	case 'T':
		mult = 1024.0 * 1024 * 1024 * 1024;
		break;
	default:
		return -1;
	}
	if (*end && end[1] && strcmp(end + 1, "iB") && strcmp(end + 1, "B"))
		return -1;
	if ((double)v * mult > 9.0e18)
		return -1;
	*out = (long long)((double)v * mult);
	return 0;
}

static int cmd_resize(const struct lf_client *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"size", required_argument, NULL, 's'},
		{"chap-secret-file", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct json_object *req = NULL, *ans, *e;
	const char *secret_file = NULL, *arg;
	long long size = 0;
	char err[1024], path[PATH_MAX] = "";
	struct stat st, pst;
	bool is_spec;
	int opt;

	if (want_help(argc, argv)) {
		fputs(resize_usage, stdout);
		return 0;
	}
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		if (opt == 's') {
			if (parse_size(optarg, &size))
				usage_error(resize_usage,
					    "--size: '%s' is not a size",
					    optarg);
		} else if (opt == 'c') {
			secret_file = optarg;
		} else {
			fprintf(stderr, "\n%s", resize_usage);
			exit(2);
		}
	}
	if (argc - optind != 1)
		usage_error(resize_usage, "resize needs PATH or SPEC");
	arg = argv[optind];
	/* A URL is a spec; a directory is a mount's path; a regular file
	 * is a block mount when it sits on another device than its
	 * directory, else a JSON spec. */
	is_spec = strncmp(arg, "iscsi://", 8) == 0 ||
		  strncmp(arg, "file://", 7) == 0;
	if (!is_spec) {
		char dir[PATH_MAX];

		if (!realpath(arg, path) || stat(path, &st))
			die(1, "%s: %s", arg, strerror(errno));
		snprintf(dir, sizeof(dir), "%s", path);
		*(strrchr(dir, '/') == dir ? dir + 1 : strrchr(dir, '/')) = 0;
		is_spec = S_ISREG(st.st_mode) && stat(dir, &pst) == 0 &&
			  pst.st_dev == st.st_dev;
	}
	if (is_spec) {
		struct lf_spec spec;

		if (lf_spec_load(arg, &spec, err, sizeof(err)))
			die(1, "%s", err);
		struct lf_mount_req mr = {
			.spec = &spec,
			.secret_file = secret_file,
			.path = "",
			.fsgroup = -1,
		};
		if (lf_client_mount_request(&mr, &req, err, sizeof(err)))
			die(1, "%s", err);
	} else {
		req = json_object_new_object();
		json_object_object_add(req, "path",
				       json_object_new_string(path));
	}
	json_object_object_add(req, "op", json_object_new_string("resize"));
	if (size)
		json_object_object_add(req, "size",
				       json_object_new_int64(size));
	ans = call(c, req, true);
	long long lun = 0, fsb = 0;
	if (json_object_object_get_ex(ans, "lun_bytes", &e))
		lun = json_object_get_int64(e);
	if (json_object_object_get_ex(ans, "fs_bytes", &e))
		fsb = json_object_get_int64(e);
	printf("%s: LUN %lld bytes, filesystem %lld bytes\n", arg, lun, fsb);
	json_object_put(ans);
	return 0;
}

struct command {
	const char *name;
	int (*fn)(const struct lf_client *c, int argc, char **argv);
	const char *usage;
};

static const struct command commands[] = {
	{"mount", cmd_mount, mount_usage},
	{"umount", cmd_umount, umount_usage},
	{"unmount", cmd_umount, umount_usage},
	{"status", cmd_status, status_usage},
	{"shutdown", cmd_shutdown, shutdown_usage},
	{"hook", cmd_hook, hook_usage},
	{"fsck", cmd_fsck, fsck_usage},
	{"resize", cmd_resize, resize_usage},
};

int main(int argc, char **argv)
{
	const char *state_opt = NULL, *sock_opt = NULL;
	struct lf_client c;
	int i;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(main_usage, stdout);
			return 0;
		} else if (strcmp(a, "--version") == 0) {
			puts("lunfs 0.1.0");
			return 0;
		} else if (strcmp(a, "--socket") == 0 && i + 1 < argc) {
			sock_opt = argv[++i];
		} else if (strncmp(a, "--socket=", 9) == 0) {
			sock_opt = a + 9;
		} else if (strcmp(a, "--state-dir") == 0 && i + 1 < argc) {
			state_opt = argv[++i];
		} else if (strncmp(a, "--state-dir=", 12) == 0) {
			state_opt = a + 12;
		} else {
			usage_error(main_usage, "unknown option '%s'", a);
		}
	}
	if (i >= argc)
		usage_error(main_usage, "no command given");
	if (lf_client_init(&c, state_opt, sock_opt))
		die(1, "state directory or socket path too long");
	if (strcmp(argv[i], "help") == 0) {
		for (size_t k = 0;
		     i + 1 < argc && k < sizeof(commands) / sizeof(commands[0]);
		     k++)
			if (strcmp(argv[i + 1], commands[k].name) == 0) {
				fputs(commands[k].usage, stdout);
				return 0;
			}
		fputs(main_usage, stdout);
		return 0;
	}
	for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
		if (strcmp(argv[i], commands[k].name) == 0)
			return commands[k].fn(&c, argc - i, argv + i);
	usage_error(main_usage, "unknown command '%s'", argv[i]);
}
