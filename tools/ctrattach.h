/* ctrattach.h — the hook's half of putting a volume in a container: the
 * container's mount namespace, what it will see at a destination after
 * pivot_root, and attaching a mount tree there.
 *
 * Two ways in, both judged by the same rule (the container starts only if
 * its destination, as it will see it, is the volume):
 *  - direct: lunfsd handed over a detached bind of the volume's view; it
 *    is idmapped here and moved onto the destination in the container's
 *    namespace (lf_ctr_attach_tree). Nothing is mounted on the host.
 *  - by path: lunfsd mounted at the bundle's host path (no views, block
 *    volumes); it passes if it propagated, else a clone made in lunfsd's
 *    namespace is attached (lf_ctr_make_visible).
 *
 * Contract: 0 (or 1: something was attached in the container, to undo
 * with lf_ctr_detach on a later failure) or -errno with one line in err[].
 * Needs root: setns, open_tree, move_mount. Forks for every namespace
 * change (setns(CLONE_NEWNS) changes the caller's root and cwd).
 */
#ifndef LUNFS_CTRATTACH_H
#define LUNFS_CTRATTACH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "tools/client.h"

/* Where the container is to see its volumes, and where lunfsd made them.
 *
 * lunfsd mounts in its own mount namespace, which need not be the hook's:
 * podman runs the runtime, and so this hook, from conmon, which it puts in
 * a private mount namespace of its own when the container has a user
 * namespace. Judging visibility by what the hook sees at the path then
 * compared the container's empty directory with that same empty directory:
 * the check passed while no mount reached the container. So the mount's
 * identity is taken in the daemon's namespace (found through the control
 * socket's SO_PEERCRED), and the clone is made there. */
struct lf_ctr_view {
	pid_t pid;	/* the container's process (state "pid") */
	int ct_ns;	/* its mount namespace */
	int d_ns;	/* lunfsd's, or -1 when it is the hook's own */
	bool pivoted;	/* the runtime already changed the root */
	uid_t root_uid; /* the host ids of the container's root */
	gid_t root_gid;
	char root[PATH_MAX]; /* the rootfs's real path in the runtime's view */
};

/* Opens the namespaces of the container's process pid (its rootfs at
 * root, a real path) and of lunfsd (the control socket's peer). */
int lf_ctr_open(const struct lf_client *c, pid_t pid, const char *root,
		struct lf_ctr_view *v, char *err, size_t errlen);
void lf_ctr_close(struct lf_ctr_view *v);

/* lunfsd's mount at path (its namespace) reaches dst, or a clone of it
 * is attached there. 1: a clone was attached. */
int lf_ctr_make_visible(const struct lf_ctr_view *v, const char *path,
			const char *dst, bool block, char *err, size_t errlen);

/* Attaches tree (not idmapped yet; stays the caller's) at dst, idmapped
 * through userns (-1: ids as they are). 1 on success. */
int lf_ctr_attach_tree(const struct lf_ctr_view *v, int tree, int userns,
		       const char *dst, char *err, size_t errlen);

/* Undoes an attach at dst (lazily). */
void lf_ctr_detach(const struct lf_ctr_view *v, const char *dst);

#endif
