"""POSIX parity with the kernel's ext4 (issue 19): one script runs on a
loop mount of a fresh ext4 image and on a lunfs volume over iSCSI, and the
outputs are compared line by line; the kernel's ext4 then reads the
volume lunfs wrote, and e2fsck -fn checks it. ACL values are built and
read as raw xattrs (the Linux xattr form), so no acl tools are needed."""
import json
import os
import stat
import struct
import sys

import pytest

import lunfs_harness as H
from test_filesystem import e2fsck, kernel_mount, mkdir

MiB = H.MiB
LUN_SIZE = 32 * MiB

# The helpers both scripts share: ACL text <-> xattr value.
ACL_LIB = r'''
import os, struct
def enc(text):
    tags = {"u": (1, 2), "g": (4, 8), "m": (0x10, None), "o": (0x20, None)}
    ents = []
    for item in text.split(","):
        kind, who, perm = item.split(":")
        bits = sum(b for c, b in zip("rwx", (4, 2, 1)) if c in perm)
        obj, named = tags[kind]
        ents.append((named, int(who), bits) if who else (obj, 0xFFFFFFFF, bits))
    ents.sort()
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i)
                                            for t, i, p in ents)
def dec(b):
    names = {1: "u:", 2: "u:", 4: "g:", 8: "g:", 0x10: "m:", 0x20: "o:"}
    out = []
    for o in range(4, len(b), 8):
        t, p, i = struct.unpack_from("<HHI", b, o)
        out.append(names[t] + ("" if i == 0xFFFFFFFF else str(i)) + ":" +
                   "".join(c if p & m else "-" for c, m in zip("rwx", (4, 2, 1))))
    return ",".join(out)
def acl(p, kind):
    try:
        return dec(os.getxattr(p, "system.posix_acl_" + kind, follow_symlinks=False))
    except OSError as e:
        return os.strerror(e.errno)
def dump(d, root):
    for dp, ds, fs in os.walk(os.path.join(d, root)):
        for x in sorted(ds + fs):
            p = os.path.join(dp, x)
            st = os.lstat(p)
            line = [os.path.relpath(p, d), oct(st.st_mode), str(st.st_uid),
                    str(st.st_gid), acl(p, "access")]
            if stat.S_ISDIR(st.st_mode):
                line.append(acl(p, "default"))
            print(" ".join(line))
'''

# Run as root in each tree; unprivileged steps are forked children.
SCRIPT = ACL_LIB + r'''
import stat, sys
d = sys.argv[1]
def as_user(fn, uid=1000, gid=1000, groups=()):
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups(list(groups)); os.setgid(gid); os.setuid(uid); fn()
            os._exit(0)
        except BaseException as e:
            print("child:", e, file=sys.stderr); os._exit(1)
    _, st = os.waitpid(pid, 0)
    assert st == 0, st

# Default ACL inheritance: the issue's directory, umask 022.
a = os.path.join(d, "acl"); os.mkdir(a)
os.setxattr(a, "system.posix_acl_default",
            enc("u::rwx,g::r-x,o::---,u:1002:r-x,g:2001:rwx,m::rwx"))
os.umask(0o022)
os.close(os.open(os.path.join(a, "file"), os.O_CREAT | os.O_WRONLY, 0o666))
os.mkdir(os.path.join(a, "sub"), 0o777)
os.mkfifo(os.path.join(a, "fifo"), 0o666)
os.mknod(os.path.join(a, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
os.symlink("file", os.path.join(a, "link"))
os.mkdir(os.path.join(a, "sub", "deeper"), 0o750)
os.close(os.open(os.path.join(a, "sub", "g"), os.O_CREAT | os.O_WRONLY, 0o640))
os.close(os.open(os.path.join(a, "exe"), os.O_CREAT | os.O_WRONLY, 0o777))
os.chmod(a, 0o777)
as_user(lambda: os.close(os.open(os.path.join(a, "byuser"),
                                 os.O_CREAT | os.O_WRONLY, 0o666)))
# A default ACL that says no more than a mode: no access ACL, and the
# umask (077) is still ignored.
e = os.path.join(d, "equiv"); os.mkdir(e)
os.setxattr(e, "system.posix_acl_default", enc("u::rwx,g::r-x,o::r-x"))
os.umask(0o077)
os.close(os.open(os.path.join(e, "file"), os.O_CREAT | os.O_WRONLY, 0o666))
os.mkdir(os.path.join(e, "sub"), 0o777)
# No default ACL: the umask applies.
n = os.path.join(d, "plain"); os.mkdir(n)
os.umask(0o027)
os.close(os.open(os.path.join(n, "file"), os.O_CREAT | os.O_WRONLY, 0o666))
os.mkdir(os.path.join(n, "sub"), 0o777)
os.mkfifo(os.path.join(n, "fifo"), 0o666)
# setgid parent with a default ACL: group and setgid as before, bits from
# the ACL.
s = os.path.join(d, "sgid"); os.mkdir(s); os.chown(s, 0, 3000); os.chmod(s, 0o2775)
os.setxattr(s, "system.posix_acl_default", enc("u::rwx,g::rwx,o::r-x,g:3001:r-x,m::rwx"))
os.umask(0o022)
os.mkdir(os.path.join(s, "sub"), 0o777)
os.close(os.open(os.path.join(s, "file"), os.O_CREAT | os.O_WRONLY, 0o664))
os.umask(0o022)
for root in ("acl", "equiv", "plain", "sgid"):
    dump(d, root)

q = os.path.join(d, "setfacl"); os.mkdir(q); os.chmod(q, 0o755)

# Setting an access ACL drops setgid unless the caller is in the group.
for who, groups in (("nonmember", ()), ("member", (3000,))):
    p = os.path.join(q, "sgid-" + who); open(p, "w").close()
    os.chown(p, 1000, 3000); os.chmod(p, 0o2775)
    as_user(lambda: os.setxattr(p, "system.posix_acl_access",
                                enc("u::rwx,u:1001:r--,g::rwx,m::rwx,o::r-x")),
            groups=groups)
    print("setfacl", who, oct(os.stat(p).st_mode & 0o7777))

# chown on every kind of non-directory (and a directory): setuid always
# goes, setgid as setattr_should_drop_sgid() decides.
c = os.path.join(d, "chown"); os.mkdir(c); os.chmod(c, 0o777)
def make(kind, p):
    if kind == "file":
        open(p, "w").close()
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "chr":
        os.mknod(p, stat.S_IFCHR | 0o644, os.makedev(1, 3))
    elif kind == "sock":
        os.mknod(p, stat.S_IFSOCK | 0o644)
    else:
        os.mkdir(p)
for kind in ("file", "fifo", "chr", "sock", "dir"):
    for mode in (0o6755, 0o6745, 0o2745, 0o6555):
        for who in ("root", "member", "nonmember"):
            p = os.path.join(c, "%s-%o-%s" % (kind, mode, who))
            make(kind, p)
            os.chown(p, 1000, 0); os.chmod(p, mode)
            if who == "root":
                os.chown(p, 1000, 2000)
            elif who == "member":
                as_user(lambda: os.chown(p, -1, 2000), groups=(2000,))
            else:
                as_user(lambda: os.chown(p, 1000, -1))
            print(os.path.basename(p), oct(os.lstat(p).st_mode & 0o7777))
# The issue's case: a 06555 file owned by 65534, whose owner (a member of
# 65532) runs chgrp 65532.
p = os.path.join(c, "nobody"); open(p, "w").close()
os.chown(p, 65534, 0); os.chmod(p, 0o6555)
as_user(lambda: os.chown(p, -1, 65532), uid=65534, gid=65534, groups=(65532,))
print("nobody chgrp", oct(os.stat(p).st_mode & 0o7777))

# Collapse and insert range (printed last: see the test).
r = os.path.join(d, "range")
with open(r, "wb") as f:
    f.write(b"".join(bytes([i]) * 4096 for i in range(8)))
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)
fd = os.open(r, os.O_RDWR)
for what, mode, off, ln in (("collapse", 0x08, 4096, 8192),
                            ("insert", 0x20, 4096, 4096),
                            ("collapse-unaligned", 0x08, 100, 4096)):
    rc = libc.fallocate(fd, mode, off, ln)
    res = "ok" if rc == 0 else os.strerror(ctypes.get_errno())
    with open(r, "rb") as f:
        data = f.read()
    print("range", what, res, len(data),
          "".join("%x" % data[i] for i in range(0, len(data), 4096)))
os.close(fd)
'''


def run_script(tree):
    r = H.run([sys.executable, "-c", SCRIPT, tree], timeout=120)
    assert r.returncode == 0, f"{tree}: {r.stderr}"
    return r.stdout.splitlines()


def dump_tree(tree):
    """What the trees hold, read back (by the kernel's ext4 afterwards)."""
    code = ACL_LIB + "import stat, sys\n" + \
        "".join(f"dump(sys.argv[1], {root!r})\n"
                for root in ("acl", "equiv", "plain", "sgid"))
    r = H.run([sys.executable, "-c", code, tree])
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


@pytest.mark.parametrize("views", ["default", "per-mount"])
def test_acl_inheritance_chown_and_ranges_like_kernel_ext4(lunfs, targets,
                                                          lundir, views):
    """Default ACLs are inherited at create, mkdir and mknod (not by
    symlinks) with the mode posix_acl_create() computes, the umask applies
    only without one, chown drops setuid/setgid on every non-directory as
    the VFS does: the same script on the kernel's ext4 and on lunfs prints
    the same lines. Collapse/insert range: see the assertion below."""
    t = targets("parity", luns={1: LUN_SIZE})
    os.chmod(lundir, 0o711)
    mp = mkdir(lundir, "mnt")
    lunfs.mount(t.url(1), mp, env={"LUNFS_PER_MOUNT_VIEWS": "1"}
                if views == "per-mount" else None)
    img = os.path.join(lundir, "ref.img")
    with open(img, "wb") as f:
        f.truncate(LUN_SIZE)
    r = H.run(["mkfs.ext4", "-q", "-F", "-b", "4096", img])
    assert r.returncode == 0, r.stderr
    out = {}
    try:
        with kernel_mount(img, lundir, ro=False) as kmp:
            os.chmod(kmp, 0o777)
            out["kernel"] = run_script(kmp)
            ref_dump = dump_tree(kmp)
        os.chmod(mp, 0o777)
        out["lunfs"] = run_script(mp)
        lunfs_dump = dump_tree(mp)
    finally:
        lunfs.umount(mp)
    kern = [ln for ln in out["kernel"] if not ln.startswith("range ")]
    ours = [ln for ln in out["lunfs"] if not ln.startswith("range ")]
    assert ours == kern
    # The expectations, so that a changed reference shows.
    assert "acl/file 0o100660 0 0 u::rw-,u:1002:r-x,g::r-x,g:2001:rwx,m::rw-,o::---" \
        in kern
    assert "nobody chgrp 0o555" in kern
    assert "setfacl nonmember 0o775" in kern
    assert "setfacl member 0o2775" in kern
    # The kernel's ext4 reads lunfs's ACLs and modes as lunfs served them.
    with kernel_mount(t.luns[1], lundir) as kmp:
        assert dump_tree(kmp) == lunfs_dump
    assert lunfs_dump == ref_dump
    e2fsck(t.luns[1])
    # Collapse and insert: the kernel's ext4 does them; lunfs implements
    # them too (tests/unit/test_fsops_range.c compares it with the kernel
    # case by case), but the kernel's FUSE refuses both modes itself
    # (fuse_file_fallocate) without asking the filesystem.
    assert [ln for ln in out["kernel"] if ln.startswith("range ")] == [
        "range collapse ok 24576 034567",
        "range insert ok 28672 0034567",
        "range collapse-unaligned Invalid argument 28672 0034567"]
    assert [ln for ln in out["lunfs"] if ln.startswith("range ")] == [
        "range collapse Operation not supported 32768 01234567",
        "range insert Operation not supported 32768 01234567",
        "range collapse-unaligned Operation not supported 32768 01234567"]


def acl_of(path, kind="access"):
    try:
        return dec(os.getxattr(path, "system.posix_acl_" + kind))
    except OSError as e:
        return os.strerror(e.errno)


def enc(text):
    ns = {}
    exec(ACL_LIB, ns)
    return ns["enc"](text)


def dec(value):
    ns = {}
    exec(ACL_LIB, ns)
    return ns["dec"](value)


@pytest.mark.parametrize("views", ["default", "per-mount"])
def test_acl_ids_through_each_mounts_maps(lunfs, targets, lundir, views):
    """ACL entries name HOST ids and are stored as DISK ids, as owners
    are: set through one map, seen through another as that mount's ids
    (unmapped: 65534), refused (EINVAL) when the id has no mapping, kept
    on disk as the kernel's ext4 reads them; an fsGroup view shows the
    group-writable ACL its mode implies. Both with idmapped binds of one
    view (the kernel maps) and with lunfs's own per-mount views (lunfs
    maps, fuse/aclmap.c)."""
    env = {"LUNFS_PER_MOUNT_VIEWS": "1"} if views == "per-mount" else None
    t = targets("aclmap", luns={1: LUN_SIZE})
    os.chmod(lundir, 0o755)
    plain, a, b, g = (mkdir(lundir, n) for n in ("plain", "a", "b", "g"))
    lunfs.mount(t.url(1), plain, env=env)
    lunfs.mount(t.url(1), a, "--uidmap", "0:100000:65536",
                "--gidmap", "0:100000:65536", env=env)
    lunfs.mount(t.url(1), b, "--uidmap", "0:200000:2000",
                "--gidmap", "0:200000:65536", env=env)
    lunfs.mount(t.url(1), g, "--fsgroup", "5000", env=env)
    got = {m["path"]: m["view"] for m in lunfs.status()["mounts"]}
    if views == "per-mount":
        assert got[a] == got[b] == "fuse-map", got
    try:
        f = os.path.join(plain, "f")
        open(f, "w").close()
        os.mkdir(os.path.join(plain, "d"))
        os.setxattr(os.path.join(a, "f"), "system.posix_acl_access",
                    enc("u::rw-,u:101000:rw-,u:103000:r--,g::r--,"
                        "g:102000:r--,m::r--,o::---"))
        os.setxattr(os.path.join(a, "d"), "system.posix_acl_default",
                    enc("u::rwx,u:101000:r-x,g::r-x,m::r-x,o::---"))
        assert acl_of(os.path.join(a, "f")) == \
            "u::rw-,u:101000:rw-,u:103000:r--,g::r--,g:102000:r--,m::r--,o::---"
        assert acl_of(os.path.join(plain, "f")) == \
            "u::rw-,u:1000:rw-,u:3000:r--,g::r--,g:2000:r--,m::r--,o::---"
        # An unmapped entry: 65534 where lunfs maps (its own FUSE mount);
        # an idmapped bind (the default) shows what the kernel shows on
        # any idmapped mount, ext4's included: -1, which dec() prints as
        # the empty qualifier.
        views = {m["path"]: m["view"] for m in lunfs.status()["mounts"]}
        unmapped = "" if views[b] == "idmapped" else "65534"
        assert acl_of(os.path.join(b, "f")) == \
            f"u::rw-,u:201000:rw-,u:{unmapped}:r--,g::r--,g:202000:r--,m::r--,o::---"
        assert acl_of(os.path.join(b, "d"), "default") == \
            "u::rwx,u:201000:r-x,g::r-x,m::r-x,o::---"
        # An id that mount a cannot map is refused, and nothing changes.
        try:
            os.setxattr(os.path.join(a, "f"), "system.posix_acl_access",
                        enc("u::rw-,u:5:rw-,g::r--,m::rw-,o::---"))
            raise AssertionError("an unmapped ACL id was accepted")
        except OSError as ex:
            assert ex.errno == 22, ex
        assert acl_of(os.path.join(plain, "f")).startswith("u::rw-,u:1000:rw-")
        # A change through one mount is seen at once through another that
        # has read the ACL before, chmod's rewrite of the mask included.
        os.setxattr(os.path.join(a, "f"), "system.posix_acl_access",
                    enc("u::rw-,u:101000:rw-,u:103000:r--,g::r--,"
                        "g:102000:r--,m::rw-,o::---"))
        assert acl_of(os.path.join(b, "f")).endswith("g:202000:r--,m::rw-,o::---")
        os.chmod(os.path.join(a, "f"), 0o640)
        assert acl_of(os.path.join(b, "f")).endswith("g:202000:r--,m::r--,o::---")
        # A file made in d inherits the entry (DISK 1000) and every mount
        # shows it in its own ids.
        open(os.path.join(plain, "d", "new"), "w").close()
        assert acl_of(os.path.join(b, "d", "new")) == \
            "u::rw-,u:201000:r-x,g::r-x,m::r--,o::---"
        assert acl_of(os.path.join(a, "d", "new")) == \
            "u::rw-,u:101000:r-x,g::r-x,m::r--,o::---"
        # fsGroup view: mode |= 0660, so the ACL's mask shows rw too.
        assert stat.S_IMODE(os.stat(os.path.join(g, "f")).st_mode) == 0o660
        assert acl_of(os.path.join(g, "f")) == \
            "u::rw-,u:1000:rw-,u:3000:r--,g::r--,g:2000:r--,m::rw-,o::---"
        assert stat.S_IMODE(os.stat(os.path.join(plain, "f")).st_mode) == 0o640
        st = lunfs.status()
        assert len([m for m in st["mounts"]]) >= 4, json.dumps(st)
    finally:
        for p in (g, b, a, plain):
            lunfs.umount(p)
    with kernel_mount(t.luns[1], lundir) as kmp:
        assert acl_of(os.path.join(kmp, "f")) == \
            "u::rw-,u:1000:rw-,u:3000:r--,g::r--,g:2000:r--,m::r--,o::---"
        assert acl_of(os.path.join(kmp, "d", "new")) == \
            "u::rw-,u:1000:r-x,g::r-x,m::r--,o::---"
    e2fsck(t.luns[1])
