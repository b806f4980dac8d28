/* blockmount.c — a block volume presented as one regular file: the mount's
 * root is the file, its bytes are the LUN's bytes. Reads go through the
 * kernel page cache; writes are write-through (no writeback cache), so
 * fsync only has to send SYNCHRONIZE CACHE. The mounts of one bdev form a
 * group: a write through one drops the written range from the others'
 * page cache before it is answered. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuse/mount_int.h"
#include "iscsi/log.h"

#define MOD "fuse"

static struct lf_mount *mnt(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void block_stat(const struct lf_mount *m, struct stat *st)
{
	uint64_t size = lf_bdev_size(m->bdev);

	memset(st, 0, sizeof(*st));
	st->st_ino = FUSE_ROOT_ID;
	st->st_mode = S_IFREG | (m->opts.read_only ? 0440 : 0660);
	st->st_nlink = 1;
	st->st_uid = m->owner_uid;
	st->st_gid = m->owner_gid;
	st->st_size = (off_t)size;
	st->st_blocks = (blkcnt_t)(size / 512);
	st->st_blksize = 4096;
	st->st_atim = m->mtime;
	st->st_mtim = m->mtime;
	st->st_ctim = m->mtime;
}

static void blk_init(void *userdata, struct fuse_conn_info *conn)
{
	/* An O_TRUNC open must not zero the kernel's idea of the size. */
	lf_mount_init_conn(conn, false);
}

static void blk_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, ENOTDIR);
}

static void blk_getattr(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct stat st;

	block_stat(mnt(req), &st);
	fuse_reply_attr(req, &st, LF_FUSE_TIMEOUT);
}

/* A block device has a fixed size and the mount decides its owner. */
static void blk_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			int to_set, struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);
	struct stat st;

	if (to_set &
	    (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) &&
	    (uint64_t)attr->st_size != lf_bdev_size(m->bdev)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	block_stat(m, &st);
	fuse_reply_attr(req, &st, LF_FUSE_TIMEOUT);
}

static void blk_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);

	if ((fi->flags & O_ACCMODE) != O_RDONLY && m->opts.read_only) {
		fuse_reply_err(req, EROFS);
		return;
	}
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

/* Runs on the device's I/O thread. */
static void blk_read_done(void *opaque, int err)
{
	struct lf_iobuf *b = opaque;

	if (err < 0)
		fuse_reply_err(b->req, -err);
	else
		fuse_reply_buf(b->req, (char *)b->data + b->skip, b->len);
	lf_iobuf_put(b);
}

static void blk_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);
	uint64_t devsz = lf_bdev_size(m->bdev),
		 bs = lf_bdev_block_size(m->bdev);
	uint64_t start, end, len;
	struct lf_iobuf *b;
	int ret;

	if (off < 0 || (uint64_t)off >= devsz) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	len = size;
	if (len > devsz - (uint64_t)off)
		len = devsz - (uint64_t)off;
	start = (uint64_t)off / bs * bs;
	end = ((uint64_t)off + len + bs - 1) / bs * bs;
	b = lf_iobuf_get(m, end - start);
	if (!b) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	b->req = req;
	b->iov = (struct iovec){.iov_base = b->data, .iov_len = end - start};
	b->skip = (uint64_t)off - start;
	b->len = len;
	/* The reply leaves from the completion: no thread waits for it. */
	ret = lf_bdev_submit(m->bdev, LF_BDEV_READ, &b->iov, 1, start,
			     end - start, blk_read_done, b);
	if (ret < 0)
		blk_read_done(b, ret);
}

/* Read-modify-write of the partial blocks at either edge. */
static int write_unaligned(struct lf_mount *m, const char *data, uint64_t len,
			   uint64_t off)
{
	uint64_t bs = lf_bdev_block_size(m->bdev);
	uint64_t start = off / bs * bs;
	uint64_t end = (off + len + bs - 1) / bs * bs;
	char *buf = lf_mount_buf(m, end - start);
	int ret;

	if (!buf)
		return -ENOMEM;
	if (off != start) {
		ret = lf_bdev_pread(m->bdev, buf, bs, start);
		if (ret < 0)
			return ret;
	}
	if (off + len != end && (end - bs != start || off == start)) {
		ret = lf_bdev_pread(m->bdev, buf + (end - bs - start), bs,
				    end - bs);
		if (ret < 0)
			return ret;
	}
	memcpy(buf + (off - start), data, len);
	return lf_bdev_pwrite(m->bdev, buf, end - start, start);
}

static void blk_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		      size_t size, off_t off, struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);
	uint64_t devsz = lf_bdev_size(m->bdev),
		 bs = lf_bdev_block_size(m->bdev);
	uint64_t len = size;
	struct lf_op op;
	int ret;

	if (m->opts.read_only) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (off < 0 || (uint64_t)off >= devsz) {
		fuse_reply_err(req, size ? ENOSPC : 0);
		return;
	}
	if (len > devsz - (uint64_t)off)
		len = devsz - (uint64_t)off;
	lf_op_begin(m, &op, FUSE_ROOT_ID, 0);
	if ((uint64_t)off % bs == 0 && len % bs == 0) {
		pthread_rwlock_rdlock(&m->sv->rmw);
		ret = lf_bdev_pwrite(m->bdev, buf, len, (uint64_t)off);
		pthread_rwlock_unlock(&m->sv->rmw);
	} else {
		pthread_rwlock_wrlock(&m->sv->rmw);
		ret = write_unaligned(m, buf, len, (uint64_t)off);
		pthread_rwlock_unlock(&m->sv->rmw);
	}
	if (ret < 0) {
		fuse_reply_err(req, -ret);
	} else {
		struct lf_inval iv = {
			.ino = FUSE_ROOT_ID, .off = off, .len = (off_t)len};

		lf_op_notify(m, &op, &iv, 1);
		fuse_reply_write(req, len);
	}
	lf_op_end(m, &op);
}

static void blk_ok(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

/* Writes were acknowledged by the device already; what fsync owes is the
 * device's own cache. */
static void blk_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		      struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);
	int ret = m->opts.read_only ? 0 : lf_bdev_flush(m->bdev);

	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

static void blk_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st;

	memset(&st, 0, sizeof(st));
	st.f_bsize = 4096;
	st.f_frsize = 4096;
	st.f_blocks = lf_bdev_size(mnt(req)->bdev) / 4096;
	st.f_files = 1;
	st.f_namemax = 255;
	fuse_reply_statfs(req, &st);
}

static const struct fuse_lowlevel_ops block_ops = {
	.init = blk_init,
	.lookup = blk_lookup,
	.getattr = blk_getattr,
	.setattr = blk_setattr,
	.open = blk_open,
	.read = blk_read,
	.write = blk_write,
	.release = blk_ok,
	.fsync = blk_fsync,
	.statfs = blk_statfs,
};

int lf_mount_block(struct lf_served *sv, const char *path,
		   const struct lf_mount_opts *o, struct lf_mount **out,
		   char *err, size_t errlen)
{
	struct lf_bdev *b = sv->bdev;
	struct lf_mount *m;
	int ret;

	*out = NULL;
	if (!b) {
		snprintf(err, errlen, "%s: not a block volume", path);
		return -EINVAL;
	}
	m = lf_mount_alloc(LF_MOUNT_BLOCK, o);
	if (!m) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	m->sv = sv; /* constant; membership is sv->mounts */
	m->bdev = lf_bdev_ref(b);
	if (lf_bdev_info(b)->read_only)
		m->opts.read_only = true;
	/* With an id map (a user-namespaced container) the device belongs
	 * to the container's root, as a file it made would; else to us. */
	m->owner_uid = m->opts.uidmap.n ? lf_idmap_to_host(&m->opts.uidmap, 0)
					: geteuid();
	m->owner_gid = m->opts.gidmap.n ? lf_idmap_to_host(&m->opts.gidmap, 0)
					: getegid();
	if (m->opts.fsgroup >= 0)
		m->owner_gid = (uint32_t)m->opts.fsgroup;
	clock_gettime(CLOCK_REALTIME, &m->mtime);
	m->desc = strdup(lf_bdev_desc(b));
	if (!m->desc) {
		snprintf(err, errlen, "%s: out of memory", path);
		ret = -ENOMEM;
		goto out_free;
	}
	ret = lf_mount_start(m, path, false, &block_ops, sizeof(block_ops), err,
			     errlen);
	if (ret < 0)
		goto out_free;
	lf_served_link_mount(sv, m);
	*out = m;
	return 0;

out_free:
	lf_bdev_unref(m->bdev);
	lf_mount_free(m);
	return ret;
}
