"""Scale and memory budget of one lunfsd.

test_scale_100_volumes: one daemon serves 100 volumes (80 block, 20
filesystem) on 4 targets at once, over exactly one iSCSI session per target,
and its resident size grows linearly with the number of volumes.

test_memory_budget: the daemon's base size, the cost of an extra mount of a
volume already open, and the bound the metadata cache (--cache-size) puts on
a filesystem volume that touches far more metadata than the cache holds.

The oracles are tgtd's own list of connections, `lunfs status --json`, the
LUN backing files, and /proc/PID/status of lunfsd. Figures are printed (run
pytest with -s to see them) and logged.
"""
import concurrent.futures
import logging
import os
import subprocess
import time

import lunfs_harness as H

MiB = H.MiB
KiB = 1024
log = logging.getLogger("scale")

TARGETS = 4
LUNS_PER_TARGET = 25
FS_PER_TARGET = 5           # LUNs 21..25 of each target; 1..20 are block
LUN_SIZE = 16 * MiB
WORKERS = 4                 # CLI calls in flight at once

# Bounds, a few times what was measured on a 2-core Debian 12 VM (see the
# README's memory budget): base ~3.2 MiB, a block volume ~140 KiB, a freshly
# formatted 16 MiB filesystem volume ~400 KiB, an extra mount ~60 KiB, ~0.3
# KiB per inode created or looked up (name index, FUSE node tables).
BASE_MAX = 16 * MiB
BLOCK_VOL_MAX = 512 * KiB
FS_VOL_MAX = 2 * MiB        # a fresh volume: its cache holds little yet
EXTRA_MOUNT_MAX = 512 * KiB
PER_INODE_MAX = 768         # bytes per inode created or looked up
SLACK = 4 * MiB             # malloc arenas, thread stacks touched once
# Resident bytes a full metadata cache costs per configured byte: buffers
# come from page-aligned slabs of 64, plus the entries' bookkeeping.
CACHE_RSS_FACTOR = 1.25


def sanitized_build():
    """ASan/TSan builds have their own memory behaviour: figures are printed
    but not held to the bounds."""
    try:
        with open(os.path.join(H.build_dir(), "CMakeCache.txt")) as f:
            text = f.read()
    except OSError:
        return False
    return any(f"{o}:BOOL=ON" in text for o in ("LUNFS_SANITIZE", "LUNFS_TSAN"))


def proc_mem(pid):
    """(VmRSS, VmHWM) of PID in bytes."""
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                vals[key] = int(rest.split()[0]) * KiB
    return vals["VmRSS"], vals["VmHWM"]


def mib(n):
    return f"{n / MiB:.1f} MiB"


def report(line):
    print(line)
    log.info("%s", line)


def start_daemon(lf, *args):
    """Start lunfsd on LF's state directory ourselves (the CLI would start
    it on its first mount) so that its size with nothing open is seen."""
    logf = open(os.path.join(lf.state_dir, "lunfsd.log"), "ab")
    proc = subprocess.Popen([lf.daemon_bin, "--state-dir", lf.state_dir, *args],
                            stdin=subprocess.DEVNULL, stdout=logf,
                            stderr=subprocess.STDOUT, start_new_session=True)
    logf.close()
    sock = os.path.join(lf.state_dir, "lunfsd.sock")
    ok = H.wait_until(lambda: lf.daemon_pid() == proc.pid and
                      os.path.exists(sock), 10)
    assert ok, f"lunfsd did not start: {lf.log_tail()}"
    # Let it settle: the first request maps most of its libraries.
    lf.status()
    return proc


def stop_daemon(lf, proc):
    lf.ok("shutdown", timeout=60)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cli_pool(lf, n):
    """N Lunfs CLI wrappers on the same state directory, each with its own
    output files: one per worker thread (Lunfs.run is not thread-safe)."""
    out = []
    for i in range(n):
        d = os.path.join(lf.tmpdir, f"cli{i}")
        os.makedirs(d, exist_ok=True)
        out.append(H.Lunfs(lf.state_dir, d))
    return out


def parallel(clis, jobs):
    """Run jobs (callables taking a Lunfs) spread over the CLI wrappers."""
    with concurrent.futures.ThreadPoolExecutor(len(clis)) as ex:
        futs = [ex.submit(job, clis[i % len(clis)]) for i, job in enumerate(jobs)]
        for f in futs:
            f.result()


def check_io(vol):
    """Write and read back through one mount; for block volumes also check
    the bytes reached the LUN's backing file."""
    tag = f"lunfs-scale {vol['url']}\n".encode()
    if vol["block"]:
        fd = os.open(vol["path"], os.O_RDWR)
        try:
            os.pwrite(fd, tag, 0)
            os.fsync(fd)
            assert os.pread(fd, len(tag), 0) == tag
        finally:
            os.close(fd)
        assert H.read_at(vol["backing"], 0, len(tag)) == tag, \
            f"{vol['url']}: write did not reach the backing file"
    else:
        p = os.path.join(vol["path"], "hello.txt")
        with open(p, "wb") as f:
            f.write(tag)
            f.flush()
            os.fsync(f.fileno())
        with open(p, "rb") as f:
            assert f.read() == tag, f"{vol['url']}: read back differs"


def test_scale_100_volumes(lunfs, targets, lundir):
    t0 = time.monotonic()
    tgts = []
    vols = []
    for ti in range(TARGETS):
        t = targets(f"s{ti}", luns={n: LUN_SIZE
                                    for n in range(1, LUNS_PER_TARGET + 1)})
        tgts.append(t)
        for lun in range(1, LUNS_PER_TARGET + 1):
            block = lun <= LUNS_PER_TARGET - FS_PER_TARGET
            path = os.path.join(lundir, f"t{ti}-l{lun}")
            if block:
                H.make_file(path)
            else:
                os.mkdir(path)
            vols.append({"url": t.url(lun), "path": path, "block": block,
                         "backing": t.luns[lun]})
    report(f"scale: {len(vols)} LUNs on {TARGETS} targets set up in "
           f"{time.monotonic() - t0:.1f} s")

    proc = start_daemon(lunfs)
    pid = proc.pid
    try:
        figures = {0: proc_mem(pid)}
        clis = cli_pool(lunfs, WORKERS)

        def mount_job(v):
            return lambda cli: cli.mount(v["url"], v["path"],
                                         *(["--block"] if v["block"] else []))

        # Volumes are mounted target by target, so that every quarter has
        # the same mix (20 block + 5 filesystem).
        done = 0
        for upto in (25, 50, 100):
            t1 = time.monotonic()
            parallel(clis, [mount_job(v) for v in vols[done:upto]])
            done = upto
            figures[upto] = proc_mem(pid)
            report(f"scale: {upto} volumes mounted "
                   f"({time.monotonic() - t1:.1f} s): "
                   f"VmRSS {mib(figures[upto][0])}, "
                   f"VmHWM {mib(figures[upto][1])}")

        # One session per target, shared by its 25 volumes.
        for t in tgts:
            conns = t.connections()
            assert len(conns) == 1, f"{t.iqn}: {conns}"
        st = lunfs.status()
        ours = [s for s in st["sessions"]
                if s["target"] in {t.iqn for t in tgts}]
        assert len(ours) == TARGETS, st["sessions"]
        assert all(s["refs"] == LUNS_PER_TARGET for s in ours), ours
        assert sum(s["refs"] for s in ours) == len(vols)
        assert len(st["volumes"]) == len(vols)
        assert len(st["mounts"]) == len(vols)
        for v in vols:
            assert H.is_mountpoint(v["path"]), v["path"]

        t1 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as ex:
            list(ex.map(check_io, vols))
        after_io = proc_mem(pid)
        report(f"scale: write+read through {len(vols)} mounts "
               f"({time.monotonic() - t1:.1f} s): VmRSS {mib(after_io[0])}, "
               f"VmHWM {mib(after_io[1])}")

        r0, r25, r50, r100 = (figures[k][0] for k in (0, 25, 50, 100))
        per_vol = (r100 - r50) / 50
        if sanitized_build():
            report("scale: sanitized build: memory bounds not checked")
        report(f"scale: RSS 0→25 +{mib(r25 - r0)}, 25→50 +{mib(r50 - r25)}, "
               f"50→100 +{mib(r100 - r50)}; {per_vol / KiB:.0f} KiB per "
               f"volume (80% block, 20% filesystem)")
        if not sanitized_build():
            assert r0 < BASE_MAX, f"base RSS {mib(r0)}"
            # Linear: twice the volumes cost about twice the memory.
            assert r100 - r50 <= 2.5 * (r50 - r25) + SLACK, figures
            # Per volume, for this mix: 20 block + 5 fs per 25 volumes.
            mix = (20 * BLOCK_VOL_MAX + 5 * FS_VOL_MAX) / 25
            assert per_vol <= mix, \
                f"{per_vol / KiB:.0f} KiB per volume > {mix / KiB:.0f} KiB"
            assert r100 <= r0 + 100 * mix + SLACK, figures

        # Unmount everything: every session logs out.
        t1 = time.monotonic()
        parallel(clis, [lambda cli, v=v: cli.umount(v["path"]) for v in vols])
        report(f"scale: {len(vols)} unmounts in {time.monotonic() - t1:.1f} s")
        for t in tgts:
            assert t.wait_connections(0, timeout=10) == 0, \
                f"{t.iqn} still has connections after the last unmount"
        st = lunfs.status()
        assert st["sessions"] == [] and st["volumes"] == [] \
            and st["mounts"] == [], st
        assert not H.mounts_under(lundir)
        end = proc_mem(pid)
        report(f"scale: after unmounting all: VmRSS {mib(end[0])}, "
               f"VmHWM {mib(end[1])}; total {time.monotonic() - t0:.1f} s")
    finally:
        stop_daemon(lunfs, proc)



def make_tree(root, n, top=50):
    """N directories (one 4 KiB directory block each: metadata that goes
    through the cache), each holding one small file."""
    for d in range(top):
        os.mkdir(os.path.join(root, f"d{d}"))
    for i in range(n):
        sub = os.path.join(root, f"d{i % top}", f"s{i}")
        os.mkdir(sub)
        with open(os.path.join(sub, "f"), "wb") as f:
            f.write(b"x" * 100)
    return 2 * n + top


def stat_tree(root, n, top=50):
    for i in range(n):
        os.stat(os.path.join(root, f"d{i % top}", f"s{i}", "f"))


NTREE = 5000
SMALL_CACHE_MIB = 8


def test_memory_budget(lunfs, targets, lundir):
    t = targets("m", luns={**{n: LUN_SIZE for n in range(1, 21)},
                           21: 1024 * MiB, 22: 1024 * MiB})
    check = not sanitized_build()
    proc = start_daemon(lunfs, "--cache-size", str(SMALL_CACHE_MIB))
    pid = proc.pid
    other = proc2 = None
    try:
        base = proc_mem(pid)[0]
        report(f"budget: base (daemon started, nothing open) {mib(base)}")

        for n in range(1, 11):
            p = H.make_file(os.path.join(lundir, f"b{n}"))
            lunfs.mount(t.url(n), p, "--block")
            check_io({"url": t.url(n), "path": p, "block": True,
                      "backing": t.luns[n]})
        r_blk = proc_mem(pid)[0]
        per_blk = (r_blk - base) / 10
        for n in range(11, 21):
            p = os.path.join(lundir, f"f{n}")
            os.mkdir(p)
            lunfs.mount(t.url(n), p)
            check_io({"url": t.url(n), "path": p, "block": False})
        r_fs = proc_mem(pid)[0]
        per_fs = (r_fs - r_blk) / 10
        report(f"budget: per block volume {per_blk / KiB:.0f} KiB, per "
               f"filesystem volume (16 MiB, just formatted) "
               f"{per_fs / KiB:.0f} KiB")

        # One volume at ten paths: nine extra mounts of an open volume.
        paths = [os.path.join(lundir, f"m{i}") for i in range(10)]
        os.mkdir(paths[0])
        lunfs.mount(t.url(21), paths[0])
        r_one = proc_mem(pid)[0]
        for p in paths[1:]:
            os.mkdir(p)
            lunfs.mount(t.url(21), p)
        r_ten = proc_mem(pid)[0]
        per_mount = (r_ten - r_one) / 9
        st = lunfs.status()
        vol = [v for v in st["volumes"] if v["spec"] == t.url(21)]
        assert len(vol) == 1 and vol[0]["mounts"] == 10, st["volumes"]
        report(f"budget: per extra mount of an open volume "
               f"{per_mount / KiB:.0f} KiB")

        # Far more metadata than the 8 MiB cache holds.
        idle = proc_mem(pid)[0]
        t1 = time.monotonic()
        inodes = make_tree(paths[0], NTREE)
        t2 = time.monotonic()
        stat_tree(paths[1], NTREE)
        small = proc_mem(pid)
        grow, hwm = small[0] - idle, small[1] - idle
        report(f"budget[cache {SMALL_CACHE_MIB} MiB]: {NTREE} dirs+files "
               f"created in {t2 - t1:.1f} s, stat through another mount in "
               f"{time.monotonic() - t2:.1f} s: RSS +{mib(grow)} "
               f"(VmHWM +{mib(hwm)}) over the idle volume")

        # The same work on a daemon with the default (64 MiB) cache.
        other = H.Lunfs(os.path.join(lundir, "state2"),
                        os.path.join(lundir, "cli-default"))
        os.makedirs(other.tmpdir, exist_ok=True)
        proc2 = start_daemon(other)
        pid2 = proc2.pid
        dpaths = [os.path.join(lundir, f"n{i}") for i in range(2)]
        for p in dpaths:
            os.mkdir(p)
            other.mount(t.url(22), p)
        idle2 = proc_mem(pid2)[0]
        make_tree(dpaths[0], NTREE)
        stat_tree(dpaths[1], NTREE)
        big = proc_mem(pid2)
        grow_default = big[0] - idle2
        report(f"budget[cache 64 MiB]: the same work: RSS "
               f"+{mib(grow_default)} (VmHWM +{mib(big[1] - idle2)})")
        stop_daemon(other, proc2)
        proc2 = None

        bound = (CACHE_RSS_FACTOR * SMALL_CACHE_MIB * MiB +
                 PER_INODE_MAX * inodes + SLACK)
        report(f"budget: summary: base {mib(base)}, +{per_blk / KiB:.0f} KiB "
               f"per block volume, +{per_fs / KiB:.0f} KiB per fresh "
               f"filesystem volume, +{per_mount / KiB:.0f} KiB per extra "
               f"mount; {inodes} inodes through an {SMALL_CACHE_MIB} MiB "
               f"cache +{mib(grow)} (bound {mib(bound)}), through the "
               f"default cache +{mib(grow_default)}")
        if check:
            assert base < BASE_MAX, mib(base)
            assert per_blk < BLOCK_VOL_MAX, per_blk
            assert per_fs < FS_VOL_MAX, per_fs
            assert per_mount < EXTRA_MOUNT_MAX, per_mount
            # The small cache holds the volume to its bound...
            assert grow <= bound and hwm <= bound, (grow, hwm, bound)
            # ...and the bound is what held it: the default cache kept
            # much more of the same metadata.
            assert grow_default > grow + SMALL_CACHE_MIB * MiB, \
                (grow_default, grow)
    finally:
        if other is not None:
            other.teardown([])
        if proc2 is not None:
            proc2.wait(timeout=20)
        stop_daemon(lunfs, proc)
