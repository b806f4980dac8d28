/* fence.c — see fence.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fsimage/mmp.h"
#include "iscsi/log.h"
#include "iscsi/pr.h"
#include "tools/fence.h"

#define MOD "fence"

int lf_fence_acquire(struct lf_bdev *b, const char *initiator, bool takeover,
		     struct lf_fence *f, char *err, size_t errlen)
{
	const char *desc = lf_bdev_desc(b);
	struct lf_mmp_seen seen;
	struct lf_pr_state st;
	char e2[512];
	int r;

	memset(f, 0, sizeof(*f));
	f->key = lf_pr_key(initiator);
	r = lf_pr_acquire(b, f->key, false, &st, e2, sizeof(e2));
	if (r == -EOPNOTSUPP) {
		f->no_pr = true;
		lf_warn(MOD,
			"%s: the target does not implement persistent "
			"reservations (INVALID COMMAND OPERATION CODE): "
			"fencing by ext4 MMP only",
			desc);
		return 0;
	}
	if (r == 0) {
		f->pr = true;
		return 0;
	}
	if (r != -EBUSY) {
		snprintf(err, errlen, "%s", e2);
		return r;
	}
	if (!takeover) {
		char who[120] = "";

		if (lf_mmp_probe(b, &seen) == 0 && seen.has_mmp &&
		    seen.seq != EXT4_MMP_SEQ_CLEAN)
			snprintf(who, sizeof(who), ", MMP node %s", seen.node);
		snprintf(err, errlen,
			 "%s is held read-write by another initiator "
			 "(reservation key 0x%016llx%s): refusing to attach "
			 "it read-write; unmount it there, or mount it "
			 "read-only, or if that node is dead take it over "
			 "with 'lunfs mount --takeover SPEC PATH'",
			 desc, (unsigned long long)st.holder, who);
		return -EBUSY;
	}
	r = lf_mmp_wait_stale(b, &seen, err, errlen);
	if (r == -ENOENT) {
		lf_warn(MOD,
			"%s: takeover: no MMP block to prove the holder (key "
			"0x%016llx) dead: preempting on the operator's word",
			desc, (unsigned long long)st.holder);
	} else if (r) {
		return r;
	} else {
		f->mmp_stale_known = true;
		f->mmp_stale_seq = seen.seq;
	}
	r = lf_pr_acquire(b, f->key, true, NULL, err, errlen);
	if (r)
		return r;
	f->pr = true;
	lf_warn(MOD, "%s: taken over from reservation key 0x%016llx%s%s", desc,
		(unsigned long long)st.holder,
		seen.has_mmp ? ", MMP node " : "",
		seen.has_mmp ? seen.node : "");
	return 0;
}

void lf_fence_release(struct lf_bdev *b, struct lf_fence *f)
{
	if (!f->pr)
		return;
	f->pr = false;
	if (lf_bdev_fenced(b, NULL, 0))
		return; /* preempted: the key is gone, nothing to release */
	lf_pr_release(b, f->key);
}

bool lf_fence_held_elsewhere(struct lf_bdev *b, char *holder, size_t len)
{
	struct lf_mmp_seen seen;
	struct lf_pr_state st;

	if (lf_mmp_probe(b, &seen) == 0 && seen.has_mmp &&
	    seen.seq != EXT4_MMP_SEQ_CLEAN) {
		snprintf(holder, len, "MMP node %s", seen.node);
		return true;
	}
	if (lf_pr_read(b, &st) == 0 && st.reserved) {
		snprintf(holder, len, "reservation key 0x%016llx",
			 (unsigned long long)st.holder);
		return true;
	}
	return false;
}

const char *lf_fence_mode(const struct lf_fence *f, bool mmp)
{
	if (f->pr)
		return mmp ? "pr+mmp" : "pr";
	return mmp ? "mmp-only" : "none";
}
