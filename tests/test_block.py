"""Block volumes: the whole LUN as one regular file. The oracle is tgtd's
backing file, read and written directly."""
import errno
import os
import stat

import pytest

import lunfs_harness as H

MiB = H.MiB


def mount_block(lunfs, target, lun, lundir, name="blk", *opts):
    path = H.make_file(os.path.join(lundir, name))
    lunfs.mount(target.url(lun), path, "--block", *opts)
    assert H.is_mountpoint(path), f"{path} is not a mountpoint after lunfs mount"
    return path


def test_block_size_is_lun_size(lunfs, target, lundir):
    path = mount_block(lunfs, target, 1, lundir)
    st = os.stat(path)
    assert st.st_size == os.path.getsize(target.luns[1]) == 16 * MiB
    assert stat.S_ISREG(st.st_mode)
    lunfs.umount(path)
    assert not H.is_mountpoint(path)


def test_write_through_block_file_reaches_backing(lunfs, target, lundir):
    path = mount_block(lunfs, target, 1, lundir)
    data = os.urandom(3 * MiB)
    src = H.make_file(os.path.join(lundir, "src"))
    with open(src, "wb") as f:
        f.write(data)
    # Aligned large write at 1 MiB, and a small unaligned one that needs
    # read-modify-write of 512-byte blocks.
    H.dd(f"if={src}", f"of={path}", "bs=1M", "seek=1", "conv=notrunc")
    H.dd(f"if={src}", f"of={path}", "bs=1000", "seek=12345", "count=3",
         "oflag=seek_bytes", "conv=notrunc")
    # Read back through the mount before umount.
    assert H.read_at(path, MiB, 3 * MiB) == data
    assert H.read_at(path, 12345, 3000) == data[:3000]
    assert os.path.getsize(path) == 16 * MiB, "dd conv=notrunc changed the size"
    lunfs.umount(path)
    backing = target.luns[1]
    assert H.read_at(backing, MiB, 3 * MiB) == data
    assert H.read_at(backing, 12345, 3000) == data[:3000]
    # Untouched neighbours stay zero.
    assert H.read_at(backing, 12345 - 345, 345) == bytes(345)
    assert H.read_at(backing, 12345 + 3000, 1000) == bytes(1000)
    assert H.read_at(backing, 4 * MiB, MiB) == bytes(MiB)
    assert os.path.getsize(backing) == 16 * MiB


def test_backing_data_read_through_block_file(lunfs, target, lundir):
    backing = target.luns[2]
    data = os.urandom(16 * MiB)
    with open(backing, "r+b") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    path = mount_block(lunfs, target, 2, lundir)
    out = os.path.join(lundir, "out")
    H.dd(f"if={path}", f"of={out}", "bs=1M")
    with open(out, "rb") as f:
        assert f.read() == data
    # Unaligned reads.
    assert H.read_at(path, 777, 5000) == data[777:5777]
    assert H.read_at(path, 16 * MiB - 100, 100) == data[-100:]
    assert H.read_at(path, 16 * MiB, 100) == b"", "read past the end returned data"
    lunfs.umount(path)
    assert H.sha256_file(backing) == H.sha256_file(out), "read-only use changed the LUN"


def test_dd_conv_fsync_reaches_backing_before_umount(lunfs, target, lundir):
    path = mount_block(lunfs, target, 1, lundir)
    data = os.urandom(2 * MiB)
    src = os.path.join(lundir, "src")
    with open(src, "wb") as f:
        f.write(data)
    H.dd(f"if={src}", f"of={path}", "bs=64K", "seek=32", "conv=notrunc,fsync")
    # Still mounted: the fsync must have pushed the data to the target.
    assert H.is_mountpoint(path)
    assert H.read_at(target.luns[1], 2 * MiB, 2 * MiB) == data
    lunfs.umount(path)


def test_os_fsync_reaches_backing_before_umount(lunfs, target, lundir):
    path = mount_block(lunfs, target, 1, lundir)
    data = os.urandom(4096 * 3 + 17)
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os.pwrite(fd, data, 5 * MiB + 3) == len(data)
        os.fsync(fd)
        assert H.read_at(target.luns[1], 5 * MiB + 3, len(data)) == data
    finally:
        os.close(fd)
    lunfs.umount(path)


def test_read_only_block_mount(lunfs, target, lundir):
    path = mount_block(lunfs, target, 1, lundir, "blk", "--read-only")
    before = H.sha256_file(target.luns[1])
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as ex:
        assert ex.errno in (errno.EROFS, errno.EACCES, errno.EPERM), ex
    else:
        try:
            with pytest.raises(OSError) as ei:
                os.pwrite(fd, b"x" * 512, 0)
                os.fsync(fd)
            assert ei.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.EBADF)
        finally:
            os.close(fd)
    assert os.path.getsize(path) == 16 * MiB
    lunfs.umount(path)
    assert H.sha256_file(target.luns[1]) == before


def test_status_shows_block_mount(lunfs, target, lundir):
    path = mount_block(lunfs, target, 1, lundir)
    st = lunfs.status()
    assert len(st["volumes"]) == 1
    vol = st["volumes"][0]
    assert vol["mode"] == "block" and vol["read_only"] is False and vol["mounts"] == 1
    assert target.iqn in vol["spec"]
    assert [m["path"] for m in st["mounts"]] == [os.path.realpath(path)]
    assert st["mounts"][0]["mode"] == "block"
    assert len(st["sessions"]) == 1
    s = st["sessions"][0]
    assert s["target"] == target.iqn and s["portal"] == target.tgt.portal
    assert s["refs"] == 1 and s["connected"] is True
    lunfs.umount(path)
    st = lunfs.status()
    assert st["volumes"] == [] and st["mounts"] == [] and st["sessions"] == []
