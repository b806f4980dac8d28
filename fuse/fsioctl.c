/* fsioctl.c — ioctls on a filesystem mount. Only FITRIM, which fstrim and
 * fstrim.timer send to a mount's root: it unmaps the free space
 * (fsimage/trim.h) and answers with the bytes unmapped in range.len, as
 * ext4 does. Like ext4 it is for the host's root only (ext4 asks for
 * CAP_SYS_ADMIN; FUSE tells us the caller's uid, not its capabilities),
 * and for the daemon's own user when lunfsd runs rootless. Everything
 * else is ENOTTY, which is what the kernel said before this op existed.
 * On a view behind idmapped binds the kernel sends no caller ids: the
 * host fsuid then comes from /proc. */
#include <errno.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fsimage/trim.h"
#include "fuse/mount_int.h"

/* The caller's host fsuid: FUSE's, or, on a view behind idmapped binds
 * (where the kernel sends no ids), what /proc says. UINT32_MAX if not
 * known. */
static uint32_t caller_uid(const struct fuse_ctx *ctx)
{
	char p[64], line[256];
	unsigned a, b, c, d;
	uint32_t uid = UINT32_MAX;
	FILE *f;

	if (ctx->uid != (uid_t)-1)
		return ctx->uid;
	snprintf(p, sizeof(p), "/proc/%d/status", (int)ctx->pid);
	f = fopen(p, "re");
	if (!f)
		return uid;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Uid: %u %u %u %u", &a, &b, &c, &d) == 4)
			uid = d;
	fclose(f);
	return uid;
}

void lf_fs_op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		    struct fuse_file_info *fi, unsigned flags,
		    const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
	struct lf_mount *m = fuse_req_userdata(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fstrim_range range;
	uint64_t trimmed = 0;
	uint32_t uid;
	int r;

	(void)ino;
	(void)arg;
	(void)fi;
	if (cmd != FITRIM || (flags & FUSE_IOCTL_COMPAT)) {
		fuse_reply_err(req, ENOTTY);
		return;
	}
	if (in_bufsz < sizeof(range) || out_bufsz < sizeof(range)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	uid = caller_uid(ctx);
	if (uid != 0 && uid != geteuid()) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (m->opts.read_only) {
		fuse_reply_err(req, EROFS);
		return;
	}
	memcpy(&range, in_buf, sizeof(range));
	r = lf_vol_trim(m->vol, range.start, range.len, range.minlen, &trimmed);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	range.len = trimmed;
	fuse_reply_ioctl(req, 0, &range, sizeof(range));
}
