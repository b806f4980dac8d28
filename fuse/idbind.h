/* idbind.h — idmapped bind mounts: one mounted tree shown at another place
 * with its uids and gids translated by the kernel (Linux ≥ 5.12; a FUSE
 * tree needs Linux ≥ 6.12 and a server that offered FUSE_ALLOW_IDMAP).
 *
 * An id map here is lunfs's "DISK:HOST:COUNT" (fuse/idmap.h): the tree's
 * own ids are DISK ids, the bind shows HOST ids. The kernel takes the map
 * as a user namespace whose "inside" is the tree and whose "outside" is
 * the caller's namespace; lf_userns_new() makes one with exactly that
 * map, owned by nobody (its only process exits at once).
 *
 * Contract:
 *  - Return 0 or a file descriptor, or -errno with one line in err[].
 *  - Need CAP_SYS_ADMIN (mount) and CAP_SETUID/CAP_SETGID (maps): a
 *    rootless caller gets -EPERM and falls back to lunfs's own maps.
 *  - lf_userns_new() forks (the child only calls async-signal-safe
 *    functions), so it is safe in a threaded daemon.
 */
#ifndef LUNFS_IDBIND_H
#define LUNFS_IDBIND_H

#include <stdbool.h>
#include <stddef.h>

#include "fuse/idmap.h"

/* A user namespace whose uid_map and gid_map are the given maps (an
 * identity map covers every id). Returns its fd (O_CLOEXEC). */
int lf_userns_new(const struct lf_idmap *uidmap, const struct lf_idmap *gidmap,
		  char *err, size_t errlen);

/* A detached copy of the mount at src (open_tree(OPEN_TREE_CLONE)),
 * idmapped through userns_fd (-1: ids as they are) and read-only if
 * asked. Returns the tree's fd, to attach with lf_idbind_attach() here
 * or after entering another mount namespace. */
int lf_idbind_tree(const char *src, int userns_fd, bool read_only, char *err,
		   size_t errlen);

/* Idmap a detached tree that is not idmapped yet through userns_fd (a
 * container's own user namespace, or one from lf_userns_new()). */
int lf_idbind_idmap(int tree_fd, int userns_fd, char *err, size_t errlen);

/* Attach a tree made by lf_idbind_tree() at dst (move_mount). The tree fd
 * stays the caller's to close. */
int lf_idbind_attach(int tree_fd, const char *dst, char *err, size_t errlen);

#endif
