/* pr.c — see pr.h. SPC-4 6.15 (PERSISTENT RESERVE IN), 6.16 (OUT). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "iscsi/log.h"
#include "iscsi/pr.h"

#define MOD "pr"

enum {
	PRIN_READ_KEYS = 0,
	PRIN_READ_RESERVATION = 1,
	PROUT_REGISTER = 0,
	PROUT_RESERVE = 1,
	PROUT_RELEASE = 2,
	PROUT_PREEMPT = 4,
	PROUT_REGISTER_IGNORE = 6,
};

uint64_t lf_pr_key(const char *initiator)
{
	uint64_t h = 1469598103934665603ULL;

	for (const char *p = initiator; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	return h ? h : 1;
}

static uint64_t be64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

int lf_pr_read(struct lf_bdev *b, struct lf_pr_state *st)
{
	unsigned char buf[8 + 8 * 16];
	uint32_t len;
	int r;

	memset(st, 0, sizeof(*st));
	r = lf_bdev_pr_in(b, PRIN_READ_KEYS, buf, sizeof(buf));
	if (r)
		return r;
	st->generation = be32(buf);
	len = be32(buf + 4);
	for (uint32_t off = 0; off + 8 <= len && st->nkeys < 16; off += 8)
		st->keys[st->nkeys++] = be64(buf + 8 + off);
	r = lf_bdev_pr_in(b, PRIN_READ_RESERVATION, buf, 24);
	if (r)
		return r;
	if (be32(buf + 4) >= 16) {
		st->reserved = true;
		st->holder = be64(buf + 8);
		st->type = buf[21] & 0x0f;
	}
	return 0;
}

int lf_pr_preempt(struct lf_bdev *b, uint64_t key, uint64_t victim)
{
	int r = lf_bdev_pr_out(b, PROUT_REGISTER_IGNORE, 0, 0, key);

	if (!r)
		r = lf_bdev_pr_out(b, PROUT_PREEMPT, LF_PR_TYPE_WRITE_EXCLUSIVE,
				   key, victim);
	return r;
}

static int say(char *err, size_t errlen, int r, const char *desc,
	       const char *step)
{
	snprintf(err, errlen, "%s: persistent reservation: %s failed: %s", desc,
		 step, strerror(-r));
	return r;
}

int lf_pr_acquire(struct lf_bdev *b, uint64_t key, bool preempt,
		  struct lf_pr_state *holder, char *err, size_t errlen)
{
	const char *desc = lf_bdev_desc(b);
	struct lf_pr_state st;
	int r;

	r = lf_pr_read(b, &st);
	if (r == -EOPNOTSUPP) {
		snprintf(err, errlen,
			 "%s: the target does not implement persistent "
			 "reservations",
			 desc);
		return r;
	}
	if (r)
		return say(err, errlen, r, desc, "PERSISTENT RESERVE IN");
	if (holder)
		*holder = st;
	if (st.reserved && st.holder != key) {
		if (!preempt) {
			snprintf(err, errlen,
				 "%s is reserved by another initiator (key "
				 "0x%016llx)",
				 desc, (unsigned long long)st.holder);
			return -EBUSY;
		}
		r = lf_pr_preempt(b, key, st.holder);
		if (r)
			return say(err, errlen, r, desc, "PREEMPT");
		lf_warn(MOD, "%s: took the reservation over from key 0x%016llx",
			desc, (unsigned long long)st.holder);
		return 0;
	}
	if (st.reserved) {
		/* Ours, from a nexus that may be gone: see pr.h. */
		r = lf_pr_preempt(b, key, key);
		if (r)
			return say(err, errlen, r, desc,
				   "PREEMPT of our own earlier registration");
		lf_info(MOD,
			"%s: reservation under our key 0x%016llx taken "
			"over by this session",
			desc, (unsigned long long)key);
		return 0;
	}
	r = lf_bdev_pr_out(b, PROUT_REGISTER_IGNORE, 0, 0, key);
	if (r)
		return say(err, errlen, r, desc, "REGISTER");
	r = lf_bdev_pr_out(b, PROUT_RESERVE, LF_PR_TYPE_WRITE_EXCLUSIVE, key,
			   0);
	if (r == -EBUSY) {
		/* Someone reserved between our read and our reserve. */
		lf_bdev_pr_out(b, PROUT_REGISTER, 0, key, 0);
		if (lf_pr_read(b, &st) == 0 && holder)
			*holder = st;
		snprintf(err, errlen,
			 "%s is reserved by another initiator (key "
			 "0x%016llx)",
			 desc, (unsigned long long)st.holder);
		return -EBUSY;
	}
	if (r)
		return say(err, errlen, r, desc, "RESERVE");
	lf_info(MOD, "%s: reserved (Write Exclusive, key 0x%016llx)", desc,
		(unsigned long long)key);
	return 0;
}

int lf_pr_release(struct lf_bdev *b, uint64_t key)
{
	int r = lf_bdev_pr_out(b, PROUT_RELEASE, LF_PR_TYPE_WRITE_EXCLUSIVE,
			       key, 0);
	int r2 = lf_bdev_pr_out(b, PROUT_REGISTER, 0, key, 0);

	if (r || r2)
		lf_warn(MOD, "%s: releasing the reservation: %s",
			lf_bdev_desc(b), strerror(-(r ? r : r2)));
	else
		lf_info(MOD, "%s: reservation released", lf_bdev_desc(b));
	return r ? r : r2;
}
