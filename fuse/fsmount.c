/* fsmount.c — a filesystem volume presented through FUSE: the low-level
 * ops over fsops.h, the id-mapped and fsGroup views, lookup counting, and
 * the cache invalidation of a volume's other mounts. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fsimage/fsops.h"
#include "fuse/aclmap.h"
#include "fuse/mount_int.h"
#include "iscsi/log.h"

#define MOD "fuse"

static fuse_ino_t to_fuse(uint64_t ino)
{
	return ino == LF_ROOT_INO ? FUSE_ROOT_ID : (fuse_ino_t)ino;
}

static uint64_t to_disk(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? LF_ROOT_INO : (uint64_t)ino;
}

/* ---- invalidation of the other mounts ---- */

static struct lf_inval iv_attr(uint64_t ino)
{
	return (struct lf_inval){.ino = to_fuse(ino), .off = -1};
}

static struct lf_inval iv_data(uint64_t ino, off_t off, off_t len)
{
	return (struct lf_inval){.ino = to_fuse(ino), .off = off, .len = len};
}

static struct lf_inval iv_entry(fuse_ino_t parent, const char *name)
{
	return (struct lf_inval){.ino = parent, .name = name};
}

/* ---- lookup counts ---- */

static size_t home(uint64_t ino, size_t cap)
{
	return (size_t)((ino * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static int icount_grow(struct lf_icount *ic)
{
	size_t ncap = ic->cap ? ic->cap * 2 : 64;
	uint64_t *nino = calloc(ncap, sizeof(*nino));
	uint64_t *ncnt = calloc(ncap, sizeof(*ncnt));

	if (!nino || !ncnt) {
		free(nino);
		free(ncnt);
		return -ENOMEM;
	}
	for (size_t i = 0; i < ic->cap; i++) {
		size_t j;

		if (!ic->ino[i])
			continue;
		for (j = home(ic->ino[i], ncap); nino[j];
		     j = (j + 1) & (ncap - 1))
			;
		nino[j] = ic->ino[i];
		ncnt[j] = ic->cnt[i];
	}
	free(ic->ino);
	free(ic->cnt);
	ic->ino = nino;
	ic->cnt = ncnt;
	ic->cap = ncap;
	return 0;
}

static int icount_add(struct lf_icount *ic, uint64_t ino)
{
	size_t i;

	if ((ic->used + 1) * 2 > ic->cap && icount_grow(ic) < 0)
		return -ENOMEM;
	for (i = home(ino, ic->cap); ic->ino[i] && ic->ino[i] != ino;
	     i = (i + 1) & (ic->cap - 1))
		;
	if (!ic->ino[i]) {
		ic->ino[i] = ino;
		ic->cnt[i] = 0;
		ic->used++;
	}
	return ic->cnt[i]++ == 0;
}

/* Returns how much was actually held (never more than n). */
static uint64_t icount_sub(struct lf_icount *ic, uint64_t ino, uint64_t n)
{
	size_t mask = ic->cap - 1, i, j;

	if (!ic->cap)
		return 0;
	for (i = home(ino, ic->cap); ic->ino[i] && ic->ino[i] != ino;
	     i = (i + 1) & mask)
		;
	if (!ic->ino[i])
		return 0;
	if (ic->cnt[i] > n) {
		ic->cnt[i] -= n;
		return n;
	}
	n = ic->cnt[i];
	/* Backward-shift deletion keeps probe chains unbroken. */
	for (j = i;;) {
		size_t k;

		j = (j + 1) & mask;
		if (!ic->ino[j])
			break;
		k = home(ic->ino[j], ic->cap);
		if ((j > i && (k <= i || k > j)) ||
		    (j < i && k <= i && k > j)) {
			ic->ino[i] = ic->ino[j];
			ic->cnt[i] = ic->cnt[j];
			i = j;
		}
	}
	ic->ino[i] = 0;
	ic->cnt[i] = 0;
	ic->used--;
	return n;
}

/* The root is never counted: the kernel holds it for the mount's life.
 * Returns 1 if this mount's kernel did not hold the inode before, 0 if it
 * did, or -ENOMEM. */
static int count_lookup(struct lf_mount *m, uint64_t ino)
{
	int ret;

	if (ino == LF_ROOT_INO)
		return 0;
	pthread_mutex_lock(&m->ilock);
	ret = icount_add(&m->icount, ino);
	pthread_mutex_unlock(&m->ilock);
	if (ret >= 0)
		lf_fs_iget(m->vol, ino);
	return ret;
}

static void forget_one(struct lf_mount *m, uint64_t ino, uint64_t n)
{
	if (ino == LF_ROOT_INO)
		return;
	pthread_mutex_lock(&m->ilock);
	n = icount_sub(&m->icount, ino, n);
	pthread_mutex_unlock(&m->ilock);
	if (n)
		lf_fs_iput(m->vol, ino, n);
}

void lf_mount_drop_counts(struct lf_mount *m)
{
	struct lf_icount *ic = &m->icount;

	for (size_t i = 0; i < ic->cap; i++)
		if (ic->ino[i] && ic->cnt[i])
			lf_fs_iput(m->vol, ic->ino[i], ic->cnt[i]);
	free(ic->ino);
	free(ic->cnt);
	memset(ic, 0, sizeof(*ic));
}

/* ---- presentation ---- */

static void present(const struct lf_mount *m, const struct lf_stat *s,
		    struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = to_fuse(s->ino);
	st->st_mode = s->mode;
	st->st_nlink = s->nlink;
	st->st_uid = lf_idmap_to_host(&m->opts.uidmap, s->uid);
	st->st_gid = lf_idmap_to_host(&m->opts.gidmap, s->gid);
	st->st_rdev = s->rdev;
	st->st_size = (off_t)s->size;
	st->st_blocks = (blkcnt_t)s->blocks;
	st->st_blksize = 4096;
	st->st_atim = s->atime;
	st->st_mtim = s->mtime;
	st->st_ctim = s->ctime;
	/* fsGroup as a view: what SetVolumeOwnership would have written. */
	if (m->opts.fsgroup >= 0) {
		st->st_gid = (gid_t)m->opts.fsgroup;
		/* The plugin: mode |= 0660 (0440 read-only), directories
		 * also |= 0110 and setgid; symlinks keep their mode. */
		if (!S_ISLNK(s->mode))
			st->st_mode |= m->opts.read_only ? 0440 : 0660;
		if (S_ISDIR(s->mode))
			st->st_mode |= 0110 | S_ISGID;
	}
}

/*
 * fresh: the inode is new to this mount's kernel. The kernel takes the
 * attributes of a new inode as they come, and a notification another
 * mount sends while this reply is on its way finds no inode to
 * invalidate: such attributes could stay stale for the whole timeout.
 * When the volume has other mounts they are therefore given no lifetime;
 * the getattr that follows is guarded by the kernel's attr_version.
 */
static void fill_entry(const struct lf_mount *m, const struct lf_stat *s,
		       int fresh, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = to_fuse(s->ino);
	e->generation = s->generation;
	present(m, s, &e->attr);
	e->attr_timeout = LF_FUSE_TIMEOUT;
	if (fresh > 0 && __atomic_load_n(&m->sv->nmounts, __ATOMIC_RELAXED) > 1)
		e->attr_timeout = 0;
	e->entry_timeout = LF_FUSE_TIMEOUT;
}

/* Counted before the reply: a forget may follow it at once. */
static void reply_entry(struct lf_mount *m, fuse_req_t req,
			const struct lf_stat *s)
{
	struct fuse_entry_param e;
	int fresh = count_lookup(m, s->ino);

	if (fresh < 0) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fill_entry(m, s, fresh, &e);
	if (fuse_reply_entry(req, &e) != 0)
		forget_one(m, s->ino, 1);
}

static int new_owner(const struct lf_mount *m, fuse_req_t req,
		     struct lf_owner *o)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	/* Under FUSE_ALLOW_IDMAP the kernel sends the creator's ids, mapped
	 * through the idmapped mount used, with every request that creates
	 * an inode, and refuses (EOVERFLOW) a creator it cannot map: -1
	 * here would be a kernel that breaks that promise. */
	if (ctx->uid == (uid_t)-1 || ctx->gid == (gid_t)-1)
		return -EOVERFLOW;
	if (!lf_idmap_to_disk(&m->opts.uidmap, ctx->uid, &o->uid))
		return -EOVERFLOW;
	o->gid_fixed = false;
	/* The kernel leaves the umask to us (FUSE_CAP_DONT_MASK): a default
	 * ACL of the parent replaces it. */
	o->umask = ctx->umask;
	if (m->opts.fsgroup >= 0 &&
	    lf_idmap_to_disk(&m->opts.gidmap, (uint32_t)m->opts.fsgroup,
			     &o->gid)) {
		o->gid_fixed = true;
		return 0;
	}
	if (!lf_idmap_to_disk(&m->opts.gidmap, ctx->gid, &o->gid))
		return -EOVERFLOW;
	return 0;
}

static struct lf_mount *mnt(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Modifying ops on a read-only mount. The kernel refuses most already
 * ("ro"); this covers what it lets through. */
static bool refuse_ro(struct lf_mount *m, fuse_req_t req)
{
	if (!m->opts.read_only)
		return false;
	fuse_reply_err(req, EROFS);
	return true;
}

/* ---- ops ---- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	lf_mount_init_conn(conn, true);
	/* Modes arrive unmasked, with the caller's umask beside them, so
	 * that a default ACL can decide instead (fsops' create). */
	if (conn->capable & FUSE_CAP_DONT_MASK)
		conn->want |= FUSE_CAP_DONT_MASK;
	/* Not FUSE_CAP_POSIX_ACL, which would have the kernel evaluate ACLs
	 * in its permission checks: Linux 6.18 was measured never to cache
	 * the ACL of a FUSE mount's root, so every path walk through the
	 * root by a non-owner would cost a GETXATTR round trip, as would
	 * the first check on a directory after each change in it (README,
	 * Not finished). */
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct lf_mount *m = mnt(req);
	struct lf_stat st;
	int ret = lf_fs_lookup(m->vol, to_disk(parent), name, &st);

	if (ret == -ENOENT) {
		/* A negative entry, cached like the others: whatever makes
		 * the name appear through another mount invalidates it
		 * (created(), op_create, op_rename), and that notification
		 * waits for this lookup's reply (the kernel holds the
		 * directory locked meanwhile), so it cannot be overtaken.
		 * Saves repeated lookups of missing names (search paths,
		 * probes); a new name is still looked up once. */
		struct fuse_entry_param e = {.entry_timeout = LF_FUSE_TIMEOUT};

		fuse_reply_entry(req, &e);
	} else if (ret < 0) {
		fuse_reply_err(req, -ret);
	} else {
		reply_entry(m, req, &st);
	}
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_one(mnt(req), to_disk(ino), nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	struct lf_mount *m = mnt(req);

	for (size_t i = 0; i < count; i++)
		forget_one(m, to_disk(forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);
	struct lf_stat s;
	struct stat st;
	int ret = lf_fs_getattr(m->vol, to_disk(ino), &s);

	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	present(m, &s, &st);
	fuse_reply_attr(req, &st, LF_FUSE_TIMEOUT);
}

static bool killpriv_v2(struct lf_mount *m)
{
	return atomic_load_explicit(&m->killpriv_v2, memory_order_relaxed);
}

struct caller {
	struct lf_mount *m;
	fuse_req_t req;
};

/* Whether the caller is in the group the file shows (an fsGroup view
 * shows that group). Asked only of a setgid file without group execute,
 * a bit that gives no privilege (exec sets no group without group
 * execute).
 *
 * A mount that allows idmapped binds (FUSE_ALLOW_IDMAP) is not told the
 * caller's ids outside of inode creation (they are -1): the view reads
 * them from /proc and maps them through its binds (lf_view_caller). */
static bool caller_in_group(void *opaque, uint32_t disk_gid)
{
	const struct caller *c = opaque;
	const struct fuse_ctx *ctx = fuse_req_ctx(c->req);
	gid_t gid = c->m->opts.fsgroup >= 0
			    ? (gid_t)c->m->opts.fsgroup
			    : lf_idmap_to_host(&c->m->opts.gidmap, disk_gid);
	gid_t groups[64];
	int n;

	if (ctx->gid == (gid_t)-1)
		return lf_view_caller(c->m, ctx->pid, false,
				      c->m->opts.fsgroup >= 0
					      ? (uint32_t)c->m->opts.fsgroup
					      : disk_gid);
	if (ctx->gid == gid)
		return true;
	n = fuse_req_getgroups(c->req, 64, groups);
	for (int i = 0; i < n && i < 64; i++)
		if (groups[i] == gid)
			return true;
	return false; /* unknown groups: drop it, as the safe side */
}

/* A chown keeps setgid for a member of the file's group or for root, as
 * the kernel's in_group_or_capable(); under FUSE_ALLOW_IDMAP see
 * caller_in_group. */
static bool caller_in_group_or_root(void *opaque, uint32_t disk_gid)
{
	const struct caller *c = opaque;
	const struct fuse_ctx *ctx = fuse_req_ctx(c->req);
	bool root = ctx->uid == (uid_t)-1
			    ? lf_view_caller(c->m, ctx->pid, true, 0)
			    : ctx->uid == 0;

	return root || caller_in_group(opaque, disk_gid);
}

/* Under FUSE_HANDLE_KILLPRIV_V2 (devio.c) the kernel leaves dropping
 * setuid, setgid and security.capability on write and truncate to us, and
 * does not expect the mode to change: when it did, this kernel's cached
 * mode, which exec trusts, is dropped as well. The other mounts hear of it
 * through the handler's own notification. */
static int kill_privs(struct lf_mount *m, fuse_req_t req, fuse_ino_t ino,
		      bool suidgid)
{
	struct caller c = {m, req};
	int r;

	if (!killpriv_v2(m))
		return 0;
	r = lf_fs_killpriv(m->vol, to_disk(ino), suidgid, caller_in_group, &c);
	if (r > 0) {
		fuse_lowlevel_notify_inval_inode(m->se, ino, -1, 0);
		r = 0;
	}
	return r;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);
	struct caller c = {m, req};
	bool kill, ours; /* ours: lunfs drops the privileges (killpriv_v2) */
	struct lf_setattr sa = {0};
	struct lf_op op;
	unsigned what = 0;
	struct lf_stat s;
	struct stat st;
	int ret;

	if (refuse_ro(m, req))
		return;
	if (to_set & FUSE_SET_ATTR_MODE) {
		what |= LF_SET_MODE;
		sa.mode = attr->st_mode & 07777;
	}
	if (to_set & FUSE_SET_ATTR_UID) {
		what |= LF_SET_UID;
		if (!lf_idmap_to_disk(&m->opts.uidmap, attr->st_uid, &sa.uid)) {
			fuse_reply_err(req, EINVAL);
			return;
		}
	}
	if (to_set & FUSE_SET_ATTR_GID) {
		what |= LF_SET_GID;
		if (!lf_idmap_to_disk(&m->opts.gidmap, attr->st_gid, &sa.gid)) {
			fuse_reply_err(req, EINVAL);
			return;
		}
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		what |= LF_SET_SIZE;
		sa.size = (uint64_t)attr->st_size;
	}
	if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
		what |= LF_SET_ATIME_NOW;
	} else if (to_set & FUSE_SET_ATTR_ATIME) {
		what |= LF_SET_ATIME;
		sa.atime = attr->st_atim;
	}
	if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
		what |= LF_SET_MTIME_NOW;
	} else if (to_set & FUSE_SET_ATTR_MTIME) {
		what |= LF_SET_MTIME;
		sa.mtime = attr->st_mtim;
	}
	if (to_set & FUSE_SET_ATTR_CTIME) {
		what |= LF_SET_CTIME;
		sa.ctime = attr->st_ctim;
	}
	/* libfuse passes FATTR_KILL_SUIDGID on as FUSE_SET_ATTR_KILL_SUID.
	 * Under FUSE_HANDLE_KILLPRIV_V2 it comes with every chown and with a
	 * truncate by a caller without CAP_FSETID, and lunfs drops setuid and
	 * setgid by the kernel's rules; truncate and chown also drop file
	 * capabilities. Otherwise the kernel decided already. The reply
	 * carries the result. */
	kill = to_set & (FUSE_SET_ATTR_KILL_SUID | FUSE_SET_ATTR_KILL_SGID |
			 FUSE_SET_ATTR_KILL_PRIV);
	ours = killpriv_v2(m) &&
	       (what & (LF_SET_SIZE | LF_SET_UID | LF_SET_GID));
	if (kill && !ours)
		what |= LF_SET_KILL_SUID;

	lf_op_begin(m, &op, ino, 0);
	ret = 0;
	if (ours)
		ret = lf_fs_killpriv(m->vol, to_disk(ino), kill,
				     (what & (LF_SET_UID | LF_SET_GID))
					     ? caller_in_group_or_root
					     : caller_in_group,
				     &c);
	if (ret >= 0)
		ret = lf_fs_setattr(m->vol, to_disk(ino), what, &sa, &s);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
	} else {
		struct lf_inval iv = (what & LF_SET_SIZE) ? iv_data(s.ino, 0, 0)
							  : iv_attr(s.ino);

		lf_op_notify(m, &op, &iv, 1);
		present(m, &s, &st);
		fuse_reply_attr(req, &st, LF_FUSE_TIMEOUT);
	}
	lf_op_end(m, &op);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	int ret = lf_fs_readlink(mnt(req)->vol, to_disk(ino), buf, sizeof(buf));

	if (ret < 0)
		fuse_reply_err(req, -ret);
	else if ((size_t)ret >= sizeof(buf))
		fuse_reply_err(req, ENAMETOOLONG);
	else
		fuse_reply_readlink(req, buf);
}

/* The other mounts' view of the directory changes before the reply. */
static void created(struct lf_mount *m, fuse_req_t req, struct lf_op *op,
		    int ret, fuse_ino_t parent, const char *name,
		    const struct lf_stat *s)
{
	if (ret < 0) {
		fuse_reply_err(req, -ret);
	} else {
		struct lf_inval iv[] = {
			iv_entry(parent, name), iv_attr(to_disk(parent)),
			iv_attr(s->ino), /* link count, for link() */
		};

		lf_op_notify(m, op, iv, 3);
		reply_entry(m, req, s);
	}
	lf_op_end(m, op);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	struct lf_mount *m = mnt(req);
	struct lf_owner o;
	struct lf_stat s;
	struct lf_op op;
	int ret;

	if (refuse_ro(m, req))
		return;
	lf_op_begin(m, &op, parent, 0);
	ret = new_owner(m, req, &o);
	if (ret == 0)
		ret = lf_fs_mknod(m->vol, to_disk(parent), name, mode, rdev, &o,
				  &s);
	created(m, req, &op, ret, parent, name, &s);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct lf_mount *m = mnt(req);
	struct lf_owner o;
	struct lf_stat s;
	struct lf_op op;
	int ret;

	if (refuse_ro(m, req))
		return;
	lf_op_begin(m, &op, parent, 0);
	ret = new_owner(m, req, &o);
	if (ret == 0)
		ret = lf_fs_mkdir(m->vol, to_disk(parent), name,
				  (mode & 07777) | S_IFDIR, &o, &s);
	created(m, req, &op, ret, parent, name, &s);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	struct lf_mount *m = mnt(req);
	struct lf_owner o;
	struct lf_stat s;
	struct lf_op op;
	int ret;

	if (refuse_ro(m, req))
		return;
	lf_op_begin(m, &op, parent, 0);
	ret = new_owner(m, req, &o);
	if (ret == 0)
		ret = lf_fs_symlink(m->vol, to_disk(parent), name, link, &o,
				    &s);
	created(m, req, &op, ret, parent, name, &s);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	struct lf_mount *m = mnt(req);
	struct lf_stat s;
	struct lf_op op;
	int ret;

	if (refuse_ro(m, req))
		return;
	lf_op_begin(m, &op, newparent, ino);
	ret = lf_fs_link(m->vol, to_disk(ino), to_disk(newparent), newname, &s);
	created(m, req, &op, ret, newparent, newname, &s);
}

static void removed(struct lf_mount *m, fuse_req_t req, struct lf_op *op,
		    int ret, fuse_ino_t parent, const char *name, uint64_t ino)
{
	if (ret == 0) {
		struct lf_inval iv[] = {
			iv_entry(parent, name),
			iv_attr(to_disk(parent)),
			iv_attr(ino),
		};

		lf_op_notify(m, op, iv, ino ? 3 : 2);
	}
	fuse_reply_err(req, ret < 0 ? -ret : 0);
	lf_op_end(m, op);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct lf_mount *m = mnt(req);
	uint64_t ino = 0;
	struct lf_op op;
	int ret;

	if (refuse_ro(m, req))
		return;
	lf_op_begin(m, &op, parent, 0);
	ret = lf_fs_unlink(m->vol, to_disk(parent), name, &ino);
	removed(m, req, &op, ret, parent, name, ino);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct lf_mount *m = mnt(req);
	uint64_t ino = 0;
	struct lf_op op;
	int ret;

	if (refuse_ro(m, req))
		return;
	lf_op_begin(m, &op, parent, 0);
	ret = lf_fs_rmdir(m->vol, to_disk(parent), name, &ino);
	removed(m, req, &op, ret, parent, name, ino);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	struct lf_mount *m = mnt(req);
	uint64_t replaced = 0;
	struct lf_op op;
	int ret;

	if (refuse_ro(m, req))
		return;
	lf_op_begin(m, &op, parent, newparent);
	ret = lf_fs_rename(m->vol, to_disk(parent), name, to_disk(newparent),
			   newname, flags, &replaced);
	if (ret == 0) {
		struct lf_inval iv[] = {
			iv_entry(parent, name),	  iv_entry(newparent, newname),
			iv_attr(to_disk(parent)), iv_attr(to_disk(newparent)),
			iv_attr(replaced),
		};

		lf_op_notify(m, &op, iv, replaced ? 5 : 4);
	}
	fuse_reply_err(req, ret < 0 ? -ret : 0);
	lf_op_end(m, &op);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);
	bool writes = (fi->flags & O_ACCMODE) != O_RDONLY;
	bool trunc = writes && (fi->flags & O_TRUNC);
	struct lf_op op;
	int ret;

	if (writes && refuse_ro(m, req))
		return;
	if (trunc)
		lf_op_begin(m, &op, ino, 0);
	ret = lf_fs_open(m->vol, to_disk(ino), fi->flags);
	if (ret >= 0 && trunc)
		ret = kill_privs(m, req, ino, lf_devio_kill_suidgid());
	if (ret < 0) {
		fuse_reply_err(req, -ret);
	} else {
		struct lf_inval iv = iv_data(to_disk(ino), 0, 0);

		if (trunc)
			lf_op_notify(m, &op, &iv, 1);
		/* Other mounts' changes reach this kernel as
		 * invalidations, so its page cache stays valid across
		 * opens. */
		fi->keep_cache = 1;
		fuse_reply_open(req, fi);
	}
	if (trunc)
		lf_op_end(m, &op);
}

/* Runs on the device's I/O thread, or inline. */
static void read_done(void *opaque, ssize_t n)
{
	struct lf_iobuf *b = opaque;

	if (n < 0)
		fuse_reply_err(b->req, (int)-n);
	else
		fuse_reply_buf(b->req, b->data, (size_t)n);
	lf_iobuf_put(b);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct lf_iobuf *b = lf_iobuf_get(mnt(req), size);

	if (!b) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	b->req = req;
	lf_fs_read_async(mnt(req)->vol, to_disk(ino), b->data, size,
			 (uint64_t)off, read_done, b);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);
	struct lf_op op;
	ssize_t n;

	if (refuse_ro(m, req))
		return;
	lf_op_begin(m, &op, ino, 0);
	n = kill_privs(m, req, ino, lf_devio_kill_suidgid());
	if (n == 0)
		n = lf_fs_write(m->vol, to_disk(ino), buf, size, (uint64_t)off);
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
	} else {
		struct lf_inval iv = iv_data(to_disk(ino), off, (off_t)n);

		if (n > 0)
			lf_op_notify(m, &op, &iv, 1);
		fuse_reply_write(req, (size_t)n);
	}
	lf_op_end(m, &op);
}

static void op_ok(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	int ret = lf_fs_fsync(mnt(req)->vol, to_disk(ino), datasync != 0);

	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

/* Entries are gathered under the volume lock (inside lf_fs_readdir) and
 * replied after it, since attributes for readdirplus need fsops again. */
struct dent {
	uint64_t ino, next;
	uint32_t type;
	uint32_t namelen;
	char name[];
};

struct dir_collect {
	fuse_req_t req;
	bool plus;
	size_t budget; /* reply bytes left */
	char *arena;
	size_t used, cap;
};

static size_t dent_size(size_t namelen)
{
	return (sizeof(struct dent) + namelen + 1 + 7) & ~(size_t)7;
}

static int collect_dent(void *ctx, const char *name, size_t namelen,
			uint64_t ino, uint32_t type, uint64_t next)
{
	struct dir_collect *dc = ctx;
	char tmp[NAME_MAX + 1];
	size_t need, sz = dent_size(namelen);
	struct dent *d;

	if (namelen > NAME_MAX)
		return 0;
	memcpy(tmp, name, namelen);
	tmp[namelen] = '\0';
	need = dc->plus ? fuse_add_direntry_plus(dc->req, NULL, 0, tmp, NULL, 0)
			: fuse_add_direntry(dc->req, NULL, 0, tmp, NULL, 0);
	if (need > dc->budget || dc->used + sz > dc->cap)
		return 1;
	dc->budget -= need;
	d = (struct dent *)(dc->arena + dc->used);
	d->ino = ino;
	d->next = next;
	d->type = type;
	d->namelen = (uint32_t)namelen;
	memcpy(d->name, tmp, namelen + 1);
	dc->used += sz;
	return 0;
}

static bool is_dot(const char *name)
{
	return name[0] == '.' &&
	       (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       bool plus)
{
	struct lf_mount *m = mnt(req);
	struct dir_collect dc = {.req = req, .plus = plus, .budget = size};
	char *reply = NULL;
	size_t pos = 0;
	int ret;

	/* Slack for struct dent being a little larger than a reply entry;
	 * collect_dent stops early rather than overflow. */
	dc.cap = size + 4096;
	dc.arena = malloc(dc.cap);
	reply = malloc(size ? size : 1);
	if (!dc.arena || !reply) {
		ret = -ENOMEM;
		goto out;
	}
	ret = lf_fs_readdir(m->vol, to_disk(ino), (uint64_t)off, collect_dent,
			    &dc);
	if (ret < 0)
		goto out;
	for (size_t at = 0; at < dc.used;) {
		struct dent *d = (struct dent *)(dc.arena + at);
		size_t n;

		at += dent_size(d->namelen);
		if (!plus) {
			struct stat st = {.st_ino = to_fuse(d->ino),
					  .st_mode = d->type};

			n = fuse_add_direntry(req, reply + pos, size - pos,
					      d->name, &st, (off_t)d->next);
		} else {
			struct fuse_entry_param e;
			struct lf_stat s;
			bool counted = false;
			int fresh = -1;

			memset(&e, 0, sizeof(e));
			/* ino 0: attributes only, no lookup taken (the
			 * kernel never counts "." and ".."). */
			if (!is_dot(d->name) &&
			    lf_fs_getattr(m->vol, d->ino, &s) == 0 &&
			    (fresh = count_lookup(m, d->ino)) >= 0) {
				fill_entry(m, &s, fresh, &e);
				counted = d->ino != LF_ROOT_INO;
			} else {
				e.attr.st_ino = to_fuse(d->ino);
				e.attr.st_mode = d->type;
			}
			n = fuse_add_direntry_plus(req, reply + pos, size - pos,
						   d->name, &e, (off_t)d->next);
			if (n > size - pos && counted)
				forget_one(m, d->ino, 1);
		}
		if (n > size - pos)
			break;
		pos += n;
	}
	ret = 0;
out:
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_buf(req, reply, pos);
	free(reply);
	free(dc.arena);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, true);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	op_fsync(req, ino, datasync, fi);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st;
	int ret = lf_fs_statfs(mnt(req)->vol, &st);

	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_statfs(req, &st);
}

/* Attribute-only notifications take no kernel lock: no registration. */
static void xattr_changed(struct lf_mount *m, fuse_req_t req, fuse_ino_t ino,
			  int ret)
{
	if (ret == 0) {
		struct lf_inval iv = iv_attr(to_disk(ino));

		lf_op_notify(m, NULL, &iv, 1);
	}
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

static bool maps_ids(const struct lf_mount *m)
{
	return m->opts.uidmap.n || m->opts.gidmap.n;
}

/* The kernel's posix_acl_update_mode(): setting an access ACL drops setgid
 * unless the caller is in the file's group or capable. The kernel tells a
 * FUSE server so only through FUSE_SETXATTR_EXT, which libfuse 3.14 does
 * not negotiate: lunfs decides itself, as for chown. */
static int acl_drop_sgid(struct lf_mount *m, fuse_req_t req, fuse_ino_t ino)
{
	struct caller c = {m, req};
	struct lf_setattr sa = {0};
	struct lf_stat s;
	int ret = lf_fs_getattr(m->vol, to_disk(ino), &s);

	if (ret < 0 || !(s.mode & S_ISGID) ||
	    caller_in_group_or_root(&c, s.gid))
		return ret < 0 ? ret : 0;
	sa.mode = s.mode & 07777 & ~(uint32_t)S_ISGID;
	ret = lf_fs_setattr(m->vol, to_disk(ino), LF_SET_MODE, &sa, &s);
	if (ret == 0)
		fuse_lowlevel_notify_inval_inode(m->se, ino, -1, 0);
	return ret;
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	struct lf_mount *m = mnt(req);
	unsigned char *disk = NULL;
	int ret;

	if (refuse_ro(m, req))
		return;
	/* ACL entries name HOST ids, stored as DISK ids like owners. */
	if (lf_aclmap_kind(name) && maps_ids(m)) {
		disk = malloc(size ? size : 1);
		if (!disk) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		memcpy(disk, value, size);
		ret = lf_aclmap_to_disk(&m->opts.uidmap, &m->opts.gidmap, disk,
					size);
		if (ret < 0) {
			free(disk);
			fuse_reply_err(req, -ret);
			return;
		}
		value = (const char *)disk;
	}
	ret = lf_fs_setxattr(m->vol, to_disk(ino), name, value, size, flags);
	free(disk);
	if (ret == 0 && lf_aclmap_kind(name) == 1)
		ret = acl_drop_sgid(m, req, ino);
	xattr_changed(m, req, ino, ret);
}

static void reply_sized(fuse_req_t req, ssize_t n, const void *buf, size_t size)
{
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	struct lf_mount *m = mnt(req);
	void *buf = size ? lf_mount_buf(m, size) : NULL;
	ssize_t n;
	int kind;

	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = lf_fs_getxattr(m->vol, to_disk(ino), name, buf, size);
	kind = n > 0 && size ? lf_aclmap_kind(name) : 0;
	if (kind && (maps_ids(m) || m->opts.fsgroup >= 0)) {
		unsigned extra = 0;
		struct lf_stat s;

		/* The fsGroup view's mode bits, as present() adds them. */
		if (kind == 1 && m->opts.fsgroup >= 0 &&
		    lf_fs_getattr(m->vol, to_disk(ino), &s) == 0 &&
		    !S_ISLNK(s.mode))
			extra = (m->opts.read_only ? 0440 : 0660) |
				(S_ISDIR(s.mode) ? 0110 : 0);
		lf_aclmap_to_host(&m->opts.uidmap, &m->opts.gidmap, buf,
				  (size_t)n, extra);
	}
	reply_sized(req, n, buf, size);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct lf_mount *m = mnt(req);
	void *buf = size ? lf_mount_buf(m, size) : NULL;

	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	reply_sized(req, lf_fs_listxattr(m->vol, to_disk(ino), buf, size), buf,
		    size);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct lf_mount *m = mnt(req);
	int ret;

	if (refuse_ro(m, req))
		return;
	ret = lf_fs_removexattr(m->vol, to_disk(ino), name);
	xattr_changed(m, req, ino, ret);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);
	struct fuse_entry_param e;
	struct lf_owner o;
	struct lf_stat s;
	struct lf_op op;
	int ret;

	if (refuse_ro(m, req))
		return;
	lf_op_begin(m, &op, parent, 0);
	ret = new_owner(m, req, &o);
	if (ret == 0)
		ret = lf_fs_mknod(m->vol, to_disk(parent), name,
				  (mode & 07777) | S_IFREG, 0, &o, &s);
	/* O_TRUNC on a file just made is a no-op; O_EXCL is done. */
	if (ret == 0)
		ret = lf_fs_open(m->vol, s.ino,
				 fi->flags & ~(O_CREAT | O_EXCL | O_TRUNC));
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		goto out;
	}
	{
		struct lf_inval iv[] = {iv_entry(parent, name),
					iv_attr(to_disk(parent))};

		lf_op_notify(m, &op, iv, 2);
	}
	fi->keep_cache = 1;
	ret = count_lookup(m, s.ino);
	if (ret < 0) {
		fuse_reply_err(req, ENOMEM);
		goto out;
	}
	fill_entry(m, &s, ret, &e);
	if (fuse_reply_create(req, &e, fi) != 0)
		forget_one(m, s.ino, 1);
out:
	lf_op_end(m, &op);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
			 off_t length, struct fuse_file_info *fi)
{
	struct lf_mount *m = mnt(req);
	struct lf_op op;
	int ret;

	if (refuse_ro(m, req))
		return;
	lf_op_begin(m, &op, ino, 0);
	ret = lf_fs_fallocate(m->vol, to_disk(ino), mode, (uint64_t)offset,
			      (uint64_t)length);
	if (ret == 0) {
		/* Collapse and insert move everything after offset. */
		bool shift = mode & (FALLOC_FL_COLLAPSE_RANGE |
				     FALLOC_FL_INSERT_RANGE);
		struct lf_inval iv =
			iv_data(to_disk(ino), offset, shift ? 0 : length);

		lf_op_notify(m, &op, &iv, 1);
	}
	fuse_reply_err(req, ret < 0 ? -ret : 0);
	lf_op_end(m, &op);
}

static const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	/* No flush: writes are through, nothing to do at close, and its
	 * absence (ENOSYS) spares the close(2) a round trip. */
	.release = op_ok,
	.fsync = op_fsync,
	/* No opendir/releasedir: FUSE_CAP_NO_OPENDIR_SUPPORT. */
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.create = op_create,
	.fallocate = op_fallocate,
	.ioctl = lf_fs_op_ioctl,
};

int lf_mount_fs_fuse(struct lf_served *sv, const char *path,
		     const struct lf_mount_opts *o, struct lf_mount **out,
		     char *err, size_t errlen)
{
	struct fuse_lowlevel_ops ops;
	struct lf_mount *m;
	int ret;

	*out = NULL;
	if (!sv->vol) {
		snprintf(err, errlen, "%s: not a filesystem volume", path);
		return -EINVAL;
	}
	m = lf_mount_alloc(LF_MOUNT_FS, o);
	if (!m) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	m->sv = sv; /* constant; membership is sv->mounts */
	m->vol = sv->vol;
	if (lf_vol_read_only(sv->vol))
		m->opts.read_only = true;
	m->desc = strdup(lf_vol_desc(sv->vol));
	if (!m->desc) {
		lf_mount_free(m);
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	/* Locks are the kernel's on a shared view; the per-mount views
	 * keep them in the volume's table, to exclude across mounts. */
	ops = fs_ops;
	if (!o->allow_idmap && sv->locks)
		lf_fslocks_ops(&ops);
	ret = lf_mount_start(m, path, true, &ops, sizeof(ops), err, errlen);
	if (ret < 0) {
		lf_mount_free(m);
		return ret;
	}
	lf_served_link_mount(sv, m);
	*out = m;
	return 0;
}
