"""Damaged volumes behind a real tgtd LUN (e2fsprogs' test images, see
../shared/corrupt-images/README.md): a volume lunfs judges damaged is
refused with one line 'lunfs: ...', exit 1, nothing left behind and not one
byte written; a volume it serves can be walked, the damaged objects give
EIO (never ENOTCONN: that would be a dead daemon), and the daemon is alive
afterwards."""
import errno
import gzip
import os
import shutil

import pytest

import lunfs_harness as H

IMAGES = os.path.normpath(os.path.join(H.REPO, "..", "shared", "corrupt-images"))

# Refused: a bitmap checksum, an impossible descriptor size, a corrupt
# superblock, a group descriptor whose inode table is missing (the kernel
# refuses that one too). (Volumes that only need journal replay or an fsck are
# repaired by the daemon before a read-write mount: see the last test.)
REFUSED = ["f_bad_bbitmap", "f_desc_size_zero", "f_first_meta_bg_too_big",
           "f_misstable"]
# Served with EIO somewhere: bad symlinks, directory blocks with bad
# checksums, an extent leaf that points nowhere, a bad xattr block.
SERVED = ["f_badsymlinks", "f_dir_bad_csum", "f_extent_leaf_bad_extent",
          "f_ea_bad_csum",
          # needs journal replay: the daemon repairs it, then serves it
          "f_clear_orphan_file"]

# What a damaged object may answer. ENOTCONN / ECONNABORTED / ENODEV mean
# the FUSE daemon died or the mount was torn down under us.
DEAD = {errno.ENOTCONN, errno.ECONNABORTED, errno.ENODEV, errno.ESHUTDOWN,
        errno.ECANCELED}


def image_lun(target, lundir, name):
    """Gunzip NAME next to the target's other LUN files and add it as LUN
    1; tgtd wants whole 512-byte sectors."""
    src = os.path.join(IMAGES, name + ".img.gz")
    if not os.path.exists(src):
        pytest.fail(f"{src} is missing: the damaged images live in "
                    f"../shared/corrupt-images beside the repository")
    path = os.path.join(lundir, name + ".img")
    with gzip.open(src, "rb") as f, open(path, "wb") as out:
        shutil.copyfileobj(f, out)
    size = os.path.getsize(path)
    if size % 512:
        with open(path, "ab") as out:
            out.truncate(size + 512 - size % 512)
    target.add_lun(1, path=path)
    return path


def walk_tolerant(root):
    """Walk and read everything; return (objects seen, errnos seen)."""
    seen, errs = 0, []

    def note(ex):
        errs.append((ex.errno, getattr(ex, "filename", None)))

    for dirpath, dirs, files in os.walk(root, onerror=note):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            seen += 1
            try:
                st = os.lstat(p)
            except OSError as ex:
                note(ex)
                continue
            try:
                if os.path.islink(p):
                    os.readlink(p)
                elif os.path.isfile(p) and st.st_size < 64 * H.MiB:
                    with open(p, "rb") as f:
                        while f.read(1 << 20):
                            pass
                os.listxattr(p, follow_symlinks=False)
            except OSError as ex:
                note(ex)
    return seen, errs


@pytest.mark.parametrize("name", REFUSED)
def test_damaged_volume_refused(lunfs, targets, lundir, name):
    assert_refused_untouched(lunfs, targets, lundir, name)


@pytest.mark.parametrize("name", ["f_jnl_64bit", "f_itable_collision"])
def test_unclean_volume_read_only_refused(lunfs, targets, lundir, name):
    """Read-only there is no repair: refused, and nothing written."""
    line = assert_refused_untouched(lunfs, targets, lundir, name,
                                    "--read-only")
    assert "fsck" in line, line


def assert_refused_untouched(lunfs, targets, lundir, name, *opts):
    t = targets("c")
    backing = image_lun(t, lundir, name)
    before = H.sha256_file(backing)
    mp = os.path.join(lundir, "mnt")
    os.mkdir(mp)
    r = lunfs.run("mount", *opts, t.url(1), mp)
    line = H.assert_one_error_line(r)
    print(f"{name}: {line}")
    assert not H.is_mountpoint(mp)
    assert H.mounts_under(lundir) == []
    assert t.wait_connections(0, timeout=5) == 0, \
        f"session left at tgtd: {t.connections()}"
    st = lunfs.status()
    assert st["volumes"] == [] and st["mounts"] == [], st
    assert H.sha256_file(backing) == before, \
        f"{name}: lunfs wrote to a volume it refused"
    return line


@pytest.mark.parametrize("name", SERVED)
def test_damaged_volume_served(lunfs, targets, lundir, name):
    t = targets("c")
    image_lun(t, lundir, name)
    mp = os.path.join(lundir, "mnt")
    os.mkdir(mp)
    r = lunfs.run("mount", t.url(1), mp)
    if r.returncode != 0:
        # Refusing is allowed too; then it must be a clean refusal.
        H.assert_one_error_line(r)
        pytest.fail(f"{name} was served by the unit test but refused "
                    f"over iSCSI: {r.stderr.strip()}")
    assert H.is_mountpoint(mp)
    seen, errs = walk_tolerant(mp)
    print(f"{name}: {seen} objects, errors {errs}")
    dead = [(os.strerror(e), p) for e, p in errs if e in DEAD]
    assert not dead, (f"{name}: the mount died under the walk: {dead}\n"
                      f"--- daemon log ---\n{lunfs.log_tail()}")
    pid = lunfs.daemon_pid()
    assert pid and H.pid_alive(pid), "lunfsd died"
    st = lunfs.status()
    assert len(st["volumes"]) == 1 and len(st["mounts"]) == 1, st
    lunfs.umount(mp)
    assert not H.is_mountpoint(mp)
    assert t.wait_connections(0, timeout=5) == 0
    assert lunfs.status()["volumes"] == []
