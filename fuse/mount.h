/* mount.h — FUSE presentation of volumes at paths.
 *
 * A served volume (struct lf_served) wraps one open filesystem volume, or
 * one block device, and tracks every FUSE mount of it, so a change made
 * through one mount invalidates the kernel caches of the others before
 * the request that made it is answered: it is visible through the other
 * mounts at once. (Two mounts changing the same directory or file at the
 * same moment are the exception: the notification that would wait for
 * the other mount's request is delivered right after it instead, since
 * waiting could deadlock.) Each mount runs its own
 * FUSE low-level session on its own threads (fuse_session_loop_mt) and
 * has its own id mapping, read-only flag and fsGroup view.
 *
 * Block volumes are mounted with lf_mount_block() on a group made by
 * lf_served_new_block(): the mount's root is one regular file whose bytes
 * are the LUN's bytes (PATH must be an existing regular file; a FUSE mount
 * may sit on a file). Mount a bdev through one group only: mounts in
 * different groups do not see each other's writes in their page cache.
 *
 * Contract:
 *  - lf_mount_* return 0 or -errno with one line in err[] naming the path.
 *    On error nothing stays mounted.
 *  - lf_mount_stop() unmounts (lazily if busy), joins the session's
 *    threads and frees; it may be called after the mount ended by itself
 *    (fusermount3 -u from outside), which on_exit reports.
 *  - on_exit, if set, runs once on the mount's own thread when its FUSE
 *    session ends for any reason other than lf_mount_stop(); it must not
 *    call lf_mount_stop() itself (hand it to another thread).
 *  - lf_served_free() requires that no mount of it remains; it does not
 *    close the volume.
 */
#ifndef LUNFS_MOUNT_H
#define LUNFS_MOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsimage/volume.h"
#include "fuse/idmap.h"
#include "iscsi/bdev.h"

struct lf_served;
struct lf_mount;

struct lf_bufpool;

struct lf_mount_opts {
	struct lf_idmap uidmap, gidmap;
	bool read_only;
	int64_t fsgroup;  /* -1 = none */
	bool allow_other; /* needs root or user_allow_other */
	/* Keep FUSE on /dev/fuse even where the kernel offers io_uring. */
	bool no_fuse_uring;
	/* Offer FUSE_ALLOW_IDMAP to the kernel, so that idmapped binds of
	 * this mount can be made: only for a mount with identity maps that
	 * serves as a volume's one view (see views below). */
	bool allow_idmap;
	/* Filesystem volumes: serve the mounts of a volume through one FUSE
	 * mount per (fsGroup, read-only) of it, made in a fresh directory
	 * under view_dir (created 0700 if missing), each mount an idmapped
	 * bind of it: one kernel inode, page cache, lock and mmap for all.
	 * Where the kernel cannot (no FUSE idmap before Linux 6.12, no
	 * CAP_SYS_ADMIN) the mount gets its own FUSE mount with lunfs's
	 * maps instead. NULL: always the latter. */
	const char *view_dir;
	/* With view_dir: do not attach the bind at path (which only names
	 * it); keep its detached tree (the view's ids as on disk, read-only
	 * if asked) for lf_mount_take_tree(). The OCI hook asks for this and
	 * attaches the tree in the container's own mount namespace, idmapped
	 * with the container's user namespace. Where views cannot be made,
	 * the mount is made at path as without it. */
	bool detached;
	void (*on_exit)(void *ctx, struct lf_mount *m);
	void *on_exit_ctx;
	/* Reply buffers kept for reuse, shared by the mounts given the same
	 * pool (it must outlive them); NULL: the mount keeps its own. */
	struct lf_bufpool *pool;
};

void lf_mount_opts_init(struct lf_mount_opts *o);

/* A pool of reply buffers: large reads keep up to 16 MiB of them, for all
 * the mounts that share it. Thread-safe. */
struct lf_bufpool *lf_bufpool_new(void);
void lf_bufpool_free(struct lf_bufpool *p);

struct lf_served *lf_served_new(struct lf_vol *v);
/* Does not take a reference: b must outlive the group. */
struct lf_served *lf_served_new_block(struct lf_bdev *b);
void lf_served_free(struct lf_served *sv);
int lf_served_nmounts(struct lf_served *sv);
/* The device grew (lunfs resize): every mount's kernel forgets the root's
 * cached attributes, so a block volume's file shows its new size at once.
 * (Filesystem mounts need nothing: statfs is never cached.) */
void lf_served_size_changed(struct lf_served *sv);

int lf_mount_fs(struct lf_served *sv, const char *path,
		const struct lf_mount_opts *o, struct lf_mount **out, char *err,
		size_t errlen);
int lf_mount_block(struct lf_served *sv, const char *path,
		   const struct lf_mount_opts *o, struct lf_mount **out,
		   char *err, size_t errlen);
void lf_mount_stop(struct lf_mount *m);
const char *lf_mount_path(const struct lf_mount *m);
/* How the kernel's requests reach this mount: "io_uring" (one queue per
 * CPU) or "/dev/fuse". Known once the kernel's first request (INIT) was
 * answered, which lf_mount_fs() and lf_mount_block() wait for. */
const char *lf_mount_transport(struct lf_mount *m);
/* How the mount is served: "idmapped" (a bind of its volume's shared
 * view) or "fuse-map" (its own FUSE mount, lunfs mapping ids). Transport
 * and request counts of an "idmapped" mount are its view's, shared with
 * the other mounts of that view. */
const char *lf_mount_view(const struct lf_mount *m);
/* Where the mount is attached: "direct" (a detached bind, handed to the
 * caller by lf_mount_take_tree(); nothing is mounted at its path) or
 * "path" (mounted at its path). */
const char *lf_mount_attach(const struct lf_mount *m);
/* A "direct" mount's detached tree, once: the caller owns the fd from
 * then on. -1 for any other mount, or when taken already. */
int lf_mount_take_tree(struct lf_mount *m);

/* The FUSE requests this mount has received so far, by kind: for each
 * opcode seen, its name (the kernel's, without "FUSE_") and count, at
 * most n of them; returns how many were filled. Counted as each request
 * is read from /dev/fuse, with relaxed atomics: a snapshot for operators
 * and for the benchmark, which divides them by a workload's operations to
 * show how many round trips the kernel asked for. Thread-safe. */
#define LF_MOUNT_REQUEST_KINDS 64 /* n that always suffices */
size_t lf_mount_requests(struct lf_mount *m, const char **names,
			 uint64_t *counts, size_t n);

#endif
