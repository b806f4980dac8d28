#!/usr/bin/python3
"""bench.py — lunfs over iSCSI next to its alternatives, measured in one run.

Starts a private tgtd on 127.0.0.1 (random control and iSCSI ports), then
runs the same workloads on:

  lunfs    lunfs mounting a LUN of that tgtd (FUSE, userspace ext4)
  raw      lunfs-rawbench: libiscsi's async API on the same LUN (no fs)
  fuse2fs  fuse2fs -o fakeroot on a local ext4 image file
  kernel   the kernel's ext4 on a loop device over an image file

and prints a table with the ratios (speed-ups: > 1 means lunfs is faster),
the issue's targets, and the machine it ran on. --json PATH writes every
figure. --quick only checks that every column runs, on tiny sizes.

Backing files (tgtd LUNs, image files) live on tmpfs (/dev/shm) so that
every column reads a "target cache hot" store and "cold" means the client
side: page cache dropped and the filesystem remounted. The 16 GiB format
LUN lives on disk (/var/tmp) so a format that writes everything cannot eat
the RAM.

tgtd runs with glibc malloc tunables that keep its 1 MiB data buffers
mapped: without them every large command page-faults a fresh mmap inside
tgtd and 1 MiB reads stall near 150 MiB/s whoever the initiator is
(--plain-tgtd turns this off). Its iSCSI parameters are tgtd's defaults,
as in the issue's reference figures; --target-mrdsl BYTES raises the data
PDU size the target accepts (tgtd's default, 8 KiB, makes every 1 MiB
write 128 PDUs). Raw and lunfs share that tgtd.

Everything it starts is stopped by PID, everything it mounts is unmounted
and every temporary file removed, also on Ctrl-C and on failure.
"""

import argparse
import contextlib
import errno
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IQN = "iqn.2024-01.org.lunfs:bench"

COLUMNS = ("lunfs", "raw", "fuse2fs", "kernel")
# key, label, unit, higher is better
ROWS = (
    ("seq_read", "sequential read, cold", "MiB/s", True),
    ("seq_write", "sequential write + fsync", "MiB/s", True),
    ("rand_d1", "4 KiB random read, depth 1", "IOPS", True),
    ("rand_d32", "4 KiB random read, depth 32", "IOPS", True),
    ("create", "create+write+close 4 KiB files", "files/s", True),
    ("stat", "stat, cold", "files/s", True),
    ("ls", "ls -l, cold", "ms", False),
    ("unlink", "unlink", "files/s", True),
)
# Requests after which the caller does not wait (none, or sent in the
# background): the rest are one round trip each.
ASYNC_REQUESTS = ("FORGET", "BATCH_FORGET", "RELEASE", "RELEASEDIR",
                  "INTERRUPT")
COUNTED_ROWS = ("create", "stat", "ls", "unlink")
RAW_ROWS = ("seq_read", "seq_write", "rand_d1", "rand_d32")
RAW_LUN = 4  # raw's own LUN, so raw runs can alternate with lunfs runs
URING_PARAM = "/sys/module/fuse/parameters/enable_uring"
# (row, reference column, minimum speed-up) from the issue
TARGETS = (
    ("seq_read", "raw", 0.9),
    ("seq_write", "raw", 0.8),
    ("rand_d32", "raw", 0.6),
    ("create", "fuse2fs", 10), ("create", "kernel", 0.25),
    ("stat", "fuse2fs", 10), ("stat", "kernel", 0.25),
    ("ls", "fuse2fs", 10), ("ls", "kernel", 0.25),
    ("unlink", "fuse2fs", 10), ("unlink", "kernel", 0.25),
)


class Interrupted(Exception):
    pass


class StepFailed(Exception):
    pass


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------- helpers
# The timed file loops run in a child process: a hung FUSE server then
# costs a step (killed on timeout), not the whole benchmark.

def helper_main(argv):
    op = argv[0]
    if op == "write":
        path, size = argv[1], int(argv[2])
        buf = os.urandom(MiB)
        t0 = time.monotonic()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        done = 0
        while done < size:
            done += os.write(fd, buf[:min(MiB, size - done)])
        os.fsync(fd)
        os.close(fd)
        dt = time.monotonic() - t0
        out = {"seconds": dt, "bytes": done}
    elif op == "read":
        path = argv[1]
        buf = bytearray(MiB)
        t0 = time.monotonic()
        done = 0
        with open(path, "rb", buffering=0) as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                done += n
        dt = time.monotonic() - t0
        out = {"seconds": dt, "bytes": done}
    elif op in ("create", "stat", "unlink"):
        d, n = argv[1], int(argv[2])
        names = [os.path.join(d, f"f{i:05d}") for i in range(n)]
        data = b"x" * 4096
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        t0 = time.monotonic()
        if op == "create":
            for p in names:
                fd = os.open(p, flags, 0o644)
                os.write(fd, data)
                os.close(fd)
        elif op == "stat":
            for p in names:
                os.lstat(p)
        else:
            for p in names:
                os.unlink(p)
        dt = time.monotonic() - t0
        out = {"seconds": dt, "count": n}
    elif op == "rtt":
        # getxattr of a name no file has: one FUSE round trip each (the
        # kernel caches no xattrs of FUSE files), with next to no work
        # on the server's side.
        path, n = argv[1], int(argv[2])
        t0 = time.monotonic()
        for _ in range(n):
            try:
                os.getxattr(path, "user.lunfs-bench-none")
            except OSError as e:
                if e.errno != errno.ENODATA:
                    raise
        dt = time.monotonic() - t0
        out = {"seconds": dt, "count": n}
    else:
        print(f"unknown helper op {op}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


def run(argv, timeout=60, check=True, env=None, quiet=False):
    """Run argv with output in temporary files (a daemon the command
    spawns may inherit its stdout; a pipe would then never see EOF)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except BaseException as e:  # a timeout, or Ctrl-C: never leave it
            proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if isinstance(e, subprocess.TimeoutExpired):
                raise StepFailed(f"{os.path.basename(argv[0])} timed out "
                                 f"after {timeout:g}s")
            raise
        out.seek(0)
        err.seek(0)
        o = out.read().decode(errors="replace")
        e = err.read().decode(errors="replace")
    if check and rc != 0:
        lines = [ln for ln in (e + o).strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit status {rc}"
        raise StepFailed(f"{os.path.basename(argv[0])}: {why}")
    return subprocess.CompletedProcess(argv, rc, o, e)


def helper(op, *args, timeout=60):
    r = run([sys.executable, os.path.abspath(__file__), "--helper", op,
             *map(str, args)], timeout=timeout)
    return json.loads(r.stdout)


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        log(f"cannot drop caches: {e}")


def mountinfo():
    res = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            p = line.split()
            res.append(p[4].encode().decode("unicode_escape"))
    return res


def unmount(path):
    """Unmount path if it is mounted: politely, then lazily."""
    if path not in mountinfo():
        return
    for argv in (["fusermount3", "-u", path], ["umount", path],
                 ["umount", "-l", path]):
        if shutil.which(argv[0]) is None:
            continue
        try:
            run(argv, timeout=30, check=False)
        except StepFailed:
            pass
        if path not in mountinfo():
            return


def allocated(path):
    return os.stat(path).st_blocks * 512


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine():
    m = {"nproc": os.cpu_count(), "kernel": platform.release()}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    m["mem_total_kib"] = int(line.split()[1])
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    m["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return m


def fmt_num(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


# ------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.size = args.size or (16 * MiB if self.quick else 512 * MiB)
        self.nfiles = args.files or (200 if self.quick else 10000)
        self.rand_s = args.rand_seconds or (0.5 if self.quick else 3.0)
        self.repeat = args.repeat or (1 if self.quick else 3)
        self.samples = {}
        self.pair_ratio = {}  # row: median of paired lunfs/raw ratios
        self.raw_ok = False   # raw column ran: lunfs rows are paired
        self.step_timeout = 60 if self.quick else 180
        self.format_size = 1 * GiB if self.quick else 16 * GiB
        self.build = os.environ.get("LUNFS_BUILD_DIR",
                                    os.path.join(REPO, "build"))
        self.results = {k: {c: None for c in COLUMNS} for k, *_ in ROWS}
        self.extra = {}  # lunfs-only figures
        self.notes = []
        self.cleanups = []
        self.tgtd = None
        self.control = self.port = None

    # -- bookkeeping

    def at_exit(self, fn, what):
        self.cleanups.append((fn, what))

    def cleanup(self):
        for fn, what in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # keep cleaning whatever happened
                log(f"cleanup: {what}: {e}")
        self.cleanups = []

    def record(self, row, col, fn, repeat=1):
        """The median of `repeat` runs: this machine's neighbours make
        single throughput runs swing by a third."""
        t0 = time.monotonic()
        try:
            vs = [fn() for _ in range(repeat)]
            v = statistics.median(vs)
            if repeat > 1:
                self.samples[f"{row}/{col}"] = vs
            self.results[row][col] = v
            log(f"{col:8} {row:10} {fmt_num(v)}  ({time.monotonic() - t0:.1f}s)")
        except (StepFailed, OSError, ValueError, KeyError) as e:
            self.results[row][col] = {"failed": str(e)}
            log(f"{col:8} {row:10} failed: {e}")

    def record_paired(self, row, fn, repeat):
        """lunfs's throughput rows, each run right after a raw run of the
        same row on raw's own LUN: the machine's load drifts over minutes,
        so the ratio is taken pair by pair (median of lunfs_i / raw_i) and
        both columns get the median of these samples."""
        rawfn = self.raw_fns[row]
        t0 = time.monotonic()
        try:
            raws, ours = [], []
            for _ in range(repeat):
                raws.append(rawfn())
                ours.append(fn())
            self.results[row]["raw"] = statistics.median(raws)
            self.results[row]["lunfs"] = statistics.median(ours)
            self.samples[f"{row}/raw"] = raws
            self.samples[f"{row}/lunfs"] = ours
            self.pair_ratio[row] = statistics.median(
                a / b for a, b in zip(ours, raws))
            log(f"lunfs    {row:10} {fmt_num(self.results[row]['lunfs'])}"
                f" (raw {fmt_num(self.results[row]['raw'])}, paired ratio "
                f"{self.pair_ratio[row]:.2f}) ({time.monotonic() - t0:.1f}s)")
        except (StepFailed, OSError, ValueError, KeyError) as e:
            self.results[row]["lunfs"] = {"failed": str(e)}
            log(f"lunfs    {row:10} failed: {e}")

    def fail_column(self, col, why, rows=None):
        for k, *_ in ROWS:
            if (rows is None or k in rows) and self.results[k][col] is None:
                self.results[k][col] = {"failed": why}

    def mkdtemp(self, base, name):
        d = tempfile.mkdtemp(prefix=f"lunfs-bench-{name}.", dir=base)
        self.at_exit(lambda: shutil.rmtree(d, ignore_errors=True),
                     f"remove {d}")
        return d

    # -- tgtd

    def tgtadm(self, *args):
        return run(["tgtadm", "-C", str(self.control), *map(str, args)],
                   timeout=30)

    def start_tgtd(self):
        env = dict(os.environ)
        if not self.args.plain_tgtd:
            env["GLIBC_TUNABLES"] = ("glibc.malloc.mmap_threshold=33554432:"
                                     "glibc.malloc.trim_threshold=1073741824:"
                                     "glibc.malloc.top_pad=67108864")
        for _ in range(5):
            control = random.randint(2000, 32767)  # tgtd -C caps at 32767
            if os.path.exists(f"/var/run/tgtd/socket.{control}"):
                continue
            port = free_port()
            logf = open(os.path.join(self.work, "tgtd.log"), "ab")
            proc = subprocess.Popen(
                ["tgtd", "-f", "-C", str(control), "--iscsi",
                 f"portal=127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                stdout=logf, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)
            logf.close()
            self.tgtd, self.control, self.port = proc, control, port
            self.at_exit(lambda p=proc, c=control: self.stop_tgtd(p, c),
                         f"stop tgtd {proc.pid}")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                r = run(["tgtadm", "-C", str(control), "--op", "show",
                         "--mode", "sys"], timeout=10, check=False)
                if r.returncode == 0:
                    try:
                        socket.create_connection(("127.0.0.1", port),
                                                 1).close()
                        return
                    except OSError:
                        pass
                time.sleep(0.05)
            self.stop_tgtd(proc, control)
        raise StepFailed("tgtd did not start (see tgtd.log)")

    @staticmethod
    def stop_tgtd(proc, control):
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # ignores SIGTERM in a session
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for suffix in ("", ".lock"):
            try:
                os.unlink(f"/var/run/tgtd/socket.{control}{suffix}")
            except OSError:
                pass

    def add_lun(self, lun, path, size):
        with open(path, "wb") as f:
            f.truncate(size)
        self.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "logicalunit",
                    "--tid", 1, "--lun", lun, "-b", path)

    def url(self, lun):
        return f"iscsi://127.0.0.1:{self.port}/{IQN}/{lun}"

    # -- raw libiscsi

    def rawbench(self, *args, timeout=None):
        r = run([self.rawbin, *map(str, args), self.url(RAW_LUN)],
                timeout=timeout or self.step_timeout)
        return json.loads(r.stdout.strip().splitlines()[-1])

    def raw_column(self):
        self.rawbin = os.path.join(self.build, "tools", "lunfs-rawbench")
        if not os.access(self.rawbin, os.X_OK):
            try:
                run(["cmake", "--build", self.build, "--target",
                     "lunfs-rawbench"], timeout=300)
            except StepFailed as e:
                self.fail_column("raw", f"lunfs-rawbench not built: {e}",
                                 RAW_ROWS)
                return
        S = self.size
        R = self.repeat
        self.raw_ok = True
        self.record("seq_write", "raw", self.raw_fns["seq_write"], R)
        drop_caches()
        self.record("seq_read", "raw", self.raw_fns["seq_read"], R)
        try:
            self.extra["raw_seq_read_128k_depth1_mib_s"] = self.rawbench(
                "--read", "--bs", 128 * KiB, "--depth", 1, "--size",
                S)["mib_s"]
        except StepFailed as e:
            log(f"raw 128 KiB serial read: {e}")
        for row in ("rand_d1", "rand_d32"):
            self.record(row, "raw", self.raw_fns[row], R)

    @property
    def raw_fns(self):
        S = self.size

        def rand(d):
            return self.rawbench("--read", "--random", "--bs", 4096,
                                 "--depth", d, "--size", S, "--seconds",
                                 self.rand_s)["iops"]
        return {
            "seq_write": lambda: self.rawbench(
                "--write", "--bs", MiB, "--depth", 32, "--size", S)["mib_s"],
            "seq_read": lambda: self.rawbench(
                "--read", "--bs", MiB, "--depth", 32, "--size", S)["mib_s"],
            "rand_d1": lambda: rand(1),
            "rand_d32": lambda: rand(32),
        }

    # -- the filesystem workloads, shared by lunfs, fuse2fs and kernel

    def fio_rand(self, path, depth):
        if shutil.which("fio") is None:
            raise StepFailed("fio not installed (apt-get install fio)")
        engine = ["--ioengine=psync"] if depth == 1 else \
            ["--ioengine=libaio", f"--iodepth={depth}"]
        base = ["fio", "--name=rand", f"--filename={path}", "--rw=randread",
                "--bs=4k", f"--size={self.size}", "--numjobs=1",
                f"--runtime={self.rand_s}", "--time_based",
                "--output-format=json", *engine]
        # O_DIRECT so that depth 32 is really 32 deep (buffered libaio
        # reads block in io_submit); fall back to buffered if refused.
        try:
            r = run(base + ["--direct=1"], timeout=self.step_timeout)
        except StepFailed as e:
            self.notes.append(f"fio --direct=1 on {path}: {e}; buffered")
            r = run(base + ["--direct=0"], timeout=self.step_timeout)
        j = json.loads(r.stdout[r.stdout.index("{"):])
        job = j["jobs"][0]
        if job.get("error"):
            raise StepFailed(f"fio error {job['error']}")
        return job["read"]["iops"]

    @contextlib.contextmanager
    def counting(self, fs, row, n):
        """The FUSE requests per operation of what runs inside, for a
        column whose fs counts them (lunfs: `lunfs status`)."""
        get = getattr(fs, "requests", None)
        before = None
        if get:
            try:
                before = get()
            except (StepFailed, OSError, ValueError) as e:
                log(f"request counts before {row}: {e}")
        yield
        if before is None:
            return
        try:
            after = get()
        except (StepFailed, OSError, ValueError) as e:
            log(f"request counts after {row}: {e}")
            return
        self.extra.setdefault("lunfs_requests_per_op", {})[row] = {
            k: (c - before.get(k, 0)) / n for k, c in sorted(after.items())
            if c != before.get(k, 0)}

    def fs_suite(self, col, fs):
        """fs: mount(), umount(), dir. Each step records its own failure
        and the next one still runs."""
        S, N, T = self.size, self.nfiles, self.step_timeout
        big = lambda: os.path.join(fs.dir, "big")
        files = lambda: os.path.join(fs.dir, "files")

        def cold():
            fs.umount()
            drop_caches()
            fs.mount()

        def seq_write():
            r = helper("write", big(), S, timeout=T)
            return r["bytes"] / r["seconds"] / MiB

        def seq_read():
            cold()
            r = helper("read", big(), timeout=T)
            if r["bytes"] != S:
                raise StepFailed(f"read {r['bytes']} bytes, wrote {S}")
            return r["bytes"] / r["seconds"] / MiB

        def rand(depth):
            cold()
            return self.fio_rand(big(), depth)

        counted = lambda row: self.counting(fs, row, N)

        def create():
            os.unlink(big())  # room, and a directory of only the files
            os.mkdir(files())
            with counted("create"):
                r = helper("create", files(), N, timeout=T)
            return N / r["seconds"]

        def stat():
            cold()
            with counted("stat"):
                r = helper("stat", files(), N, timeout=T)
            return N / r["seconds"]

        def ls():
            cold()
            with counted("ls"):
                t0 = time.monotonic()
                r = run(["ls", "-l", files()], timeout=T,
                        env=dict(os.environ, LC_ALL="C"))
                dt = time.monotonic() - t0
            n = len(r.stdout.splitlines()) - 1
            if n != N:
                raise StepFailed(f"ls -l listed {n} entries, want {N}")
            return dt * 1000

        def unlink():
            with counted("unlink"):
                r = helper("unlink", files(), N, timeout=T)
            return N / r["seconds"]

        try:
            fs.mount()
        except (StepFailed, OSError) as e:
            self.fail_column(col, f"mount: {e}")
            return
        R = self.repeat
        rows = (("seq_write", seq_write), ("seq_read", seq_read),
                ("rand_d1", lambda: rand(1)), ("rand_d32", lambda: rand(32)))
        for row, fn in rows:
            if col == "lunfs" and self.raw_ok:
                self.record_paired(row, fn, R)
            else:
                self.record(row, col, fn, R)
        self.record("create", col, create)
        self.record("stat", col, stat)
        self.record("ls", col, ls)
        self.record("unlink", col, unlink)

    # -- kernel ext4 on a loop device

    def kernel_column(self):
        d = self.mkdtemp(self.shm, "kernel")
        img = os.path.join(d, "ext4.img")
        mnt = os.path.join(d, "mnt")
        os.mkdir(mnt)
        bench = self

        class Kernel:
            dir = mnt
            loop = None

            def mount(self):
                if self.loop is None:
                    with open(img, "wb") as f:
                        f.truncate(bench.image_size())
                    run(["mkfs.ext4", "-F", "-q", "-E",
                         "lazy_itable_init=0,lazy_journal_init=0", img])
                    self.loop = run(["losetup", "--find", "--show",
                                     img]).stdout.strip()
                    bench.at_exit(lambda: run(["losetup", "-d", self.loop],
                                              check=False),
                                  f"detach {self.loop}")
                    bench.at_exit(lambda: unmount(mnt), f"unmount {mnt}")
                run(["mount", "-t", "ext4", self.loop, mnt])

            def umount(self):
                run(["umount", mnt])

        fs = Kernel()
        try:
            self.fs_suite("kernel", fs)
        finally:
            unmount(mnt)

    # -- fuse2fs on an image file

    def fuse2fs_column(self):
        if shutil.which("fuse2fs") is None:
            self.fail_column("fuse2fs", "fuse2fs not installed "
                             "(apt-get install fuse2fs)")
            return
        d = self.mkdtemp(self.shm, "fuse2fs")
        img = os.path.join(d, "ext4.img")
        mnt = os.path.join(d, "mnt")
        os.mkdir(mnt)
        bench = self

        class Fuse2fs:
            dir = mnt
            proc = None
            made = False

            def mount(self):
                if not self.made:
                    with open(img, "wb") as f:
                        f.truncate(bench.image_size())
                    run(["mkfs.ext4", "-F", "-q", "-E",
                         "lazy_itable_init=0,lazy_journal_init=0", img])
                    self.made = True
                    bench.at_exit(self.stop, f"stop fuse2fs on {mnt}")
                logf = open(os.path.join(d, "fuse2fs.log"), "ab")
                self.proc = subprocess.Popen(
                    ["fuse2fs", img, mnt, "-o", "fakeroot", "-f"],
                    stdin=subprocess.DEVNULL, stdout=logf,
                    stderr=subprocess.STDOUT, start_new_session=True)
                logf.close()
                deadline = time.monotonic() + 20
                while mnt not in mountinfo():
                    if self.proc.poll() is not None:
                        raise StepFailed(f"fuse2fs exited "
                                         f"{self.proc.returncode}")
                    if time.monotonic() > deadline:
                        raise StepFailed("fuse2fs did not mount in 20s")
                    time.sleep(0.02)

            def umount(self):
                unmount(mnt)
                self.wait()

            def wait(self):
                # fuse2fs writes the image back after the unmount returns:
                # the next mount must wait for it.
                if self.proc is None:
                    return
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
                self.proc = None

            def stop(self):
                unmount(mnt)
                if self.proc is not None and self.proc.poll() is None:
                    try:
                        self.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                        self.proc.wait(timeout=10)

        fs = Fuse2fs()
        try:
            self.fs_suite("fuse2fs", fs)
        finally:
            fs.stop()

    # -- lunfs

    def lunfs(self, *args, timeout=60):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LUNFS_")}
        env["LUNFS_BUILD_DIR"] = self.build
        if self.args.fuse_transport == "dev":
            env["LUNFS_FUSE_URING"] = "0"
        return run([self.lunfsbin, "--state-dir", self.state, *map(str, args)],
                   timeout=timeout, env=env)

    def daemon_pid(self):
        try:
            with open(os.path.join(self.state, "lunfsd.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        try:
            return int(json.loads(self.lunfs("status", "--json",
                                              timeout=10).stdout)["pid"])
        except (StepFailed, ValueError, KeyError, TypeError):
            return None

    def stop_lunfs(self):
        pid = self.daemon_pid()
        try:
            self.lunfs("shutdown", timeout=30)
        except StepFailed as e:
            log(f"lunfs shutdown: {e}")
        if pid:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                log(f"lunfsd {pid} still alive after shutdown: SIGKILL")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for m in mountinfo():
            if m.startswith(self.lunfs_dir + "/"):
                unmount(m)

    def lunfs_column(self):
        self.lunfsbin = os.path.join(self.build, "tools", "lunfs")
        for b in (self.lunfsbin, os.path.join(self.build, "tools", "lunfsd")):
            if not os.access(b, os.X_OK):
                self.fail_column("lunfs", f"{b} not built")
                return
        self.lunfs_dir = d = self.mkdtemp(self.shm, "lunfs")
        self.state = os.path.join(d, "state")
        os.mkdir(self.state)
        mnt, mnt2, mnt3 = (os.path.join(d, n) for n in ("mnt", "mnt2", "mnt3"))
        for m in (mnt, mnt2, mnt3):
            os.mkdir(m)
        self.want_fuse_uring()
        self.at_exit(self.stop_lunfs, "stop lunfsd")
        bench = self

        class Lunfs:
            dir = mnt
            first = True

            def mount(self):
                t0 = time.monotonic()
                bench.lunfs("mount", bench.url(1), mnt)
                if self.first:
                    bench.extra["lunfs_first_mount_with_format_s"] = \
                        time.monotonic() - t0
                    self.first = False
                    bench.extra["lunfs_fuse_transport"] = \
                        self.status().get("fuse_transport", "?")

            def umount(self):
                bench.lunfs("umount", mnt)

            def status(self):
                st = json.loads(bench.lunfs("status", "--json").stdout)
                for m in st["mounts"]:
                    if m["path"] == mnt:
                        return m
                raise StepFailed(f"{mnt} not in lunfs status")

            def requests(self):
                return self.status().get("fuse_requests", {})

        self.fs_suite("lunfs", Lunfs())

        if mnt not in mountinfo():
            try:
                self.lunfs("mount", self.url(1), mnt)
            except StepFailed as e:
                log(f"lunfs: remount for the mount-latency step: {e}")

        def mount_latency():
            if mnt not in mountinfo():
                raise StepFailed("first volume not mounted")
            # Formats the empty LUN 2 once; the timed mounts reuse it.
            self.lunfs("mount", self.url(2), mnt2)
            self.lunfs("umount", mnt2)
            times = []
            for _ in range(3):
                t0 = time.monotonic()
                self.lunfs("mount", self.url(2), mnt2)
                times.append((time.monotonic() - t0) * 1000)
                self.lunfs("umount", mnt2)
            self.extra["lunfs_mount_ms_runs"] = times
            return statistics.median(times)

        def fmt():
            before = allocated(self.fmt_lun)
            t0 = time.monotonic()
            self.lunfs("mount", self.url(3), mnt3, timeout=120)
            dt = time.monotonic() - t0
            self.extra["lunfs_format_written_at_mount_bytes"] = \
                allocated(self.fmt_lun) - before
            self.lunfs("umount", mnt3, timeout=120)
            self.extra["lunfs_format_written_bytes"] = \
                allocated(self.fmt_lun) - before
            return dt

        def round_trip():
            if mnt not in mountinfo():
                raise StepFailed("first volume not mounted")
            p = os.path.join(mnt, "rtt")
            open(p, "w").close()
            n = 2000 if self.quick else 20000
            r = helper("rtt", p, n, timeout=self.step_timeout)
            os.unlink(p)
            return r["seconds"] / n * 1e6

        for key, fn in (("lunfs_mount_existing_ms", mount_latency),
                        ("lunfs_format_s", fmt),
                        ("lunfs_fuse_round_trip_us", round_trip)):
            try:
                self.extra[key] = fn()
                log(f"lunfs    {key} {fmt_num(self.extra[key])}")
            except (StepFailed, OSError) as e:
                self.extra[key] = {"failed": str(e)}
                log(f"lunfs    {key} failed: {e}")

        pid = self.daemon_pid()
        try:
            if pid is None:
                raise StepFailed("no daemon pid")
            with open(f"/proc/{pid}/status") as f:
                st = dict(ln.split(":", 1) for ln in f if ":" in ln)
            self.extra["lunfsd_vmhwm_kib"] = int(st["VmHWM"].split()[0])
            self.extra["lunfsd_vmrss_kib"] = int(st["VmRSS"].split()[0])
        except (StepFailed, OSError, KeyError, ValueError) as e:
            self.extra["lunfsd_vmhwm_kib"] = {"failed": str(e)}

    def want_fuse_uring(self):
        """FUSE over io_uring, if asked for and the kernel has it: the
        fuse module's enable_uring for this run, restored at exit."""
        if self.args.fuse_transport != "io_uring":
            return
        try:
            with open(URING_PARAM) as f:
                old = f.read().strip()
        except OSError:
            log("lunfs: this kernel has no FUSE over io_uring; /dev/fuse")
            return
        if old == "Y":
            return

        def put(v):
            with open(URING_PARAM, "w") as f:
                f.write(v)
        put("Y")
        self.at_exit(lambda: put(old), f"restore {URING_PARAM}={old}")
        log(f"lunfs: {URING_PARAM} N -> Y for this run")

    # -- driver

    def target_params(self):
        """iSCSI parameters the private target gets (see the docstring)."""
        if self.args.target_mrdsl:
            return [("MaxRecvDataSegmentLength", self.args.target_mrdsl)]
        return []

    def image_size(self):
        return max(1 * GiB, 2 * self.size + 512 * MiB)

    def main(self):
        self.shm = self.args.dir
        self.work = self.mkdtemp(self.shm, "tgtd")
        disk = self.mkdtemp(self.args.disk_dir, "format")
        self.start_tgtd()
        self.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "target",
                    "--tid", 1, "-T", IQN)
        for name, value in self.target_params():
            self.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                        "target", "--tid", 1, "--name", name, "--value",
                        value)
        lun1 = os.path.join(self.work, "lun1.img")
        self.add_lun(1, lun1, self.image_size())
        self.add_lun(2, os.path.join(self.work, "lun2.img"), 1 * GiB)
        self.add_lun(RAW_LUN, os.path.join(self.work, "lun4-raw.img"),
                     self.image_size())
        self.fmt_lun = os.path.join(disk, "lun3-format.img")
        self.add_lun(3, self.fmt_lun, self.format_size)
        self.tgtadm("--lld", "iscsi", "--op", "bind", "--mode", "target",
                    "--tid", 1, "-I", "127.0.0.1")

        only = set(self.args.only.split(",")) if self.args.only else None
        steps = (("raw", self.raw_column), ("kernel", self.kernel_column),
                 ("fuse2fs", self.fuse2fs_column),
                 ("lunfs", self.lunfs_column))
        for col, fn in steps:
            if only and col not in only:
                continue
            log(f"--- {col}")
            try:
                fn()
            except (StepFailed, OSError) as e:
                self.fail_column(col, str(e),
                                 RAW_ROWS if col == "raw" else None)

    # -- report

    def speedup(self, row, ref):
        higher = next(h for k, _, _, h in ROWS if k == row)
        a, b = self.results[row]["lunfs"], self.results[row][ref]
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) \
                or a <= 0 or b <= 0:
            return None
        if ref == "raw" and row in self.pair_ratio:
            return self.pair_ratio[row]
        return a / b if higher else b / a

    def report_requests(self, extra):
        """Round trips per operation, and the rate that the cost of one
        round trip alone would allow."""
        per = self.extra.get("lunfs_requests_per_op", {})
        rtt = self.extra.get("lunfs_fuse_round_trip_us")
        out = ["", "FUSE requests per operation on lunfs (the kernel's "
               "choice; all but the FORGETs and RELEASEs make the caller "
               "wait):"]
        labels = {k: label for k, label, _, _ in ROWS}
        higher = {k: h for k, _, _, h in ROWS}
        num = lambda v: isinstance(v, (int, float))
        for row in COUNTED_ROWS:
            kinds = per.get(row)
            if not kinds:
                out.append(f"  {labels[row]}: —")
                continue
            sync = sum(v for k, v in kinds.items()
                       if k not in ASYNC_REQUESTS)
            order = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
            what = ", ".join(f"{k} {v:.2f}" for k, v in order
                             if k not in ASYNC_REQUESTS)
            bg = ", ".join(f"{k} {v:.2f}" for k, v in order
                           if k in ASYNC_REQUESTS)
            out.append(f"  {labels[row]}: {sync:.2f} round trips ({what}"
                       + (f"; no wait: {bg}" if bg else "") + ")")
            # A rate, or (ls -l) the time of all self.nfiles operations.
            rate = higher[row]
            show = (lambda v: f"{v:,.0f}/s") if rate else \
                (lambda v: f"{v:,.0f} ms")
            parts = []
            if num(rtt) and sync > 0:
                floor = sync * rtt
                parts.append("the round trips alone: " +
                             (f"≤ {show(1e6 / floor)}" if rate else
                              f"≥ {show(floor * self.nfiles / 1000)}"))
            if num(self.results[row]["lunfs"]):
                parts.append("measured " + show(self.results[row]["lunfs"]))
            need = []
            for trow, ref, want in TARGETS:
                v = self.results[row][ref] if trow == row else None
                if num(v) and v > 0:
                    need.append(show(v * want if rate else v / want) +
                                f" ({want:g}× {ref})")
            if need:
                parts.append("the targets need " + ", ".join(need))
            if parts:
                out.append("      " + "; ".join(parts))
        out.append("  one FUSE round trip (getxattr of a missing name, one "
                   "at a time): " +
                   extra("lunfs_fuse_round_trip_us",
                         lambda v: f"{v:.1f} µs"))
        return out

    def report(self):
        m = machine()
        hdr = ["workload", "lunfs", "raw", "fuse2fs", "kernel",
               "vs raw", "vs fuse2fs", "vs kernel"]
        table = [hdr]
        failures = []
        for key, label, unit, _ in ROWS:
            line = [f"{label} ({unit})"]
            for c in COLUMNS:
                v = self.results[key][c]
                if v is None:
                    line.append("—")
                elif isinstance(v, dict):
                    why = v["failed"]
                    failures.append(f"{c} {key}: {why}")
                    line.append("failed: " + (why[:37] + "…"
                                              if len(why) > 38 else why))
                else:
                    line.append(fmt_num(v))
            for ref in ("raw", "fuse2fs", "kernel"):
                s = self.speedup(key, ref)
                line.append("—" if s is None else f"{s:.2f}×")
            table.append(line)
        widths = [max(len(r[i]) for r in table) for i in range(len(hdr))]
        out = []
        out.append(f"lunfs benchmark — {self.size // MiB} MiB files, "
                   f"{self.nfiles} small files, random reads "
                   f"{self.rand_s:g} s; throughput rows: median of "
                   f"{self.repeat}{' (quick)' if self.quick else ''}")
        out.append(f"machine: nproc={m.get('nproc')} "
                   f"MemTotal={m.get('mem_total_kib', 0) // 1024} MiB "
                   f"kernel={m.get('kernel')} cpu={m.get('cpu', '?')}")
        params = " ".join(f"{k}={v}" for k, v in self.target_params())
        out.append("target: private tgtd" +
                   ("" if self.args.plain_tgtd else ", malloc tunables") +
                   (f", {params}" if params else
                    ", tgtd's default iSCSI parameters"))
        out.append("")
        for i, r in enumerate(table):
            cells = [r[0].ljust(widths[0])] + \
                [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
            out.append("  ".join(cells))
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        out.append("")
        out.append("vs X = speed-up of lunfs over X (> 1: lunfs faster; "
                   "for ls -l the inverse time ratio)")
        if self.pair_ratio:
            out.append("vs raw for the throughput rows: the median of "
                       f"{self.repeat} lunfs/raw ratios, each lunfs run right "
                       "after a raw run")

        def extra(key, f):
            v = self.extra.get(key)
            if v is None:
                return "—"
            if isinstance(v, dict):
                failures.append(f"lunfs {key}: {v['failed']}")
                return "failed: " + v["failed"]
            return f(v)

        out.append("")
        out.append("lunfs only:")
        out.append("  mount of an existing volume, existing session: " +
                   extra("lunfs_mount_existing_ms",
                         lambda v: f"{v:.1f} ms (median of 3)"))
        out.append(f"  format of an empty {self.format_size // GiB} GiB "
                   "sparse LUN (lunfs mount): " +
                   extra("lunfs_format_s", lambda v: f"{v:.2f} s") +
                   ", wrote " +
                   extra("lunfs_format_written_bytes",
                         lambda v: f"{v / MiB:.1f} MiB"))
        out.append("  FUSE transport: " +
                   extra("lunfs_fuse_transport", str) +
                   f" (asked for: {self.args.fuse_transport})")
        out.append("  lunfsd peak RSS (VmHWM): " +
                   extra("lunfsd_vmhwm_kib", lambda v: f"{v / 1024:.1f} MiB"))
        if "raw_seq_read_128k_depth1_mib_s" in self.extra:
            out.append("  (raw sequential read with serial 128 KiB "
                       "requests: "
                       f"{self.extra['raw_seq_read_128k_depth1_mib_s']:.0f}"
                       " MiB/s)")

        out += self.report_requests(extra)

        targets = []
        out.append("")
        out.append("targets (issue 6):")
        for row, ref, want in TARGETS:
            s = self.speedup(row, ref)
            ok = s is not None and s >= want
            targets.append({"row": row, "vs": ref, "min": want,
                            "speedup": s, "met": ok})
            mark = "n/a " if s is None else "met " if ok else "MISS"
            out.append(f"  {mark} {row} ≥ {want:g} × "
                       f"{ref}: " + ("—" if s is None else f"{s:.2f}"))
        for key, test, text in (
                ("lunfs_mount_existing_ms", lambda v: v <= 50,
                 "mount ≤ 50 ms"),
                ("lunfs_format_s", lambda v: v < 2, "format < 2 s"),
                ("lunfs_format_written_bytes", lambda v: v < 64 * MiB,
                 "format writes < 64 MiB")):
            v = self.extra.get(key)
            ok = isinstance(v, (int, float)) and test(v)
            targets.append({"row": key, "text": text, "met": ok})
            mark = "n/a " if v is None else "met " if ok else "MISS"
            out.append(f"  {mark} {text}")
        for n in self.notes:
            out.append(f"note: {n}")
        print("\n".join(out), flush=True)

        if self.args.json:
            doc = {"machine": m, "quick": self.quick,
                   "sizes": {"file_bytes": self.size, "files": self.nfiles,
                             "random_seconds": self.rand_s,
                             "format_lun_bytes": self.format_size},
                   "units": {k: u for k, _, u, _ in ROWS},
                   "results": self.results,
                   "speedups": {k: {r: self.speedup(k, r) for r in
                                    ("raw", "fuse2fs", "kernel")}
                                for k, *_ in ROWS},
                   "lunfs": self.extra, "targets": targets,
                   "samples": self.samples,
                   "paired_ratios": self.pair_ratio,
                   "notes": self.notes, "failures": failures,
                   "tgtd_malloc_tuned": not self.args.plain_tgtd,
                   "target_params": dict(self.target_params()),
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with open(self.args.json, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
        return failures


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--helper":
        return helper_main(sys.argv[2:])
    p = argparse.ArgumentParser(
        description="Benchmark lunfs against raw libiscsi, fuse2fs and the "
        "kernel's ext4, in one run against a private tgtd.")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes: only check that every column runs "
                   "(exit 1 if anything failed)")
    p.add_argument("--json", metavar="PATH", help="write every figure here")
    p.add_argument("--size", type=lambda s: int(s) * MiB, metavar="MIB",
                   help="sequential file size in MiB (default 512; quick 16)")
    p.add_argument("--files", type=int, metavar="N",
                   help="small files in one directory (default 10000; "
                   "quick 200)")
    p.add_argument("--rand-seconds", type=float, metavar="S",
                   help="duration of each random-read run (default 3)")
    p.add_argument("--repeat", type=int, metavar="N",
                   help="runs per throughput figure, median taken "
                   "(default 3; quick 1)")
    p.add_argument("--only", metavar="COLS",
                   help="comma-separated subset of lunfs,raw,fuse2fs,kernel")
    p.add_argument("--dir", default="/dev/shm",
                   help="where LUN and image files live (default /dev/shm)")
    p.add_argument("--disk-dir", default="/var/tmp",
                   help="where the 16 GiB format LUN lives (default /var/tmp)")
    p.add_argument("--fuse-transport", choices=("io_uring", "dev"),
                   default="io_uring",
                   help="how lunfs gets FUSE requests: io_uring (default; "
                   "turns the fuse module's enable_uring on for the run "
                   "where the kernel has it, Linux >= 6.14) or dev "
                   "(read/write on /dev/fuse)")
    p.add_argument("--plain-tgtd", action="store_true",
                   help="run tgtd without the malloc tunables")
    p.add_argument("--target-mrdsl", type=int, metavar="BYTES",
                   help="the target's MaxRecvDataSegmentLength (tgtd's "
                   "default: 8192; 262144 lets writes use 256 KiB PDUs)")
    args = p.parse_args()
    if os.geteuid() != 0:
        p.error("run as root (tgtd, loop mounts, drop_caches)")
    for tool in ("tgtd", "tgtadm", "mkfs.ext4", "losetup", "fallocate"):
        if shutil.which(tool) is None:
            p.error(f"{tool} not found (run tools/setup.sh)")

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    os.chdir("/")
    b = Bench(args)
    failures = []
    interrupted = None
    t0 = time.monotonic()
    try:
        b.main()
    except Interrupted as e:
        interrupted = str(e)
    except StepFailed as e:
        log(f"setup failed: {e}")
        failures.append(str(e))
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        b.cleanup()
    if interrupted:
        log(f"interrupted ({interrupted}); cleaned up")
        return 130
    failures += b.report()
    log(f"done in {time.monotonic() - t0:.0f}s")
    if args.quick and failures:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
