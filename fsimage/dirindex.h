/* dirindex.h — in-memory name index of directories (name → ino, type).
 *
 * Built by fsops.c on the first lookup in a directory, kept up to date by
 * every change it makes, and evicted least-recently-used first when the
 * whole set grows past its memory bound. Not thread-safe: the volume lock
 * guards it.
 */
#ifndef LUNFS_DIRINDEX_H
#define LUNFS_DIRINDEX_H

#include <stddef.h>
#include <stdint.h>

struct lf_dirindex_set;
struct lf_dirindex;

/* Where an entry sits in the directory: block index << 32 | byte offset
 * in the block (the readdir position); NONE when not known. */
#define LF_DIRPOS_NONE UINT64_MAX

struct lf_dirindex_set *lf_dirindex_set_new(size_t max_bytes);
void lf_dirindex_set_free(struct lf_dirindex_set *s);

/* The index of dir, or NULL if none is built; marks it recently used. */
struct lf_dirindex *lf_dirindex_get(struct lf_dirindex_set *s, uint64_t dir);
/* An empty index for dir (replacing any old one); NULL on ENOMEM. */
struct lf_dirindex *lf_dirindex_create(struct lf_dirindex_set *s, uint64_t dir);
void lf_dirindex_drop(struct lf_dirindex_set *s, uint64_t dir);
/* Evict least recently used indexes (never `keep`) down to the bound. */
void lf_dirindex_trim(struct lf_dirindex_set *s, uint64_t keep);

/* Adds or replaces name. pos NONE keeps the position an existing entry of
 * that name had (an entry changed in place does not move). */
int lf_dirindex_add(struct lf_dirindex_set *s, struct lf_dirindex *d,
		    const char *name, size_t len, uint64_t ino, uint32_t type,
		    uint64_t pos);
void lf_dirindex_del(struct lf_dirindex_set *s, struct lf_dirindex *d,
		     const char *name, size_t len);
/* 0 with the entry in *ino, *type and (if non-NULL) *pos, or -ENOENT. */
int lf_dirindex_find(struct lf_dirindex *d, const char *name, size_t len,
		     uint64_t *ino, uint32_t *type, uint64_t *pos);
/* The directory block where the next new entry is tried first. */
uint64_t *lf_dirindex_hint(struct lf_dirindex *d);

#endif
