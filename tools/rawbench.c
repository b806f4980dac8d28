/*
 * lunfs-rawbench — the raw libiscsi throughput a LUN allows, as the
 * reference the benchmark holds lunfs against.
 *
 * One context, the async API, DEPTH commands in flight, each slot with its
 * own buffer reused for every request (a fresh malloc per 1 MiB request
 * costs most of the throughput: see DESIGN.md, field notes). A write run
 * ends with SYNCHRONIZE CACHE inside the timed interval, the analogue of
 * write + fsync. Prints one JSON line.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#define MAX_DEPTH 256

struct run;

struct slot {
	struct run *run;
	struct scsi_iovec iov;
	bool busy;
};

struct run {
	struct iscsi_context *iscsi;
	int lun;
	uint32_t lbsize;
	bool write;
	bool random;
	uint64_t bs;
	uint64_t region; /* bytes of the LUN the run touches */
	uint64_t next;	 /* next sequential offset */
	uint64_t issued, done, bytes;
	uint64_t limit; /* requests to issue, 0 = until the deadline */
	double deadline;
	uint64_t rng;
	int inflight;
	int failed;
	char error[256];
	struct slot slots[MAX_DEPTH];
};

static const char usage[] =
	"Usage: lunfs-rawbench [--read|--write] [--bs BYTES] [--depth N] "
	"[--size BYTES]\n"
	"                      [--random] [--seconds S] "
	"iscsi://HOST[:PORT]/IQN/LUN\n"
	"Measure raw READ(16)/WRITE(16) throughput of a LUN with N commands in "
	"flight.\n\n"
	"  --read | --write  direction (default --read)\n"
	"  --bs BYTES        request size (default 1M; K, M, G suffixes)\n"
	"  --depth N         commands in flight (default 32, at most 256)\n"
	"  --size BYTES      region of the LUN to use, from offset 0 "
	"(default: all)\n"
	"  --random          random bs-aligned offsets instead of one "
	"sequential pass\n"
	"  --seconds S       stop after S seconds (random default 5; "
	"sequential: one pass)\n\n"
	"A sequential run makes one pass over the region; a write run ends "
	"with\nSYNCHRONIZE CACHE inside the timed interval. Output: one JSON "
	"line.\n";

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		v <<= 10;
		end++;
		break;
	case 'm':
	case 'M':
		v <<= 20;
		end++;
		break;
	case 'g':
	case 'G':
		v <<= 30;
		end++;
		break;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

/* xorshift64*: reproducible offsets, no libc state. */
static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static void complete_cb(struct iscsi_context *iscsi, int status,
			void *command_data, void *private_data)
{
	struct slot *s = private_data;
	struct run *r = s->run;

	if (status != SCSI_STATUS_GOOD && !r->failed) {
		snprintf(r->error, sizeof(r->error), "%s failed: %s",
			 r->write ? "WRITE(16)" : "READ(16)",
			 iscsi_get_error(iscsi));
		r->failed = 1;
	}
	scsi_free_scsi_task(command_data);
	s->busy = false;
	r->inflight--;
	r->done++;
}

static bool want_more(const struct run *r)
{
	if (r->failed)
		return false;
	if (r->limit)
		return r->issued < r->limit &&
		       (r->deadline == 0 || now() < r->deadline);
	return now() < r->deadline;
}

static int submit(struct run *r, struct slot *s)
{
	uint64_t off, nblocks = r->region / r->bs;
	struct scsi_task *task;

	if (r->random)
		off = (rng_next(&r->rng) % nblocks) * r->bs;
	else {
		off = r->next;
		r->next += r->bs;
	}
	if (r->write)
		task = iscsi_write16_iov_task(r->iscsi, r->lun, off / r->lbsize,
					      NULL, r->bs, r->lbsize, 0, 0, 0,
					      0, 0, complete_cb, s, &s->iov, 1);
	else
		task = iscsi_read16_iov_task(r->iscsi, r->lun, off / r->lbsize,
					     r->bs, r->lbsize, 0, 0, 0, 0, 0,
					     complete_cb, s, &s->iov, 1);
	if (!task) {
		snprintf(r->error, sizeof(r->error),
			 "queueing %s at %" PRIu64 ": %s",
			 r->write ? "WRITE(16)" : "READ(16)", off,
			 iscsi_get_error(r->iscsi));
		r->failed = 1;
		return -EIO;
	}
	s->busy = true;
	r->issued++;
	r->inflight++;
	return 0;
}

static int pump(struct run *r)
{
	struct pollfd pfd;
	int n;

	pfd.fd = iscsi_get_fd(r->iscsi);
	pfd.events = iscsi_which_events(r->iscsi);
	n = poll(&pfd, 1, 1000);
	if (n < 0) {
		if (errno == EINTR)
			return 0;
		snprintf(r->error, sizeof(r->error), "poll: %s",
			 strerror(errno));
		return -errno;
	}
	if (iscsi_service(r->iscsi, n ? pfd.revents : 0) < 0) {
		snprintf(r->error, sizeof(r->error), "iscsi_service: %s",
			 iscsi_get_error(r->iscsi));
		return -EIO;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"read", no_argument, NULL, 'r'},
		{"write", no_argument, NULL, 'w'},
		{"bs", required_argument, NULL, 'b'},
		{"depth", required_argument, NULL, 'd'},
		{"size", required_argument, NULL, 's'},
		{"random", no_argument, NULL, 'R'},
		{"seconds", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct run *r;
	struct iscsi_url *url = NULL;
	struct scsi_task *task;
	struct scsi_readcapacity16 *rc16;
	uint64_t capacity, size = 0;
	double seconds = -1, t0, elapsed;
	int opt, depth = 32, ret = 1;

	r = calloc(1, sizeof(*r));
	if (!r) {
		perror("lunfs-rawbench");
		return 1;
	}
	r->bs = 1 << 20;
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'r':
			r->write = false;
			break;
		case 'w':
			r->write = true;
			break;
		case 'b':
			if (parse_size(optarg, &r->bs) || r->bs == 0 ||
			    r->bs > (64u << 20)) {
				fprintf(stderr,
					"lunfs-rawbench: --bs '%s': "
					"want 1 byte to 64M\n",
					optarg);
				return 2;
			}
			break;
		case 'd':
			depth = atoi(optarg);
			if (depth < 1 || depth > MAX_DEPTH) {
				fprintf(stderr,
					"lunfs-rawbench: --depth '%s': "
					"want 1 to %d\n",
					optarg, MAX_DEPTH);
				return 2;
			}
			break;
		case 's':
			if (parse_size(optarg, &size) || size == 0) {
				fprintf(stderr,
					"lunfs-rawbench: --size '%s' is not "
					"a size\n",
					optarg);
				return 2;
			}
			break;
		case 'R':
			r->random = true;
			break;
		case 't':
			seconds = atof(optarg);
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fputs(usage, stderr);
		return 2;
	}

	r->iscsi = iscsi_create_context("iqn.2024-01.org.lunfs:rawbench");
	if (!r->iscsi) {
		fprintf(stderr, "lunfs-rawbench: cannot create a libiscsi "
				"context\n");
		goto out_free;
	}
	url = iscsi_parse_full_url(r->iscsi, argv[optind]);
	if (!url) {
		fprintf(stderr, "lunfs-rawbench: %s: %s\n", argv[optind],
			iscsi_get_error(r->iscsi));
		goto out_destroy;
	}
	iscsi_set_targetname(r->iscsi, url->target);
	iscsi_set_session_type(r->iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(r->iscsi, ISCSI_HEADER_DIGEST_NONE);
	if (url->user[0])
		iscsi_set_initiator_username_pwd(r->iscsi, url->user,
						 url->passwd);
	if (iscsi_full_connect_sync(r->iscsi, url->portal, url->lun)) {
		char why[256];
		size_t n;

		snprintf(why, sizeof(why), "%s", iscsi_get_error(r->iscsi));
		n = strlen(why);
		while (n && (why[n - 1] == '\n' || why[n - 1] == ' '))
			why[--n] = 0;
		/* A closed port reads "Can not reconnect right now". */
		fprintf(stderr,
			"lunfs-rawbench: %s: login failed: %s (is a target "
			"listening at %s, exporting %s?)\n",
			argv[optind], why, url->portal, url->target);
		goto out_url;
	}
	r->lun = url->lun;

	task = iscsi_readcapacity16_sync(r->iscsi, r->lun);
	if (!task || task->status != SCSI_STATUS_GOOD ||
	    !(rc16 = scsi_datain_unmarshall(task))) {
		fprintf(stderr, "lunfs-rawbench: %s: READ CAPACITY(16): %s\n",
			argv[optind], iscsi_get_error(r->iscsi));
		if (task)
			scsi_free_scsi_task(task);
		goto out_logout;
	}
	r->lbsize = rc16->block_length;
	capacity = (rc16->returned_lba + 1) * (uint64_t)rc16->block_length;
	scsi_free_scsi_task(task);

	if (r->bs % r->lbsize) {
		fprintf(stderr,
			"lunfs-rawbench: --bs %" PRIu64 " is not a multiple "
			"of the LUN's %" PRIu32 "-byte blocks\n",
			r->bs, r->lbsize);
		goto out_logout;
	}
	r->region = size ? size : capacity;
	if (r->region > capacity)
		r->region = capacity;
	r->region -= r->region % r->bs;
	if (r->region == 0) {
		fprintf(stderr, "lunfs-rawbench: region smaller than one "
				"request\n");
		goto out_logout;
	}
	if (seconds < 0)
		seconds = r->random ? 5 : 0;
	if (!r->random)
		r->limit = r->region / r->bs;
	else if (seconds == 0)
		r->limit = r->region / r->bs;
	r->rng = 0x9e3779b97f4a7c15ULL;

	for (int i = 0; i < depth; i++) {
		void *buf;

		/* Page-aligned, touched once: no page faults while timing. */
		if (posix_memalign(&buf, 4096, r->bs)) {
			fprintf(stderr, "lunfs-rawbench: out of memory\n");
			goto out_bufs;
		}
		memset(buf, 0xa5 ^ i, r->bs);
		r->slots[i].run = r;
		r->slots[i].iov.iov_base = buf;
		r->slots[i].iov.iov_len = r->bs;
	}

	t0 = now();
	r->deadline = seconds > 0 ? t0 + seconds : 0;
	for (;;) {
		for (int i = 0; i < depth; i++) {
			struct slot *s = &r->slots[i];

			if (!s->busy && want_more(r) && submit(r, s))
				break;
		}
		if (r->inflight == 0)
			break;
		if (pump(r)) {
			r->failed = 1;
			break;
		}
	}
	if (!r->failed && r->write) {
		task = iscsi_synchronizecache10_sync(r->iscsi, r->lun, 0, 0, 0,
						     0);
		if (!task || task->status != SCSI_STATUS_GOOD) {
			snprintf(r->error, sizeof(r->error),
				 "SYNCHRONIZE CACHE: %s",
				 iscsi_get_error(r->iscsi));
			r->failed = 1;
		}
		if (task)
			scsi_free_scsi_task(task);
	}
	elapsed = now() - t0;
	if (r->failed) {
		fprintf(stderr, "lunfs-rawbench: %s: %s\n", argv[optind],
			r->error);
		goto out_bufs;
	}
	r->bytes = r->done * r->bs;
	printf("{\"op\": \"%s\", \"pattern\": \"%s\", \"bs\": %" PRIu64
	       ", \"depth\": %d, \"requests\": %" PRIu64 ", \"bytes\": %" PRIu64
	       ", \"seconds\": %.6f, "
	       "\"mib_s\": %.1f, \"iops\": %.0f}\n",
	       r->write ? "write" : "read", r->random ? "random" : "sequential",
	       r->bs, depth, r->done, r->bytes, elapsed,
	       r->bytes / elapsed / (1 << 20), r->done / elapsed);
	ret = 0;
out_bufs:
	for (int i = 0; i < depth; i++)
		free(r->slots[i].iov.iov_base);
out_logout:
	iscsi_logout_sync(r->iscsi);
out_url:
	iscsi_destroy_url(url);
out_destroy:
	iscsi_destroy_context(r->iscsi);
out_free:
	free(r);
	return ret;
}
