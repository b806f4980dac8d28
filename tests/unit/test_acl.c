/* test_acl.c — default ACL inheritance in fsops (fsimage/acl.h) on a real
 * image: the mode and ACLs a new inode gets, against values worked out
 * from the kernel's posix_acl_create(), then e2fsck -fn. The same rules
 * are compared with the kernel's ext4 itself in tests/test_posix_parity.py. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsimage/acl.h"
#include "fsimage/fsops.h"
#include "tests/unit/check.h"

#define MIB (1024 * 1024)

/* Entries as (tag, perm, id); id -1 for the unnamed ones. */
static size_t acl_make(unsigned char *b, const unsigned (*e)[3], int n)
{
	memset(b, 0, LF_ACL_HDR + LF_ACL_ENTRY * (size_t)n);
	b[0] = POSIX_ACL_XATTR_VERSION;
	for (int i = 0; i < n; i++) {
		unsigned char *p = b + LF_ACL_HDR + LF_ACL_ENTRY * i;

		p[0] = (unsigned char)e[i][0];
		p[2] = (unsigned char)e[i][1];
		for (int k = 0; k < 4; k++)
			p[4 + k] = (unsigned char)(e[i][2] >> (8 * k));
	}
	return LF_ACL_HDR + LF_ACL_ENTRY * (size_t)n;
}

/* The perm of the entry with tag (and id, for named ones), or -1. */
static int perm_of(const unsigned char *b, size_t n, unsigned tag)
{
	for (size_t o = LF_ACL_HDR; o < n; o += LF_ACL_ENTRY)
		if (lf_acl_tag(b + o) == tag)
			return (int)lf_acl_perm(b + o);
	return -1;
}

static void test_masq(void)
{
	static const unsigned full[][3] = {
		{ACL_USER_OBJ, 7, ~0u},	 {ACL_USER, 5, 1002},
		{ACL_GROUP_OBJ, 5, ~0u}, {ACL_GROUP, 7, 2001},
		{ACL_MASK, 7, ~0u},	 {ACL_OTHER, 0, ~0u},
	};
	static const unsigned plain[][3] = {
		{ACL_USER_OBJ, 7, ~0u},
		{ACL_GROUP_OBJ, 5, ~0u},
		{ACL_OTHER, 5, ~0u},
	};
	unsigned char b[64];
	size_t n = acl_make(b, full, 6);
	uint32_t mode = S_IFREG | 0666;

	/* The case: -rw-rw---- with the named entries kept. */
	CHECK_EQ(lf_acl_create_masq(b, n, &mode), 1);
	CHECK_EQ(mode, S_IFREG | 0660);
	CHECK_EQ(perm_of(b, n, ACL_USER_OBJ), 6);
	CHECK_EQ(perm_of(b, n, ACL_MASK), 6);
	CHECK_EQ(perm_of(b, n, ACL_GROUP_OBJ), 5); /* the mask limits it */
	CHECK_EQ(perm_of(b, n, ACL_OTHER), 0);
	n = acl_make(b, plain, 3);
	mode = S_IFDIR | S_ISGID | 0777;
	CHECK_EQ(lf_acl_create_masq(b, n, &mode), 0);
	CHECK_EQ(mode, S_IFDIR | S_ISGID | 0755);
	b[0] = 1;
	CHECK_EQ(lf_acl_create_masq(b, n, &mode), -EIO);
}

static void test_inherit(const char *dir)
{
	static const unsigned dflt[][3] = {
		{ACL_USER_OBJ, 7, ~0u},	 {ACL_USER, 5, 1002},
		{ACL_GROUP_OBJ, 5, ~0u}, {ACL_MASK, 7, ~0u},
		{ACL_OTHER, 0, ~0u},
	};
	struct lf_owner o = {0, 0, false, 022};
	struct lf_vol_opts vo = {.allow_format = true};
	struct lf_bdev *bd = NULL;
	struct lf_vol *v = NULL;
	unsigned char b[64], got[64];
	char img[600], cmd[1400], err[256] = "";
	struct lf_stat d, f, sub, ln, p;
	size_t n = acl_make(b, dflt, 5);
	int fd;

	snprintf(img, sizeof(img), "%s/acl.img", dir);
	fd = open(img, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, 32 * MIB) < 0)
		exit(2);
	close(fd);
	if (lf_bdev_open_file(img, false, &bd) < 0 ||
	    lf_vol_open(bd, &vo, &v, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", img, err);
		exit(2);
	}
	lf_bdev_unref(bd);
	CHECK_EQ(lf_fs_mkdir(v, LF_ROOT_INO, "d", 0777, &o, &d), 0);
	CHECK_EQ(d.mode, S_IFDIR | 0755); /* no default ACL: umask */
	CHECK_EQ(lf_fs_setxattr(v, d.ino, LF_ACL_DEFAULT, b, n, 0), 0);
	CHECK_EQ(lf_fs_mknod(v, d.ino, "f", S_IFREG | 0666, 0, &o, &f), 0);
	CHECK_EQ(f.mode, S_IFREG | 0660); /* umask ignored, ACL decides */
	CHECK_EQ(lf_fs_getxattr(v, f.ino, LF_ACL_ACCESS, got, sizeof(got)),
		 (ssize_t)n);
	CHECK_EQ(perm_of(got, n, ACL_USER), 5);
	CHECK_EQ(perm_of(got, n, ACL_MASK), 6);
	CHECK_EQ(lf_fs_getxattr(v, f.ino, LF_ACL_DEFAULT, got, sizeof(got)),
		 -ENODATA);
	CHECK_EQ(lf_fs_mkdir(v, d.ino, "sub", 0777, &o, &sub), 0);
	CHECK_EQ(sub.mode, S_IFDIR | 0770);
	CHECK_EQ(lf_fs_getxattr(v, sub.ino, LF_ACL_DEFAULT, got, sizeof(got)),
		 (ssize_t)n);
	CHECK(memcmp(got, b, n) == 0); /* unnamed entries' ids -1 too */
	CHECK_EQ(lf_fs_mknod(v, sub.ino, "fifo", S_IFIFO | 0644, 0, &o, &p), 0);
	CHECK_EQ(p.mode, S_IFIFO | 0640);
	CHECK_EQ(lf_fs_symlink(v, d.ino, "ln", "f", &o, &ln), 0);
	CHECK_EQ(ln.mode, S_IFLNK | 0777);
	CHECK_EQ(lf_fs_getxattr(v, ln.ino, LF_ACL_ACCESS, got, sizeof(got)),
		 -ENODATA);
	CHECK_EQ(lf_vol_close(v), 0);
	snprintf(cmd, sizeof(cmd),
		 "e2fsck -fn %s >%s/acl.fsck 2>&1 || "
		 "{ cat %s/acl.fsck; exit 1; }",
		 img, dir, dir);
	fd = system(cmd);
	CHECK_EQ(fd == -1 ? -1 : WEXITSTATUS(fd), 0);
}

int main(void)
{
	char dir[] = "/tmp/test_acl.XXXXXX", cmd[64];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 2;
	}
	test_masq();
	test_inherit(dir);
	printf("%d passed, %d failed\n", check_passed, check_failed);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (check_failed == 0 && system(cmd) != 0)
		return 1;
	return check_failed ? 1 : 0;
}
