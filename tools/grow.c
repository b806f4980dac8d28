/* grow.c — lunfs resize on one volume (grow.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fsimage/resize.h"
#include "tools/grow.h"

/* lf_vol_grow()'s grower, and the offline one. */
static int grow_fs(void *ctx, uint64_t new_bytes, char *err, size_t errlen)
{
	const struct lf_grow *g = ctx;
	char out[512] = "";
	int rc = g->resize2fs(g->ctx, g->bdev, new_bytes, out, sizeof(out));

	if (rc == 0)
		return 0;
	snprintf(err, errlen, "%s: resize2fs failed (%s): %s", g->key,
		 rc < 0 ? strerror(-rc) : "exit status", out);
	return rc < 0 ? rc : -EIO;
}

/* READ CAPACITY again; *lun is the LUN's size (unchanged when the backend
 * cannot tell). */
static int refresh_lun(const struct lf_grow *g, uint64_t *lun, char *err,
		       size_t errlen)
{
	uint64_t old, now;
	int r = lf_bdev_refresh_size(g->bdev, &old, &now);

	*lun = lf_bdev_size(g->bdev);
	if (r == -EINVAL)
		snprintf(err, errlen,
			 "%s: the LUN shrank from %llu to %llu bytes: "
			 "shrinking is not supported",
			 g->key, (unsigned long long)old,
			 (unsigned long long)now);
	else if (r < 0 && r != -ENOTSUP)
		snprintf(err, errlen, "%s: READ CAPACITY failed: %s", g->key,
			 strerror(-r));
	else
		r = 0;
	return r;
}

int lf_grow_open(const struct lf_grow *g, struct lf_vol *vol,
		 struct lf_served *sv, uint64_t *lun, uint64_t *fs, char *err,
		 size_t errlen)
{
	int r = refresh_lun(g, lun, err, errlen);

	if (r)
		return r;
	if (!vol) {
		if (g->size && g->size != *lun) {
			snprintf(err, errlen,
				 "%s: a block volume is as large as its LUN "
				 "(%llu bytes); --size does not apply",
				 g->key, (unsigned long long)*lun);
			return -EINVAL;
		}
		lf_served_size_changed(sv);
		*fs = *lun;
		return 0;
	}
	r = lf_vol_grow(vol, g->size ? g->size : *lun, grow_fs, (void *)g, err,
			errlen);
	lf_vol_geometry(vol, fs, NULL, NULL);
	return r;
}

int lf_grow_closed(const struct lf_grow *g, bool block, uint64_t *lun,
		   uint64_t *fs, char *err, size_t errlen)
{
	uint64_t size = g->size;
	bool clean;
	int r = refresh_lun(g, lun, err, errlen);

	*fs = *lun;
	if (r || block)
		return r;
	r = lf_ext_peek(g->bdev, fs, &clean);
	if (r == -EMEDIUMTYPE) {
		snprintf(err, errlen, "%s holds no ext filesystem to grow",
			 g->key);
		return r;
	}
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot read it: %s", g->key,
			 strerror(-r));
		return r;
	}
	if (!size)
		size = *lun;
	if (size < *fs) {
		snprintf(err, errlen,
			 "%s: the filesystem has %llu bytes; shrinking it to "
			 "%llu is not supported",
			 g->key, (unsigned long long)*fs,
			 (unsigned long long)size);
		return -EINVAL;
	}
	if (size > *lun) {
		snprintf(err, errlen,
			 "%s: %llu bytes is more than the LUN holds (%llu)",
			 g->key, (unsigned long long)size,
			 (unsigned long long)*lun);
		return -ENOSPC;
	}
	if (!clean) {
		snprintf(err, errlen,
			 "%s was not unmounted cleanly: run 'lunfs fsck' on "
			 "it first",
			 g->key);
		return -EUCLEAN;
	}
	if (size / 4096 <= *fs / 4096)
		return 0; /* already that size */
	if (g->before_write) {
		r = g->before_write(g->ctx, err, errlen);
		if (r)
			return r;
	}
	r = grow_fs((void *)g, size, err, errlen);
	if (r == 0)
		lf_ext_peek(g->bdev, fs, &clean);
	return r;
}
