"""Mounts of one volume with different id maps: by default one kernel view
(a FUSE mount per volume that allows idmapped mounts, each mount an
idmapped bind of it), and with `lunfsd --per-mount-views` (or where the
kernel cannot) a FUSE mount each with lunfs's own maps and lunfs's lock
table. Oracles: the kernel's ext4 (loop mount of tgtd's backing file),
e2fsck, sqlite3's own integrity check, and the kernel's lock and mmap
behaviour as processes see it."""
import errno
import fcntl
import mmap
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import lunfs_harness as H
from test_oci import (Runc, assert_released, debugfs_owner,  # noqa: F401
                      runc_private, start_daemon)

MAP_A = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"]
MAP_B = ["--uidmap", "0:200000:65536", "--gidmap", "0:200000:65536"]
PER_MOUNT = {"LUNFS_PER_MOUNT_VIEWS": "1"}
ROWS = 150


@pytest.fixture
def vtarget(targets):
    return targets("v", luns={1: 32 * H.MiB})


def two_mounts(lunfs, t, lundir, env=None):
    os.chmod(lundir, 0o755)  # the mapped users reach the mountpoints
    a, b = os.path.join(lundir, "a"), os.path.join(lundir, "b")
    os.mkdir(a)
    os.mkdir(b)
    lunfs.mount(t.url(1), a, *MAP_A, env=env)
    lunfs.mount(t.url(1), b, *MAP_B)
    return a, b


def as_user(uid, argv, groups=None, **kw):
    g = ["--groups", ",".join(map(str, groups))] if groups else \
        ["--clear-groups"]
    return H.run(["setpriv", "--reuid", str(uid), "--regid", str(uid)] + g +
                 ["--"] + argv, **kw)


def views_of(lunfs):
    return {m["path"]: m["view"] for m in lunfs.status()["mounts"]}


# A lock waiter: announces itself, blocks for the lock through its own
# mount, and reports whether the holder had released when it got it (the
# holder creates MARK, then releases).
WAITER = r"""
import fcntl, os, sys
path, kind, mark = sys.argv[1:4]
f = open(path, "r+")
print("waiting", flush=True)
if kind == "flock":
    fcntl.flock(f, fcntl.LOCK_EX)
else:
    fcntl.lockf(f, fcntl.LOCK_EX, 100, 0)
print("after-release" if os.path.exists(mark) else "OVERLAP", flush=True)
"""

TRY = r"""
import fcntl, sys
path, kind, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
f = open(path, "r+")
try:
    if kind == "flock":
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, start)
    print("granted")
except BlockingIOError:
    print("refused")
"""

INTERRUPTED = r"""
import fcntl, signal, sys
def alarm(*a):
    raise TimeoutError
signal.signal(signal.SIGALRM, alarm)
f = open(sys.argv[1], "r+")
signal.alarm(1)
try:
    fcntl.lockf(f, fcntl.LOCK_EX, 100, 0)
    print("granted")
except TimeoutError:
    print("interrupted")
"""


def py(code, *args):
    return H.run([sys.executable, "-c", code] + [str(a) for a in args])


def make_file(uid, path, size):
    """Created by a mapped user: host root has no id on a mapped mount."""
    r = as_user(uid, ["truncate", "-s", str(size), path])
    assert r.returncode == 0, r.stderr


def check_locks(a, b, lundir):
    """flock and lockf taken through a exclude through b; a blocked waiter
    through b is woken by the release through a; a signal interrupts a
    waiter, and a killed waiter leaves nothing behind."""
    fa, fb = os.path.join(a, "lockfile"), os.path.join(b, "lockfile")
    make_file(100000, fa, 300)
    for kind in ("flock", "lockf"):
        mark = os.path.join(lundir, "released-" + kind)
        holder = open(fa, "r+")
        if kind == "flock":
            fcntl.flock(holder, fcntl.LOCK_EX)
        else:
            fcntl.lockf(holder, fcntl.LOCK_EX, 100, 0)
        assert py(TRY, fb, kind, 0).stdout.strip() == "refused", kind
        if kind == "lockf":
            # Another byte range is free.
            assert py(TRY, fb, kind, 100).stdout.strip() == "granted"
        w = subprocess.Popen([sys.executable, "-c", WAITER, fb, kind, mark],
                             stdout=subprocess.PIPE, text=True)
        assert w.stdout.readline().strip() == "waiting"
        if kind == "lockf":
            assert py(INTERRUPTED, fb).stdout.strip() == "interrupted"
        open(mark, "w").close()
        holder.close()  # releases both kinds
        out, _ = w.communicate(timeout=30)
        assert out.strip() == "after-release", kind
        assert w.returncode == 0
    # A waiter killed while it waits leaves no lock behind.
    holder = open(fa, "r+")
    fcntl.lockf(holder, fcntl.LOCK_EX, 100, 0)
    w = subprocess.Popen([sys.executable, "-c", WAITER, fb, "lockf", "/none"],
                         stdout=subprocess.PIPE, text=True)
    assert w.stdout.readline().strip() == "waiting"
    w.kill()
    w.wait()
    holder.close()
    assert py(TRY, fb, "lockf", 0).stdout.strip() == "granted"


SQL_ROWS = "".join(f"INSERT INTO t(who, n) VALUES ('{{who}}', {i});\n"
                   for i in range(ROWS))


def sqlite_concurrent(a, b, uid_a, uid_b, journal):
    """Two sqlite3 processes, one through each mount, insert at once."""
    r = as_user(uid_a, ["sqlite3", os.path.join(a, "db"),
                        f"PRAGMA journal_mode={journal};"
                        "CREATE TABLE t(who TEXT, n INT);"])
    assert r.returncode == 0, r.stderr
    procs = []
    for uid, mp, who in ((uid_a, a, "a"), (uid_b, b, "b")):
        procs.append(subprocess.Popen(
            ["setpriv", "--reuid", str(uid), "--regid", str(uid),
             "--clear-groups", "--", "sqlite3", os.path.join(mp, "db")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    for p, who in zip(procs, "ab"):
        p.stdin.write(".timeout 20000\n" + SQL_ROWS.replace("{who}", who))
        p.stdin.close()
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
        assert p.stderr.read() == ""
    for mp, uid in ((a, uid_a), (b, uid_b)):
        r = as_user(uid, ["sqlite3", os.path.join(mp, "db"),
                          "PRAGMA integrity_check;"
                          "SELECT who, count(*) FROM t GROUP BY who;"])
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["ok", f"a|{ROWS}", f"b|{ROWS}"]


def test_idmapped_binds_share_one_kernel_view(lunfs, vtarget, lundir):
    """Different maps, one view: owners right in each and on disk, locks
    and shared mappings are the kernel's own across the mounts, SQLite in
    WAL mode from both at once stays intact; unmount in any order."""
    a, b = two_mounts(lunfs, vtarget, lundir)
    assert views_of(lunfs) == {a: "idmapped", b: "idmapped"}
    views = [m for m in H.mounts_under(lunfs.state_dir)]
    assert len(views) == 1 and views[0][1] == "fuse.lunfs", views
    st = lunfs.status()["mounts"]
    assert st[0]["fuse_requests"] == st[1]["fuse_requests"], \
        "binds of one view report its counts"

    r = as_user(100000, ["mkdir", "-m", "1777", os.path.join(a, "pub")])
    assert r.returncode == 0, r.stderr  # a's root: owns / (0 on disk)
    r = as_user(100005, ["mkdir", os.path.join(a, "pub/by-a")])
    assert r.returncode == 0, r.stderr
    r = as_user(200007, ["touch", os.path.join(b, "pub/by-b")])
    assert r.returncode == 0, r.stderr
    assert os.stat(os.path.join(a, "pub/by-a")).st_uid == 100005
    assert os.stat(os.path.join(b, "pub/by-a")).st_uid == 200005
    assert os.stat(os.path.join(a, "pub/by-b"))[4:6] == (100007, 100007)
    assert os.stat(os.path.join(a, "pub"))[4:6] == (100000, 100000)
    # Host root has no id through either map.
    with pytest.raises(OSError) as e:
        open(os.path.join(a, "by-root"), "w").close()
    assert e.value.errno == errno.EOVERFLOW

    check_locks(a, b, lundir)

    make_file(100000, os.path.join(a, "shared"), 8192)
    fa = os.open(os.path.join(a, "shared"), os.O_RDWR)
    fb = os.open(os.path.join(b, "shared"), os.O_RDWR)
    ma, mb = mmap.mmap(fa, 8192), mmap.mmap(fb, 8192)
    assert mb[4096:4101] == b"\0" * 5
    ma[4096:4101] = b"store"
    assert mb[4096:4101] == b"store", "one page cache: seen at once"
    ma.close(), mb.close(), os.close(fa), os.close(fb)

    sqlite_concurrent(a, b, 100000, 200000, "WAL")

    lunfs.umount(a)  # the first one first: the view stays for b
    assert os.path.isdir(os.path.join(b, "pub/by-a"))
    lunfs.umount(b)
    assert H.mounts_under(lunfs.state_dir) == []
    assert os.listdir(os.path.join(lunfs.state_dir, "views")) == []
    assert lunfs.status()["sessions"] == []
    assert vtarget.wait_connections(0) == 0
    r = H.run(["e2fsck", "-fn", vtarget.luns[1]], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    kmp = os.path.join(lundir, "kernel")
    os.mkdir(kmp)
    r = H.run(["mount", "-t", "ext4", "-o", "loop,ro", vtarget.luns[1], kmp])
    assert r.returncode == 0, r.stderr
    try:
        assert os.stat(os.path.join(kmp, "pub/by-a"))[4:6] == (5, 5)
        assert os.stat(os.path.join(kmp, "pub/by-b"))[4:6] == (7, 7)
    finally:
        H.kernel_umount(kmp, vtarget.luns[1])


def test_per_mount_views_lock_across_mounts(lunfs, vtarget, lundir):
    """The fallback: each mount its own FUSE mount and map. Locks still
    exclude across them (lunfs's lock table), and SQLite with a rollback
    journal (locks only) stays intact; a MAP_SHARED store is not seen
    through the other mount's mapping until msync, the documented limit."""
    a, b = two_mounts(lunfs, vtarget, lundir, env=PER_MOUNT)
    assert views_of(lunfs) == {a: "fuse-map", b: "fuse-map"}
    assert H.mounts_under(lunfs.state_dir) == []
    r = as_user(100000, ["mkdir", os.path.join(a, "by-a")])
    assert r.returncode == 0, r.stderr
    assert os.stat(os.path.join(b, "by-a")).st_uid == 200000

    check_locks(a, b, lundir)
    sqlite_concurrent(a, b, 100000, 200000, "DELETE")

    make_file(100000, os.path.join(a, "shared"), 8192)
    fa = os.open(os.path.join(a, "shared"), os.O_RDWR)
    fb = os.open(os.path.join(b, "shared"), os.O_RDWR)
    ma, mb = mmap.mmap(fa, 8192), mmap.mmap(fb, 8192)
    assert mb[0:5] == b"\0" * 5
    ma[0:5] = b"store"
    # Two kernels' page caches: the store is in a's until written back.
    assert mb[0:5] == b"\0" * 5
    ma.flush()  # msync: written through a, b's copy invalidated
    assert mb[0:5] == b"store"
    assert os.pread(fb, 5, 0) == b"store"
    ma.close(), mb.close(), os.close(fa), os.close(fb)

    # Unmounting one drops its locks, not the other's.
    holder = open(os.path.join(b, "lockfile"), "r+")
    fcntl.lockf(holder, fcntl.LOCK_EX, 100, 0)
    lunfs.umount(a)
    c = os.path.join(lundir, "c")
    os.mkdir(c)
    lunfs.mount(vtarget.url(1), c)
    assert py(TRY, os.path.join(c, "lockfile"), "lockf", 0).stdout.strip() \
        == "refused"
    holder.close()
    assert py(TRY, os.path.join(c, "lockfile"), "lockf", 0).stdout.strip() \
        == "granted"
    lunfs.umount(b)
    lunfs.umount(c)
    assert vtarget.wait_connections(0) == 0
    r = H.run(["e2fsck", "-fn", vtarget.luns[1]], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_idmapped_binds_after_daemon_kill(lunfs, vtarget, lundir):
    """kill -9 of lunfsd: the binds answer ENOTCONN (their FUSE connection
    died with it; nothing can serve them again), and the restarted daemon
    takes the dead view and binds away and mounts both paths again."""
    a, b = two_mounts(lunfs, vtarget, lundir)
    make_file(200000, os.path.join(b, "kept"), 4)
    with open(os.path.join(b, "kept"), "w") as f:
        f.write("kept")
        f.flush()
        os.fsync(f.fileno())
    old = lunfs.daemon_pid()
    lunfs.kill_daemon()
    for mp in (a, b):
        with pytest.raises(OSError) as e:
            os.listdir(mp)
        assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED,
                                 errno.ECANCELED)
    # Each is listed from the start of its re-attachment, and has its
    # view once served.
    assert H.wait_until(lambda: [(m.get("state"), m.get("view")) for m in
                                 lunfs.status()["mounts"]]
                        == [("attached", "idmapped")] * 2, timeout=30), \
        lunfs.log_tail()
    assert lunfs.daemon_pid() != old
    assert views_of(lunfs) == {a: "idmapped", b: "idmapped"}
    assert len(H.mounts_under(lunfs.state_dir)) == 1, "dead view left"
    assert sum(1 for m in H.mounts() if m[0] == a) == 1
    with open(os.path.join(a, "kept")) as f:
        assert f.read() == "kept"
    lunfs.umount(b)
    lunfs.umount(a)
    assert vtarget.wait_connections(0) == 0


def test_two_runc_containers_share_locks_and_mappings(lunfs, vtarget,
                                                      runc_private, lundir):
    """Two runc containers, each in its own user namespace (container root
    is host 100000 in one and 200000 in the other), on one volume through
    the hook, bundles on a private mount (the hook attaches each idmapped
    bind in the container's namespace): a store into a MAP_SHARED mapping
    in one is read at once through the other's mapping, flock and fcntl
    locks held in one refuse the other, and its blocked waits end only
    after the release."""
    helper = os.path.join(lundir, "lockmmap")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers",
                       "lockmmap.c")
    r = H.run(["cc", "-static", "-O1", "-o", helper, src], timeout=120)
    assert r.returncode == 0, r.stderr
    vols = [{"source": vtarget.url(1), "destination": "/data"}]
    ba = runc_private.bundle(vols, "/bin/lockmmap a /data",
                             uidmap_host=100000)
    bb = runc_private.bundle(vols, "/bin/lockmmap b /data",
                             uidmap_host=200000)
    for b in (ba, bb):
        shutil.copy(helper, os.path.join(b, "rootfs", "bin", "lockmmap"))
    pa = runc_private.start(ba)
    pb = runc_private.start(bb)
    ra, rb = runc_private.finish(pa, 90), runc_private.finish(pb, 90)
    assert ra.returncode == 0 and ra.stdout.split() == ["a:done"], \
        (ra.stdout, ra.stderr)
    assert rb.returncode == 0, (rb.stdout, rb.stderr)
    assert rb.stdout.split() == ["mmap:store", "flock-try:refused",
                                 "lockf-try:refused",
                                 "flock-wait:after-release",
                                 "lockf-wait:after-release"], rb.stdout
    log = lunfs.log_text()
    assert log.count("as an idmapped bind of") == 2
    # Both handed to the hook, which attached them in the containers.
    assert log.count("(detached, for the caller to attach)") == 2, log
    assert_released(lunfs, vtarget, runc_private.root)
    r = H.run(["e2fsck", "-fn", vtarget.luns[1]], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def runc_alone(lunfs):
    """runc bundles on a private mount, lunfsd not started yet."""
    rc = Runc(tempfile.mkdtemp(prefix="lunfs-oci-", dir="/tmp"), lunfs, "runc")
    os.chmod(rc.root, 0o755)
    yield rc
    rc.cleanup()
    H.unmount_all_under(rc.root)
    shutil.rmtree(rc.root, ignore_errors=True)


def test_hook_falls_back_to_host_path(lunfs, vtarget, runc_alone):
    """Where lunfsd serves no views (--per-mount-views here; rootless, or
    a kernel without FUSE idmap), the hook's mount is made at the bundle's
    host path with lunfs's own maps, and the hook clones it into the
    container (a private bundle mount): same ids inside and on disk."""
    start_daemon(lunfs, "--per-mount-views")
    vols = [{"source": vtarget.url(1), "destination": "/data"}]
    b = runc_alone.bundle(vols, "echo x > /data/f; stat -c '%u %g' /data/f; "
                            "touch /tmp/ready; i=0; while [ ! -e /tmp/go ] "
                            "&& [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); "
                            "done", uidmap_host=100000)
    p = runc_alone.start(b)
    try:
        assert H.wait_until(lambda: os.path.exists(
            os.path.join(b, "rootfs", "tmp", "ready")) or p.poll() is not None,
            30), "container never ready"
        st = lunfs.status()
        assert [(m["view"], m["attach"]) for m in st["mounts"]] == \
            [("fuse-map", "path")], st["mounts"]
    finally:
        open(os.path.join(b, "rootfs", "tmp", "go"), "w").close()
    r = runc_alone.finish(p, 60)
    assert r.returncode == 0 and r.stdout.split() == ["0", "0"], \
        (r.stdout, r.stderr)
    assert_released(lunfs, vtarget, runc_alone.root)
    assert debugfs_owner(vtarget.luns[1], "/f") == (0, 0)


def test_fsgroup_and_read_only_views(lunfs, vtarget, lundir):
    """One view per (fsGroup as the disk has it, read-only) of a volume:
    fsGroup 5000 on an identity mount and 105000 through a map that puts
    it at disk 5000 share one; another fsGroup and a read-only mount get
    their own. Each shows its group, and a file made in a shared view
    carries the disk group."""
    os.chmod(lundir, 0o755)
    mps = {n: os.path.join(lundir, n) for n in ("g1", "g2", "g3", "ro")}
    for p in mps.values():
        os.mkdir(p)
    lunfs.mount(vtarget.url(1), mps["g1"], "--fsgroup", "5000")
    lunfs.mount(vtarget.url(1), mps["g2"], "--fsgroup", "105000", *MAP_A)
    lunfs.mount(vtarget.url(1), mps["g3"], "--fsgroup", "6000")
    lunfs.mount(vtarget.url(1), mps["ro"], "--read-only")
    assert set(views_of(lunfs).values()) == {"idmapped"}
    assert len(H.mounts_under(lunfs.state_dir)) == 3
    r = as_user(100003, ["touch", os.path.join(mps["g2"], "f")],
                groups=[105000])
    assert r.returncode == 0, r.stderr  # fsGroup: group-writable root
    assert os.stat(os.path.join(mps["g2"], "f"))[4:6] == (100003, 105000)
    assert os.stat(os.path.join(mps["g1"], "f"))[4:6] == (3, 5000)
    assert os.stat(os.path.join(mps["g3"], "f")).st_gid == 6000
    assert os.stat(os.path.join(mps["ro"], "f"))[4:6] == (3, 5000)
    with pytest.raises(OSError) as e:
        open(os.path.join(mps["ro"], "g"), "w").close()
    assert e.value.errno == errno.EROFS
    for p in mps.values():
        lunfs.umount(p)
    assert H.mounts_under(lunfs.state_dir) == []
    r = H.run(["debugfs", "-R", "stat /f", vtarget.luns[1]])
    assert "User:     3   Group:  5000" in r.stdout, r.stdout


@pytest.fixture
def runc_bundles(request, lunfs):
    """runc bundles on a shared mount: were anything mounted at the
    bundle's host path, it would propagate into the container."""
    rc = Runc(tempfile.mkdtemp(prefix="lunfs-oci-", dir="/tmp"), lunfs, "runc")
    os.chmod(rc.root, 0o755)
    H.run(["mount", "--bind", rc.root, rc.root], check=True)
    H.run(["mount", "--make-shared", rc.root], check=True)
    yield rc
    rc.cleanup()
    H.unmount_all_under(rc.root)
    shutil.rmtree(rc.root, ignore_errors=True)


# Reads /data/f when the test asks (/tmp/probeN), into /tmp/outN.
PROBES = ("echo one > /data/f; sync /data/f /data; touch /tmp/ready; n=0; "
          "while [ $n -lt 2 ]; do i=0; "
          "while [ ! -e /tmp/probe$n ] && [ $i -lt 600 ]; do sleep 0.1; "
          "i=$((i+1)); done; "
          "cat /data/f > /tmp/out$n 2>&1 || echo FAILED >> /tmp/out$n; "
          "touch /tmp/done$n; n=$((n+1)); done")


def probe(b, n):
    tmp = os.path.join(b, "rootfs", "tmp")
    open(os.path.join(tmp, f"probe{n}"), "w").close()
    assert H.wait_until(lambda: os.path.exists(os.path.join(tmp, f"done{n}")),
                        30)
    with open(os.path.join(tmp, f"out{n}")) as f:
        return f.read()


def test_live_container_across_daemon_kill(lunfs, vtarget, runc_bundles):
    """kill -9 of lunfsd under a running user-namespaced container: its
    idmapped bind fails cleanly (ENOTCONN: the FUSE connection died with
    the daemon, and the kernel cannot hand it to another). The restarted
    daemon takes the record back (session, view, status "attached",
    "direct"), but the hook had attached the bind straight into the
    container's namespace and nothing is mounted at the host path to
    propagate, even from a shared bundle mount: the dead bind stays until
    the container ends, whose poststop then releases everything."""
    vols = [{"source": vtarget.url(1), "destination": "/data"}]
    b = runc_bundles.bundle(vols, PROBES, uidmap_host=100000)
    p = runc_bundles.start(b)
    try:
        assert H.wait_until(lambda: os.path.exists(
            os.path.join(b, "rootfs", "tmp", "ready")) or p.poll() is not None,
            30), "container never ready"
        lunfs.kill_daemon()
        out = probe(b, 0)
        assert "FAILED" in out and "not connected" in out, out
        assert H.wait_until(lambda: [(m["state"], m.get("attach")) for m in
                                     lunfs.status()["mounts"]]
                            == [("attached", "direct")], 30), lunfs.log_tail()
        assert [m for m in H.mounts_under(runc_bundles.root)
                if m[1].startswith("fuse")] == [], "a host-path mount"
        out = probe(b, 1)
        assert "FAILED" in out and "not connected" in out, out
    finally:
        for n in (0, 1):
            open(os.path.join(b, "rootfs", "tmp", f"probe{n}"), "w").close()
    r = runc_bundles.finish(p, 60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert_released(lunfs, vtarget, runc_bundles.root)
