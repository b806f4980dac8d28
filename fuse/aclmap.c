/* aclmap.c — ACL entries through a mount's id maps (see aclmap.h). */
#include <errno.h>
#include <linux/posix_acl.h>
#include <linux/posix_acl_xattr.h>
#include <stdint.h>
#include <string.h>

#include "fuse/aclmap.h"

#define HDR   4u
#define ENTRY 8u

int lf_aclmap_kind(const char *name)
{
	if (strcmp(name, "system.posix_acl_access") == 0)
		return 1;
	if (strcmp(name, "system.posix_acl_default") == 0)
		return 2;
	return 0;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static bool form_ok(const unsigned char *v, size_t size)
{
	return size >= HDR && (size - HDR) % ENTRY == 0 &&
	       le32(v) == POSIX_ACL_XATTR_VERSION;
}

static unsigned tag(const unsigned char *e)
{
	return (unsigned)(e[0] | e[1] << 8);
}

int lf_aclmap_to_disk(const struct lf_idmap *uidmap,
		      const struct lf_idmap *gidmap, unsigned char *value,
		      size_t size)
{
	if (!form_ok(value, size))
		return -EINVAL;
	for (size_t o = HDR; o < size; o += ENTRY) {
		unsigned char *e = value + o;
		unsigned t = tag(e);
		uint32_t disk;

		if (t != ACL_USER && t != ACL_GROUP)
			continue;
		if (!lf_idmap_to_disk(t == ACL_USER ? uidmap : gidmap,
				      le32(e + 4), &disk))
			return -EINVAL;
		put_le32(e + 4, disk);
	}
	return 0;
}

void lf_aclmap_to_host(const struct lf_idmap *uidmap,
		       const struct lf_idmap *gidmap, unsigned char *value,
		       size_t size, unsigned extra)
{
	unsigned char *group_class = NULL;

	if (!form_ok(value, size))
		return;
	for (size_t o = HDR; o < size; o += ENTRY) {
		unsigned char *e = value + o;
		unsigned t = tag(e);

		if (t == ACL_USER || t == ACL_GROUP)
			put_le32(e + 4, lf_idmap_to_host(t == ACL_USER ? uidmap
								       : gidmap,
							 le32(e + 4)));
		else if (t == ACL_USER_OBJ)
			e[2] |= (unsigned char)((extra >> 6) & 7);
		else if (t == ACL_OTHER)
			e[2] |= (unsigned char)(extra & 7);
		else if (t == ACL_MASK || (t == ACL_GROUP_OBJ && !group_class))
			group_class = e;
	}
	if (group_class)
		group_class[2] |= (unsigned char)((extra >> 3) & 7);
}
