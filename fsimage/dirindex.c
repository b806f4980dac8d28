/* dirindex.c — per-directory name hash maps with an LRU memory bound. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fsimage/dirindex.h"

struct lf_dent {
	struct lf_dent *next;
	uint64_t hash;
	uint64_t ino;
	uint64_t pos;
	uint32_t type;
	uint16_t len;
	char name[];
};

struct lf_dirindex {
	uint64_t dir;
	struct lf_dirindex *hnext; /* in the set's table */
	struct lf_dirindex *lru_prev, *lru_next;
	struct lf_dent **buckets;
	size_t nbuckets, count, bytes;
	uint64_t hint;
};

struct lf_dirindex_set {
	struct lf_dirindex **table;
	size_t nbuckets, count;
	struct lf_dirindex *lru_head, *lru_tail; /* head = most recent */
	size_t bytes, max_bytes;
};

static uint64_t name_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static size_t dir_slot(const struct lf_dirindex_set *s, uint64_t dir)
{
	return (dir * 11400714819323198485ULL) >> 40 & (s->nbuckets - 1);
}

struct lf_dirindex_set *lf_dirindex_set_new(size_t max_bytes)
{
	struct lf_dirindex_set *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->nbuckets = 256;
	s->table = calloc(s->nbuckets, sizeof(*s->table));
	if (!s->table) {
		free(s);
		return NULL;
	}
	s->max_bytes = max_bytes;
	return s;
}

static void index_free(struct lf_dirindex *d)
{
	for (size_t i = 0; i < d->nbuckets; i++) {
		struct lf_dent *e = d->buckets[i], *n;

		for (; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	free(d->buckets);
	free(d);
}

void lf_dirindex_set_free(struct lf_dirindex_set *s)
{
	if (!s)
		return;
	while (s->lru_head)
		lf_dirindex_drop(s, s->lru_head->dir);
	free(s->table);
	free(s);
}

static void lru_unlink(struct lf_dirindex_set *s, struct lf_dirindex *d)
{
	if (d->lru_prev)
		d->lru_prev->lru_next = d->lru_next;
	else
		s->lru_head = d->lru_next;
	if (d->lru_next)
		d->lru_next->lru_prev = d->lru_prev;
	else
		s->lru_tail = d->lru_prev;
	d->lru_prev = d->lru_next = NULL;
}

static void lru_push(struct lf_dirindex_set *s, struct lf_dirindex *d)
{
	d->lru_prev = NULL;
	d->lru_next = s->lru_head;
	if (s->lru_head)
		s->lru_head->lru_prev = d;
	s->lru_head = d;
	if (!s->lru_tail)
		s->lru_tail = d;
}

struct lf_dirindex *lf_dirindex_get(struct lf_dirindex_set *s, uint64_t dir)
{
	struct lf_dirindex *d = s->table[dir_slot(s, dir)];

	while (d && d->dir != dir)
		d = d->hnext;
	if (d && s->lru_head != d) {
		lru_unlink(s, d);
		lru_push(s, d);
	}
	return d;
}

static void set_grow(struct lf_dirindex_set *s)
{
	size_t old = s->nbuckets;
	struct lf_dirindex **t = calloc(old * 2, sizeof(*t));
	struct lf_dirindex **ot = s->table;

	if (!t)
		return; /* keep the longer chains */
	s->table = t;
	s->nbuckets = old * 2;
	for (size_t i = 0; i < old; i++) {
		struct lf_dirindex *d = ot[i], *n;

		for (; d; d = n) {
			size_t k = dir_slot(s, d->dir);

			n = d->hnext;
			d->hnext = t[k];
			t[k] = d;
		}
	}
	free(ot);
}

struct lf_dirindex *lf_dirindex_create(struct lf_dirindex_set *s, uint64_t dir)
{
	struct lf_dirindex *d;
	size_t k;

	lf_dirindex_drop(s, dir);
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->dir = dir;
	d->nbuckets = 16;
	d->buckets = calloc(d->nbuckets, sizeof(*d->buckets));
	if (!d->buckets) {
		free(d);
		return NULL;
	}
	d->bytes = sizeof(*d) + d->nbuckets * sizeof(*d->buckets);
	s->bytes += d->bytes;
	if (s->count >= s->nbuckets)
		set_grow(s);
	k = dir_slot(s, dir);
	d->hnext = s->table[k];
	s->table[k] = d;
	s->count++;
	lru_push(s, d);
	return d;
}

void lf_dirindex_drop(struct lf_dirindex_set *s, uint64_t dir)
{
	struct lf_dirindex **pp = &s->table[dir_slot(s, dir)], *d;

	while (*pp && (*pp)->dir != dir)
		pp = &(*pp)->hnext;
	d = *pp;
	if (!d)
		return;
	*pp = d->hnext;
	s->count--;
	lru_unlink(s, d);
	s->bytes -= d->bytes;
	index_free(d);
}

void lf_dirindex_trim(struct lf_dirindex_set *s, uint64_t keep)
{
	struct lf_dirindex *d = s->lru_tail, *p;

	for (; d && s->bytes > s->max_bytes; d = p) {
		p = d->lru_prev;
		if (d->dir != keep)
			lf_dirindex_drop(s, d->dir);
	}
}

static void index_grow(struct lf_dirindex_set *s, struct lf_dirindex *d)
{
	size_t n = d->nbuckets * 2;
	struct lf_dent **b = calloc(n, sizeof(*b));

	if (!b)
		return;
	for (size_t i = 0; i < d->nbuckets; i++) {
		struct lf_dent *e = d->buckets[i], *nx;

		for (; e; e = nx) {
			nx = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(d->buckets);
	d->buckets = b;
	s->bytes += (n - d->nbuckets) * sizeof(*b);
	d->bytes += (n - d->nbuckets) * sizeof(*b);
	d->nbuckets = n;
}

static struct lf_dent **dent_find(struct lf_dirindex *d, const char *name,
				  size_t len);

int lf_dirindex_add(struct lf_dirindex_set *s, struct lf_dirindex *d,
		    const char *name, size_t len, uint64_t ino, uint32_t type,
		    uint64_t pos)
{
	uint64_t h = name_hash(name, len);
	struct lf_dent *e, **old = dent_find(d, name, len);
	size_t sz = sizeof(*e) + len;

	if (old) {
		if (pos == LF_DIRPOS_NONE)
			pos = (*old)->pos;
		(*old)->ino = ino;
		(*old)->type = type;
		(*old)->pos = pos;
		return 0;
	}
	e = malloc(sz);
	if (!e)
		return -ENOMEM;
	e->hash = h;
	e->ino = ino;
	e->pos = pos;
	e->type = type;
	e->len = (uint16_t)len;
	memcpy(e->name, name, len);
	e->next = d->buckets[h & (d->nbuckets - 1)];
	d->buckets[h & (d->nbuckets - 1)] = e;
	d->count++;
	d->bytes += sz;
	s->bytes += sz;
	if (d->count > d->nbuckets)
		index_grow(s, d);
	return 0;
}

static struct lf_dent **dent_find(struct lf_dirindex *d, const char *name,
				  size_t len)
{
	uint64_t h = name_hash(name, len);
	struct lf_dent **pp = &d->buckets[h & (d->nbuckets - 1)];

	for (; *pp; pp = &(*pp)->next) {
		if ((*pp)->hash == h && (*pp)->len == len &&
		    memcmp((*pp)->name, name, len) == 0)
			return pp;
	}
	return NULL;
}

void lf_dirindex_del(struct lf_dirindex_set *s, struct lf_dirindex *d,
		     const char *name, size_t len)
{
	struct lf_dent **pp = dent_find(d, name, len), *e;
	size_t sz;

	if (!pp)
		return;
	e = *pp;
	*pp = e->next;
	sz = sizeof(*e) + e->len;
	d->count--;
	d->bytes -= sz;
	s->bytes -= sz;
	free(e);
}

int lf_dirindex_find(struct lf_dirindex *d, const char *name, size_t len,
		     uint64_t *ino, uint32_t *type, uint64_t *pos)
{
	struct lf_dent **pp = dent_find(d, name, len);

	if (!pp)
		return -ENOENT;
	*ino = (*pp)->ino;
	*type = (*pp)->type;
	if (pos)
		*pos = (*pp)->pos;
	return 0;
}

uint64_t *lf_dirindex_hint(struct lf_dirindex *d)
{
	return &d->hint;
}
