"""Filesystem volumes (ext4 in userspace over iSCSI). The oracles are
e2fsprogs (e2fsck, mkfs.ext4, dumpe2fs, debugfs) and the kernel's ext4
through a read-only loop mount of tgtd's backing file."""
import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import subprocess
import sys

import pytest

import lunfs_harness as H

MiB = H.MiB
LUN_SIZE = 64 * MiB
MTIME = 1_700_000_000


@pytest.fixture
def fstarget(targets):
    return targets("fs", luns={1: LUN_SIZE, 2: LUN_SIZE})


def mkdir(lundir, name):
    p = os.path.join(lundir, name)
    os.mkdir(p)
    return p


@contextlib.contextmanager
def kernel_mount(backing, lundir, ro=True):
    """Mount BACKING with the kernel's ext4 through a loop device."""
    mp = os.path.join(lundir, "kernel-" + os.path.basename(backing))
    os.makedirs(mp, exist_ok=True)
    opts = "loop,ro" if ro else "loop"
    r = H.run(["mount", "-t", "ext4", "-o", opts, backing, mp])
    assert r.returncode == 0, f"kernel mount of {backing} failed: {r.stderr}"
    try:
        yield mp
    finally:
        H.kernel_umount(mp, backing)


def e2fsck(backing):
    r = H.run(["e2fsck", "-fn", backing], timeout=120)
    assert r.returncode == 0, f"e2fsck -fn exited {r.returncode}:\n{r.stdout}{r.stderr}"


def fs_state(backing):
    r = H.run(["dumpe2fs", "-h", backing])
    assert r.returncode == 0, r.stderr
    m = re.search(r"^Filesystem state:\s*(.*)$", r.stdout, re.M)
    assert m, r.stdout
    return m.group(1).strip()


def fs_features(backing):
    r = H.run(["dumpe2fs", "-h", backing])
    assert r.returncode == 0, r.stderr
    m = re.search(r"^Filesystem features:\s*(.*)$", r.stdout, re.M)
    assert m, r.stdout
    return m.group(1).split()


def fs_uuid(backing):
    r = H.run(["dumpe2fs", "-h", backing])
    assert r.returncode == 0, r.stderr
    return re.search(r"^Filesystem UUID:\s*(\S+)", r.stdout, re.M).group(1)


DATA = os.urandom(MiB + 12345)


def populate(root):
    """Files, dirs, symlinks, a hard link and xattrs, with fixed modes and
    times so that another view of the filesystem can be compared."""
    os.makedirs(os.path.join(root, "d1/d2/d3"))
    with open(os.path.join(root, "big"), "wb") as f:
        f.write(DATA)
    with open(os.path.join(root, "d1/small.txt"), "w") as f:
        f.write("hello lunfs\n")
    open(os.path.join(root, "d1/d2/empty"), "wb").close()
    with open(os.path.join(root, "d1/d2/d3/sparse"), "wb") as f:
        f.seek(5 * MiB)
        f.write(b"end")
    os.symlink("d1/small.txt", os.path.join(root, "link"))
    os.symlink("/nonexistent/target/" + "x" * 100, os.path.join(root, "d1/longlink"))
    os.link(os.path.join(root, "d1/small.txt"), os.path.join(root, "hard"))
    for i in range(50):
        with open(os.path.join(root, "d1/d2", f"many-{i:03d}"), "w") as f:
            f.write(str(i) * i)
    os.chmod(os.path.join(root, "d1/small.txt"), 0o640)
    os.chmod(os.path.join(root, "d1/d2"), 0o750)
    os.setxattr(os.path.join(root, "big"), "user.lunfs", b"xattr-value")
    os.setxattr(os.path.join(root, "d1"), "user.dir", b"on a dir")
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for n in files + dirs:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p) and n != "lost+found":
                os.utime(p, (MTIME, MTIME))


def snapshot(root):
    snap = {}
    for dirpath, dirs, files in os.walk(root):
        for n in sorted(dirs + files):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            ent = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                   "gid": st.st_gid, "fmt": stat.S_IFMT(st.st_mode)}
            if stat.S_ISLNK(st.st_mode):
                ent["target"] = os.readlink(p)
            else:
                ent["xattrs"] = {k: os.getxattr(p, k) for k in sorted(os.listxattr(p))
                                 if k.startswith("user.")}
            if stat.S_ISREG(st.st_mode):
                ent["size"] = st.st_size
                ent["nlink"] = st.st_nlink
                with open(p, "rb") as f:
                    ent["sha"] = hashlib.sha256(f.read()).hexdigest()
            if n != "lost+found" and not stat.S_ISLNK(st.st_mode) and \
                    not stat.S_ISDIR(st.st_mode):
                ent["mtime"] = int(st.st_mtime)
            snap[rel] = ent
    return snap


def assert_same_tree(a, b, what):
    assert sorted(a) == sorted(b), f"{what}: names differ: {set(a) ^ set(b)}"
    for k in a:
        assert a[k] == b[k], f"{what}: {k}: {a[k]} != {b[k]}"


def assert_idle(lunfs, t):
    assert t.wait_connections(0, timeout=5) == 0, "last umount did not log out"
    st = lunfs.status()
    assert st["volumes"] == [] and st["mounts"] == [] and st["sessions"] == []


def test_empty_lun_formatted_roundtrip(lunfs, fstarget, lundir):
    backing = fstarget.luns[1]
    mp = mkdir(lundir, "mnt")
    lunfs.mount(fstarget.url(1), mp)
    assert H.is_mountpoint(mp)
    st = lunfs.status()
    assert st["volumes"][0]["mode"] == "filesystem"
    populate(mp)
    via_lunfs = snapshot(mp)
    sv = os.statvfs(mp)
    assert sv.f_blocks * sv.f_frsize <= LUN_SIZE and sv.f_bfree > 0
    lunfs.umount(mp)
    assert not H.is_mountpoint(mp)
    assert_idle(lunfs, fstarget)
    e2fsck(backing)
    assert fs_state(backing) == "clean"
    with kernel_mount(backing, lundir) as kmp:
        assert_same_tree(via_lunfs, snapshot(kmp), "kernel ext4 vs lunfs")
    # Remount: the data is still there and the LUN is not reformatted.
    uuid = fs_uuid(backing)
    lunfs.mount(fstarget.url(1), mp)
    assert_same_tree(via_lunfs, snapshot(mp), "remount vs first mount")
    lunfs.umount(mp)
    assert fs_uuid(backing) == uuid
    e2fsck(backing)


def test_kernel_formatted_lun_served_as_is(lunfs, fstarget, lundir):
    backing = fstarget.luns[2]
    r = H.run(["mkfs.ext4", "-q", "-F", backing], timeout=60)
    assert r.returncode == 0, r.stderr
    with kernel_mount(backing, lundir, ro=False) as kmp:
        populate(kmp)
    with kernel_mount(backing, lundir) as kmp:
        via_kernel = snapshot(kmp)
    uuid = fs_uuid(backing)
    mp = mkdir(lundir, "mnt")
    lunfs.mount(fstarget.url(2), mp)
    assert_same_tree(via_kernel, snapshot(mp), "lunfs vs kernel-written ext4")
    with open(os.path.join(mp, "added-by-lunfs"), "w") as f:
        f.write("added\n")
    lunfs.umount(mp)
    assert fs_uuid(backing) == uuid, "lunfs reformatted an ext4 LUN"
    e2fsck(backing)
    with kernel_mount(backing, lundir) as kmp:
        with open(os.path.join(kmp, "added-by-lunfs")) as f:
            assert f.read() == "added\n"
        del_new = snapshot(kmp)
        del del_new["added-by-lunfs"]
        assert_same_tree(via_kernel, del_new, "kernel after lunfs write")
    assert_idle(lunfs, fstarget)


def _xfs(backing):
    H.write_at(backing, 0, b"XFSB" + b"\0\0\x10\0")


def _mbr(backing):
    entry = bytes([0x00, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") \
        + (8192).to_bytes(4, "little")
    H.write_at(backing, 446, entry)
    H.write_at(backing, 510, b"\x55\xaa")


def _random_data(backing):
    H.write_at(backing, 0, os.urandom(MiB))


@pytest.mark.parametrize("sig", [_xfs, _mbr, _random_data], ids=["xfs", "mbr", "random"])
def test_foreign_data_refused_untouched(lunfs, fstarget, lundir, sig):
    backing = fstarget.luns[1]
    sig(backing)
    before = H.sha256_file(backing)
    mp = mkdir(lundir, "mnt")
    r = lunfs.run("mount", fstarget.url(1), mp)
    H.assert_one_error_line(r)
    assert not H.is_mountpoint(mp)
    assert_idle(lunfs, fstarget)
    assert H.sha256_file(backing) == before, "a refused LUN was modified"


def test_read_only_empty_lun_refused(lunfs, fstarget, lundir):
    backing = fstarget.luns[1]
    mp = mkdir(lundir, "mnt")
    r = lunfs.run("mount", "--read-only", fstarget.url(1), mp)
    H.assert_one_error_line(r)
    assert not H.is_mountpoint(mp)
    assert_idle(lunfs, fstarget)
    with open(backing, "rb") as f:
        assert f.read(MiB) == bytes(MiB), "read-only mount wrote to the LUN"


def test_read_only_mount_gives_erofs(lunfs, fstarget, lundir):
    backing = fstarget.luns[1]
    assert H.run(["mkfs.ext4", "-q", "-F", backing], timeout=60).returncode == 0
    with kernel_mount(backing, lundir, ro=False) as kmp:
        with open(os.path.join(kmp, "f"), "w") as f:
            f.write("ro data\n")
        os.mkdir(os.path.join(kmp, "d"))
    before = H.sha256_file(backing)
    mp = mkdir(lundir, "mnt")
    lunfs.mount(fstarget.url(1), mp, "--read-only")
    assert lunfs.status()["volumes"][0]["read_only"] is True
    with open(os.path.join(mp, "f")) as f:
        assert f.read() == "ro data\n"
    attempts = [
        lambda: open(os.path.join(mp, "f"), "w"),
        lambda: open(os.path.join(mp, "new"), "w"),
        lambda: os.mkdir(os.path.join(mp, "d2")),
        lambda: os.unlink(os.path.join(mp, "f")),
        lambda: os.rename(os.path.join(mp, "f"), os.path.join(mp, "g")),
        lambda: os.chmod(os.path.join(mp, "f"), 0o600),
        lambda: os.symlink("f", os.path.join(mp, "l")),
        lambda: os.setxattr(os.path.join(mp, "f"), "user.x", b"1"),
    ]
    for i, attempt in enumerate(attempts):
        with pytest.raises(OSError) as ei:
            attempt()
        assert ei.value.errno == errno.EROFS, f"attempt {i}: {ei.value}"
    lunfs.umount(mp)
    assert H.sha256_file(backing) == before, "read-only mount changed the LUN"
    assert_idle(lunfs, fstarget)


STALE = "stale cache of the other mount (must be invalidated before the reply): "


def fuse_requests(lunfs, mp):
    for m in lunfs.status()["mounts"]:
        if m["path"] == mp:
            return m["fuse_requests"]
    raise AssertionError(f"{mp} not in lunfs status")


def test_status_counts_each_mounts_fuse_requests(lunfs, fstarget, lundir):
    """`lunfs status --json` counts the requests each mount's kernel sent,
    by kind: exactly, and per mount (the benchmark divides them by its
    operations). Per FUSE mount, so per-mount views here; idmapped binds
    share their view's counts (test_views.py)."""
    a, b = mkdir(lundir, "a"), mkdir(lundir, "b")
    lunfs.mount(fstarget.url(1), a, env={"LUNFS_PER_MOUNT_VIEWS": "1"})
    lunfs.mount(fstarget.url(1), b)
    assert {m["view"] for m in lunfs.status()["mounts"]} == {"fuse-map"}
    fa, fb = os.path.join(a, "f"), os.path.join(b, "f")
    open(fa, "w").close()
    ra, rb = fuse_requests(lunfs, a), fuse_requests(lunfs, b)
    assert ra["INIT"] == 1 and rb["INIT"] == 1
    assert ra.get("CREATE", 0) >= 1
    # The kernel caches no xattrs of a FUSE file: each getxattr is one
    # GETXATTR request, on the mount it was made through only.
    for _ in range(37):
        with pytest.raises(OSError) as e:
            os.getxattr(fa, "user.lunfs-test-none")
        assert e.value.errno == errno.ENODATA
    ra2, rb2 = fuse_requests(lunfs, a), fuse_requests(lunfs, b)
    assert ra2.get("GETXATTR", 0) - ra.get("GETXATTR", 0) == 37
    assert rb2.get("GETXATTR", 0) == rb.get("GETXATTR", 0)
    assert os.path.exists(fb)
    assert fuse_requests(lunfs, b).get("LOOKUP", 0) > rb2.get("LOOKUP", 0)
    assert all(isinstance(v, int) and v > 0 for v in ra2.values()), ra2
    lunfs.umount(b)
    lunfs.umount(a)


def test_uidmap_two_mounts_share_one_volume(lunfs, fstarget, lundir):
    backing = fstarget.luns[1]
    a, b = mkdir(lundir, "a"), mkdir(lundir, "b")
    lunfs.mount(fstarget.url(1), a)
    lunfs.mount(fstarget.url(1), b, "--uidmap", "0:100000:65536")
    st = lunfs.status()
    assert len(st["volumes"]) == 1 and st["volumes"][0]["mounts"] == 2
    assert fstarget.wait_connections(1) == 1
    fa, fb = os.path.join(a, "f"), os.path.join(b, "f")
    with open(fa, "w") as f:
        f.write("one")
    assert os.stat(fa).st_uid == 0
    assert os.stat(fb).st_uid == 100000
    with open(fb) as f:
        assert f.read() == "one"
    # Changes through one mount are seen at once through the other.
    with open(fa, "a") as f:
        f.write("two")
    with open(fb) as f:
        assert f.read() == "onetwo", STALE + "append via a not read via b"
    assert os.stat(fb).st_size == 6, STALE + "size after append via a, seen via b"
    with open(fb, "r+") as f:
        f.write("ONE")
    with open(fa) as f:
        assert f.read() == "ONEtwo", STALE + "write via b not read via a"
    os.mkdir(os.path.join(a, "dir"))
    assert os.path.isdir(os.path.join(b, "dir"))
    assert os.stat(os.path.join(b, "dir")).st_uid == 100000
    os.rename(fa, os.path.join(a, "dir/g"))
    assert not os.path.exists(fb), STALE + "rename via a: old name still found via b"
    assert "f" not in os.listdir(b), STALE + "rename via a: old name listed via b"
    with open(os.path.join(b, "dir/g")) as f:
        assert f.read() == "ONEtwo"
    open(os.path.join(a, "gone"), "w").close()
    assert os.path.exists(os.path.join(b, "gone")), STALE + "create via a not seen via b"
    os.unlink(os.path.join(a, "gone"))
    assert not os.path.exists(os.path.join(b, "gone")), \
        STALE + "unlink via a: name still found via b"
    assert "gone" not in os.listdir(b), STALE + "unlink via a: name listed via b"
    lunfs.umount(b)
    assert H.is_mountpoint(a) and fstarget.wait_connections(1) == 1
    lunfs.umount(a)
    assert_idle(lunfs, fstarget)
    e2fsck(backing)
    r = H.run(["debugfs", "-R", "stat /dir/g", backing])
    m = re.search(r"User:\s*(\d+)", r.stdout)
    assert m and m.group(1) == "0", r.stdout + r.stderr
    with kernel_mount(backing, lundir) as kmp:
        assert os.stat(os.path.join(kmp, "dir/g")).st_uid == 0


def test_fsgroup_view(lunfs, fstarget, lundir):
    mp = mkdir(lundir, "mnt")
    lunfs.mount(fstarget.url(1), mp, "--fsgroup", "2000")
    old = os.umask(0o022)
    try:
        with open(os.path.join(mp, "f"), "w") as f:
            f.write("x")
        os.mkdir(os.path.join(mp, "d"))
        with open(os.path.join(mp, "d/inner"), "w") as f:
            f.write("y")
    finally:
        os.umask(old)
    for rel in ("f", "d", "d/inner"):
        st = os.stat(os.path.join(mp, rel))
        assert st.st_gid == 2000, f"{rel}: gid {st.st_gid}"
        assert stat.S_IMODE(st.st_mode) & 0o660 == 0o660, f"{rel}: mode {oct(st.st_mode)}"
    for rel in ("d", "."):
        st = os.stat(os.path.join(mp, rel))
        assert st.st_mode & stat.S_ISGID, f"{rel}: dir not setgid: {oct(st.st_mode)}"
    lunfs.umount(mp)
    assert_idle(lunfs, fstarget)
    e2fsck(fstarget.luns[1])


def test_superblock_dirty_while_mounted(lunfs, fstarget, lundir):
    """Journaled, as the kernel's ext4 leaves it: valid, but flagged
    needs_recovery while mounted; neither after unmount."""
    backing = fstarget.luns[1]
    mp = mkdir(lundir, "mnt")
    lunfs.mount(fstarget.url(1), mp)
    with open(os.path.join(mp, "f"), "w") as f:
        f.write("x")
    assert "needs_recovery" in fs_features(backing)
    lunfs.umount(mp)
    assert fs_state(backing) == "clean"
    assert "needs_recovery" not in fs_features(backing)
    assert_idle(lunfs, fstarget)


def test_fsync_reaches_backing_while_mounted(lunfs, fstarget, lundir):
    """After fsync of a file and its directory, e2fsck on a copy of the
    backing file taken while still mounted finds the data (as if the node
    crashed after fsync)."""
    backing = fstarget.luns[1]
    mp = mkdir(lundir, "mnt")
    lunfs.mount(fstarget.url(1), mp)
    payload = os.urandom(300000)
    fd = os.open(os.path.join(mp, "durable"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, payload)
    os.fsync(fd)
    os.close(fd)
    dfd = os.open(mp, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    copy = os.path.join(lundir, "crash-copy.img")
    with open(backing, "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read())
    lunfs.umount(mp)
    # The copy needs recovery (it was mounted): e2fsck replays the journal
    # and must find nothing else to fix; the fsync'd file is there.
    r = subprocess.run(["e2fsck", "-E", "journal_only", "-y", copy],
                       capture_output=True, timeout=120)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    r = subprocess.run(["e2fsck", "-fn", copy], capture_output=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["debugfs", "-R", "cat /durable", copy],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == payload, "fsync'd file not in the backing store before umount"


# Run as root in each tree: unprivileged writers are forked children that
# drop to uid/gid 1000 (no CAP_FSETID). Prints one JSON object.
PRIVS_SCRIPT = r'''
import json, os, struct, sys
d = sys.argv[1]
def as_user(fn, gid=1000):
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([]); os.setgid(gid); os.setuid(1000); fn()
            os._exit(0)
        except BaseException as e:
            print("child:", e, file=sys.stderr); os._exit(1)
    _, st = os.waitpid(pid, 0)
    assert st == 0, st
def mk(name, mode, gid=0):
    p = os.path.join(d, name)
    with open(p, "wb") as f: f.write(b"x")
    os.chown(p, 0, gid); os.chmod(p, mode)
    return p
def wr(p):
    fd = os.open(p, os.O_WRONLY); os.write(fd, b"y"); os.close(fd)
def mode(p): return oct(os.stat(p).st_mode & 0o7777)
def caps(p):
    try: os.getxattr(p, "security.capability"); return "kept"
    except OSError as e: return os.strerror(e.errno)
cap = struct.pack("<5I", 0x02000000, 1 << 10, 0, 0, 0)
r = {}
p = mk("a", 0o4777); as_user(lambda: wr(p)); r["user write 4777"] = mode(p)
p = mk("b", 0o4755); wr(p); wr(p); r["root write 4755"] = mode(p)
p = mk("c", 0o2777); as_user(lambda: wr(p)); r["user write 2777"] = mode(p)
p = mk("e", 0o2767); as_user(lambda: wr(p)); r["non-member write 2767"] = mode(p)
p = mk("f", 0o2767, gid=1000); as_user(lambda: wr(p)); r["member write 2767"] = mode(p)
p = mk("g", 0o4777); as_user(lambda: os.truncate(p, 0)); r["user truncate 4777"] = mode(p)
p = mk("m", 0o2767); as_user(lambda: os.truncate(p, 0))
r["non-member truncate 2767"] = mode(p)
p = mk("h", 0o4777)
as_user(lambda: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC)))
r["user O_TRUNC 4777"] = mode(p)
p = mk("i", 0o6755); os.chown(p, 1000, 1000); r["root chown 6755"] = mode(p)
p = mk("n", 0o2745); os.chown(p, 1000, 0)
as_user(lambda: os.chown(p, -1, 1000)); r["owner chgrp 2745"] = mode(p)
p = mk("o", 0o2745, gid=1000); os.chown(p, 1000, 1000)
as_user(lambda: os.chown(p, -1, 1000)); r["member chgrp 2745"] = mode(p)
# A file the kernel has already seen written without capabilities: the
# second write is the one only the filesystem can strip them on.
p = mk("j", 0o755); fd = os.open(p, os.O_WRONLY); os.write(fd, b"a")
os.setxattr(p, "security.capability", cap); os.write(fd, b"b"); os.close(fd)
r["caps after write"] = caps(p)
p = mk("k", 0o755); os.setxattr(p, "security.capability", cap)
os.truncate(p, 0); r["caps after truncate"] = caps(p)
p = mk("l", 0o755); os.setxattr(p, "security.capability", cap)
os.chmod(p, 0o750); r["caps after chmod"] = caps(p)
print(json.dumps(r))
'''


def test_write_truncate_chown_drop_privileges_like_kernel_ext4(
        lunfs, fstarget, lundir):
    """setuid, setgid and file capabilities go on write, truncate and
    chown as the kernel's ext4 drops them (lunfs handles this itself under
    FUSE_HANDLE_KILLPRIV_V2); the same script runs on both."""
    os.chmod(lundir, 0o711)  # the unprivileged writers pass through
    mp = mkdir(lundir, "mnt")
    lunfs.mount(fstarget.url(1), mp)
    img = os.path.join(lundir, "ref.img")
    with open(img, "wb") as f:
        f.truncate(LUN_SIZE)
    r = H.run(["mkfs.ext4", "-q", "-F", img])
    assert r.returncode == 0, r.stderr
    results = {}
    try:
        with kernel_mount(img, lundir, ro=False) as kmp:
            for name, d in (("kernel", kmp), ("lunfs", mp)):
                r = H.run([sys.executable, "-c", PRIVS_SCRIPT, d])
                assert r.returncode == 0, f"{name}: {r.stderr}"
                results[name] = json.loads(r.stdout)
    finally:
        lunfs.umount(mp)
    want = {"user write 4777": "0o777", "root write 4755": "0o4755",
            "user write 2777": "0o777", "non-member write 2767": "0o767",
            "member write 2767": "0o2767", "user truncate 4777": "0o777",
            "non-member truncate 2767": "0o767",
            "user O_TRUNC 4777": "0o777", "root chown 6755": "0o755",
            "owner chgrp 2745": "0o745", "member chgrp 2745": "0o2745",
            "caps after write": "No data available",
            "caps after truncate": "No data available",
            "caps after chmod": "kept"}
    assert results["kernel"] == want, "the kernel reference changed"
    assert results["lunfs"] == want
    e2fsck(fstarget.luns[1])


def test_connection_aborted_from_outside_frees_the_path(lunfs, fstarget,
                                                        lundir):
    """An administrator cuts a mount's FUSE connection (fusectl abort):
    lunfs drops the mount, takes the dead mount away (it would answer
    ENOTCONN and keep the path from being mounted again), and the volume
    mounts there again with what was written before."""
    mp = mkdir(lundir, "m")
    lunfs.mount(fstarget.url(1), mp)
    with open(os.path.join(mp, "f"), "wb") as f:
        f.write(b"kept")
        f.flush()
        os.fsync(f.fileno())
    dev = os.stat(mp).st_dev
    ctl = "/sys/fs/fuse/connections"
    if not os.listdir(ctl):
        r = H.run(["mount", "-t", "fusectl", "fusectl", ctl])
        assert r.returncode == 0, r.stderr
    # The kernel's dev_t encoding, as fusectl names connections.
    conn = os.path.join(ctl, str((os.major(dev) << 20) | os.minor(dev)))
    with open(os.path.join(conn, "abort"), "w") as f:
        f.write("1")
    # The dead mount answers ENOTCONN until lunfsd has taken it away,
    # which can be at once.
    try:
        os.listdir(mp)
        assert not H.is_mountpoint(mp), "aborted mount still answers"
    except OSError as e:
        assert e.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    assert H.wait_until(lambda: all(m["path"] != mp
                                    for m in lunfs.status()["mounts"]),
                        timeout=10), "aborted mount still in status"
    assert H.wait_until(lambda: not H.is_mountpoint(mp), timeout=10), \
        "the dead mount was left in place"
    lunfs.mount(fstarget.url(1), mp)
    with open(os.path.join(mp, "f"), "rb") as f:
        assert f.read() == b"kept"
    lunfs.umount(mp)
    e2fsck(fstarget.luns[1])
