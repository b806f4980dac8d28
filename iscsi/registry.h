/* registry.h — sessions shared between volumes, reference counted.
 *
 * Key: (initiator name, target IQN, sorted resolved portals, CHAP user and a
 * digest of the CHAP secrets). One lock per key, so concurrent mounts,
 * unmounts, logins and logouts of one target never race while other
 * targets go on in parallel.
 *  - acquire: reuse the logged-in session for the key, or log in.
 *  - release: drop one reference; the last one logs out (of every portal).
 *    Release is idempotent per reference handed out and never wedges on a
 *    dead session.
 * The connector (login/logout) is a table of functions so the unit tests
 * can count logins without a target; lf_registry_new_iscsi() uses
 * session.h.
 *
 * Thread-safe. lf_registry_free() requires that no reference is held.
 */
#ifndef LUNFS_REGISTRY_H
#define LUNFS_REGISTRY_H

#include "iscsi/bdev.h"
#include "iscsi/session.h"
#include "iscsi/spec.h"

struct lf_registry;

struct lf_registry_connector {
	int (*login)(void *ctx, const struct lf_session_params *p,
		     void **session, char *err, size_t errlen);
	void (*logout)(void *ctx, void *session);
	void *ctx;
};

struct lf_registry *lf_registry_new(const struct lf_registry_connector *c);
struct lf_registry *lf_registry_new_iscsi(void);
void lf_registry_free(struct lf_registry *r);

/* Builds session params from a spec, its secrets and the node's initiator
 * name (used when the spec has none). */
void lf_registry_params(const struct lf_spec *spec,
			const struct lf_secrets *sec,
			const char *node_initiator,
			struct lf_session_params *p);

int lf_registry_acquire(struct lf_registry *r,
			const struct lf_session_params *p, void **session,
			char *err, size_t errlen);
void lf_registry_release(struct lf_registry *r, void *session);
/* Reference count of the session for these params; 0 if none. */
int lf_registry_refs(struct lf_registry *r, const struct lf_session_params *p);

/* acquire + lf_session_open_lun: the bdev holds the registry reference and
 * releases it on its last unref. On error nothing is held (a fresh login
 * done for it is logged out again). */
int lf_registry_open_lun(struct lf_registry *r,
			 const struct lf_session_params *p, int lun,
			 bool read_only, struct lf_bdev **out, char *err,
			 size_t errlen);

struct lf_registry_entry {
	struct lf_session_status st;
	int refs;
};
/* Calls fn for each live session (under the registry lock: fn must not
 * call back into the registry). */
void lf_registry_foreach(struct lf_registry *r,
			 void (*fn)(void *ctx,
				    const struct lf_registry_entry *e),
			 void *ctx);

#endif
