/* mmp.h — ext4 multi-mount protection (MMP), driven by lunfs itself.
 *
 * libext2fs's own MMP code reads the MMP block by opening the device by
 * name with O_DIRECT, which an iscsi:// device over our io_manager cannot
 * do, so volumes are opened with EXT2_FLAG_SKIP_MMP and this module runs
 * the protocol the kernel (fs/ext4/mmp.c) and e2fsprogs (lib/ext2fs/mmp.c)
 * run, with uncached reads and writes of the MMP block through the bdev:
 *
 *  claim (lf_mmp_check, then lf_mmp_claim before the open's first write):
 *   1. read the block; bad magic or checksum → -EUCLEAN; seq FSCK → -EBUSY
 *      (e2fsck runs, or was interrupted); an unknown seq → -EUCLEAN.
 *   2. seq not CLEAN: wait W and read again; changed → -EBUSY, naming the
 *      node that wrote it. (Skipped when the caller just proved that very
 *      seq stale, see lf_mmp_wait_stale().)
 *   3. write a new random seq with our node name; then wait W and read
 *      again; changed → -EBUSY. The second wait is skipped when the seq was
 *      CLEAN and the caller holds the LUN's persistent reservation: no other
 *      initiator can write the LUN then, and a claimer that races us on the
 *      target's side (the kernel's ext4) sees our updates in its own wait.
 *  W = min(2*ci+1, ci+60) s, ci = max(2*s_mmp_update_interval, the
 *  block's mmp_check_interval): what the kernel waits, without the
 *  kernel's 5 s floor for blocks that lunfs wrote (their check interval
 *  is 2*update interval), with it for blocks the kernel wrote. The block's
 *  interval is the holder's promise, so the wait after our own write
 *  (step 3) leaves it out: that wait only has to outlast a concurrent
 *  claimer's read-then-write.
 *
 *  hold: a thread rewrites the block every s_mmp_update_interval seconds
 *  (seq+1), after checking that it still holds the seq we wrote last. If
 *  not, another node claimed the volume: the bdev is fenced at once
 *  (lf_bdev_fence(): nothing more is written) and the thread ends.
 *
 *  release (lf_mmp_stop): stop the thread; unless fenced and if the block
 *  still holds our seq, write seq CLEAN.
 *
 * lunfs formats with s_mmp_update_interval LF_MMP_UPDATE_INTERVAL (1 s,
 * W = 5 s): the kernel's ext4 honours any interval from 1 to 300.
 *
 * Thread model: lf_mmp_check/claim/stop from the thread that opens and closes
 * the volume; the update thread touches only the bdev and its own state.
 * Errors: 0 or -errno with one line in err.
 */
#ifndef LUNFS_MMP_H
#define LUNFS_MMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ext2fs/ext2fs.h>

#include "iscsi/bdev.h"

#define LF_MMP_UPDATE_INTERVAL 1

struct lf_mmp;

struct lf_mmp_opts {
	const char *node; /* written as the holder's name; NULL = hostname */
	bool reserved;	  /* the caller holds the LUN's PR reservation */
	bool stale_known; /* stale_seq was proven stale just now */
	uint32_t stale_seq;
};

/* fs is open (read-write, EXT2_FLAG_SKIP_MMP) and has the mmp feature.
 * Steps 1 and 2 above: reads only, so a volume refused afterwards (it
 * fails a later check of the open) is left untouched. */
int lf_mmp_check(struct lf_bdev *b, ext2_filsys fs, const struct lf_mmp_opts *o,
		 struct lf_mmp **out, char *err, size_t errlen);
/* Step 3 and the update thread: right before the open's first write. */
int lf_mmp_claim(struct lf_mmp *m, char *err, size_t errlen);
/* After lf_mmp_check() proved a non-CLEAN block stale and the open is
 * refused for a repair (the dead holder left the volume unclean): marks
 * it CLEAN, so that the repair (e2fsck, with MMP waits of its own of at
 * least 11 s per phase) does not wait for the dead holder again. */
void lf_mmp_release_stale(struct lf_mmp *m);
/* Around an e2fsprogs tool that lunfs runs on its own claimed volume
 * (resize2fs, which claims MMP itself): pause stops updating and writes
 * CLEAN, so that the tool's claim finds the block free; resume claims it
 * again once the tool has left it CLEAN (-EBUSY, naming the writer, if
 * anyone else holds it then). */
int lf_mmp_pause(struct lf_mmp *m);
int lf_mmp_resume(struct lf_mmp *m, char *err, size_t errlen);

/* Stops updating; writes CLEAN unless fenced. NULL is a no-op. */
void lf_mmp_stop(struct lf_mmp *m);

/* What a device's MMP block says, read without opening the filesystem. */
struct lf_mmp_seen {
	bool has_mmp;
	uint32_t seq;
	unsigned wait_s; /* W for this block */
	char node[65];	 /* mmp_nodename: who wrote it */
};
int lf_mmp_probe(struct lf_bdev *b, struct lf_mmp_seen *seen);
/* Proof of death for a takeover: probe, wait W, probe again. 0 when the
 * block did not change (or says CLEAN), -EBUSY while it changes (the
 * holder is alive), -ENOENT without an MMP block. seen gets the last
 * read. */
int lf_mmp_wait_stale(struct lf_bdev *b, struct lf_mmp_seen *seen, char *err,
		      size_t errlen);

/* `lunfs fsck --enable-mmp`: adds the mmp feature to a clean, unmounted
 * ext4 on b. 0, or 1 when it already had it, or -errno. */
int lf_mmp_enable(struct lf_bdev *b, char *err, size_t errlen);

#endif
