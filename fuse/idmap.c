/* idmap.c — DISK:HOST:COUNT range maps (see idmap.h). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuse/idmap.h"

void lf_idmap_init(struct lf_idmap *m)
{
	memset(m, 0, sizeof(*m));
}

/* Strict decimal: no sign, no spaces, no empty field, fits in 32 bits. */
static bool parse_u32(const char *s, const char *end, uint32_t *out)
{
	uint64_t v = 0;

	if (s == end)
		return false;
	for (; s < end; s++) {
		if (!isdigit((unsigned char)*s))
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > UINT32_MAX)
			return false;
	}
	*out = (uint32_t)v;
	return true;
}

/* [a, a+n) and [b, b+m) intersect; computed in 64 bits, no overflow. */
static bool overlaps(uint32_t a, uint32_t n, uint32_t b, uint32_t m)
{
	return (uint64_t)a < (uint64_t)b + m && (uint64_t)b < (uint64_t)a + n;
}

static int add_one(struct lf_idmap *m, const char *s, const char *end,
		   char *err, size_t errlen)
{
	const char *c1, *c2;
	struct lf_idrange r;
	int len = (int)(end - s);

	c1 = memchr(s, ':', (size_t)(end - s));
	c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
	if (!c1 || !c2 || !parse_u32(s, c1, &r.disk) ||
	    !parse_u32(c1 + 1, c2, &r.host) ||
	    !parse_u32(c2 + 1, end, &r.count)) {
		snprintf(err, errlen,
			 "id map \"%.*s\": expected DISK:HOST:COUNT "
			 "(decimal, 32-bit)",
			 len, s);
		return -EINVAL;
	}
	if (r.count == 0) {
		snprintf(err, errlen, "id map \"%.*s\": COUNT must be >= 1",
			 len, s);
		return -EINVAL;
	}
	if ((uint64_t)r.disk + r.count - 1 > UINT32_MAX ||
	    (uint64_t)r.host + r.count - 1 > UINT32_MAX) {
		snprintf(err, errlen,
			 "id map \"%.*s\": range goes past 4294967295", len, s);
		return -EINVAL;
	}
	for (int i = 0; i < m->n; i++) {
		const struct lf_idrange *o = &m->r[i];

		if (overlaps(r.disk, r.count, o->disk, o->count) ||
		    overlaps(r.host, r.count, o->host, o->count)) {
			snprintf(err, errlen,
				 "id map \"%.*s\" overlaps %u:%u:%u", len, s,
				 o->disk, o->host, o->count);
			return -EINVAL;
		}
	}
	if (m->n >= LF_IDMAP_MAX) {
		snprintf(err, errlen, "id map \"%.*s\": more than %d ranges",
			 len, s, LF_IDMAP_MAX);
		return -EINVAL;
	}
	m->r[m->n++] = r;
	return 0;
}

/* Accepts a comma-separated list too ("0:1000:1,1:100000:65536"), the
 * form lf_idmap_format() writes; on error the map is left unchanged. */
int lf_idmap_add(struct lf_idmap *m, const char *text, char *err, size_t errlen)
{
	struct lf_idmap tmp = *m;
	const char *s = text;

	if (!text || !*text) {
		snprintf(err, errlen, "id map: empty range");
		return -EINVAL;
	}
	for (;;) {
		const char *end = strchr(s, ',');
		int ret;

		if (!end)
			end = s + strlen(s);
		ret = add_one(&tmp, s, end, err, errlen);
		if (ret < 0)
			return ret;
		if (!*end)
			break;
		s = end + 1;
	}
	*m = tmp;
	return 0;
}

uint32_t lf_idmap_to_host(const struct lf_idmap *m, uint32_t disk)
{
	if (m->n == 0)
		return disk;
	for (int i = 0; i < m->n; i++) {
		const struct lf_idrange *r = &m->r[i];

		if (disk >= r->disk && disk - r->disk < r->count)
			return r->host + (disk - r->disk);
	}
	return LF_OVERFLOW_ID;
}

bool lf_idmap_to_disk(const struct lf_idmap *m, uint32_t host, uint32_t *disk)
{
	if (m->n == 0) {
		*disk = host;
		return true;
	}
	for (int i = 0; i < m->n; i++) {
		const struct lf_idrange *r = &m->r[i];

		if (host >= r->host && host - r->host < r->count) {
			*disk = r->disk + (host - r->host);
			return true;
		}
	}
	return false;
}

char *lf_idmap_format(const struct lf_idmap *m, char *buf, size_t len)
{
	size_t used = 0;

	if (len == 0)
		return buf;
	buf[0] = '\0';
	for (int i = 0; i < m->n && used < len; i++) {
		int n = snprintf(buf + used, len - used, "%s%u:%u:%u",
				 i ? "," : "", m->r[i].disk, m->r[i].host,
				 m->r[i].count);

		if (n < 0)
			break;
		used += (size_t)n;
	}
	return buf;
}
