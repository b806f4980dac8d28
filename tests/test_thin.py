"""Thin LUNs and growing volumes: fstrim (FITRIM through FUSE), online
discard, and `lunfs resize`. Oracles: the allocated blocks of tgtd's
backing file (a thin LUN punches holes for UNMAP), e2fsck -fn, dumpe2fs,
the kernel's ext4 through a read-only loop mount, fstrim(8) and df."""
import contextlib
import hashlib
import os
import re

import lunfs_harness as H

MiB = H.MiB


def thin(target, lun):
    target.tgt.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                      "logicalunit", "--tid", str(target.tid), "--lun",
                      str(lun), "--params", "thin_provisioning=1")


def allocated(path):
    return os.stat(path).st_blocks * 512


def write_file(path, size, seed=b"x"):
    data = hashlib.sha256(seed).digest() * (size // 32)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def sha(path):
    return H.sha256_file(path)


def e2fsck_clean(backing):
    r = H.run(["e2fsck", "-fn", backing], timeout=120)
    assert r.returncode == 0, f"e2fsck -fn exited {r.returncode}:\n{r.stdout}{r.stderr}"


def dumpe2fs(backing):
    r = H.run(["dumpe2fs", "-h", backing])
    assert r.returncode == 0, r.stderr
    return dict(re.findall(r"^([^:\n]+):\s*(.*)$", r.stdout, re.M))


@contextlib.contextmanager
def kernel_mount(backing, lundir):
    mp = os.path.join(lundir, "kernel")
    os.makedirs(mp, exist_ok=True)
    r = H.run(["mount", "-t", "ext4", "-o", "loop,ro", backing, mp])
    assert r.returncode == 0, f"kernel mount of {backing} failed: {r.stderr}"
    try:
        yield mp
    finally:
        H.kernel_umount(mp, backing)


def tree(root):
    """{relative path: sha256 or 'dir'} of everything under root except
    lost+found."""
    out = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != "lost+found"]
        for x in dirs:
            out[os.path.relpath(os.path.join(d, x), root)] = "dir"
        for x in files:
            out[os.path.relpath(os.path.join(d, x), root)] = sha(os.path.join(d, x))
    return out


def fstrim(path):
    return H.run(["fstrim", "-v", path], timeout=120)


def trimmed_bytes(r):
    m = re.search(r"\((\d+) bytes\) trimmed", r.stdout)
    assert m, f"fstrim printed no byte count: {r.stdout!r} {r.stderr!r}"
    return int(m.group(1))


def grow_lun(target, lun, size, thin_lun=False):
    """tgtd reads a LUN's size when the LUN is added: grow the backing file,
    then delete and add the LUN again (lunfs's session stays logged in and
    sees a unit attention)."""
    path = target.luns[lun]
    with open(path, "r+b") as f:
        f.truncate(size)
    target.tgt.tgtadm("--lld", "iscsi", "--op", "delete", "--mode",
                      "logicalunit", "--tid", str(target.tid), "--lun", str(lun))
    target.add_lun(lun, path=path)
    if thin_lun:
        thin(target, lun)


def df_bytes(path):
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def mkdir(lundir, name):
    p = os.path.join(lundir, name)
    os.makedirs(p, exist_ok=True)
    return p


# ---- fstrim ----

def test_fstrim_gives_deleted_space_back(lunfs, targets, lundir):
    t = targets("trim", luns={1: 64 * MiB})
    thin(t, 1)
    mp = mkdir(lundir, "m")
    lunfs.mount(t.url(1), mp)
    keep = write_file(os.path.join(mp, "keep"), 4 * MiB, b"keep")
    write_file(os.path.join(mp, "big"), 24 * MiB, b"big")
    before = allocated(t.luns[1])
    assert before >= 28 * MiB, f"backing file holds only {before} bytes"
    os.unlink(os.path.join(mp, "big"))
    r = fstrim(mp)
    assert r.returncode == 0, f"fstrim failed: {r.stderr}"
    got = trimmed_bytes(r)
    after = allocated(t.luns[1])
    # Everything free was unmapped: at least the deleted file, at most the
    # whole volume.
    assert 24 * MiB <= got <= 64 * MiB, got
    assert before - after >= 22 * MiB, (before, after)
    assert sha(os.path.join(mp, "keep")) == keep
    st = lunfs.status()
    vol = st["volumes"][0]
    assert vol["can_unmap"] is True and vol["trimmed_bytes"] >= got
    # A second fstrim finds the same free space (ext4 trims it again too)
    # and the data stays.
    assert fstrim(mp).returncode == 0
    assert sha(os.path.join(mp, "keep")) == keep
    lunfs.umount(mp)
    e2fsck_clean(t.luns[1])


def test_fstrim_errors_are_clear(lunfs, targets, lundir):
    t = targets("trimerr", luns={1: 32 * MiB, 2: 32 * MiB})
    thin(t, 2)
    mp = mkdir(lundir, "m")
    lunfs.mount(t.url(1), mp)  # not thin: no UNMAP
    r = fstrim(mp)
    assert r.returncode != 0
    assert "not supported" in r.stderr, r.stderr
    assert "does not support UNMAP" in lunfs.log_text()
    lunfs.umount(mp)
    # Read-only mount of a thin LUN: EROFS, nothing unmapped.
    mp2 = mkdir(lundir, "m2")
    lunfs.mount(t.url(2), mp2)
    lunfs.umount(mp2)
    before = allocated(t.luns[2])
    lunfs.mount(t.url(2), mp2, "--read-only")
    r = fstrim(mp2)
    assert r.returncode != 0 and "read-only" in r.stderr.lower(), r.stderr
    lunfs.umount(mp2)
    assert allocated(t.luns[2]) == before


# ---- online discard ----

def test_discard_unmaps_after_durable_write_back(lunfs, targets, lundir):
    t = targets("disc", luns={1: 64 * MiB})
    thin(t, 1)
    mp = mkdir(lundir, "m")
    lunfs.mount(t.url(1), mp, "--discard")
    assert lunfs.status()["volumes"][0]["discard"] is True
    keep = write_file(os.path.join(mp, "keep"), 2 * MiB, b"keep")
    write_file(os.path.join(mp, "big"), 24 * MiB, b"big")
    before = allocated(t.luns[1])
    os.unlink(os.path.join(mp, "big"))
    # No fstrim: the flusher's next durable write-back unmaps the extents.
    assert H.wait_until(lambda: before - allocated(t.luns[1]) >= 22 * MiB, 30), \
        (before, allocated(t.luns[1]), lunfs.log_tail())
    assert lunfs.status()["volumes"][0]["discarded_bytes"] >= 24 * MiB
    assert sha(os.path.join(mp, "keep")) == keep
    # Truncate frees too.
    write_file(os.path.join(mp, "t"), 8 * MiB, b"t")
    mid = allocated(t.luns[1])
    os.truncate(os.path.join(mp, "t"), 0)
    assert H.wait_until(lambda: mid - allocated(t.luns[1]) >= 7 * MiB, 30)
    lunfs.umount(mp)
    e2fsck_clean(t.luns[1])


def test_discard_crash_between_free_and_unmap_loses_nothing(lunfs, targets, lundir):
    t = targets("crash", luns={1: 64 * MiB})
    thin(t, 1)
    mp = mkdir(lundir, "m")
    lunfs.mount(t.url(1), mp, "--discard")
    keep = write_file(os.path.join(mp, "keep"), 8 * MiB, b"keep")
    gone = write_file(os.path.join(mp, "gone"), 8 * MiB, b"gone")
    # Freed in memory, not yet durable: lunfsd dies before its write-back
    # (every 5 s) could make the free durable and unmap.
    os.unlink(os.path.join(mp, "gone"))
    lunfs.kill_daemon()
    # The next daemon replays the volume (e2fsck -p) and serves it again.
    lunfs.ok("status")
    assert H.wait_until(lambda: os.path.exists(os.path.join(mp, "keep")), 30), \
        lunfs.log_tail()
    assert sha(os.path.join(mp, "keep")) == keep, lunfs.log_tail()
    # If the unlink did not survive the crash, neither may its UNMAP have.
    if os.path.exists(os.path.join(mp, "gone")):
        assert sha(os.path.join(mp, "gone")) == gone, lunfs.log_tail()
    lunfs.umount(mp)
    e2fsck_clean(t.luns[1])


# ---- growth ----

def test_grow_online_every_mount_sees_it(lunfs, targets, lundir):
    t = targets("grow", luns={1: 32 * MiB})
    a, b = mkdir(lundir, "a"), mkdir(lundir, "b")
    lunfs.mount(t.url(1), a)
    lunfs.mount(t.url(1), b)
    old = write_file(os.path.join(a, "old"), 4 * MiB, b"old")
    os.makedirs(os.path.join(a, "d/e"))
    write_file(os.path.join(a, "d/e/f"), 12345, b"f")
    size0 = df_bytes(a)
    st = lunfs.status()["volumes"][0]
    assert st["lun_bytes"] == 32 * MiB and st["fs_bytes"] == 32 * MiB
    grow_lun(t, 1, 200 * MiB)
    r = lunfs.ok("resize", a)
    assert "LUN 209715200 bytes, filesystem 209715200 bytes" in r.stdout, r.stdout
    for mp in (a, b):
        assert df_bytes(mp) > size0 + 160 * MiB, (mp, df_bytes(mp))
    st = lunfs.status()["volumes"][0]
    assert st["lun_bytes"] == st["fs_bytes"] == 200 * MiB
    # The new space is usable: more than the old volume could hold.
    new = write_file(os.path.join(b, "new"), 120 * MiB, b"new")
    assert sha(os.path.join(a, "old")) == old
    assert sha(os.path.join(a, "new")) == new
    seen = tree(a)
    ours = df_bytes(a)
    # Same size again: nothing to do.
    assert lunfs.ok("resize", b).returncode == 0
    lunfs.umount(a)
    lunfs.umount(b)
    e2fsck_clean(t.luns[1])
    assert int(dumpe2fs(t.luns[1])["Block count"]) * 4096 == 200 * MiB
    with kernel_mount(t.luns[1], lundir) as k:
        assert tree(k) == seen
        assert df_bytes(k) == ours


def test_grow_past_reserved_gdt_and_into_new_flex_groups(lunfs, targets, lundir):
    """A kernel-made volume with 1 KiB blocks and no reserved GDT blocks
    (no resize inode): growing it needs more group descriptor blocks than
    it has plus the reserved ones (resize2fs moves what is in the way), and
    new flex groups of 4. Offline by spec, then online by path."""
    t = targets("gdt", luns={1: 32 * MiB})
    backing = t.luns[1]
    r = H.run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-O", "^resize_inode",
               "-G", "4", backing])
    assert r.returncode == 0, r.stderr
    h0 = dumpe2fs(backing)
    rsv0 = int(h0.get("Reserved GDT blocks", "0"))
    assert rsv0 == 0
    mp = mkdir(lundir, "m")
    lunfs.mount(t.url(1), mp)
    data = write_file(os.path.join(mp, "data"), 6 * MiB, b"data")
    lunfs.umount(mp)
    groups0 = int(h0["Block count"]) // int(h0["Blocks per group"])

    grow_lun(t, 1, 160 * MiB)
    r = lunfs.ok("resize", t.url(1))
    assert "filesystem 167772160 bytes" in r.stdout, r.stdout
    e2fsck_clean(backing)
    h1 = dumpe2fs(backing)
    per_desc_block = 1024 // int(h1.get("Group descriptor size", "32"))
    assert int(h1.get("Reserved GDT blocks", "0")) == 0
    groups1 = -(-int(h1["Block count"]) // int(h1["Blocks per group"]))
    # Needed more descriptor blocks than it had plus the reserved ones, and
    # more than one flex group of 4.
    assert -(-groups1 // per_desc_block) > -(-groups0 // per_desc_block) + rsv0
    assert groups1 // 4 > groups0 // 4 + 1
    lunfs.mount(t.url(1), mp)
    assert sha(os.path.join(mp, "data")) == data
    grow_lun(t, 1, 400 * MiB)
    lunfs.ok("resize", mp)
    assert df_bytes(mp) > 350 * MiB
    more = write_file(os.path.join(mp, "more"), 200 * MiB, b"more")
    assert sha(os.path.join(mp, "data")) == data
    seen = tree(mp)
    lunfs.umount(mp)
    e2fsck_clean(backing)
    with kernel_mount(backing, lundir) as k:
        assert tree(k) == seen
        assert sha(os.path.join(k, "more")) == more


def test_grow_block_volume(lunfs, targets, lundir):
    t = targets("gblk", luns={1: 16 * MiB})
    path = H.make_file(os.path.join(lundir, "blk"))
    lunfs.mount(t.url(1), path, "--block")
    assert os.path.getsize(path) == 16 * MiB
    grow_lun(t, 1, 48 * MiB)
    lunfs.ok("resize", path)
    assert os.path.getsize(path) == 48 * MiB
    H.write_at(path, 40 * MiB, b"tail" * 1024)
    lunfs.umount(path)
    assert H.read_at(t.luns[1], 40 * MiB, 4096) == b"tail" * 1024


def test_resize_bad_input(lunfs, targets, lundir):
    t = targets("rbad", luns={1: 32 * MiB, 2: 32 * MiB})
    plain = mkdir(lundir, "plain")
    r = lunfs.run("resize", plain)
    H.assert_one_error_line(r, ["not a lunfs mount"])
    mp = mkdir(lundir, "m")
    lunfs.mount(t.url(1), mp)
    lunfs.umount(mp)
    lunfs.mount(t.url(1), mp, "--read-only")
    grow_lun(t, 1, 64 * MiB)
    r = lunfs.run("resize", mp)
    H.assert_one_error_line(r, ["read-only"])
    lunfs.umount(mp)
    # Shrinking, online and offline: refused, nothing written.
    lunfs.mount(t.url(1), mp)
    r = lunfs.run("resize", "--size", "16M", mp)
    H.assert_one_error_line(r, ["shrinking", "not supported"])
    vol = lunfs.status()["volumes"][0]
    assert vol["fs_bytes"] == 32 * MiB and vol["lun_bytes"] == 64 * MiB
    lunfs.umount(mp)
    snap = sha(t.luns[1])
    r = lunfs.run("resize", "--size", "16M", t.url(1))
    H.assert_one_error_line(r, ["shrinking", "not supported"])
    r = lunfs.run("resize", "--size", "1G", t.url(1))
    H.assert_one_error_line(r, ["more than the LUN"])
    assert sha(t.luns[1]) == snap
    # A LUN that shrank under a mounted volume.
    lunfs.mount(t.url(2), mp)
    lunfs.umount(mp)
    lunfs.mount(t.url(2), mp)
    t.tgt.tgtadm("--lld", "iscsi", "--op", "delete", "--mode", "logicalunit",
                 "--tid", str(t.tid), "--lun", "2")
    with open(t.luns[2], "r+b") as f:
        f.truncate(16 * MiB)
    t.add_lun(2, path=t.luns[2])
    r = lunfs.run("resize", mp)
    H.assert_one_error_line(r, ["shrank", "not supported"])
