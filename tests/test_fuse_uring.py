"""FUSE over io_uring: where the kernel offers it (Linux >= 6.14 with the
fuse module's enable_uring parameter on), lunfsd takes its requests from
one ring per CPU instead of /dev/fuse. These tests turn the parameter on
for their own mounts and restore it; the oracles are e2fsck, the kernel's
ext4 on the LUN's backing file and the daemon's own status. The whole
suite also runs with it on (LUNFS_TEST_FUSE_URING=1, tools/check.sh)."""
import errno
import hashlib
import os
import threading

import pytest

import lunfs_harness as H

MiB = H.MiB
PARAM = H.FUSE_URING_PARAM


@pytest.fixture
def fstarget(targets):
    return targets("ur", luns={1: 64 * MiB, 2: 64 * MiB})


@pytest.fixture
def uring():
    """enable_uring on, restored afterwards; the transport a new mount must
    then use. A kernel without FUSE over io_uring has no such parameter:
    there the same scenarios check that lunfs serves over /dev/fuse."""
    if not os.path.exists(PARAM):
        yield "/dev/fuse"
        return
    with H.fuse_uring("Y"):
        yield "io_uring"


def mkdir(lundir, name):
    p = os.path.join(lundir, name)
    os.mkdir(p)
    return p


def transport(lunfs, path):
    for m in lunfs.status()["mounts"]:
        if m["path"] == path:
            return m["fuse_transport"]
    raise AssertionError(f"{path} not in lunfs status")


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_uring_serves_a_workload_and_leaves_valid_ext4(lunfs, fstarget,
                                                       lundir, uring):
    mnt = mkdir(lundir, "m")
    lunfs.mount(fstarget.url(1), mnt)
    assert transport(lunfs, mnt) == uring

    big = os.urandom(9 * MiB + 4097)  # 1 MiB requests, and a ragged tail
    with open(os.path.join(mnt, "big"), "wb") as f:
        f.write(big)
        f.flush()
        os.fsync(f.fileno())  # fsync goes to the slow-request workers
    small = {f"d/f{i:03d}": os.urandom(i * 37 % 5000) for i in range(300)}
    os.mkdir(os.path.join(mnt, "d"))
    for name, data in small.items():
        with open(os.path.join(mnt, name), "wb") as f:
            f.write(data)
    os.rename(os.path.join(mnt, "d/f000"), os.path.join(mnt, "renamed"))
    small["renamed"] = small.pop("d/f000")
    for i in range(1, 300, 3):
        os.unlink(os.path.join(mnt, f"d/f{i:03d}"))
        del small[f"d/f{i:03d}"]
    os.symlink("renamed", os.path.join(mnt, "link"))
    os.setxattr(os.path.join(mnt, "renamed"), "user.k", b"v" * 300)
    with pytest.raises(OSError) as e:
        os.getxattr(os.path.join(mnt, "renamed"), "user.none")
    assert e.value.errno == errno.ENODATA

    # Cold again: reads come back from the device's I/O thread, several at
    # once from several callers.
    lunfs.umount(mnt)
    lunfs.mount(fstarget.url(1), mnt)
    assert transport(lunfs, mnt) == uring
    errors = []

    def reader(k):
        try:
            with open(os.path.join(mnt, "big"), "rb") as f:
                f.seek(k * MiB)
                got = f.read(3 * MiB)
            if got != big[k * MiB:k * MiB + 3 * MiB]:
                errors.append(f"reader {k}: wrong data")
        except OSError as ex:
            errors.append(f"reader {k}: {ex}")

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for name, data in small.items():
        with open(os.path.join(mnt, name), "rb") as f:
            assert f.read() == data, name
    assert os.readlink(os.path.join(mnt, "link")) == "renamed"
    assert os.getxattr(os.path.join(mnt, "renamed"), "user.k") == b"v" * 300
    lunfs.umount(mnt)

    backing = fstarget.luns[1]
    r = H.run(["e2fsck", "-fn", backing], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    km = mkdir(lundir, "kernel")
    r = H.run(["mount", "-t", "ext4", "-o", "loop,ro", backing, km])
    assert r.returncode == 0, r.stderr
    try:
        with open(os.path.join(km, "big"), "rb") as f:
            assert sha(f.read()) == sha(big)
        for name, data in small.items():
            with open(os.path.join(km, name), "rb") as f:
                assert f.read() == data, name
    finally:
        H.kernel_umount(km, backing)


def test_uring_counts_requests_and_serves_two_mounts(lunfs, fstarget, lundir,
                                                     uring):
    """Requests over the rings are counted like those over /dev/fuse, per
    mount; two mounts of one volume each have their own rings and see
    each other's changes at once."""
    a, b = mkdir(lundir, "a"), mkdir(lundir, "b")
    lunfs.mount(fstarget.url(1), a)
    lunfs.mount(fstarget.url(1), b)
    assert transport(lunfs, a) == transport(lunfs, b) == uring
    fa = os.path.join(a, "f")
    open(fa, "w").close()

    def counts(path):
        for m in lunfs.status()["mounts"]:
            if m["path"] == path:
                return m["fuse_requests"]

    before = counts(a).get("GETXATTR", 0)
    for _ in range(37):
        with pytest.raises(OSError):
            os.getxattr(fa, "user.none")
    assert counts(a)["GETXATTR"] - before == 37
    with open(fa, "w") as f:
        f.write("through a")
    with open(os.path.join(b, "f")) as f:
        assert f.read() == "through a"
    lunfs.umount(b)
    lunfs.umount(a)


def test_no_fuse_uring_keeps_dev_fuse(lunfs, fstarget, lundir, uring):
    mnt = mkdir(lundir, "m")
    lunfs.mount(fstarget.url(1), mnt, env={"LUNFS_FUSE_URING": "0"})
    assert transport(lunfs, mnt) == "/dev/fuse"
    with open(os.path.join(mnt, "f"), "w") as f:
        f.write("x")
    lunfs.umount(mnt)


def test_kernel_without_uring_means_dev_fuse(lunfs, fstarget, lundir):
    def check():
        mnt = mkdir(lundir, "m")
        lunfs.mount(fstarget.url(1), mnt)
        assert transport(lunfs, mnt) == "/dev/fuse"
        with open(os.path.join(mnt, "f"), "w") as f:
            f.write("x")
        lunfs.umount(mnt)

    if not os.path.exists(PARAM):
        check()
        return
    with H.fuse_uring("N"):
        check()
