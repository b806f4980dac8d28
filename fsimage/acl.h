/* acl.h — POSIX ACLs as fsops keeps them: the Linux xattr form (a version
 * header, then entries of tag, perm, id; little endian), which libext2fs
 * converts to and from ext4's on-disk form itself.
 *
 * Inheritance at create follows the kernel's posix_acl_create() as ext4
 * calls it (ext4_init_acl): a parent's default ACL decides the new inode's
 * permission bits together with the mode asked for, and the umask is
 * ignored; without one, the umask applies. Symlinks get neither.
 *
 * Internal to fsimage/; callers hold the volume lock where noted.
 */
#ifndef LUNFS_ACL_H
#define LUNFS_ACL_H

#include <linux/posix_acl.h>
#include <linux/posix_acl_xattr.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsimage/fsops_int.h"

#define LF_ACL_ACCESS  "system.posix_acl_access"
#define LF_ACL_DEFAULT "system.posix_acl_default"
#define LF_ACL_HDR     4u
#define LF_ACL_ENTRY   8u

static inline unsigned lf_acl_tag(const unsigned char *e)
{
	return (unsigned)(e[0] | e[1] << 8);
}

static inline unsigned lf_acl_perm(const unsigned char *e)
{
	return (unsigned)(e[2] | e[3] << 8);
}

static inline void lf_acl_set_perm(unsigned char *e, unsigned perm)
{
	e[2] = (unsigned char)perm;
	e[3] = (unsigned char)(perm >> 8);
}

/* Header and size only: version 2, a whole number of entries. */
bool lf_acl_form_ok(const void *value, size_t size);

/* The kernel's posix_acl_create_masq(): acl (edited in place) and *mode
 * (permission bits) restrict each other. 1 if the ACL says more than the
 * mode (it must be stored), 0 if not, -EIO if malformed. */
int lf_acl_create_masq(unsigned char *acl, size_t size, uint32_t *mode);

/* What a new inode gets from its parent: ACLs to store (NULL: none). */
struct lf_acl_new {
	unsigned char *access, *dflt;
	size_t access_len, dflt_len;
};

/* Lock held. Applies the parent's default ACL, or the umask, to *mode
 * (S_IFMT | permission bits) and fills out. lf_acl_new_free() after, in
 * every case. */
int lf_acl_inherit(struct lf_vol *v, uint64_t parent, uint32_t *mode,
		   uint32_t umask, struct lf_acl_new *out);
/* Lock held. Stores out's ACLs on the new inode ino. */
int lf_acl_store(struct lf_vol *v, uint64_t ino, const struct lf_acl_new *n);
void lf_acl_new_free(struct lf_acl_new *n);

#endif
