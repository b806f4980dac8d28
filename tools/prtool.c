/* lunfs-prtool — a test helper that stands for "the other node" at the
 * SCSI level: reads a LUN's persistent reservation state, or preempts its
 * holder, as its own initiator. libiscsi only, no lunfs code, so that the
 * tests see the target's answer, not ours.
 *
 *   lunfs-prtool [--initiator IQN] URL read
 *   lunfs-prtool [--initiator IQN] URL preempt    (register, PREEMPT holder)
 *   lunfs-prtool [--initiator IQN] URL write OFF  (one 4 KiB write: status)
 *
 * `read` prints one JSON object: generation, keys, holder, type. Keys are
 * what lunfs derives from an initiator name: FNV-1a 64 of the name.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

static uint64_t key_of(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h ? h : 1;
}

static int read_state(struct iscsi_context *c, int lun, uint64_t *holder)
{
	struct scsi_task *t = iscsi_persistent_reserve_in_sync(
		c, lun, SCSI_PERSISTENT_RESERVE_READ_KEYS, 1024);
	struct scsi_persistent_reserve_in_read_keys *k;
	struct scsi_persistent_reserve_in_read_reservation *rr;

	if (!t || t->status != SCSI_STATUS_GOOD ||
	    !(k = scsi_datain_unmarshall(t))) {
		fprintf(stderr, "READ KEYS failed: %s\n", iscsi_get_error(c));
		return 1;
	}
	printf("{\"generation\": %u, \"keys\": [", k->prgeneration);
	for (int i = 0; i < k->num_keys; i++)
		printf("%s\"0x%016" PRIx64 "\"", i ? ", " : "", k->keys[i]);
	printf("]");
	scsi_free_scsi_task(t);
	t = iscsi_persistent_reserve_in_sync(
		c, lun, SCSI_PERSISTENT_RESERVE_READ_RESERVATION, 1024);
	if (!t || t->status != SCSI_STATUS_GOOD ||
	    !(rr = scsi_datain_unmarshall(t))) {
		fprintf(stderr, "READ RESERVATION failed: %s\n",
			iscsi_get_error(c));
		return 1;
	}
	*holder = rr->reserved ? rr->reservation_key : 0;
	if (rr->reserved)
		printf(", \"holder\": \"0x%016" PRIx64 "\", \"type\": %d}\n",
		       rr->reservation_key, rr->pr_type);
	else
		printf(", \"holder\": null}\n");
	scsi_free_scsi_task(t);
	return 0;
}

static int prout(struct iscsi_context *c, int lun, int sa, int type,
		 uint64_t key, uint64_t sakey)
{
	struct scsi_persistent_reserve_out_basic p = {
		.reservation_key = key,
		.service_action_reservation_key = sakey,
	};
	struct scsi_task *t = iscsi_persistent_reserve_out_sync(
		c, lun, sa, SCSI_PERSISTENT_RESERVE_SCOPE_LU, type, &p);
	int ok = t && t->status == SCSI_STATUS_GOOD;

	if (!ok)
		fprintf(stderr, "PERSISTENT RESERVE OUT %d failed: status %d\n",
			sa, t ? t->status : -1);
	if (t)
		scsi_free_scsi_task(t);
	return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
	const char *initiator = "iqn.2026-12.io.lunfs:prtool";
	struct iscsi_context *c;
	struct iscsi_url *u;
	uint64_t holder = 0, me;
	int rc = 1;

	if (argc > 2 && !strcmp(argv[1], "--initiator")) {
		initiator = argv[2];
		argv += 2;
		argc -= 2;
	}
	if (argc < 3) {
		fprintf(stderr, "usage: lunfs-prtool [--initiator IQN] URL "
				"read|preempt|write OFF\n");
		return 2;
	}
	me = key_of(initiator);
	c = iscsi_create_context(initiator);
	u = c ? iscsi_parse_full_url(c, argv[1]) : NULL;
	if (!u) {
		fprintf(stderr, "bad URL %s\n", argv[1]);
		return 2;
	}
	iscsi_set_targetname(c, u->target);
	iscsi_set_session_type(c, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(c, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	if (iscsi_full_connect_sync(c, u->portal, u->lun)) {
		fprintf(stderr, "login failed: %s\n", iscsi_get_error(c));
		goto out;
	}
	if (!strcmp(argv[2], "read")) {
		rc = read_state(c, u->lun, &holder);
	} else if (!strcmp(argv[2], "preempt")) {
		if (read_state(c, u->lun, &holder))
			goto out;
		rc = prout(
			c, u->lun,
			SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY,
			0, 0, me);
		if (!rc && holder)
			rc = prout(c, u->lun, SCSI_PERSISTENT_RESERVE_PREEMPT,
				   SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE,
				   me, holder);
		else if (!rc)
			rc = prout(c, u->lun, SCSI_PERSISTENT_RESERVE_RESERVE,
				   SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE,
				   me, 0);
		if (!rc)
			rc = read_state(c, u->lun, &holder);
	} else if (!strcmp(argv[2], "write") && argc > 3) {
		unsigned char buf[4096];
		struct scsi_task *t;

		memset(buf, 0xa5, sizeof(buf));
		t = iscsi_write16_sync(c, u->lun,
				       strtoull(argv[3], NULL, 0) / 512, buf,
				       sizeof(buf), 512, 0, 0, 0, 0, 0);
		printf("{\"status\": %d}\n", t ? t->status : -1);
		rc = t && t->status == SCSI_STATUS_GOOD ? 0 : 3;
		if (t)
			scsi_free_scsi_task(t);
	}
	iscsi_logout_sync(c);
out:
	iscsi_destroy_url(u);
	iscsi_destroy_context(c);
	return rc;
}
