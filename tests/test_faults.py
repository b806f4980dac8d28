"""Faults (issue 5): the target restarts under a write-heavy workload, the
target stays away past the replacement timeout, a portal goes away, and
lunfsd is killed right after fsync returned.

Each test that stops a target uses its own tgtd (the session tgtd is shared
by every test). Oracles: the bytes in tgtd's backing files, debugfs and
e2fsck reading those files, errno seen by the application, and tgtd's own
view of its portals and connections."""
import errno
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

import lunfs_harness as H

MiB = H.MiB
SHORT_TIMEOUT = 5  # seconds, LUNFS_REPLACEMENT_TIMEOUT for the EIO test


class RestartableTgtd(H.Tgtd):
    """A private tgtd that can be killed and started again on the same
    control and iSCSI ports, with the same targets and LUNs."""

    def __init__(self, workdir):
        super().__init__(workdir)
        self.config = []  # (tid, iqn, {lun: path})

    def target(self, name, luns):
        t = self.new_target(name, self.workdir)
        for lun, size in luns.items():
            t.add_lun(lun, size)
        t.allow_all()
        self.config.append((t.tid, t.iqn, dict(t.luns)))
        return t

    def kill(self):
        os.kill(self.proc.pid, 9)
        self.proc.wait(timeout=10)
        for suffix in ("", ".lock"):
            try:
                os.unlink(f"/var/run/tgtd/socket.{self.control}{suffix}")
            except OSError:
                pass

    def restart(self, extra_portals=()):
        log = open(os.path.join(self.workdir, f"tgtd-{self.control}.log"), "ab")
        portals = ",".join(f"portal=127.0.0.1:{p}"
                           for p in (self.port, *extra_portals))
        for _ in range(50):
            self.proc = subprocess.Popen(
                [self.tgtd, "-f", "-C", str(self.control), "--iscsi", portals],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
            if self._wait_ready(5):
                break
            self.stop()
            time.sleep(0.1)  # the port may still be held for a moment
        else:
            raise RuntimeError("tgtd did not restart on its port")
        log.close()
        for tid, iqn, luns in self.config:
            self.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "target",
                        "--tid", str(tid), "-T", iqn)
            for lun, path in luns.items():
                self.tgtadm("--lld", "iscsi", "--op", "new", "--mode",
                            "logicalunit", "--tid", str(tid), "--lun", str(lun),
                            "-b", path)
            self.tgtadm("--lld", "iscsi", "--op", "bind", "--mode", "target",
                        "--tid", str(tid), "-I", "ALL")


@pytest.fixture
def ptgt(lundir):
    """A private tgtd for one test; killed by PID at the end."""
    # Its own directory: backing files are named by tid, and the shared
    # tgtd's targets of this test live in lundir.
    d = os.path.join(lundir, "ptgt")
    os.mkdir(d)
    t = RestartableTgtd(d).start()
    yield t
    t.stop()


def e2fsck_n(path):
    r = H.run(["e2fsck", "-fn", path], timeout=60)
    assert r.returncode == 0, f"e2fsck -fn {path}: rc {r.returncode}\n{r.stdout}{r.stderr}"


def content(name, size):
    """Deterministic bytes for file NAME (the reference to compare with)."""
    out = bytearray()
    seed = name.encode()
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed * 64
    return bytes(out[:size])


class Writer(threading.Thread):
    """Writes files with known content, each one fsynced, until told to
    stop or N files are written; records the first error."""

    def __init__(self, root, n, size, on_file=None, prefix="f"):
        super().__init__(daemon=True)
        self.root, self.n, self.size = root, n, size
        self.on_file = on_file
        self.prefix = prefix
        self.done = []
        self.error = None
        self.stop = threading.Event()

    def run(self):
        try:
            for i in range(self.n):
                if self.stop.is_set():
                    break
                name = f"{self.prefix}{i:04d}"
                data = content(name, self.size)
                with open(os.path.join(self.root, name), "wb") as f:
                    # Several writes per file: more commands in flight.
                    for off in range(0, len(data), 64 * 1024):
                        f.write(data[off:off + 64 * 1024])
                    f.flush()
                    os.fsync(f.fileno())
                self.done.append(name)
                if self.on_file:
                    self.on_file(len(self.done))
        except OSError as ex:
            self.error = ex


def lunfs_env(timeout=None):
    return {"LUNFS_REPLACEMENT_TIMEOUT": str(timeout)} if timeout else None


# ---------------------------------------------------------------- restart

def test_target_restart_within_timeout(lunfs, ptgt, lundir):
    t = ptgt.target("restart", {1: 64 * MiB})
    d = os.path.join(lundir, "fs")
    os.mkdir(d)
    lunfs.mount(t.url(1), d)

    killed = threading.Event()
    w = Writer(d, n=60, size=256 * 1024,
               on_file=lambda n: n == 10 and killed.set())
    w.start()
    assert killed.wait(60), f"workload stalled: {w.error}"
    ptgt.kill()
    time.sleep(2)  # commands queue up meanwhile
    ptgt.restart()
    w.join(120)
    assert not w.is_alive(), "workload did not finish after the restart"
    assert w.error is None, f"workload saw {w.error!r}\n{lunfs.log_tail()}"
    assert len(w.done) == 60
    assert "connection lost" in lunfs.log_text()

    for name in w.done:
        with open(os.path.join(d, name), "rb") as f:
            assert f.read() == content(name, 256 * 1024), name
    st = lunfs.status()
    assert [s["connected"] for s in st["sessions"]] == [True]
    assert st["sessions"][0]["reconnects"] >= 1
    lunfs.umount(d)
    assert t.wait_connections(0) == 0
    e2fsck_n(t.luns[1])


def test_target_gone_past_timeout_eio_others_serve(lunfs, ptgt, target, lundir):
    t = ptgt.target("gone", {1: 32 * MiB})
    d1 = os.path.join(lundir, "gone")
    d2 = os.path.join(lundir, "stays")
    os.mkdir(d1)
    os.mkdir(d2)
    env = lunfs_env(SHORT_TIMEOUT)
    lunfs.mount(t.url(1), d1, env=env)  # starts the daemon with the env
    lunfs.mount(target.url(1), d2, env=env)
    assert f"replacement timeout {SHORT_TIMEOUT} s" in lunfs.log_text()

    before = Writer(d1, n=3, size=128 * 1024, prefix="pre")
    before.run()
    assert before.error is None

    ptgt.kill()
    # Writing to the dead volume fails with EIO within a bounded time.
    w = Writer(d1, n=10 ** 6, size=64 * 1024, prefix="dead")
    w.start()
    # Meanwhile the other volume keeps working.
    other = Writer(d2, n=20, size=128 * 1024)
    other.run()
    assert other.error is None, f"other volume failed: {other.error!r}"
    w.join(SHORT_TIMEOUT * 6 + 30)
    assert not w.is_alive(), "I/O to the dead target never failed"
    w.stop.set()
    assert isinstance(w.error, OSError) and w.error.errno == errno.EIO, \
        f"expected EIO, got {w.error!r}"
    for name in other.done:
        with open(os.path.join(d2, name), "rb") as f:
            assert f.read() == content(name, 128 * 1024)

    # Unmounting the dead volume finishes (it may report the lost flush).
    r = lunfs.run("umount", d1, timeout=90)
    assert not H.is_mountpoint(d1), r.stderr
    assert [m["path"] for m in lunfs.status()["mounts"]] == [d2]
    lunfs.umount(d2)

    ptgt.restart()
    r = lunfs.run("fsck", "--repair", t.url(1), timeout=120)
    assert r.returncode in (0, 1), f"fsck --repair: {r.returncode} {r.stdout}{r.stderr}"
    assert t.wait_connections(0) == 0
    e2fsck_n(t.luns[1])
    # What was fsynced before the target went away survived.
    lunfs.mount(t.url(1), d1)
    for name in before.done:
        with open(os.path.join(d1, name), "rb") as f:
            assert f.read() == content(name, 128 * 1024), name
    lunfs.umount(d1)


# ---------------------------------------------------------------- portals

def test_portal_removed_session_moves(lunfs, ptgt, lundir):
    t = ptgt.target("portals", {1: 32 * MiB})
    p1 = ptgt.port
    p2 = H.free_tcp_port()
    ptgt.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "portal",
                "--param", f"portal=127.0.0.1:{p2}")
    spec = H.write_json_spec(os.path.join(lundir, "spec.json"),
                             targetPortal=f"127.0.0.1:{p1}",
                             portals=[f"127.0.0.1:{p2}"], iqn=t.iqn, lun=1,
                             volumeMode="Block")
    b = H.make_file(os.path.join(lundir, "blk"))
    lunfs.mount(spec, b)
    assert t.wait_connections(1) == 1
    assert lunfs.status()["sessions"][0]["portal"] == f"127.0.0.1:{p1}"

    # Block workload: 4 KiB records at known offsets, each fsynced.
    err = []
    written = []
    stop = threading.Event()

    def work():
        fd = os.open(b, os.O_RDWR)
        try:
            i = 0
            while not stop.is_set() and i < 4000:
                off = (i * 4096 * 7) % (32 * MiB)
                data = content(f"p{i}", 4096)
                os.pwrite(fd, data, off)
                os.fdatasync(fd)
                written.append((off, data))
                i += 1
        except OSError as ex:
            err.append(ex)
        finally:
            os.close(fd)
    th = threading.Thread(target=work, daemon=True)
    th.start()
    assert H.wait_until(lambda: len(written) > 20 or err, 30)

    # The portal goes away; tgtd keeps existing connections, so drop ours.
    ptgt.tgtadm("--lld", "iscsi", "--op", "delete", "--mode", "portal",
                "--param", f"portal=127.0.0.1:{p1}")
    conns = t.connections()
    assert len(conns) == 1
    ptgt.tgtadm("--lld", "iscsi", "--op", "delete", "--mode", "conn",
                "--tid", str(t.tid), "--sid", conns[0]["session"],
                "--cid", conns[0]["connection"])
    n0 = len(written)

    def moved():
        st = lunfs.status()["sessions"]
        return st and st[0]["portal"] == f"127.0.0.1:{p2}" and \
            st[0]["connected"] and len(written) > n0 + 20
    ok = H.wait_until(lambda: moved() or err, 60, 0.2)
    stop.set()
    th.join(60)
    assert not err, f"workload failed during the portal switch: {err[0]!r}\n" \
        + lunfs.log_tail()
    assert ok, "session did not move to the second portal\n" + lunfs.log_tail()
    # tgtd sees the session on the remaining portal only.
    assert t.wait_connections(1) == 1
    # Every record that fdatasync returned for is on the target.
    for off, data in written:
        assert H.read_at(t.luns[1], off, 4096) == data, f"offset {off}"
    lunfs.umount(b)
    assert t.wait_connections(0) == 0


# ---------------------------------------------------------------- durability

@pytest.mark.parametrize("how", ["fsync", "fdatasync", "O_SYNC", "O_DSYNC"])
def test_block_sync_reaches_target(lunfs, target, lundir, how):
    b = H.make_file(os.path.join(lundir, "blk"))
    lunfs.mount(target.url(2), b, "--block")
    backing = target.luns[2]
    flags = os.O_WRONLY
    if how == "O_SYNC":
        flags |= os.O_SYNC
    elif how == "O_DSYNC":
        flags |= os.O_DSYNC
    fd = os.open(b, flags)
    try:
        for i, (off, size) in enumerate([(0, 4096), (1 * MiB + 512, 3000),
                                         (5 * MiB, 1 * MiB + 4096),
                                         (16 * MiB - 8192, 8192)]):
            data = content(f"{how}{i}", size)
            assert os.pwrite(fd, data, off) == size
            if how == "fsync":
                os.fsync(fd)
            elif how == "fdatasync":
                os.fdatasync(fd)
            # The call returned: the bytes are the target's now. (tgtd
            # writes into its backing file; we read it from the side.)
            assert H.read_at(backing, off, size) == data, (how, off)
    finally:
        os.close(fd)
    lunfs.umount(b)


def test_fs_fsync_then_kill9_daemon(lunfs, target, lundir):
    d = os.path.join(lundir, "fs")
    os.mkdir(d)
    lunfs.mount(target.url(1), d)
    data = content("durable", 700 * 1024 + 13)
    os.mkdir(os.path.join(d, "dir"))
    with open(os.path.join(d, "dir", "durable"), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    # Directory entry durable too: fsync the directory.
    dfd = os.open(os.path.join(d, "dir"), os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    lunfs.kill_daemon()

    # Read the file straight from tgtd's backing file, no lunfs involved:
    # fsync means committed to the journal, so replay it (e2fsck's own
    # replay, on a copy) before reading.
    backing = target.luns[1]
    out = os.path.join(lundir, "out")
    copy = os.path.join(lundir, "copy.img")
    shutil.copyfile(backing, copy)
    r = H.run(["e2fsck", "-E", "journal_only", "-y", copy], timeout=60)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    r = H.run(["debugfs", "-R", f"dump /dir/durable {out}", copy], timeout=60)
    assert os.path.exists(out), f"debugfs: {r.stdout}{r.stderr}"
    with open(out, "rb") as f:
        assert f.read() == data, "fsynced file not on the target after kill -9"

    # Recovery by the next command, then the filesystem is consistent.
    st = H.wait_until(lambda: [m for m in lunfs.status()["mounts"]
                               if m["state"] == "attached"], 60)
    assert st, "next daemon did not serve the volume again\n" + lunfs.log_tail()
    with open(os.path.join(d, "dir", "durable"), "rb") as f:
        assert f.read() == data
    lunfs.umount(d)
    assert target.wait_connections(0) == 0
    e2fsck_n(backing)
