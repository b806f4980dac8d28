/* lunfs — the command line: mounts and unmounts volumes through lunfsd and
 * shows what is attached. Starts lunfsd by itself when none answers. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fuse/idmap.h"
#include "iscsi/spec.h"
#include "tools/ctl.h"

struct cli {
	char state[PATH_MAX];
	char sock[PATH_MAX];
};

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
	"  -h, --help              this help\n\n"
	"Secrets are never taken from the command line; without "
	"--chap-secret-file\nthey come from LUNFS_CHAP_USERNAME, "
	"LUNFS_CHAP_PASSWORD (and _IN variants,\nLUNFS_DISCOVERY_CHAP_*).\n";

static const char umount_usage[] =
	"Usage: lunfs umount PATH\n"
	"Stop serving PATH. When it was the volume's last mount the volume "
	"is flushed\nand closed; when it was the target's last volume the "
	"session logs out.\n";

static const char status_usage[] =
	"Usage: lunfs status [--json]\n"
	"Show the daemon's sessions (target, portal, initiator, reference "
	"count),\nvolumes and mounts. Secrets are never shown.\n";

static const char shutdown_usage[] =
	"Usage: lunfs shutdown\n"
	"Unmount every volume, log out of every target and stop lunfsd.\n";

static void find_daemon(char *buf, size_t len)
{
	const char *env = getenv("LUNFS_DAEMON");
	char self[PATH_MAX];
	ssize_t n;

	if (env && *env) {
		snprintf(buf, len, "%s", env);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		snprintf(buf, len, "%s/lunfsd", dirname(self));
		if (access(buf, X_OK) == 0)
			return;
	}
	snprintf(buf, len, "lunfsd");
}

static void log_tail(const char *log)
{
	char line[1024], last[1024] = "";
	FILE *f = fopen(log, "re");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		memcpy(last, line, sizeof(last));
	fclose(f);
	if (*last)
		fprintf(stderr, "lunfs: lunfsd said: %s", last);
}

/* Starts lunfsd detached, with its output in STATE_DIR/lunfsd.log, and
 * waits until it answers. */
static void start_daemon(const struct cli *c)
{
	char daemon[PATH_MAX], log[PATH_MAX + 16];
	pid_t pid;
	int r, status;

	r = lf_ctl_mkdirs(c->state, 0700);
	if (r)
		die(1, "%s: cannot create the state directory: %s", c->state,
		    strerror(-r));
	find_daemon(daemon, sizeof(daemon));
	snprintf(log, sizeof(log), "%s/lunfsd.log", c->state);
	pid = fork();
	if (pid < 0)
		die(1, "fork: %s", strerror(errno));
	if (pid == 0) {
		/* Double fork: the daemon is nobody's child but init's. */
		int fd;
		setsid();
		if (fork() != 0)
			_exit(0);
		fd = open("/dev/null", O_RDONLY);
		dup2(fd, 0);
		fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
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
		int fd;
		struct timespec ts = {0, 50 * 1000 * 1000};
		if (lf_ctl_connect(c->sock, &fd) == 0) {
			close(fd);
			return;
		}
		nanosleep(&ts, NULL);
	}
	log_tail(log);
	die(1, "lunfsd did not start (see %s)", log);
}

/* Sends req; starts the daemon first when autostart and none answers.
 * Exits with a message on any failure; returns the ok answer. */
static struct json_object *call(const struct cli *c, struct json_object *req,
				bool autostart)
{
	struct json_object *ans = NULL, *e;
	char err[512];
	int fd, r;

	r = lf_ctl_connect(c->sock, &fd);
	if (r == 0) {
		close(fd);
	} else if (autostart && (r == -ENOENT || r == -ECONNREFUSED)) {
		start_daemon(c);
	}
	r = lf_ctl_call(c->sock, req, &ans, err, sizeof(err));
	json_object_put(req);
	if (r)
		die(1, "%s", err);
	if (json_object_object_get_ex(ans, "ok", &e) &&
	    json_object_get_boolean(e))
		return ans;
	if (json_object_object_get_ex(ans, "error", &e))
		die(1, "%s", json_object_get_string(e));
	die(1, "lunfsd refused the request without a reason");
}

static bool want_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
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

static int cmd_mount(const struct cli *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"block", no_argument, NULL, 'b'},
		{"read-only", no_argument, NULL, 'r'},
		{"uidmap", required_argument, NULL, 'u'},
		{"gidmap", required_argument, NULL, 'g'},
		{"fsgroup", required_argument, NULL, 'G'},
		{"chap-secret-file", required_argument, NULL, 'c'},
		{"initiator-name", required_argument, NULL, 'i'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct json_object *req = json_object_new_object();
	struct json_object *uidmap = json_object_new_array();
	struct json_object *gidmap = json_object_new_array();
	const char *secret_file = NULL, *initiator = NULL;
	bool block = false, ro = false;
	long long fsgroup = -1;
	struct lf_secrets sec;
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
	if (!realpath(argv[optind + 1], path))
		die(1, "%s: %s", argv[optind + 1], strerror(errno));

	memset(&sec, 0, sizeof(sec));
	if (secret_file)
		r = lf_secrets_load_file(secret_file, &sec, err, sizeof(err));
	else
		r = lf_secrets_from_env(&sec, err, sizeof(err));
	if (r)
		die(1, "%s", err);
	if (spec.url_user[0]) {
		/* iscsi://user@… names the CHAP user; the secret file or the
		 * environment holds the password. */
		spec.chap_session = true;
		if (!sec.session.user[0])
			snprintf(sec.session.user, sizeof(sec.session.user),
				 "%s", spec.url_user);
	}
	if (spec.chap_session && !sec.session.secret[0])
		die(1, "the spec asks for CHAP but no CHAP secret was given: use "
		       "--chap-secret-file FILE or LUNFS_CHAP_USERNAME and "
		       "LUNFS_CHAP_PASSWORD");
	if (spec.chap_discovery && !sec.discovery.secret[0])
		die(1, "the spec asks for discovery CHAP but no "
		       "discovery.sendtargets.auth.password was given");

	char *sj = lf_spec_to_json(&spec);
	if (!sj)
		die(1, "out of memory");
	json_object_object_add(req, "op", json_object_new_string("mount"));
	json_object_object_add(req, "spec", json_tokener_parse(sj));
	free(sj);
	if (!lf_secrets_empty(&sec)) {
		char *secj = lf_secrets_to_json(&sec);
		if (!secj)
			die(1, "out of memory");
		json_object_object_add(req, "secrets", json_tokener_parse(secj));
		explicit_bzero(secj, strlen(secj));
		free(secj);
	}
	lf_secrets_wipe(&sec);
	json_object_object_add(req, "path", json_object_new_string(path));
	json_object_object_add(req, "block", json_object_new_boolean(block));
	json_object_object_add(req, "read_only", json_object_new_boolean(ro));
	json_object_object_add(req, "uidmap", uidmap);
	json_object_object_add(req, "gidmap", gidmap);
	if (fsgroup >= 0)
		json_object_object_add(req, "fsgroup",
				       json_object_new_int64(fsgroup));
	json_object_put(call(c, req, true));
	return 0;
}

static int cmd_umount(const struct cli *c, int argc, char **argv)
{
	struct json_object *req;

	if (want_help(argc, argv)) {
		fputs(umount_usage, stdout);
		return 0;
	}
	if (argc != 2)
		usage_error(umount_usage, "umount needs PATH");
	req = json_object_new_object();
	json_object_object_add(req, "op", json_object_new_string("umount"));
	json_object_object_add(req, "path", json_object_new_string(argv[1]));
	json_object_put(call(c, req, false));
	return 0;
}

static const char *jget(struct json_object *o, const char *k)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, k, &v))
		return "";
	return json_object_get_string(v);
}

static int cmd_status(const struct cli *c, int argc, char **argv)
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
	if (lf_ctl_connect(c->sock, &fd)) {
		/* No daemon: nothing is attached. Say so without starting one. */
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
		puts(json_object_to_json_string_ext(ans, JSON_C_TO_STRING_PRETTY));
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
		printf("  %s  %s%s  %s bytes  mounts %s\n", jget(v, "spec"),
		       jget(v, "mode"),
		       strcmp(jget(v, "read_only"), "true") ? "" : " ro",
		       jget(v, "size"), jget(v, "mounts"));
	}
	json_object_object_get_ex(ans, "mounts", &arr);
	printf("\nMOUNTS (%zu)\n", json_object_array_length(arr));
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *m = json_object_array_get_idx(arr, i);
		printf("  %s  %s  %s%s%s%s%s%s\n", jget(m, "path"),
		       jget(m, "spec"), jget(m, "mode"),
		       strcmp(jget(m, "read_only"), "true") ? "" : " ro",
		       *jget(m, "uidmap") ? " uidmap=" : "", jget(m, "uidmap"),
		       *jget(m, "gidmap") ? " gidmap=" : "", jget(m, "gidmap"));
	}
	json_object_put(ans);
	return 0;
}

static int cmd_shutdown(const struct cli *c, int argc, char **argv)
{
	struct json_object *req;
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
	req = json_object_new_object();
	json_object_object_add(req, "op", json_object_new_string("shutdown"));
	json_object_put(call(c, req, false));
	/* Return once the daemon has let go of everything. */
	for (int i = 0; i < 600; i++) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		if (lf_ctl_connect(c->sock, &fd))
			return 0;
		close(fd);
		nanosleep(&ts, NULL);
	}
	die(1, "lunfsd did not stop within 30 s");
}

struct command {
	const char *name;
	int (*fn)(const struct cli *c, int argc, char **argv);
	const char *usage;
};

static const struct command commands[] = {
	{"mount", cmd_mount, mount_usage},
	{"umount", cmd_umount, umount_usage},
	{"unmount", cmd_umount, umount_usage},
	{"status", cmd_status, status_usage},
	{"shutdown", cmd_shutdown, shutdown_usage},
};

int main(int argc, char **argv)
{
	const char *state_opt = NULL, *sock_opt = NULL;
	struct cli c;
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
	if (lf_ctl_paths(state_opt, sock_opt, c.state, sizeof(c.state), c.sock,
			 sizeof(c.sock)))
		die(1, "state directory or socket path too long");
	if (strcmp(argv[i], "help") == 0) {
		for (size_t k = 0; i + 1 < argc && k < sizeof(commands) /
						       sizeof(commands[0]);
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
