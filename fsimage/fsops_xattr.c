/* fsops_xattr.c — extended attributes through libext2fs' xattr handles.
 *
 * libext2fs translates "system.posix_acl_*" between the Linux xattr form
 * and ext4's on-disk ACL form itself, so names pass through unchanged.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "fsimage/acl.h"
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

/* libext2fs reads the ids of unnamed ACL entries back as 0; the kernel
 * (and so ext4) shows ACL_UNDEFINED_ID there. */
static void acl_undefined_ids(const char *name, unsigned char *acl, size_t len)
{
	if (strcmp(name, LF_ACL_ACCESS) != 0 &&
	    strcmp(name, LF_ACL_DEFAULT) != 0)
		return;
	for (size_t o = LF_ACL_HDR; o + LF_ACL_ENTRY <= len;
	     o += LF_ACL_ENTRY) {
		unsigned tag = lf_acl_tag(acl + o);

		if (tag != ACL_USER && tag != ACL_GROUP)
			memset(acl + o + 4, 0xff, 4);
	}
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
		if (size) {
			memcpy(buf, val, len);
			acl_undefined_ids(name, buf, len);
		}
		r = (ssize_t)len;
	}
	ext2fs_free_mem(&val);
	ext2fs_xattrs_close(&h);
out:
	lf_vol_unlock(v);
	return r;
}

/* POSIX ACLs in the Linux xattr form (version 2, entries of tag, perm,
 * id, little endian). The kernel keeps an inode's mode and its access ACL
 * in step (posix_acl_update_mode, posix_acl_chmod); so do we, or the
 * kernel's ext4 would see modes that differ from what we served. */
#define ACL_VERSION	POSIX_ACL_XATTR_VERSION
#define ACL_ACCESS_NAME LF_ACL_ACCESS

static uint16_t le16_at(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* Mode bits an access ACL implies; *equiv if the ACL says no more than
 * the mode does (then it is not stored, as the kernel does). */
static int acl_mode(const void *value, size_t size, unsigned *perm, bool *equiv)
{
	const unsigned char *p = value;
	unsigned mode = 0, seen = 0;

	if (size < 4 || (size - 4) % 8 ||
	    (uint32_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24) !=
		    ACL_VERSION)
		return -EINVAL;
	*equiv = true;
	for (size_t o = 4; o < size; o += 8) {
		unsigned tag = le16_at(p + o), bits = le16_at(p + o + 2) & 7;

		switch (tag) {
		case ACL_USER_OBJ:
			mode |= bits << 6;
			break;
		case ACL_GROUP_OBJ:
			if (!(seen & ACL_MASK))
				mode |= bits << 3;
			break;
		case ACL_OTHER:
			mode |= bits;
			break;
		case ACL_MASK:
			mode = (mode & ~070u) | bits << 3;
			*equiv = false;
			break;
		case ACL_USER:
		case ACL_GROUP:
			*equiv = false;
			break;
		default:
			return -EINVAL;
		}
		seen |= tag;
	}
	if ((seen & (ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_OTHER)) !=
	    (ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_OTHER))
		return -EINVAL;
	*perm = mode;
	return 0;
}

static int set_perm_bits(struct lf_vol *v, uint64_t ino, unsigned perm)
{
	struct ext2_inode_large in;
	int r = lf_fs_iread(v, ino, &in);

	if (r)
		return r;
	in.i_mode = (in.i_mode & ~0777u) | perm;
	lf_fs_set_ctime_now(v, &in);
	return lf_fs_iwrite(v, ino, &in);
}

int lf_fs_acl_chmod_locked(struct lf_vol *v, uint64_t ino, unsigned mode)
{
	struct ext2_xattr_handle *h = NULL;
	unsigned char *acl = NULL;
	size_t len = 0;
	bool has_mask = false;
	errcode_t e;
	int r;

	r = xopen(v, ino, &h);
	if (r)
		return r == -EOPNOTSUPP ? 0 : r;
	e = ext2fs_xattr_get(h, ACL_ACCESS_NAME, (void **)&acl, &len);
	if (e) {
		ext2fs_xattrs_close(&h);
		return e == EXT2_ET_EA_KEY_NOT_FOUND ? 0
						     : lf_errno_from_ext2(e);
	}
	for (size_t o = 4; o + 8 <= len; o += 8)
		has_mask |= le16_at(acl + o) == ACL_MASK;
	for (size_t o = 4; o + 8 <= len; o += 8) {
		unsigned tag = le16_at(acl + o), bits = 0;
		bool set = true;

		if (tag == ACL_USER_OBJ)
			bits = (mode >> 6) & 7;
		else if (tag == ACL_OTHER)
			bits = mode & 7;
		else if (tag == ACL_MASK || (tag == ACL_GROUP_OBJ && !has_mask))
			bits = (mode >> 3) & 7;
		else
			set = false;
		if (set) {
			acl[o + 2] = (unsigned char)bits;
			acl[o + 3] = 0;
		}
	}
	e = ext2fs_xattr_set(h, ACL_ACCESS_NAME, acl, len);
	ext2fs_free_mem(&acl);
	ext2fs_xattrs_close(&h);
	return e ? lf_errno_from_ext2(e) : 0;
}

int lf_fs_setxattr(struct lf_vol *v, uint64_t ino, const char *name,
		   const void *value, size_t size, int flags)
{
	struct ext2_xattr_handle *h = NULL;
	void *old = NULL;
	size_t olen = 0;
	unsigned perm = 0;
	bool is_acl = false, equiv = false;
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
	if (strcmp(name, ACL_ACCESS_NAME) == 0) {
		r = acl_mode(value, size, &perm, &equiv);
		if (r)
			return r;
		is_acl = true;
	}
	lf_vol_lock(v);
	r = xopen(v, ino, &h);
	if (r)
		goto out;
	if (is_acl && equiv) {
		/* Nothing beyond the mode: store the mode, drop the ACL. */
		e = ext2fs_xattr_remove(h, name);
		r = e && e != EXT2_ET_EA_KEY_NOT_FOUND ? lf_errno_from_ext2(e)
						       : 0;
		ext2fs_xattrs_close(&h);
		if (!r)
			r = set_perm_bits(v, ino, perm);
		goto out;
	}
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
		r = is_acl ? set_perm_bits(v, ino, perm)
			   : lf_fs_touch_ctime(v, ino);
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
		r = lf_fs_touch_ctime(v, ino);
out:
	lf_vol_unlock(v);
	return r;
}

/* Whether the inode holds any extended attribute: an xattr block, or the
 * in-inode area's magic. in holds the whole inode, isize bytes. Spares
 * parsing them for the common inode that has none, since a write asks
 * this every time. */
bool lf_fs_has_xattrs(struct lf_vol *v, const struct ext2_inode_large *in,
		      unsigned isize)
{
	uint32_t magic;
	size_t at;

	if (ext2fs_file_acl_block(v->fs, (const struct ext2_inode *)in))
		return true;
	at = EXT2_GOOD_OLD_INODE_SIZE + in->i_extra_isize;
	if (isize <= EXT2_GOOD_OLD_INODE_SIZE || at + sizeof(magic) > isize)
		return false;
	memcpy(&magic, (const uint8_t *)in + at, sizeof(magic));
	return ext2fs_le32_to_cpu(magic) == EXT2_EXT_ATTR_MAGIC;
}

int lf_fs_killpriv(struct lf_vol *v, uint64_t ino, bool suidgid,
		   bool (*in_group)(void *opaque, uint32_t gid), void *opaque)
{
	/* The whole inode in one read, for lf_fs_has_xattrs(). */
	union {
		struct ext2_inode_large in;
		uint8_t raw[1024];
	} u;
	struct ext2_inode_large *inp = &u.in;
	unsigned isize = EXT2_INODE_SIZE(v->fs->super);
	struct ext2_xattr_handle *h = NULL;
	bool big = isize > sizeof(u.raw); /* unusual geometry: parse */
	bool changed = false;
	void *old = NULL;
	size_t olen = 0;
	errcode_t e;
	int r;

	if (lf_vol_read_only(v))
		return 0;
	if (big)
		isize = sizeof(u.in);
	lf_vol_lock(v);
	r = lf_fs_iread_sized(v, ino, inp,
			      isize > sizeof(u.in) ? isize : sizeof(u.in));
	/* chown_common() kills on every non-directory, fifos and device
	 * nodes included; write and truncate only reach regular files. */
	if (r || LINUX_S_ISDIR(inp->i_mode))
		goto out;
	/* As the kernel's setattr_should_drop_sgid(): setgid without group
	 * execute marks mandatory locking, and stays for group members. */
	if (suidgid && (inp->i_mode & S_ISGID) &&
	    ((inp->i_mode & S_IXGRP) ||
	     (in_group && !in_group(opaque, inode_gid(*inp))))) {
		inp->i_mode &= ~S_ISGID;
		changed = true;
	}
	if (suidgid && (inp->i_mode & S_ISUID)) {
		inp->i_mode &= ~S_ISUID;
		changed = true;
	}
	if (changed) {
		r = lf_fs_iwrite(v, ino, inp);
		if (r)
			goto out;
	}
	if (big || lf_fs_has_xattrs(v, inp, isize)) {
		r = xopen(v, ino, &h);
		if (r)
			goto out;
		e = ext2fs_xattr_get(h, "security.capability", &old, &olen);
		ext2fs_free_mem(&old);
		if (e == 0) {
			e = ext2fs_xattr_remove(h, "security.capability");
			changed = changed || !e;
		} else if (e == EXT2_ET_EA_KEY_NOT_FOUND) {
			e = 0;
		}
		ext2fs_xattrs_close(&h);
		if (e) {
			r = lf_errno_from_ext2(e);
			goto out;
		}
	}
	if (changed) {
		r = lf_fs_touch_ctime(v, ino);
		if (r == 0)
			r = 1;
	}
out:
	lf_vol_unlock(v);
	return r;
}
