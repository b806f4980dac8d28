/* session.h — one iSCSI session (I_T nexus) to one target, and its LUNs.
 *
 * A session owns one libiscsi context and exactly one I/O thread that
 * drives it with the async API (iscsi_which_events/iscsi_service, plus a
 * once-a-second tick for timeouts). Other threads never touch the context:
 * they queue a command and kick the I/O thread through an eventfd, then
 * wait (lf_bdev_* sync calls) or get a callback on the I/O thread
 * (lf_bdev_submit). Many commands are in flight at once.
 *
 * Login: SendTargets discovery first when the spec asks for it (with the
 * discovery CHAP), then a normal session login to the first portal that
 * answers, with one-way or mutual CHAP and header digest CRC32C-or-none
 * negotiated. On a dropped connection the session reconnects (to the next
 * portal in turn) and retries in-flight commands, for up to
 * replacement_timeout seconds; after that, queued and new commands fail
 * with -EIO until a reconnect succeeds.
 *
 * Errors: 0 or -errno, with one line in err[] naming the portal, IQN and
 * LUN and what to check, e.g. "iscsi://127.0.0.1:3260/iqn…: login failed:
 * Authentication failure (513): check the CHAP user and secret".
 *
 * Use through registry.h; lf_session_* is the layer below it.
 */
#ifndef LUNFS_SESSION_H
#define LUNFS_SESSION_H

#include "iscsi/bdev.h"
#include "iscsi/spec.h"

struct lf_session;

struct lf_session_params {
	char initiator[LF_NAME_MAX]; /* always set (node default filled in) */
	char iqn[LF_NAME_MAX];
	struct lf_portal portals[LF_MAX_PORTALS]; /* resolved */
	int nportals;
	bool discovery;	     /* SendTargets before login */
	struct lf_chap chap; /* session CHAP; user "" = none */
	struct lf_chap discovery_chap;
	int replacement_timeout; /* seconds; default 120 */
	/* Seconds each login or discovery PDU may wait for its answer; 0 or
	 * more than the default: 10. A request's deadline lowers it. */
	int login_timeout;
};

int lf_session_login(const struct lf_session_params *params,
		     struct lf_session **out, char *err, size_t errlen);
/* Logs out of every portal it is connected to, stops the I/O thread and
 * frees. Never blocks for long on a dead connection; safe on a session
 * whose target is gone. */
void lf_session_logout(struct lf_session *s);

/* INQUIRY (refuse anything but a direct-access disk: -ENODEV with a
 * message), READ CAPACITY(16), Block Limits VPD; returns a bdev whose
 * commands run on this session. The bdev does not own the session: the
 * caller keeps the session alive while the bdev exists (the registry does
 * this for you with lf_registry_open_lun). */
int lf_session_open_lun(struct lf_session *s, int lun, bool read_only,
			struct lf_bdev **out, char *err, size_t errlen);

struct lf_session_status {
	char iqn[LF_NAME_MAX];
	char initiator[LF_NAME_MAX];
	char portal[96]; /* "127.0.0.1:3260", current connection */
	bool connected;
	unsigned reconnects;
};
void lf_session_get_status(struct lf_session *s, struct lf_session_status *st);

/* The node's default initiator name: /etc/iscsi/initiatorname.iscsi when
 * present, else "iqn.2004-10.io.lunfs:" + hostname. */
void lf_session_default_initiator(char *buf, size_t len);

#endif
