/* test_idmap.c — DISK:HOST:COUNT parsing and mapping. */
#include <errno.h>

#include "fuse/aclmap.h"
#include "fuse/idmap.h"
#include "tests/unit/check.h"

static int add(struct lf_idmap *m, const char *s)
{
	char err[256] = "";
	int ret = lf_idmap_add(m, s, err, sizeof(err));

	if (ret < 0)
		CHECK(err[0] != '\0');
	return ret;
}

static void test_parse_errors(void)
{
	static const char *const bad[] = {
		"",
		"1",
		"1:2",
		"1:2:",
		":1:2",
		"a:1:1",
		"1:2:3:4",
		"-1:0:1",
		"+1:0:1",
		" 1:0:1",
		"1:0:0",
		"4294967296:0:1",
		"0:0:4294967297",
		"4294967295:0:2",
		"0:4294967295:2",
		"1:2:3,",
		",1:2:3",
	};
	struct lf_idmap m;

	lf_idmap_init(&m);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int ret = add(&m, bad[i]);

		if (ret != -EINVAL)
			fprintf(stderr, "accepted \"%s\"\n", bad[i]);
		CHECK_EQ(ret, -EINVAL);
		CHECK_EQ(m.n, 0);
	}
	/* The very last id is fine as a range of one. */
	CHECK_EQ(add(&m, "4294967295:4294967295:1"), 0);
	CHECK_EQ(m.n, 1);
}

static void test_overlap(void)
{
	struct lf_idmap m;

	lf_idmap_init(&m);
	CHECK_EQ(add(&m, "0:100000:1000"), 0);
	CHECK_EQ(add(&m, "999:200000:1"), -EINVAL);   /* disk side */
	CHECK_EQ(add(&m, "5000:100999:10"), -EINVAL); /* host side */
	CHECK_EQ(add(&m, "1000:101000:10"), 0);	      /* adjacent: fine */
	CHECK_EQ(m.n, 2);
	/* A list is all-or-nothing. */
	CHECK_EQ(add(&m, "2000:300000:1,2000:400000:1"), -EINVAL);
	CHECK_EQ(m.n, 2);
	CHECK_EQ(add(&m, "2000:300000:1,3000:400000:1"), 0);
	CHECK_EQ(m.n, 4);

	lf_idmap_init(&m);
	for (int i = 0; i < LF_IDMAP_MAX; i++) {
		char s[64];

		snprintf(s, sizeof(s), "%d:%d:1", i, 1000 + i);
		CHECK_EQ(add(&m, s), 0);
	}
	CHECK_EQ(add(&m, "100:2000:1"), -EINVAL);
	CHECK_EQ(m.n, LF_IDMAP_MAX);
}

static void test_mapping(void)
{
	struct lf_idmap m;
	uint32_t d = 0;
	char buf[128];

	lf_idmap_init(&m);
	/* Identity. */
	CHECK_EQ(lf_idmap_to_host(&m, 0), 0);
	CHECK_EQ(lf_idmap_to_host(&m, 123456), 123456);
	CHECK(lf_idmap_to_disk(&m, 4294967295u, &d) && d == 4294967295u);
	CHECK_STR(lf_idmap_format(&m, buf, sizeof(buf)), "");

	CHECK_EQ(add(&m, "0:100000:65536"), 0);
	CHECK_EQ(add(&m, "70000:1000:2"), 0);
	CHECK_EQ(lf_idmap_to_host(&m, 0), 100000);
	CHECK_EQ(lf_idmap_to_host(&m, 65535), 165535);
	CHECK_EQ(lf_idmap_to_host(&m, 70001), 1001);
	/* Unmapped disk ids show as the overflow id. */
	CHECK_EQ(lf_idmap_to_host(&m, 65536), LF_OVERFLOW_ID);
	CHECK_EQ(lf_idmap_to_host(&m, 70002), LF_OVERFLOW_ID);
	CHECK_EQ(lf_idmap_to_host(&m, 4294967295u), LF_OVERFLOW_ID);

	CHECK(lf_idmap_to_disk(&m, 100000, &d) && d == 0);
	CHECK(lf_idmap_to_disk(&m, 165535, &d) && d == 65535);
	CHECK(lf_idmap_to_disk(&m, 1000, &d) && d == 70000);
	CHECK(!lf_idmap_to_disk(&m, 99999, &d));
	CHECK(!lf_idmap_to_disk(&m, 165536, &d));
	CHECK(!lf_idmap_to_disk(&m, 0, &d));

	CHECK_STR(lf_idmap_format(&m, buf, sizeof(buf)),
		  "0:100000:65536,70000:1000:2");
	/* A truncated buffer stays NUL-terminated. */
	CHECK_EQ(strlen(lf_idmap_format(&m, buf, 8)), 7);

	/* Round trip through the list form. */
	struct lf_idmap m2;

	lf_idmap_init(&m2);
	CHECK_EQ(add(&m2, "0:100000:65536,70000:1000:2"), 0);
	CHECK_EQ(m2.n, 2);
	CHECK_EQ(lf_idmap_to_host(&m2, 70000), 1000);

	/* Ranges at the top of the 32-bit space do not wrap. */
	lf_idmap_init(&m);
	CHECK_EQ(add(&m, "4294967290:0:6"), 0);
	CHECK_EQ(lf_idmap_to_host(&m, 4294967295u), 5);
	CHECK_EQ(lf_idmap_to_host(&m, 0), LF_OVERFLOW_ID);
	CHECK(lf_idmap_to_disk(&m, 5, &d) && d == 4294967295u);
	CHECK(!lf_idmap_to_disk(&m, 6, &d));
}

/* An ACL value: version 2, then (tag, perm, id) entries. */
static size_t acl_put(unsigned char *b, const unsigned (*e)[3], int n)
{
	memset(b, 0, 4 + 8 * (size_t)n);
	b[0] = 2;
	for (int i = 0; i < n; i++) {
		unsigned char *p = b + 4 + 8 * i;

		p[0] = (unsigned char)e[i][0];
		p[2] = (unsigned char)e[i][1];
		for (int k = 0; k < 4; k++)
			p[4 + k] = (unsigned char)(e[i][2] >> (8 * k));
	}
	return 4 + 8 * (size_t)n;
}

static unsigned acl_id(const unsigned char *b, int i)
{
	const unsigned char *p = b + 4 + 8 * i + 4;

	return p[0] | p[1] << 8 | p[2] << 16 | (unsigned)p[3] << 24;
}

static void test_aclmap(void)
{
	static const unsigned ents[][3] = {
		{1, 6, 0xFFFFFFFF},    {2, 6, 101000},
		{4, 4, 0xFFFFFFFF},    {8, 4, 102000},
		{0x10, 4, 0xFFFFFFFF}, {0x20, 0, 0xFFFFFFFF},
	};
	struct lf_idmap u, g, u2, g2;
	unsigned char b[64];
	char err[128];
	size_t n = acl_put(b, ents, 6);

	lf_idmap_init(&u);
	lf_idmap_init(&g);
	lf_idmap_add(&u, "0:100000:65536", err, sizeof(err));
	lf_idmap_add(&g, "0:100000:65536", err, sizeof(err));
	lf_idmap_init(&u2);
	lf_idmap_init(&g2);
	lf_idmap_add(&u2, "0:200000:1000", err, sizeof(err));
	lf_idmap_add(&g2, "0:200000:65536", err, sizeof(err));
	CHECK_EQ(lf_aclmap_kind("system.posix_acl_access"), 1);
	CHECK_EQ(lf_aclmap_kind("system.posix_acl_default"), 2);
	CHECK_EQ(lf_aclmap_kind("user.x"), 0);
	CHECK_EQ(lf_aclmap_to_disk(&u, &g, b, n), 0);
	CHECK_EQ(acl_id(b, 1), 1000);
	CHECK_EQ(acl_id(b, 3), 2000);
	CHECK_EQ(acl_id(b, 0), 0xFFFFFFFFu); /* the owner's has no id */
	lf_aclmap_to_host(&u2, &g2, b, n, 0);
	CHECK_EQ(acl_id(b, 1), LF_OVERFLOW_ID); /* 1000 is past u2 */
	CHECK_EQ(acl_id(b, 3), 202000);
	CHECK_EQ(b[4 + 8 * 4 + 2], 4); /* no view: the mask as stored */
	/* An fsGroup view's bits: owner and the mask (not the group). */
	lf_aclmap_to_host(&u2, &g2, b, n, 0660);
	CHECK_EQ(b[4 + 2], 6);
	CHECK_EQ(b[4 + 8 * 2 + 2], 4);
	CHECK_EQ(b[4 + 8 * 4 + 2], 6);
	CHECK_EQ(b[4 + 8 * 5 + 2], 0);
	/* Unmapped on set: refused; malformed: refused. */
	n = acl_put(b, ents, 6);
	CHECK_EQ(lf_aclmap_to_disk(&u2, &g2, b, n), -EINVAL);
	CHECK_EQ(lf_aclmap_to_disk(&u, &g, b, n - 1), -EINVAL);
	b[0] = 1;
	CHECK_EQ(lf_aclmap_to_disk(&u, &g, b, n), -EINVAL);
}

int main(void)
{
	test_parse_errors();
	test_overlap();
	test_mapping();
	test_aclmap();
	return check_report("test_idmap");
}
