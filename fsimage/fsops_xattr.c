/* fsops_xattr.c — extended attributes through libext2fs' xattr handles.
 *
 * libext2fs translates "system.posix_acl_*" between the Linux xattr form
 * and ext4's on-disk ACL form itself, so names pass through unchanged.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#include "fsimage/fsops_int.h"

#define LF_XATTR_NAME_MAX 255
#define LF_XATTR_SIZE_MAX 65536

static int name_check(const char *name)
{
	static const char *const pfx[] = {"user.", "trusted.", "security.",
					  "system.posix_acl_access",
					  "system.posix_acl_default"};
	size_t len = strlen(name);

	if (len > LF_XATTR_NAME_MAX)
		return -ERANGE;
	for (size_t i = 0; i < sizeof(pfx) / sizeof(pfx[0]); i++) {
		size_t pl = strlen(pfx[i]);

		if (strncmp(name, pfx[i], pl) == 0) {
			if (pfx[i][pl - 1] == '.' && len == pl)
				return -EINVAL;
			if (pfx[i][pl - 1] != '.' && len != pl)
				return -EOPNOTSUPP;
			return 0;
		}
	}
	return -EOPNOTSUPP;
}

static int xopen(struct lf_vol *v, uint64_t ino, struct ext2_xattr_handle **h)
{
	struct ext2_inode_large in;
	errcode_t e;
	int r = lf_fs_iread(v, ino, &in);

	if (r)
		return r;
	e = ext2fs_xattrs_open(v->fs, ino, h);
	if (!e) {
		e = ext2fs_xattrs_read(*h);
		if (e)
			ext2fs_xattrs_close(h);
	}
	return e ? lf_errno_from_ext2(e) : 0;
}

ssize_t lf_fs_getxattr(struct lf_vol *v, uint64_t ino, const char *name,
		       void *buf, size_t size)
{
	struct ext2_xattr_handle *h = NULL;
	void *val = NULL;
	size_t len = 0;
	errcode_t e;
	ssize_t r;

	r = name_check(name);
	if (r)
		return r == -EOPNOTSUPP ? -ENODATA : r;
	lf_vol_lock(v);
	r = xopen(v, ino, &h);
	if (r)
		goto out;
	e = ext2fs_xattr_get(h, name, &val, &len);
	if (e == EXT2_ET_EA_KEY_NOT_FOUND) {
		r = -ENODATA;
	} else if (e) {
		r = lf_errno_from_ext2(e);
	} else if (size && len > size) {
		r = -ERANGE;
	} else {
		if (size)
			memcpy(buf, val, len);
		r = (ssize_t)len;
	}
	ext2fs_free_mem(&val);
	ext2fs_xattrs_close(&h);
out:
	lf_vol_unlock(v);
	return r;
}

static int touch_ctime(struct lf_vol *v, uint64_t ino)
{
	struct ext2_inode_large in;
	int r = lf_fs_iread(v, ino, &in);

	if (r)
		return r;
	lf_fs_set_ctime_now(v, &in);
	return lf_fs_iwrite(v, ino, &in);
}

int lf_fs_setxattr(struct lf_vol *v, uint64_t ino, const char *name,
		   const void *value, size_t size, int flags)
{
	struct ext2_xattr_handle *h = NULL;
	void *old = NULL;
	size_t olen = 0;
	errcode_t e;
	int r;

	r = name_check(name);
	if (r)
		return r;
	if (size > LF_XATTR_SIZE_MAX)
		return -E2BIG;
	if (flags & ~(XATTR_CREATE | XATTR_REPLACE))
		return -EINVAL;
	if (lf_vol_read_only(v))
		return -EROFS;
	lf_vol_lock(v);
	r = xopen(v, ino, &h);
	if (r)
		goto out;
	e = ext2fs_xattr_get(h, name, &old, &olen);
	ext2fs_free_mem(&old);
	if (e && e != EXT2_ET_EA_KEY_NOT_FOUND) {
		r = lf_errno_from_ext2(e);
	} else if (!e && (flags & XATTR_CREATE)) {
		r = -EEXIST;
	} else if (e && (flags & XATTR_REPLACE)) {
		r = -ENODATA;
	} else {
		e = ext2fs_xattr_set(h, name, value, size);
		if (e == EXT2_ET_EA_NO_SPACE ||
		    e == EXT2_ET_INLINE_DATA_NO_SPACE)
			r = -ENOSPC;
		else if (e == EXT2_ET_EA_KEY_NOT_FOUND)
			r = -ENODATA;
		else
			r = e ? lf_errno_from_ext2(e) : 0;
	}
	ext2fs_xattrs_close(&h);
	if (!r)
		r = touch_ctime(v, ino);
out:
	lf_vol_unlock(v);
	return r;
}

struct list_ctx {
	char *buf;
	size_t size, len;
};

static int list_cb(char *name, char *value, size_t value_len, void *data)
{
	struct list_ctx *c = data;
	size_t n = strlen(name) + 1;

	if (strcmp(name, "system.data") == 0)
		return 0; /* inline data, not an attribute */
	if (c->size && c->len + n <= c->size)
		memcpy(c->buf + c->len, name, n);
	c->len += n;
	return 0;
}

ssize_t lf_fs_listxattr(struct lf_vol *v, uint64_t ino, char *buf, size_t size)
{
	struct ext2_xattr_handle *h = NULL;
	struct list_ctx c = {buf, size, 0};
	errcode_t e;
	ssize_t r;

	lf_vol_lock(v);
	r = xopen(v, ino, &h);
	if (r)
		goto out;
	e = ext2fs_xattrs_iterate(h, list_cb, &c);
	ext2fs_xattrs_close(&h);
	if (e)
		r = lf_errno_from_ext2(e);
	else if (size && c.len > size)
		r = -ERANGE;
	else
		r = (ssize_t)c.len;
out:
	lf_vol_unlock(v);
	return r;
}

int lf_fs_removexattr(struct lf_vol *v, uint64_t ino, const char *name)
{
	struct ext2_xattr_handle *h = NULL;
	void *old = NULL;
	size_t olen = 0;
	errcode_t e;
	int r;

	r = name_check(name);
	if (r)
		return r == -EOPNOTSUPP ? -ENODATA : r;
	if (lf_vol_read_only(v))
		return -EROFS;
	lf_vol_lock(v);
	r = xopen(v, ino, &h);
	if (r)
		goto out;
	e = ext2fs_xattr_get(h, name, &old, &olen);
	ext2fs_free_mem(&old);
	if (e == EXT2_ET_EA_KEY_NOT_FOUND)
		r = -ENODATA;
	else if (e)
		r = lf_errno_from_ext2(e);
	else if ((e = ext2fs_xattr_remove(h, name)))
		r = lf_errno_from_ext2(e);
	ext2fs_xattrs_close(&h);
	if (!r)
		r = touch_ctime(v, ino);
out:
	lf_vol_unlock(v);
	return r;
}
