/* idmap.h — per-mount uid/gid mapping between DISK ids and HOST ids.
 *
 * Ranges are written "DISK:HOST:COUNT" (as in user namespaces and
 * fuse-overlayfs); several ranges may be given, they must not overlap on
 * either side. An empty map is the identity. A DISK id outside every
 * range is presented as the overflow id 65534; a HOST id outside every
 * range cannot be stored: chown to it is -EINVAL and creating a file as
 * an unmapped id is -EOVERFLOW.
 * Pure data, no locking needed after setup.
 */
#ifndef LUNFS_IDMAP_H
#define LUNFS_IDMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LF_IDMAP_MAX   32
#define LF_OVERFLOW_ID 65534u

struct lf_idrange {
	uint32_t disk, host, count;
};

struct lf_idmap {
	struct lf_idrange r[LF_IDMAP_MAX];
	int n; /* 0 = identity */
};

void lf_idmap_init(struct lf_idmap *m);
/* Parses and adds one "DISK:HOST:COUNT"; -EINVAL with message. */
int lf_idmap_add(struct lf_idmap *m, const char *text, char *err,
		 size_t errlen);
/* DISK → HOST; unmapped → LF_OVERFLOW_ID. */
uint32_t lf_idmap_to_host(const struct lf_idmap *m, uint32_t disk);
/* HOST → DISK; false if the host id is outside every range. */
bool lf_idmap_to_disk(const struct lf_idmap *m, uint32_t host, uint32_t *disk);
/* "0:100000:65536,..." for status output; returns buf. */
char *lf_idmap_format(const struct lf_idmap *m, char *buf, size_t len);

#endif
