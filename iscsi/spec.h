/* spec.h — what a volume is: parsed, validated volume specs and CHAP secrets.
 *
 * Two spellings of a spec, both validated the way Kubernetes validates an
 * ISCSIVolumeSource:
 *   - URL:  iscsi://[user@]host[:port]/IQN/LUN   (libiscsi/qemu form)
 *           file:///abs/path.img                 (local image, demos/bench)
 *     A password in the URL ("user%pass@" or "user:pass@") is refused: it
 *     would sit in argv and /proc/PID/cmdline.
 *   - JSON: the ISCSIVolumeSource field names (targetPortal, portals, iqn,
 *     lun, iscsiInterface, fsType, readOnly, chapAuthDiscovery,
 *     chapAuthSession, initiatorName, secretRef is *not* accepted: secrets
 *     come from a file) plus volumeMode ("Filesystem" | "Block").
 *     Unknown or mistyped fields are errors.
 * Rules: LUN 0–255; iqn./eui./naa. name forms (as Kubernetes checks);
 * portal "host[:port]" or "[v6]:port", default port 3260.
 *
 * CHAP secrets never come from argv. lf_secrets_* load them from a file
 * (--chap-secret-file) or the environment; they are kept apart from the
 * spec so a spec can be logged, stored and printed freely.
 *
 * Errors: functions return 0 or -errno and, on error, write one
 * human-readable line (no trailing newline, no secret) into err[errlen].
 * Thread model: pure functions over caller-owned structs, except
 * lf_spec_resolve() which calls getaddrinfo().
 */
#ifndef LUNFS_SPEC_H
#define LUNFS_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LF_MAX_PORTALS	8
#define LF_DEFAULT_PORT 3260
#define LF_NAME_MAX	224 /* iSCSI names are at most 223 bytes */
#define LF_HOST_MAX	256
#define LF_SECRET_MAX	256

enum lf_spec_kind { LF_SPEC_ISCSI, LF_SPEC_FILE };
enum lf_volume_mode { LF_MODE_FILESYSTEM, LF_MODE_BLOCK };

struct lf_portal {
	char host[LF_HOST_MAX]; /* as written: name, IPv4 or IPv6 (no []) */
	uint16_t port;
	char addr[64]; /* numeric address after lf_spec_resolve(), else "" */
};

struct lf_spec {
	enum lf_spec_kind kind;
	char path[4096]; /* LF_SPEC_FILE only */
	char iqn[LF_NAME_MAX];
	int lun;
	struct lf_portal portals[LF_MAX_PORTALS]; /* [0] = targetPortal */
	int nportals;
	char iface[64];	  /* iscsiInterface; "default" */
	char fs_type[16]; /* "ext4" (default), "ext3", "ext2" */
	bool read_only;
	bool chap_discovery;
	bool chap_session;
	char initiator_name[LF_NAME_MAX]; /* "" = the node's default */
	enum lf_volume_mode mode;
	char url_user[LF_SECRET_MAX]; /* "user@" of a URL, "" if none */
};

struct lf_chap {
	char user[LF_SECRET_MAX]; /* "" = no CHAP */
	char secret[LF_SECRET_MAX];
	char user_in[LF_SECRET_MAX]; /* mutual CHAP: the target's name */
	char secret_in[LF_SECRET_MAX];
};

struct lf_secrets {
	struct lf_chap session;	  /* node.session.auth.* */
	struct lf_chap discovery; /* discovery.sendtargets.auth.* */
};

void lf_spec_init(struct lf_spec *spec);
int lf_spec_parse_url(const char *url, struct lf_spec *spec, char *err,
		      size_t errlen);
int lf_spec_parse_json(const char *text, struct lf_spec *spec, char *err,
		       size_t errlen);
/* "iscsi://…" / "file://…" → URL; anything else is a path to a JSON file. */
int lf_spec_load(const char *arg, struct lf_spec *spec, char *err,
		 size_t errlen);
/* Validates a name form (iqn./eui./naa.): 0 or -EINVAL with message. */
int lf_spec_check_name(const char *name, const char *what, char *err,
		       size_t errlen);
/* Resolves each portal host once (numeric address into portal.addr). */
int lf_spec_resolve(struct lf_spec *spec, char *err, size_t errlen);
/* Canonical URL for messages, keys and status: never contains a secret.
 * Uses the resolved address when there is one. Returns buf. */
char *lf_spec_url(const struct lf_spec *spec, char *buf, size_t len);
/* The spec as a JSON document with the ISCSIVolumeSource names (malloc'ed,
 * no secrets), which lf_spec_parse_json() reads back identically. */
char *lf_spec_to_json(const struct lf_spec *spec);

/* Secrets. A file may be (1) a JSON object of key → value, (2) a
 * Kubernetes Secret manifest in JSON whose "data" values are base64 (and
 * "stringData" plain), (3) "key=value" lines, or (4) a directory holding
 * one file per key (a mounted Secret volume). Keys: the in-tree plugin's
 * node.session.auth.{username,password,username_in,password_in} and
 * discovery.sendtargets.auth.{…}. The file must not be readable by group
 * or others unless it is owned by root (as kubelet writes them).
 * Environment: LUNFS_CHAP_USERNAME, LUNFS_CHAP_PASSWORD,
 * LUNFS_CHAP_USERNAME_IN, LUNFS_CHAP_PASSWORD_IN and LUNFS_DISCOVERY_CHAP_*
 * counterparts. */
int lf_secrets_load_file(const char *path, struct lf_secrets *sec, char *err,
			 size_t errlen);
int lf_secrets_from_env(struct lf_secrets *sec, char *err, size_t errlen);
/* For the control socket only: a JSON object with the in-tree key names.
 * The returned string holds secrets: wipe it (explicit_bzero) and free. */
char *lf_secrets_to_json(const struct lf_secrets *sec);
int lf_secrets_parse_json(const char *text, struct lf_secrets *sec, char *err,
			  size_t errlen);
bool lf_secrets_empty(const struct lf_secrets *sec);
/* Secrets the spec would not use are a mistake, not something to ignore:
 * session CHAP keys need chapAuthSession (or a URL's "user@"), discovery
 * keys chapAuthDiscovery. -EINVAL with a message saying how to enable it. */
int lf_spec_check_secrets(const struct lf_spec *spec,
			  const struct lf_secrets *sec, char *err,
			  size_t errlen);
void lf_secrets_wipe(struct lf_secrets *sec);

#endif
