/* acl.c — POSIX ACL inheritance at create (see acl.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fsimage/acl.h"

bool lf_acl_form_ok(const void *value, size_t size)
{
	const unsigned char *p = value;

	return size >= LF_ACL_HDR && (size - LF_ACL_HDR) % LF_ACL_ENTRY == 0 &&
	       (uint32_t)(p[0] | p[1] << 8 | p[2] << 16 |
			  (uint32_t)p[3] << 24) == POSIX_ACL_XATTR_VERSION;
}

int lf_acl_create_masq(unsigned char *acl, size_t size, uint32_t *mode_p)
{
	unsigned char *group_obj = NULL, *mask_obj = NULL;
	uint32_t mode = *mode_p;
	int not_equiv = 0;

	if (!lf_acl_form_ok(acl, size))
		return -EIO;
	for (size_t o = LF_ACL_HDR; o < size; o += LF_ACL_ENTRY) {
		unsigned char *e = acl + o;
		unsigned perm = lf_acl_perm(e);

		switch (lf_acl_tag(e)) {
		case ACL_USER_OBJ:
			perm &= (mode >> 6) | ~(unsigned)S_IRWXO;
			mode &= (perm << 6) | ~(unsigned)S_IRWXU;
			lf_acl_set_perm(e, perm);
			break;
		case ACL_USER:
		case ACL_GROUP:
			not_equiv = 1;
			break;
		case ACL_GROUP_OBJ:
			group_obj = e;
			break;
		case ACL_OTHER:
			perm &= mode | ~(unsigned)S_IRWXO;
			mode &= perm | ~(unsigned)S_IRWXO;
			lf_acl_set_perm(e, perm);
			break;
		case ACL_MASK:
			mask_obj = e;
			not_equiv = 1;
			break;
		default:
			return -EIO;
		}
	}
	if (!mask_obj)
		mask_obj = group_obj;
	if (!mask_obj)
		return -EIO;
	{
		unsigned perm = lf_acl_perm(mask_obj);

		perm &= (mode >> 3) | ~(unsigned)S_IRWXO;
		mode &= (perm << 3) | ~(unsigned)S_IRWXG;
		lf_acl_set_perm(mask_obj, perm);
	}
	*mode_p = (*mode_p & ~(uint32_t)(S_IRWXU | S_IRWXG | S_IRWXO)) | mode;
	return not_equiv;
}

/* The parent's default ACL, or *acl NULL when it has none. */
static int read_default(struct lf_vol *v, uint64_t parent, unsigned char **acl,
			size_t *len)
{
	union {
		struct ext2_inode_large in;
		uint8_t raw[1024];
	} u;
	unsigned isize = EXT2_INODE_SIZE(v->fs->super);
	struct ext2_xattr_handle *h = NULL;
	void *val = NULL;
	errcode_t e;
	int r;

	*acl = NULL;
	*len = 0;
	/* Most directories have no xattr at all: decide that from the
	 * inode (already cached) before parsing anything. */
	if (isize <= sizeof(u.raw)) {
		r = lf_fs_iread_sized(v, parent, &u.in,
				      isize > sizeof(u.in) ? isize
							   : sizeof(u.in));
		if (r)
			return r;
		if (!lf_fs_has_xattrs(v, &u.in, isize))
			return 0;
	}
	e = ext2fs_xattrs_open(v->fs, (ext2_ino_t)parent, &h);
	if (e)
		return lf_errno_from_ext2(e);
	e = ext2fs_xattrs_read(h);
	if (!e)
		e = ext2fs_xattr_get(h, LF_ACL_DEFAULT, &val, len);
	ext2fs_xattrs_close(&h);
	if (e == EXT2_ET_EA_KEY_NOT_FOUND)
		return 0;
	if (e)
		return lf_errno_from_ext2(e);
	if (*len <= LF_ACL_HDR || !lf_acl_form_ok(val, *len)) {
		/* Empty or unreadable: as if there were none. */
		ext2fs_free_mem(&val);
		*len = 0;
		return 0;
	}
	*acl = malloc(*len);
	if (*acl)
		memcpy(*acl, val, *len);
	ext2fs_free_mem(&val);
	return *acl ? 0 : -ENOMEM;
}

int lf_acl_inherit(struct lf_vol *v, uint64_t parent, uint32_t *mode,
		   uint32_t umask, struct lf_acl_new *out)
{
	unsigned char *dflt = NULL;
	size_t len = 0;
	int r;

	memset(out, 0, sizeof(*out));
	if (S_ISLNK(*mode))
		return 0;
	r = read_default(v, parent, &dflt, &len);
	if (r)
		return r;
	if (!dflt) {
		*mode &= ~(umask & 0777);
		return 0;
	}
	out->access = malloc(len);
	if (!out->access) {
		free(dflt);
		return -ENOMEM;
	}
	memcpy(out->access, dflt, len);
	r = lf_acl_create_masq(out->access, len, mode);
	if (r < 0) {
		free(dflt);
		lf_acl_new_free(out);
		return r;
	}
	if (r > 0) {
		out->access_len = len;
	} else {
		free(out->access);
		out->access = NULL;
	}
	if (S_ISDIR(*mode)) {
		out->dflt = dflt;
		out->dflt_len = len;
	} else {
		free(dflt);
	}
	return 0;
}

int lf_acl_store(struct lf_vol *v, uint64_t ino, const struct lf_acl_new *n)
{
	struct ext2_xattr_handle *h = NULL;
	errcode_t e;

	if (!n->access && !n->dflt)
		return 0;
	e = ext2fs_xattrs_open(v->fs, (ext2_ino_t)ino, &h);
	if (e)
		return lf_errno_from_ext2(e);
	e = ext2fs_xattrs_read(h);
	if (!e && n->access)
		e = ext2fs_xattr_set(h, LF_ACL_ACCESS, n->access,
				     n->access_len);
	if (!e && n->dflt)
		e = ext2fs_xattr_set(h, LF_ACL_DEFAULT, n->dflt, n->dflt_len);
	ext2fs_xattrs_close(&h);
	if (e == EXT2_ET_EA_NO_SPACE || e == EXT2_ET_INLINE_DATA_NO_SPACE)
		return -ENOSPC;
	return e ? lf_errno_from_ext2(e) : 0;
}

void lf_acl_new_free(struct lf_acl_new *n)
{
	free(n->access);
	free(n->dflt);
	memset(n, 0, sizeof(*n));
}
