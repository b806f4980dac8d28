/* voltable.h — lunfsd's table of open volumes and their mounts.
 *
 * One volume per LUN (or image file), shared by every mount of it; one
 * mount per path. The table is what `lunfs status` shows and what the
 * requests of daemon.c change. It is built so that one slow or sick
 * target stalls only the requests for its own volumes.
 *
 * Locks, in the order they are taken (a thread holds at most one of each):
 *   1. a path claim: the request that mounts or unmounts a path owns the
 *      mount entry (state attaching or detaching) until it is done;
 *      another request for that path waits for it.
 *   2. a volume claim: the one request working on a volume — opening it
 *      (login, format, journal replay / e2fsck), adding or removing one of
 *      its mounts, closing it — owns it; others for that volume wait.
 *      Slow work runs under a claim and under nothing wider. Claims of
 *      different volumes are independent: two targets never wait for each
 *      other here (the session registry keeps its own lock per target).
 *   3. t->lock: the lists, counts, states and claims themselves. Held for
 *      bookkeeping only — never across I/O, a login, a fork or a FUSE
 *      mount/unmount — so a status snapshot taken under it never waits
 *      for a request in progress.
 * Claims are waited for on t->changed (broadcast whenever a claim is
 * dropped or a state changes), bounded by the request's deadline.
 *
 * Lifetimes: a volume entry lives while it has refs: one per mount entry
 * naming it and one per request holding or waiting for its claim. The
 * objects it opened (bdev, vol, served) are set and cleared only by the
 * claim holder; others read them only while holding the claim, or
 * (status) while holding t->lock and the volume is open (the closer
 * clears open before it frees them). A mount entry's fields other than
 * path, spec_key and the t->lock ones are written by its claim holder
 * while it attaches; status reads them only while nobody claims it.
 *
 * Errors: 0 or -errno (-ETIMEDOUT when the deadline passes while waiting).
 */
#ifndef LUNFS_VOLTABLE_H
#define LUNFS_VOLTABLE_H

#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "fsimage/volume.h"
#include "fuse/mount.h"
#include "iscsi/bdev.h"
#include "tools/fence.h"

enum lf_vt_state {
	LF_VT_ATTACHED,	  /* serving; nothing in progress */
	LF_VT_ATTACHING,  /* login, open, format, FUSE mount setup */
	LF_VT_RECOVERING, /* journal replay / e2fsck of an unclean volume */
	LF_VT_DETACHING,  /* unmount, flush, close, logout */
	LF_VT_CHECKING,	  /* lunfs fsck of a volume that is not mounted */
	LF_VT_RESIZING,	  /* lunfs resize: requests to it wait meanwhile */
};
const char *lf_vt_state_name(enum lf_vt_state s);

struct lf_vt_volume {
	struct lf_vt_volume *next;  /* t->lock */
	char key[600];		    /* canonical URL; immutable */
	char record_path[PATH_MAX]; /* attach record; immutable */
	/* Written by the claim holder while not open; stable once open. */
	bool block;
	bool read_only; /* how the volume itself was opened */
	uint64_t cred;	/* salted digest of the CHAP identity */
	struct lf_bdev *bdev;
	struct lf_vol *vol; /* filesystem volumes */
	struct lf_served *served;
	struct lf_fence fence; /* read-write iSCSI volumes (fence.h) */
	/* t->lock */
	bool open;
	int nmounts; /* mount entries attached or being attached */
	int refs;
	bool claimed;
	enum lf_vt_state state;
	int64_t since_ms; /* CLOCK_MONOTONIC, when state was entered */
	time_t since_wall;
};

struct lf_vt_mount {
	struct lf_vt_mount *next; /* t->lock */
	char path[PATH_MAX];	  /* immutable */
	/* Set by the request that attaches it, before it is attached. */
	struct lf_vt_volume *v; /* NULL until the volume is claimed */
	char spec_key[600];	/* immutable */
	struct lf_mount *m;
	bool read_only;
	char uidmap[256], gidmap[256];
	long long fsgroup;
	char container[129]; /* OCI container id, "" if none; immutable */
	/* The mount request without its secrets: what the attach record
	 * keeps so a restarted daemon can serve this mount again. */
	struct json_object *record;
	/* t->lock */
	bool claimed;		/* a request works on this path */
	enum lf_vt_state state; /* attached, attaching or detaching */
	bool gone; /* unmounted from outside; the reaper releases it */
	int64_t since_ms;
	time_t since_wall;
};

struct lf_voltable {
	pthread_mutex_t lock;
	pthread_cond_t changed;	      /* CLOCK_MONOTONIC */
	struct lf_vt_volume *volumes; /* lock */
	struct lf_vt_mount *mounts;   /* lock */
};

int lf_vt_init(struct lf_voltable *t);
/* Requires empty lists. */
void lf_vt_destroy(struct lf_voltable *t);

/* Milliseconds on CLOCK_MONOTONIC: the clock of every deadline. */
int64_t lf_vt_now_ms(void);

/* Waits until done(ctx), evaluated under t->lock, is true; -ETIMEDOUT
 * past the deadline (0 = none). For waits on state kept beside the table
 * and changed under t->lock with lf_vt_changed(). */
int lf_vt_wait(struct lf_voltable *t, bool (*done)(void *ctx), void *ctx,
	       int64_t deadline_ms);
/* Caller holds t->lock: wakes lf_vt_wait() and the claim waiters. */
void lf_vt_changed(struct lf_voltable *t);

/* Claims the volume with this key, creating its entry (not open, state
 * attaching) if there is none, waiting while another request holds it.
 * deadline_ms: 0 = wait as long as it takes. On success the caller holds
 * the claim and a ref; lf_vt_volume_done() gives both back. */
int lf_vt_volume_claim(struct lf_voltable *t, const char *key,
		       const char *record_path, int64_t deadline_ms,
		       enum lf_vt_state state, struct lf_vt_volume **out);
/* Claim holder: what the volume is doing now (shown by status). */
void lf_vt_volume_set_state(struct lf_voltable *t, struct lf_vt_volume *v,
			    enum lf_vt_state state);
/* Claim holder: the volume is open (or closed) now. */
void lf_vt_volume_set_open(struct lf_voltable *t, struct lf_vt_volume *v,
			   bool open);
/* Drops the claim and the ref; the entry goes when nothing refers to it
 * (the caller has closed the volume if it was its last mount). */
void lf_vt_volume_done(struct lf_voltable *t, struct lf_vt_volume *v);

/* Claims path for a mount of spec_key (for container, or ""): with no entry
 * there, adds one (state attaching) and returns it in *out with *existing =
 * false; with an attached entry, returns it in *out claimed for the caller
 * (state unchanged) with *existing = true, so the caller can compare it with
 * its request and then either give it back (lf_vt_mount_unclaim) or detach it.
 * Waits while another request holds the path. */
int lf_vt_mount_claim(struct lf_voltable *t, const char *path,
		      const char *spec_key, const char *container,
		      int64_t deadline_ms, struct lf_vt_mount **out,
		      bool *existing);
/* Claims an attached mount at path for detaching (state detaching).
 * -ENOENT if no mount is there. */
int lf_vt_mount_claim_detach(struct lf_voltable *t, const char *path,
			     int64_t deadline_ms, struct lf_vt_mount **out);
/* Claims the next attached mount for which match() is true, for
 * detaching; -ENOENT when none is left. Waits for mounts in progress that
 * match (-ETIMEDOUT past the deadline). */
int lf_vt_mount_claim_next(struct lf_voltable *t,
			   bool (*match)(void *ctx,
					 const struct lf_vt_mount *m),
			   void *ctx, int64_t deadline_ms,
			   struct lf_vt_mount **out);
/* Path claim holder, holding the claim of v too: the mount belongs to v
 * (counts in v->nmounts and holds a ref on v until removed). */
void lf_vt_mount_bind(struct lf_voltable *t, struct lf_vt_mount *m,
		      struct lf_vt_volume *v);
/* Claim holder: mounts of v attached or being attached. */
int lf_vt_volume_nmounts(struct lf_voltable *t, struct lf_vt_volume *v);
/* True once the mount has ended from outside (fusermount3 -u). */
bool lf_vt_mount_gone(struct lf_voltable *t, struct lf_vt_mount *m);
/* Path claim holder: the mount is serving now; the claim is dropped. */
void lf_vt_mount_attached(struct lf_voltable *t, struct lf_vt_mount *m);
/* Path claim holder: gives an existing attached mount back unchanged. */
void lf_vt_mount_unclaim(struct lf_voltable *t, struct lf_vt_mount *m);
/* Path claim holder: removes the entry (its FUSE mount is stopped) and
 * frees it, dropping its volume's count and ref (the caller still holds
 * the volume's claim, so the volume entry stays). */
void lf_vt_mount_remove(struct lf_voltable *t, struct lf_vt_mount *m);

#endif
