"""Filesystem scenarios checked against oracles we did not write: e2fsck -fn,
the kernel's ext4 (mount -o loop of tgtd's backing file) and debugfs.

- a realistic workload (a synthetic source tree copied in with cp -a, then
  edited) compared entry by entry with a reference copy on local disk;
- the other direction: a tree written by the kernel read back via lunfs;
- id mapping with real processes running as other users (setpriv);
- the --fsgroup view on a read-only mount changes no byte;
- two mounts with different mappings, daemon restart and remount;
- corrupt superblock / group descriptors refused untouched; ENOSPC.
"""
import contextlib
import errno
import hashlib
import json
import os
import random
import re
import shutil
import socket
import stat
import struct
import subprocess

import pytest

import lunfs_harness as H

MiB = H.MiB


# ---------------------------------------------------------------- oracles

@contextlib.contextmanager
def kernel_mount(backing, lundir, ro=True):
    """Mount BACKING with the kernel's ext4 through a loop device."""
    mp = os.path.join(lundir, "kernel-" + os.path.basename(backing))
    os.makedirs(mp, exist_ok=True)
    r = H.run(["mount", "-t", "ext4", "-o", "loop,ro" if ro else "loop",
               backing, mp])
    assert r.returncode == 0, f"kernel mount of {backing} failed: {r.stderr}"
    try:
        yield mp
    finally:
        H.kernel_umount(mp, backing)


def e2fsck_clean(backing):
    r = H.run(["e2fsck", "-fn", backing], timeout=120)
    assert r.returncode == 0, \
        f"e2fsck -fn {backing} exited {r.returncode}:\n{r.stdout}{r.stderr}"


def debugfs_owner(backing, path):
    """(uid, gid) of PATH as stored on disk, read by debugfs."""
    r = H.run(["debugfs", "-R", f"stat {path}", backing])
    m = re.search(r"User:\s*(\d+)\s+Group:\s*(\d+)", r.stdout)
    assert m, f"debugfs stat {path}: {r.stdout}{r.stderr}"
    return int(m.group(1)), int(m.group(2))


def mkdir(lundir, name):
    p = os.path.join(lundir, name)
    os.mkdir(p)
    return p


def assert_idle(lunfs, t):
    assert t.wait_connections(0, timeout=5) == 0, \
        f"session left at tgtd: {t.connections()}"
    st = lunfs.status()
    assert st["volumes"] == [] and st["mounts"] == [] and st["sessions"] == [], st


# ---------------------------------------------------------------- tree walk

TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
         stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chr",
         stat.S_IFBLK: "blk"}


def _short(v):
    return v if len(v) <= 48 else f"<{len(v)} bytes sha {hashlib.sha256(v).hexdigest()[:16]}>"


def entry(p, root_entry=False):
    st = os.lstat(p)
    fmt = stat.S_IFMT(st.st_mode)
    e = {"type": TYPES.get(fmt, oct(fmt)), "mode": oct(stat.S_IMODE(st.st_mode)),
         "uid": st.st_uid, "gid": st.st_gid, "mtime_ns": st.st_mtime_ns,
         "xattrs": {k: _short(os.getxattr(p, k, follow_symlinks=False))
                    for k in sorted(os.listxattr(p, follow_symlinks=False))}}
    if not root_entry:
        # The root's link count depends on lost+found, which only one side has.
        e["nlink"] = st.st_nlink
    if fmt == stat.S_IFREG:
        e["size"] = st.st_size
        with open(p, "rb") as f:
            e["sha256"] = hashlib.file_digest(f, "sha256").hexdigest() \
                if hasattr(hashlib, "file_digest") else \
                hashlib.sha256(f.read()).hexdigest()
    elif fmt == stat.S_IFLNK:
        e["size"] = st.st_size
        e["target"] = os.readlink(p)
    elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
        e["rdev"] = st.st_rdev
    return e


def snapshot(root, skip=("lost+found",)):
    """Every entry under ROOT (not following symlinks) by relative path:
    type, mode, uid, gid, nlink, mtime (ns), xattrs, size, sha256, symlink
    target."""
    snap = {".": entry(root, root_entry=True)}
    stack = [""]
    while stack:
        reldir = stack.pop()
        for name in sorted(os.listdir(os.path.join(root, reldir))):
            rel = os.path.join(reldir, name) if reldir else name
            if rel in skip:
                continue
            e = entry(os.path.join(root, rel))
            snap[rel] = e
            if e["type"] == "dir":
                stack.append(rel)
    return snap


def tree_diff(a, b, an="a", bn="b"):
    """Every difference between two snapshots, one line each."""
    out = []
    for rel in sorted(set(a) - set(b)):
        out.append(f"{rel}: only in {an} ({a[rel]['type']})")
    for rel in sorted(set(b) - set(a)):
        out.append(f"{rel}: only in {bn} ({b[rel]['type']})")
    for rel in sorted(set(a) & set(b)):
        ea, eb = a[rel], b[rel]
        for k in sorted(set(ea) | set(eb)):
            if ea.get(k) != eb.get(k):
                out.append(f"{rel}: {k}: {an}={ea.get(k)!r} {bn}={eb.get(k)!r}")
    return out


def assert_no_diff(a, b, an, bn):
    d = tree_diff(a, b, an, bn)
    assert not d, (f"{len(d)} differences between {an} and {bn} "
                   f"({len(a)} vs {len(b)} entries):\n" + "\n".join(d[:80]))


# ---------------------------------------------------------------- workload

DIRS = ["src", "src/core", "src/core/net", "src/core/net/proto",
        "src/core/net/proto/v2", "src/util", "docs", "docs/api", "build",
        "tests", "tests/unit", "tmp", "private", "big", "big/many"]
NFILES = 330
NMANY = 2000
MODES = [0o644, 0o644, 0o600, 0o755, 0o444, 0o640, 0o664]
# Where edit_tree() may pick files: not in what it moves or deletes.
MOVED = ("src/core/net/proto", "tests/unit", "private")


def source_files():
    """(rel, size, seed) of the ordinary files, deterministic."""
    rng = random.Random(4711)
    dirs = [d for d in DIRS if not d.startswith("big")]
    out = []
    for i in range(NFILES):
        d = dirs[i % len(dirs)]
        ext = [".c", ".h", ".txt", ".py", ".md"][i % 5]
        r = rng.random()
        if r < 0.05:
            size = 0
        elif r < 0.55:
            size = rng.randrange(1, 2000)
        elif r < 0.85:
            size = rng.randrange(2000, 20000)
        else:
            size = rng.randrange(20000, 300000)
        out.append((f"{d}/file-{i:03d}{ext}", size, i))
    return out


FILES = source_files()
EDITABLE = [f for f, _, _ in FILES if not f.startswith(MOVED)]


def content(seed, size):
    rng = random.Random(seed)
    if seed % 2:
        return rng.randbytes(size)
    words = [b"int", b"return", b"static", b"struct", b"lunfs", b"{", b"}",
             b"\n", b"\t", b"/* why */", b"if", b"(x)", b";"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def wfile(path, data):
    with open(path, "wb") as f:
        f.write(data)


def ns_for(rel, salt=""):
    """A deterministic timestamp in ns (with a non-zero ns part)."""
    h = int.from_bytes(hashlib.sha256((salt + rel).encode()).digest()[:8], "big")
    sec = 1_500_000_000 + h % 200_000_000
    return sec * 10**9 + (h >> 32) % 10**9 or 1


# Symlink targets around ext4's fast/slow boundary (fast: < 60 bytes).
SYMLINKS = {
    "src/core.lnk": "core",
    "docs/README.lnk": "../README.md",
    "src/t59.lnk": "d/" + "a" * 57,
    "src/t60.lnk": "d/" + "b" * 58,
    "src/t61.lnk": "d/" + "c" * 59,
    "docs/long200.lnk": "/nonexistent/" + "x" * 187,
    "build/long1000.lnk": "../" + "y/" * 498 + "z",
    "tmp/long4000.lnk": "w" * 4000,
}


def build_source_tree(root):
    """A synthetic source tree with everything a filesystem must keep."""
    for d in DIRS:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for rel, size, seed in FILES:
        wfile(os.path.join(root, rel), content(seed, size))
    wfile(os.path.join(root, "README.md"), b"# lunfs test tree\n")
    wfile(os.path.join(root, "big/blob-1m.bin"), content(1, MiB + 7))
    wfile(os.path.join(root, "big/blob-3m.bin"), content(3, 3 * MiB + 4095))
    with open(os.path.join(root, "big/sparse.bin"), "wb") as f:
        f.seek(2 * MiB)
        f.write(content(5, 4096))
    for j in range(NMANY):
        wfile(os.path.join(root, f"big/many/entry-{j:04d}.h"),
              b"" if j % 3 == 0 else b"#define E%d %d\n" % (j, j))
    for rel, target in SYMLINKS.items():
        os.symlink(target, os.path.join(root, rel))
    # Hard links: a file with three names, one with two.
    os.link(os.path.join(root, FILES[10][0]), os.path.join(root, "build/data.bin"))
    os.link(os.path.join(root, FILES[10][0]), os.path.join(root, "docs/data.bin"))
    os.link(os.path.join(root, "README.md"),
            os.path.join(root, "src/core/net/proto/v2/README.link"))
    os.mkfifo(os.path.join(root, "build/pipe"), 0o640)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.path.join(root, "build/sock"))
    s.close()
    wfile(os.path.join(root, "build/tool"), content(7, 12345))
    wfile(os.path.join(root, "build/sgid-tool"), content(9, 777))
    # xattrs: small, empty, many, big (outside the inode), trusted.*.
    for i, (rel, _, _) in enumerate(FILES):
        if i % 10 == 0:
            os.setxattr(os.path.join(root, rel), "user.comment", b"file %d" % i)
    os.setxattr(os.path.join(root, "README.md"), "user.empty", b"")
    for k in range(12):
        os.setxattr(os.path.join(root, "docs/data.bin"), f"user.k{k:02d}",
                    b"v" * (k * 7))
    os.setxattr(os.path.join(root, "build/tool"), "trusted.lunfs.big",
                content(11, 2000))
    os.setxattr(os.path.join(root, "build/tool"), "user.mime_type",
                b"application/x-executable")
    os.setxattr(os.path.join(root, "src"), "user.dir", b"source dir")
    os.setxattr(os.path.join(root, "tests"), "trusted.dir", b"tests dir")
    os.setxattr(os.path.join(root, "src/t61.lnk"), "trusted.on-link", b"yes",
                follow_symlinks=False)
    # Owners, then modes (chown clears setuid).
    for i, (rel, _, _) in enumerate(FILES):
        p = os.path.join(root, rel)
        if i % 7 == 0:
            os.chown(p, 1234, 5678)
        elif i % 11 == 0:
            os.chown(p, 0, 5678)
        elif i % 13 == 0:
            os.chown(p, 4321, 0)
        os.chmod(p, MODES[i % len(MODES)])
    os.chown(os.path.join(root, "build/tool"), 1234, 5678)
    os.chmod(os.path.join(root, "build/tool"), 0o4755)
    os.chmod(os.path.join(root, "build/sgid-tool"), 0o2750)
    os.chown(os.path.join(root, "private"), 1234, 5678)
    os.chmod(os.path.join(root, "private"), 0o700)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    os.chmod(os.path.join(root, "docs/api"), 0o750)
    os.lchown(os.path.join(root, "src/core.lnk"), 1234, 5678)
    os.chmod(root, 0o755)
    set_times(root, everything=True)
    # Edge times: the epoch and past 2038.
    os.utime(os.path.join(root, FILES[20][0]), ns=(0, 0))
    os.utime(os.path.join(root, FILES[21][0]),
             ns=(2_200_000_000 * 10**9 + 5, 2_200_000_000 * 10**9 + 123456789))


def set_times(root, everything=False, touched=()):
    """Deterministic atime/mtime with ns: on every directory (their mtimes
    move with every change), on TOUCHED files, or on everything."""
    todo = ["."]
    for dirpath, dirs, files in os.walk(root):
        reldir = os.path.relpath(dirpath, root)
        dirs[:] = [d for d in dirs
                   if not (reldir == "." and d == "lost+found")]
        # (dirs also holds symlinks to directories: harmless, both sides
        # get the same times)
        todo += [os.path.normpath(os.path.join(reldir, d)) for d in dirs]
        for n in files:
            rel = os.path.normpath(os.path.join(reldir, n))
            if everything or rel in touched:
                todo.append(rel)
    for rel in todo:
        t = ns_for(rel, "m" if everything else "edit")
        os.utime(os.path.join(root, rel), ns=(t - 10**9 * 3600, t),
                 follow_symlinks=False)


def edit_tree(root):
    """The same edits on any tree: rewrite, append, truncate, pwrite,
    renames (across directories, over an entry, of a directory), deletes,
    hard links, chmod/chown, xattrs, symlink replacement, rmtree."""
    def p(rel):
        return os.path.join(root, rel)
    E = EDITABLE
    touched = []
    wfile(p(E[3]), b"rewritten\n" * 50)
    touched.append(E[3])
    with open(p(E[4]), "ab") as f:
        f.write(b"appended line\n" * 1000)
    touched.append(E[4])
    os.truncate(p("big/blob-3m.bin"), 1_500_003)
    os.truncate(p(E[5]), 100_000)
    touched += ["big/blob-3m.bin", E[5]]
    fd = os.open(p("big/blob-1m.bin"), os.O_WRONLY)
    os.pwrite(fd, b"X" * 10000, 500_000)
    os.close(fd)
    fd = os.open(p("big/sparse.bin"), os.O_WRONLY)
    os.pwrite(fd, b"in the hole", 1 * MiB)
    os.close(fd)
    touched += ["big/blob-1m.bin", "big/sparse.bin"]
    # Setuid survives a write by root, not a chown.
    with open(p("build/tool"), "ab") as f:
        f.write(b"patched")
    touched.append("build/tool")
    os.rename(p(E[6]), p("docs/api/moved.c"))
    os.rename(p(E[7]), p(E[8]))
    os.rename(p("src/core/net/proto"), p("tests/proto"))
    os.rename(p("src/core.lnk"), p("docs/core.lnk"))
    os.rename(p("private"), p("docs/api/private"))
    for rel in E[9:14]:
        os.unlink(p(rel))
    for j in range(100, 200):
        os.unlink(p(f"big/many/entry-{j:04d}.h"))
    for j in range(NMANY, NMANY + 50):
        wfile(p(f"big/many/new-{j:04d}.h"), b"// new %d\n" % j)
        touched.append(f"big/many/new-{j:04d}.h")
    os.rename(p("big/many/entry-0500.h"), p("big/many/renamed-0500.h"))
    os.link(p("docs/api/moved.c"), p("build/moved-link.c"))
    os.link(p("big/blob-1m.bin"), p("big/many/blob-link"))
    os.chmod(p(E[14]), 0o600)
    os.chmod(p("docs"), 0o750)
    os.chmod(p("build/sgid-tool"), 0o2755)
    os.chown(p("build/tool"), 4321, 8765)
    os.chown(p(E[15]), 1234, 5678)
    os.setxattr(p(E[16]), "user.edited", b"yes")
    os.setxattr(p(FILES[0][0]), "user.comment", b"replaced value")
    os.removexattr(p("docs/data.bin"), "user.k05")
    os.setxattr(p("tests"), "trusted.edit", content(13, 1500))
    os.unlink(p("docs/README.lnk"))
    os.symlink("r" * 300, p("docs/README.lnk"))
    touched.append("docs/README.lnk")
    shutil.rmtree(p("tests/unit"))
    wfile(p("tests/proto/v2/new.bin"), content(15, 200_000))
    touched.append("tests/proto/v2/new.bin")
    os.makedirs(p("a/b/c/d/e/f"))
    wfile(p("a/b/c/d/e/f/deep.txt"), b"deep\n")
    touched.append("a/b/c/d/e/f/deep.txt")
    os.mkfifo(p("a/fifo2"), 0o600)
    touched.append("a/fifo2")
    set_times(root, touched=set(touched))


# ---------------------------------------------------------------- 1 & 2

@pytest.fixture
def big_target(targets):
    return targets("big", luns={1: 128 * MiB})


def copy_in(method, src, dst):
    """Copy SRC into the mount DST the way a user would: cp -a (which also
    sets POSIX ACLs through system.posix_acl_access), or a tar pipe with
    every xattr and ns times (posix format). tar skips sockets: that one is
    made with mknod, as cp does."""
    if method == "cp":
        r = H.run(["cp", "-dR", "--preserve=all", src + "/.", dst + "/"],
                  timeout=120)
        assert r.returncode == 0 and not r.stderr, f"cp -a into lunfs: {r.stderr}"
        return
    tar = "tar --format=posix --xattrs --xattrs-include='*' --numeric-owner"
    r = H.run(["sh", "-c", f"{tar} -C {src} -cf - . | {tar} -C {dst} -xpf -"],
              timeout=120)
    assert r.returncode == 0, f"tar into lunfs: {r.stderr}"
    sock = "build/sock"
    st = os.lstat(os.path.join(src, sock))
    os.mknod(os.path.join(dst, sock), st.st_mode)
    os.chown(os.path.join(dst, sock), st.st_uid, st.st_gid)
    os.chmod(os.path.join(dst, sock), stat.S_IMODE(st.st_mode))
    os.utime(os.path.join(dst, sock), ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(os.path.join(dst, "build"),
             ns=(os.stat(os.path.join(src, "build")).st_atime_ns,
                 os.stat(os.path.join(src, "build")).st_mtime_ns))


@pytest.mark.parametrize("method", ["cp", "tar"])
def test_workload_matches_reference_on_kernel_ext4(lunfs, big_target, lundir,
                                                   method):
    """Copy a source tree in, edit it, unmount: e2fsck is clean and the
    kernel sees the same tree as a reference copy edited on local disk."""
    t = big_target
    backing = t.luns[1]
    ref = mkdir(lundir, "ref")
    build_source_tree(ref)
    mp = mkdir(lundir, "mnt")
    lunfs.mount(t.url(1), mp)
    copy_in(method, ref, mp)
    problems = []
    d = tree_diff(snapshot(ref), snapshot(mp), "reference", "lunfs")
    if d:
        problems.append(f"right after {method}: {len(d)} differences:\n" +
                        "\n".join(d[:40]))
    edit_tree(ref)
    edit_tree(mp)
    want = snapshot(ref)
    via_fuse = snapshot(mp)
    lunfs.umount(mp)
    assert_idle(lunfs, t)
    r = H.run(["e2fsck", "-fn", backing], timeout=120)
    if r.returncode != 0:
        problems.append(f"e2fsck -fn exited {r.returncode}:\n{r.stdout}{r.stderr}")
    with kernel_mount(backing, lundir) as kmp:
        via_kernel = snapshot(kmp)
    for name, snap in (("kernel-ext4", via_kernel), ("lunfs", via_fuse)):
        d = tree_diff(want, snap, "reference", name)
        if d:
            problems.append(f"after edits, reference vs {name}: {len(d)} "
                            f"differences:\n" + "\n".join(d[:40]))
    assert not problems, "\n\n".join(problems)


def test_kernel_written_tree_read_back_identically(lunfs, big_target, lundir):
    t = big_target
    backing = t.luns[1]
    # 4 KiB blocks: mke2fs would pick 1 KiB for 128 MiB, too small for the
    # tree's 4000-byte symlink.
    r = H.run(["mkfs.ext4", "-q", "-F", "-b", "4096", backing], timeout=60)
    assert r.returncode == 0, r.stderr
    with kernel_mount(backing, lundir, ro=False) as kmp:
        build_source_tree(kmp)
        edit_tree(kmp)
    with kernel_mount(backing, lundir) as kmp:
        via_kernel = snapshot(kmp, skip=())
    e2fsck_clean(backing)
    mp = mkdir(lundir, "mnt")
    lunfs.mount(t.url(1), mp)
    via_lunfs = snapshot(mp, skip=())
    # Reading everything changes nothing but atimes; a second walk agrees.
    assert_no_diff(via_kernel, via_lunfs, "kernel-ext4", "lunfs")
    lunfs.umount(mp)
    assert_idle(lunfs, t)
    e2fsck_clean(backing)


# ---------------------------------------------------------------- 3: idmap

RUNNER = r'''
import json, os, sys
out = []
os.umask(0o022)
for op in json.loads(sys.argv[1]):
    kind, path = op[0], op[1]
    try:
        r = None
        if kind == "mkdir":
            os.mkdir(path)
            os.chmod(path, op[2])
        elif kind == "create":
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, op[2])
            os.write(fd, op[3].encode())
            os.close(fd)
        elif kind == "read":
            with open(path) as f:
                r = f.read()
        elif kind == "append":
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            os.write(fd, op[2].encode())
            os.close(fd)
        elif kind == "stat":
            st = os.lstat(path)
            r = [st.st_uid, st.st_gid, st.st_mode]
        elif kind == "chmod":
            os.chmod(path, op[2])
        elif kind == "chown":
            os.chown(path, op[2], op[3])
        elif kind == "unlink":
            os.unlink(path)
        elif kind == "rename":
            os.rename(path, op[2])
        else:
            raise SystemExit("unknown op " + kind)
        out.append({"ok": r})
    except OSError as e:
        out.append({"errno": e.errno})
print(json.dumps(out))
'''


def as_user(uid, ops, gid=None):
    """Run OPS in a process with host uid/gid UID (no supplementary groups);
    one result per op: {'ok': value} or {'errno': n}."""
    gid = uid if gid is None else gid
    r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}",
                        "--clear-groups", "/usr/bin/python3", "-c", RUNNER,
                        json.dumps(ops)], capture_output=True, text=True,
                       timeout=30, cwd="/", env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, f"runner as {uid} failed: {r.stderr}"
    res = json.loads(r.stdout)
    assert len(res) == len(ops)
    return res


def ok(res, what):
    assert "ok" in res, f"{what}: failed with {errno.errorcode.get(res['errno'])}"
    return res["ok"]


def err(res, what, allowed):
    assert "errno" in res, f"{what}: succeeded, expected one of " \
        f"{[errno.errorcode[e] for e in allowed]}"
    assert res["errno"] in allowed, \
        f"{what}: {errno.errorcode.get(res['errno'])}, expected one of " \
        f"{[errno.errorcode[e] for e in allowed]}"


def test_idmap_real_processes(lunfs, targets, lundir):
    t = targets("idm", luns={1: 32 * MiB})
    backing = t.luns[1]
    os.chmod(lundir, 0o755)  # let the mapped users reach the mountpoints
    a, b = mkdir(lundir, "ident"), mkdir(lundir, "mapped")
    lunfs.mount(t.url(1), a)
    lunfs.mount(t.url(1), b, "--uidmap", "0:100000:65536",
                "--gidmap", "0:100000:65536")
    A = lambda rel: os.path.join(a, rel)  # noqa: E731
    B = lambda rel: os.path.join(b, rel)  # noqa: E731
    st = os.stat(b)
    assert (st.st_uid, st.st_gid) == (100000, 100000), "root dir via mapped mount"

    r = as_user(100000, [["mkdir", B("u0dir"), 0o755],
                         ["create", B("u0dir/file"), 0o644, "by host 100000\n"],
                         ["create", B("u0dir/chowned"), 0o644, "x"],
                         ["mkdir", B("pub"), 0o777],
                         ["stat", B("u0dir/file")], ["stat", B("u0dir")]])
    for i, x in enumerate(r[:4]):
        ok(x, f"uid 100000 op {i}")
    assert ok(r[4], "stat")[:2] == [100000, 100000]
    assert ok(r[5], "stat")[:2] == [100000, 100000]
    for rel in ("u0dir", "u0dir/file", "pub"):
        sa = os.stat(A(rel))
        assert (sa.st_uid, sa.st_gid) == (0, 0), f"{rel} via identity mount"
    r = as_user(100001, [["create", B("pub/secret"), 0o600, "secret of 1\n"],
                         ["read", B("pub/secret")], ["stat", B("pub/secret")]])
    ok(r[0], "uid 100001 creates a 0600 file")
    assert ok(r[1], "owner reads") == "secret of 1\n"
    assert ok(r[2], "stat") == [100001, 100001, stat.S_IFREG | 0o600]
    sa = os.stat(A("pub/secret"))
    assert (sa.st_uid, sa.st_gid) == (1, 1)
    # Permission checks hold between mapped users (default_permissions).
    r = as_user(100002, [["read", B("pub/secret")],
                         ["append", B("pub/secret"), "intruder"],
                         ["chmod", B("pub/secret"), 0o666],
                         ["append", B("u0dir/file"), "intruder"],
                         ["create", B("u0dir/new"), 0o644, "x"]])
    err(r[0], "other user reads a 0600 file", {errno.EACCES})
    err(r[1], "other user writes a 0600 file", {errno.EACCES})
    err(r[2], "other user chmods a file", {errno.EPERM})
    err(r[3], "other user writes a 0644 file", {errno.EACCES})
    err(r[4], "other user creates in a 0755 dir", {errno.EACCES})
    r = as_user(100000, [["read", B("pub/secret")]])
    err(r[0], "disk root mapped to 100000 is no host root", {errno.EACCES})
    with open(A("pub/secret")) as f:
        assert f.read() == "secret of 1\n", "a refused write changed the file"

    # Ids outside the range: shown as the overflow id, cannot be set.
    with open(A("outsider"), "w") as f:
        f.write("owned by 70000\n")
    os.chown(A("outsider"), 70000, 70000)
    with open(A("halfway"), "w") as f:
        f.write("x")
    os.chown(A("halfway"), 5, 70000)
    sb = os.stat(B("outsider"))
    assert (sb.st_uid, sb.st_gid) == (65534, 65534), "unmapped ids via mapped mount"
    sb = os.stat(B("halfway"))
    assert (sb.st_uid, sb.st_gid) == (100005, 65534)
    for uid, gid in ((5000, -1), (-1, 5000), (100000 + 65536, -1)):
        with pytest.raises(OSError) as ei:
            os.chown(B("u0dir/chowned"), uid, gid)
        # EOVERFLOW: the kernel's own answer (notify_change) on an
        # idmapped mount, which lunfs serves this mount as.
        assert ei.value.errno in (errno.EINVAL, errno.EPERM, errno.EOVERFLOW), \
            f"chown to unmapped {uid}:{gid}: {ei.value}"
    os.chown(B("u0dir/chowned"), 100007, 100008)
    sa = os.stat(A("u0dir/chowned"))
    assert (sa.st_uid, sa.st_gid) == (7, 8)
    # Host root has no id on the mapped mount: it cannot create files there.
    with pytest.raises(OSError) as ei:
        open(B("by-host-root"), "w").close()
    assert ei.value.errno in (errno.EOVERFLOW, errno.EPERM, errno.EACCES,
                              errno.EINVAL), ei.value
    assert not os.path.exists(A("by-host-root"))

    lunfs.umount(b)
    lunfs.umount(a)
    assert_idle(lunfs, t)
    e2fsck_clean(backing)
    want = {"/u0dir": (0, 0), "/u0dir/file": (0, 0), "/pub": (0, 0),
            "/pub/secret": (1, 1), "/outsider": (70000, 70000),
            "/halfway": (5, 70000), "/u0dir/chowned": (7, 8)}
    for path, owner in want.items():
        assert debugfs_owner(backing, path) == owner, f"debugfs {path}"
    with kernel_mount(backing, lundir) as kmp:
        for path, owner in want.items():
            st = os.stat(kmp + path)
            assert (st.st_uid, st.st_gid) == owner, f"kernel {path}"
        with open(kmp + "/u0dir/file") as f:
            assert f.read() == "by host 100000\n"
        assert stat.S_IMODE(os.stat(kmp + "/pub/secret").st_mode) == 0o600


# ---------------------------------------------------------------- 4: fsgroup

# rel -> (type, mode, uid, gid)
FSG_TREE = {
    "f000": ("file", 0o000, 0, 0),
    "f600": ("file", 0o600, 1234, 5678),
    "f604": ("file", 0o604, 0, 0),
    "f755": ("file", 0o755, 1000, 1000),
    "suid": ("file", 0o4750, 1234, 5678),
    "sgid": ("file", 0o2710, 0, 0),
    "d700": ("dir", 0o700, 1234, 5678),
    "d700/inner": ("file", 0o640, 1234, 5678),
    "d000": ("dir", 0o000, 0, 0),
    "sticky": ("dir", 0o1777, 0, 0),
    "d2750": ("dir", 0o2750, 0, 3),
    "d2750/sub": ("dir", 0o755, 0, 0),
    "d2750/sub/leaf": ("file", 0o400, 0, 0),
    "fifo": ("fifo", 0o600, 0, 0),
    "link": ("symlink", 0o777, 0, 0),
}


def make_fsg_tree(mp):
    for rel, (typ, mode, uid, gid) in FSG_TREE.items():
        p = os.path.join(mp, rel)
        if typ == "file":
            wfile(p, f"contents of {rel}\n".encode())
        elif typ == "dir":
            os.mkdir(p)
        elif typ == "fifo":
            os.mkfifo(p)
        else:
            os.symlink("f600", p)
            continue
        os.chown(p, uid, gid)
        os.chmod(p, mode)
    os.link(os.path.join(mp, "f600"), os.path.join(mp, "d700/hardlink"))
    os.setxattr(os.path.join(mp, "f604"), "user.x", b"y")


def expected_fsg(rel, read_only):
    """What the Kubernetes plugin's SetVolumeOwnership would have left:
    Lchown(-1, fsGroup) on everything; on non-symlinks chmod(mode | 0660)
    (0440 read-only), directories also | 0110 | setgid."""
    typ, mode, uid, gid = FSG_TREE["f600" if rel == "d700/hardlink" else rel]
    if typ == "symlink":
        return uid, 2000, None
    mode |= 0o440 if read_only else 0o660
    if typ == "dir":
        mode |= 0o110 | stat.S_ISGID
    return uid, 2000, mode


@pytest.mark.parametrize("read_only", [True, False], ids=["ro", "rw"])
def test_fsgroup_view_changes_no_byte(lunfs, targets, lundir, read_only):
    t = targets("fsg", luns={1: 32 * MiB})
    backing = t.luns[1]
    mp = mkdir(lundir, "mnt")
    lunfs.mount(t.url(1), mp)
    make_fsg_tree(mp)
    lunfs.umount(mp)
    assert_idle(lunfs, t)
    before = H.sha256_file(backing)
    opts = ["--fsgroup", "2000"] + (["--read-only"] if read_only else [])
    lunfs.mount(t.url(1), mp, *opts)
    wrong = []
    seen = set()
    root = os.stat(mp)
    if root.st_gid != 2000 or not root.st_mode & stat.S_ISGID or \
            stat.S_IMODE(root.st_mode) & 0o550 != 0o550:
        wrong.append(f".: gid {root.st_gid} mode {oct(root.st_mode)}")
    for dirpath, dirs, files in os.walk(mp):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, mp)
            if rel == "lost+found":
                continue
            seen.add(rel)
            st = os.lstat(p)
            uid, gid, mode = expected_fsg(rel, read_only)
            got = (st.st_uid, st.st_gid,
                   None if mode is None else stat.S_IMODE(st.st_mode))
            if got != (uid, gid, mode):
                wrong.append(f"{rel}: uid/gid/mode {got[0]}/{got[1]}/"
                             f"{got[2] and oct(got[2])}, expected {uid}/{gid}/"
                             f"{mode and oct(mode)}")
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    f.read()
            elif stat.S_ISLNK(st.st_mode):
                os.readlink(p)
            os.listxattr(p, follow_symlinks=False)
    os.statvfs(mp)
    assert seen == set(FSG_TREE) | {"d700/hardlink"}, seen
    assert not wrong, "fsGroup view differs from SetVolumeOwnership:\n" + \
        "\n".join(wrong)
    if read_only:
        lunfs.umount(mp)
        assert_idle(lunfs, t)
        assert H.sha256_file(backing) == before, \
            "a read-only --fsgroup mount changed bytes on the volume"
        return
    # Read-write: new files get the group on disk too.
    wfile(os.path.join(mp, "d2750/new"), b"new\n")
    os.mkdir(os.path.join(mp, "newdir"))
    lunfs.umount(mp)
    assert_idle(lunfs, t)
    e2fsck_clean(backing)
    assert debugfs_owner(backing, "/d2750/new")[1] == 2000
    assert debugfs_owner(backing, "/newdir")[1] == 2000
    # Existing files were not rewritten (a view, not a recursive chown).
    assert debugfs_owner(backing, "/f600") == (1234, 5678)
    with kernel_mount(backing, lundir) as kmp:
        assert stat.S_IMODE(os.stat(kmp + "/f000").st_mode) == 0
        assert stat.S_IMODE(os.stat(kmp + "/d700").st_mode) == 0o700


# ---------------------------------------------------------------- 5: sharing

MAP_A = ["--uidmap", "0:0:1", "--uidmap", "1:300001:1000",
         "--gidmap", "0:0:1", "--gidmap", "1:300001:1000"]
MAP_B = ["--uidmap", "0:200000:65536", "--gidmap", "0:200000:65536"]


def read(p):
    with open(p, "rb") as f:
        return f.read()


def test_two_mappings_see_each_other_and_data_persists(lunfs, targets, lundir):
    t = targets("share", luns={1: 32 * MiB})
    backing = t.luns[1]
    os.chmod(lundir, 0o755)
    a, b = mkdir(lundir, "a"), mkdir(lundir, "b")
    lunfs.mount(t.url(1), a, *MAP_A)
    lunfs.mount(t.url(1), b, *MAP_B)
    A = lambda rel: os.path.join(a, rel)  # noqa: E731
    B = lambda rel: os.path.join(b, rel)  # noqa: E731
    S = "stale view through the other mount: "

    assert not os.path.exists(B("f"))  # a negative entry B's kernel may cache
    wfile(A("f"), b"one")
    assert os.path.exists(B("f")), S + "create via A not seen via B"
    assert read(B("f")) == b"one"
    assert os.stat(B("f")).st_uid == 200000
    with open(A("f"), "ab") as f:
        f.write(b"two")
    assert os.stat(B("f")).st_size == 6, S + "size after append"
    assert read(B("f")) == b"onetwo", S + "data after append"
    os.chown(A("f"), 300005, 300006)
    assert (os.stat(B("f")).st_uid, os.stat(B("f")).st_gid) == (200005, 200006), \
        S + "chown"
    assert (os.stat(A("f")).st_uid, os.stat(A("f")).st_gid) == (300005, 300006)
    os.chmod(A("f"), 0o604)
    assert stat.S_IMODE(os.stat(B("f")).st_mode) == 0o604, S + "chmod"
    os.setxattr(A("f"), "user.k", b"v1")
    assert os.getxattr(B("f"), "user.k") == b"v1"
    os.setxattr(A("f"), "user.k", b"v2")
    assert os.getxattr(B("f"), "user.k") == b"v2", S + "xattr"
    os.truncate(A("f"), 3)
    assert os.stat(B("f")).st_size == 3 and read(B("f")) == b"one", S + "truncate"
    os.utime(A("f"), ns=(1_600_000_000_123_456_789, 1_600_000_000_987_654_321))
    assert os.stat(B("f")).st_mtime_ns == 1_600_000_000_987_654_321, S + "utimens"
    os.mkdir(A("d"))
    assert os.listdir(B("d")) == []
    os.rename(A("f"), A("d/g"))
    assert not os.path.exists(B("f")), S + "rename: old name"
    assert "f" not in os.listdir(b), S + "rename: old name listed"
    assert read(B("d/g")) == b"one", S + "rename: new name"
    os.link(A("d/g"), A("h"))
    assert os.stat(B("d/g")).st_nlink == 2, S + "link count"
    os.symlink("d/g", A("s"))
    assert os.readlink(B("s")) == "d/g"
    os.unlink(A("h"))
    assert not os.path.exists(B("h")), S + "unlink"
    assert os.stat(B("d/g")).st_nlink == 1, S + "link count after unlink"
    os.mkdir(A("gone"))
    assert os.path.isdir(B("gone"))
    os.rmdir(A("gone"))
    assert not os.path.exists(B("gone")), S + "rmdir"

    # And the other way, by a process of B's mapped root.
    os.chmod(A("d"), 0o777)
    assert not os.path.exists(A("d/fromb"))
    r = as_user(200000, [["create", B("d/fromb"), 0o644, "from B\n"]])
    ok(r[0], "uid 200000 creates via B")
    assert read(A("d/fromb")) == b"from B\n", S + "create via B"
    assert os.stat(A("d/fromb")).st_uid == 0
    r = as_user(200000, [["append", B("d/fromb"), "more\n"],
                         ["rename", B("d/fromb"), B("d/fromb2")]])
    ok(r[0], "append via B")
    ok(r[1], "rename via B")
    assert not os.path.exists(A("d/fromb")), S + "rename via B"
    assert read(A("d/fromb2")) == b"from B\nmore\n", S + "append via B"
    big = content(77, 3 * MiB + 5)
    wfile(A("d/big"), big)

    want = {"d/g": b"one", "d/fromb2": b"from B\nmore\n", "d/big": big}

    def check(root, uids):
        for rel, data in want.items():
            assert read(os.path.join(root, rel)) == data, f"{root}: {rel}"
        assert os.readlink(os.path.join(root, "s")) == "d/g"
        st = os.stat(os.path.join(root, "d/g"))
        assert (st.st_uid, st.st_gid, st.st_mtime_ns) == \
            (*uids, 1_600_000_000_987_654_321)
        assert os.getxattr(os.path.join(root, "d/g"), "user.k") == b"v2"

    check(a, (300005, 300006))
    check(b, (200005, 200006))
    lunfs.umount(b)
    lunfs.umount(a)
    assert_idle(lunfs, t)
    lunfs.mount(t.url(1), b, *MAP_B)
    check(b, (200005, 200006))
    lunfs.umount(b)
    old = lunfs.daemon_pid()
    lunfs.ok("shutdown")
    assert H.wait_until(lambda: not H.pid_alive(old), 10), "lunfsd did not exit"
    assert H.mounts_under(lundir) == []
    lunfs.mount(t.url(1), a, *MAP_A)
    lunfs.mount(t.url(1), b, *MAP_B)
    new = lunfs.daemon_pid()
    assert new and new != old and H.pid_alive(new), "no new daemon"
    check(a, (300005, 300006))
    check(b, (200005, 200006))
    lunfs.umount(a)
    lunfs.umount(b)
    assert_idle(lunfs, t)
    e2fsck_clean(backing)
    assert debugfs_owner(backing, "/d/g") == (5, 6)
    with kernel_mount(backing, lundir) as kmp:
        check(kmp, (5, 6))


# ---------------------------------------------------------------- 6: bad input

def crc32c(data, crc=0xFFFFFFFF):
    table = _crc_table()
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


_TABLE = []


def _crc_table():
    if not _TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _TABLE.append(c)
    return _TABLE


SB = 1024
SB_CSUM = 0x3FC


def fix_sb_csum(backing):
    """Recompute the metadata_csum superblock checksum (ext2fs_superblock_csum:
    crc32c_le(~0, sb[:0x3fc]), no final inversion), so that only the field
    checks can catch the corruption."""
    sb = H.read_at(backing, SB, 1024)
    H.write_at(backing, SB + SB_CSUM, struct.pack("<I", crc32c(sb[:SB_CSUM])))


def mkfs_with_data(backing, lundir, *features):
    r = H.run(["mkfs.ext4", "-q", "-F", "-b", "4096", *features, backing], timeout=60)
    assert r.returncode == 0, r.stderr
    with kernel_mount(backing, lundir, ro=False) as kmp:
        wfile(os.path.join(kmp, "data"), content(3, 300000))
    sb = H.read_at(backing, SB, 1024)
    assert sb[56:58] == b"\x53\xef"
    # Our checksum matches the one mke2fs wrote.
    if "^metadata_csum" not in features:
        assert struct.unpack("<I", sb[SB_CSUM:SB_CSUM + 4])[0] == \
            crc32c(sb[:SB_CSUM]), "crc32c does not match mke2fs's"


def c_magic_destroyed(backing):
    junk = bytearray(random.Random(1).randbytes(1024))
    junk[56:58] = b"\0\0"
    H.write_at(backing, SB, bytes(junk))


def c_log_block_size(backing):
    H.write_at(backing, SB + 24, struct.pack("<I", 0x3A7B1C0D))
    fix_sb_csum(backing)


def c_blocks_count_garbage(backing):
    H.write_at(backing, SB + 4, struct.pack("<I", 0xDEADBEEF))
    H.write_at(backing, SB + 0x150, struct.pack("<I", 0x1234))  # s_blocks_count_hi
    fix_sb_csum(backing)


def c_blocks_count_past_lun(backing):
    """Twice the LUN, still one block group: every count stays consistent,
    only the device is too small (the kernel refuses: 'bad geometry')."""
    n = struct.unpack("<I", H.read_at(backing, SB + 4, 4))[0]
    H.write_at(backing, SB + 4, struct.pack("<I", 2 * n))
    fix_sb_csum(backing)


def c_inodes_per_group_zero(backing):
    H.write_at(backing, SB + 40, struct.pack("<I", 0))
    fix_sb_csum(backing)


def c_gdt_garbage(backing):
    H.write_at(backing, 4096, random.Random(2).randbytes(4096))


CORRUPT = {
    "sb-magic-destroyed": (c_magic_destroyed, ()),
    "sb-log-block-size": (c_log_block_size, ()),
    "sb-blocks-count-garbage": (c_blocks_count_garbage, ()),
    "sb-blocks-count-past-lun": (c_blocks_count_past_lun, ()),
    "sb-inodes-per-group-zero": (c_inodes_per_group_zero, ()),
    "gdt-garbage-csum": (c_gdt_garbage, ()),
    "gdt-garbage-no-csum": (c_gdt_garbage, ("-O", "^metadata_csum")),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
@pytest.mark.parametrize("read_only", [False, True], ids=["rw", "ro"])
def test_corrupt_metadata_refused_untouched(lunfs, targets, lundir, case,
                                            read_only):
    corrupt, features = CORRUPT[case]
    t = targets("bad", luns={1: 64 * MiB})
    backing = t.luns[1]
    mkfs_with_data(backing, lundir, *features)
    corrupt(backing)
    # The oracle agrees that this is damaged.
    assert H.run(["e2fsck", "-fn", backing], timeout=60).returncode != 0
    before = H.sha256_file(backing)
    mp = mkdir(lundir, "mnt")
    opts = ["--read-only"] if read_only else []
    r = lunfs.run("mount", *opts, t.url(1), mp)
    line = H.assert_one_error_line(r) if r.returncode != 0 else None
    assert line, (f"{case}: a damaged volume was mounted\n--- daemon log ---\n"
                  f"{lunfs.log_tail()}")
    print(f"{case}: {line}")
    pid = lunfs.daemon_pid()
    assert pid and H.pid_alive(pid), "lunfsd died"
    assert not H.is_mountpoint(mp) and H.mounts_under(lundir) == []
    assert_idle(lunfs, t)
    assert H.sha256_file(backing) == before, f"{case}: the refused LUN was written"


def test_enospc_then_recovers_consistent(lunfs, targets, lundir):
    t = targets("full", luns={1: 32 * MiB})
    backing = t.luns[1]
    mp = mkdir(lundir, "mnt")
    lunfs.mount(t.url(1), mp)
    chunk = content(21, MiB)
    done = {}
    failure = None
    partial = None
    for i in range(64):
        p = os.path.join(mp, f"fill-{i:02d}")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        written = 0
        try:
            for _ in range(4):
                written += os.write(fd, chunk)
            os.fsync(fd)
        except OSError as ex:
            failure = ex
            partial = (p, written)
        finally:
            try:
                os.close(fd)
            except OSError as ex:
                failure = failure or ex
        if failure:
            break
        done[p] = written
    assert failure is not None, "32 MiB volume took 256 MiB"
    assert failure.errno == errno.ENOSPC, f"full volume gave {failure!r}, not ENOSPC"
    assert len(done) >= 4, f"only {len(done)} files fit on a 32 MiB volume"
    sv = os.statvfs(mp)
    assert sv.f_bavail * sv.f_frsize < 2 * MiB, "ENOSPC with free space left"
    # The partially written file holds a prefix of what was written.
    size = os.path.getsize(partial[0])
    assert partial[1] <= size <= partial[1] + len(chunk), (size, partial)
    data = read(partial[0])
    assert data == (chunk * 4)[:size]
    # Free one file: writing works again.
    victim = sorted(done)[0]
    os.unlink(victim)
    del done[victim]
    again = os.path.join(mp, "again")
    fd = os.open(again, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, chunk)
    os.fsync(fd)
    os.close(fd)
    done[again] = len(chunk)
    for p, n in done.items():
        assert read(p) == (chunk * 4)[:n], f"{p} damaged after ENOSPC"
    lunfs.umount(mp)
    assert_idle(lunfs, t)
    e2fsck_clean(backing)
    with kernel_mount(backing, lundir) as kmp:
        for p, n in done.items():
            assert read(os.path.join(kmp, os.path.basename(p))) == \
                (chunk * 4)[:n], f"kernel: {p}"
        kdata = read(os.path.join(kmp, os.path.basename(partial[0])))
        assert kdata == (chunk * 4)[:len(kdata)]
