/* aclmap.h — POSIX ACL xattr values (system.posix_acl_access and
 * system.posix_acl_default, in the Linux xattr form) between a mount's
 * HOST ids and the volume's DISK ids.
 *
 * Named user and group entries go through the mount's uid and gid maps as
 * owners do: on set, an id outside the map is refused (-EINVAL, as the
 * kernel refuses ids its namespace cannot map); on get, a DISK id outside
 * the map shows as LF_OVERFLOW_ID. An fsGroup view also shows an access
 * ACL with the permission bits the view adds to the mode, as the plugin's
 * chmod would have written them into the ACL. Pure functions, edit in
 * place; no locking.
 */
#ifndef LUNFS_ACLMAP_H
#define LUNFS_ACLMAP_H

#include <stdbool.h>
#include <stddef.h>

#include "fuse/idmap.h"

/* 1 for the access ACL's name, 2 for the default ACL's, 0 otherwise. */
int lf_aclmap_kind(const char *name);
/* HOST → DISK. -EINVAL for an unmapped id or a malformed value. */
int lf_aclmap_to_disk(const struct lf_idmap *uidmap,
		      const struct lf_idmap *gidmap, unsigned char *value,
		      size_t size);
/* DISK → HOST; then extra (permission bits, 0 for none) is added to the
 * owner, group class (the mask, or the owning group without one) and
 * other entries. A malformed value is left as it is. */
void lf_aclmap_to_host(const struct lf_idmap *uidmap,
		       const struct lf_idmap *gidmap, unsigned char *value,
		       size_t size, unsigned extra);

#endif
