"""Fencing (issue 14): one writer per LUN across nodes. Two lunfsd with
their own state directories and initiator names stand for two nodes.
Oracles: the target's own persistent-reservation state (lunfs-prtool,
libiscsi only), the backing file's bytes, e2fsck, the kernel's ext4
(mount -o loop), dumpe2fs's view of the MMP block."""
import errno
import json
import os
import time

import pytest

import lunfs_harness as H

MiB = H.MiB
NODE_A = "iqn.2026-12.io.lunfs.test:node-a"
NODE_B = "iqn.2026-12.io.lunfs.test:node-b"


def key_of(name):
    h = 1469598103934665603
    for c in name.encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"0x{h or 1:016x}"


def prtool(url, *args, initiator=None):
    exe = os.path.join(H.build_dir(), "tools", "lunfs-prtool")
    argv = [exe] + (["--initiator", initiator] if initiator else []) + \
        [url, *args]
    return H.run(argv, timeout=30)


def pr_state(url):
    r = prtool(url, "read")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def spec_for(lundir, target, lun, node, name):
    return H.write_json_spec(
        os.path.join(lundir, f"{name}.json"),
        targetPortal=f"127.0.0.1:{target.tgt.port}", iqn=target.iqn,
        lun=lun, initiatorName=node)


@pytest.fixture
def node_b(targets, lundir):
    """A second lunfsd: its own state directory (another node)."""
    lf = H.Lunfs(os.path.join(lundir, "state-b"), lundir)
    lf.start_watchdog(120)
    yield lf
    problems = lf.teardown([])
    if problems:
        pytest.fail("node B teardown: " + "\n".join(problems), pytrace=False)


@pytest.fixture
def ftarget(targets):
    return targets("f", luns={1: 32 * MiB})


def dumpe2fs_mmp(path):
    """dumpe2fs's reading of the MMP block (an oracle we did not write)."""
    r = H.run(["dumpe2fs", "-h", path], timeout=30)
    out = {}
    for line in r.stdout.splitlines():
        k, _, v = line.strip().partition(":")
        if k.startswith("mmp_") or k.startswith("MMP "):
            out[k] = v.strip()
    return out


def bytes_but_mmp(path):
    """The backing file's bytes with the MMP block left out: a live
    holder rewrites that block every second, nothing else changes."""
    blk = int(dumpe2fs_mmp(path)["MMP block number"])
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[blk * 4096:(blk + 1) * 4096] = bytes(4096)
    return bytes(data)


# Node A's daemon commits every 200 ms, so that its own last writes (a
# commit's checkpoint moves the journal's tail in the journal superblock)
# are over before a test compares the LUN's bytes around node B's attempt.
QUICK_COMMITS = {"LUNFS_COMMIT_MS": "200"}


def settled_bytes_but_mmp(path, tries=20):
    """bytes_but_mmp() once the holder's own writes have settled: two
    samples 1 s apart (five of A's commit intervals) that agree."""
    last = bytes_but_mmp(path)
    for _ in range(tries):
        time.sleep(1)
        now = bytes_but_mmp(path)
        if now == last:
            return now
        last = now
    raise AssertionError(f"{path} kept changing for {tries} s with the "
                         "holder idle")


def test_second_rw_mount_refused_ro_allowed(lunfs, node_b, ftarget, lundir):
    """Node A holds the LUN read-write: node B's read-write mount is refused
    before it writes a byte, naming the holder; its read-only mount works."""
    spec_a = spec_for(lundir, ftarget, 1, NODE_A, "a")
    spec_b = spec_for(lundir, ftarget, 1, NODE_B, "b")
    da, db = (os.path.join(lundir, n) for n in ("a", "b"))
    os.mkdir(da)
    os.mkdir(db)
    lunfs.mount(spec_a, da, env=QUICK_COMMITS)
    st = pr_state(ftarget.url(1))
    assert st["holder"] == key_of(NODE_A) and st["type"] == 1
    vol = lunfs.status()["volumes"][0]
    assert vol["fencing"] == "pr+mmp", vol
    with open(os.path.join(da, "fa"), "wb") as f:
        f.write(b"A" * 100000)
        os.fsync(f.fileno())
    lunfs.ok("status")  # nothing changes the LUN but A's daemon
    backing = ftarget.luns[1]
    # A's MMP thread rewrites its block every second: compare everything
    # else, and the MMP block's owner.
    before = settled_bytes_but_mmp(backing)
    r = node_b.run("mount", spec_b, db)
    line = H.assert_one_error_line(r, ["held read-write"])
    assert key_of(NODE_A)[2:] in line and "--takeover" in line, line
    assert NODE_A in line, line  # the MMP block names the holder
    assert not H.is_mountpoint(db)
    assert node_b.status()["sessions"] == []
    assert os.listdir(os.path.join(node_b.state_dir, "volumes")) == []
    assert pr_state(ftarget.url(1))["holder"] == key_of(NODE_A)
    # Nothing written by B: every byte but the MMP block as before, and
    # the MMP block is A's.
    assert bytes_but_mmp(backing) == before
    assert dumpe2fs_mmp(backing)["mmp_node_name"] == NODE_A

    node_b.mount(spec_b, db, "--read-only")
    with open(os.path.join(db, "fa"), "rb") as f:
        assert f.read() == b"A" * 100000
    with pytest.raises(OSError) as ex:
        open(os.path.join(db, "fb"), "wb")
    assert ex.value.errno == errno.EROFS
    node_b.umount(db)
    # A takeover while A is alive: refused once MMP shows A updating.
    r = node_b.run("mount", "--takeover", spec_b, db)
    H.assert_one_error_line(r, ["alive"])
    assert pr_state(ftarget.url(1))["holder"] == key_of(NODE_A)
    assert not H.is_mountpoint(db)
    lunfs.umount(da)
    st = pr_state(ftarget.url(1))
    assert st["holder"] is None and st["keys"] == [], st
    r = H.run(["e2fsck", "-fn", backing], timeout=60)
    assert r.returncode == 0, r.stdout


def write_synced(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def test_forced_preempt_fences_the_writer(lunfs, ftarget, lundir):
    """Another initiator preempts A's reservation while A writes: A's next
    writes fail, nothing of A's reaches the LUN after the preempt, the
    volume turns read-only, and A's unmount writes nothing."""
    spec_a = spec_for(lundir, ftarget, 1, NODE_A, "a")
    da = os.path.join(lundir, "a")
    os.mkdir(da)
    lunfs.mount(spec_a, da)
    write_synced(os.path.join(da, "before"), b"1" * 50000)
    backing = ftarget.luns[1]

    r = prtool(ftarget.url(1), "preempt", initiator=NODE_B)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["holder"] == key_of(NODE_B)
    after_preempt = H.sha256_file(backing)

    # The first write after the preempt may be taken into the write-behind,
    # but it cannot be made durable; from then on the volume is read-only.
    with pytest.raises(OSError) as ex:
        write_synced(os.path.join(da, "after"), b"2" * 300000)
    assert ex.value.errno in (errno.EIO, errno.EROFS), ex.value
    assert H.wait_until(lambda: "fenced" in lunfs.status()["volumes"][0], 5)
    vol = lunfs.status()["volumes"][0]
    assert "RESERVATION CONFLICT" in vol["fenced"], vol
    with pytest.raises(OSError) as ex:
        open(os.path.join(da, "third"), "wb")
    assert ex.value.errno == errno.EROFS
    with open(os.path.join(da, "before"), "rb") as f:  # reads go on
        assert f.read() == b"1" * 50000
    assert "fenced" in lunfs.log_text()
    assert H.sha256_file(backing) == after_preempt

    lunfs.umount(da)
    assert H.sha256_file(backing) == after_preempt
    assert pr_state(ftarget.url(1))["holder"] == key_of(NODE_B)


def test_kill9_holder_then_takeover(lunfs, node_b, ftarget, lundir):
    """Node A dies holding the LUN. Node B is refused without --takeover,
    and with it takes the LUN over once A's MMP block has stopped: A's
    fsync'd files are all there and e2fsck is clean afterwards."""
    spec_a = spec_for(lundir, ftarget, 1, NODE_A, "a")
    spec_b = spec_for(lundir, ftarget, 1, NODE_B, "b")
    da, db = (os.path.join(lundir, n) for n in ("a", "b"))
    os.mkdir(da)
    os.mkdir(db)
    lunfs.mount(spec_a, da)
    files = {f"f{i}": os.urandom(20000 * (i + 1)) for i in range(5)}
    for name, data in files.items():
        write_synced(os.path.join(da, name), data)
    dfd = os.open(da, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
    lunfs.kill_daemon()

    r = node_b.run("mount", spec_b, db)
    H.assert_one_error_line(r, ["held read-write"])
    node_b.mount(spec_b, db, "--takeover", timeout=90)
    st = pr_state(ftarget.url(1))
    assert st["holder"] == key_of(NODE_B) and st["keys"] == [key_of(NODE_B)]
    for name, data in files.items():
        with open(os.path.join(db, name), "rb") as f:
            assert f.read() == data, name
    write_synced(os.path.join(db, "fb"), b"B" * 4096)
    assert "taken over" in node_b.log_text()
    node_b.umount(db)
    H.unmount_all_under(da)
    r = H.run(["e2fsck", "-fn", ftarget.luns[1]], timeout=60)
    assert r.returncode == 0, r.stdout
    assert dumpe2fs_mmp(ftarget.luns[1])["mmp_sequence"] == "0xff4d4d50"


def test_restarted_holder_keeps_its_reservation(lunfs, node_b, ftarget,
                                                lundir):
    """kill -9 and restart of the holder's daemon: it re-attaches with its
    own key (the dead session's registration is dropped) and keeps
    writing; another node is still refused."""
    spec_a = spec_for(lundir, ftarget, 1, NODE_A, "a")
    spec_b = spec_for(lundir, ftarget, 1, NODE_B, "b")
    da, db = (os.path.join(lundir, n) for n in ("a", "b"))
    os.mkdir(da)
    os.mkdir(db)
    lunfs.mount(spec_a, da)
    write_synced(os.path.join(da, "one"), b"1" * 10000)
    lunfs.kill_daemon()

    def remounted():
        # Served again, not just listed: an entry shows up "attaching"
        # while the MMP wait and the recovery run.
        ms = lunfs.status()["mounts"]
        return len(ms) == 1 and ms[0].get("state") == "attached"
    assert H.wait_until(remounted, 60, 0.5), lunfs.log_tail()
    write_synced(os.path.join(da, "two"), b"2" * 10000)
    st = pr_state(ftarget.url(1))
    assert st["holder"] == key_of(NODE_A) and st["keys"] == [key_of(NODE_A)]
    r = node_b.run("mount", spec_b, db)
    H.assert_one_error_line(r, ["held read-write"])
    lunfs.umount(da)
    assert pr_state(ftarget.url(1))["holder"] is None
    r = H.run(["e2fsck", "-fn", ftarget.luns[1]], timeout=60)
    assert r.returncode == 0, r.stdout


def test_target_without_pr_mmp_alone_refuses(lunfs, node_b, ftarget, lundir):
    """A target that answers PERSISTENT RESERVE with INVALID COMMAND
    OPERATION CODE (here: the real target, asked an opcode it does not
    implement): lunfs says so, and MMP alone refuses the second node."""
    noPR = {"LUNFS_TEST_NO_PR": "1", **QUICK_COMMITS}
    spec_a = spec_for(lundir, ftarget, 1, NODE_A, "a")
    spec_b = spec_for(lundir, ftarget, 1, NODE_B, "b")
    da, db = (os.path.join(lundir, n) for n in ("a", "b"))
    os.mkdir(da)
    os.mkdir(db)
    lunfs.mount(spec_a, da, env=noPR)
    assert lunfs.status()["volumes"][0]["fencing"] == "mmp-only"
    assert "does not implement persistent reservations" in lunfs.log_text()
    assert pr_state(ftarget.url(1))["holder"] is None
    write_synced(os.path.join(da, "fa"), b"A" * 10000)
    backing = ftarget.luns[1]
    before = settled_bytes_but_mmp(backing)
    r = node_b.run("mount", spec_b, db, env=noPR)
    line = H.assert_one_error_line(r, ["in use by another node"])
    assert NODE_A in line
    assert bytes_but_mmp(backing) == before
    assert not H.is_mountpoint(db)
    lunfs.umount(da)


def test_kernel_ext4_and_lunfs_exclude_each_other(lunfs, ftarget, lundir):
    """The kernel's ext4 (mount -o loop of the LUN's backing file) refuses
    the volume while lunfs holds it, and lunfs refuses it while the kernel
    has it mounted: MMP works both ways."""
    spec_a = spec_for(lundir, ftarget, 1, NODE_A, "a")
    da, km = (os.path.join(lundir, n) for n in ("a", "k"))
    os.mkdir(da)
    os.mkdir(km)
    backing = ftarget.luns[1]
    lunfs.mount(spec_a, da)
    write_synced(os.path.join(da, "fa"), b"A" * 10000)
    r = H.run(["mount", "-o", "loop", backing, km], timeout=90)
    assert r.returncode != 0, "the kernel mounted a volume lunfs holds"
    assert not H.is_mountpoint(km)
    lunfs.umount(da)

    r = H.run(["mount", "-o", "loop", backing, km], timeout=90)
    assert r.returncode == 0, r.stderr
    try:
        with open(os.path.join(km, "fa"), "rb") as f:
            assert f.read() == b"A" * 10000
        r = lunfs.run("mount", spec_a, da, timeout=90)
        H.assert_one_error_line(r, ["in use by another node"])
        assert not H.is_mountpoint(da)
        assert pr_state(ftarget.url(1))["holder"] is None
    finally:
        H.kernel_umount(km, backing)
    r = H.run(["e2fsck", "-fn", backing], timeout=60)
    assert r.returncode == 0, r.stdout


def test_block_volumes_take_the_reservation(lunfs, node_b, ftarget, lundir):
    """--block volumes are fenced by the same reservation (no MMP: the
    bytes are the application's)."""
    spec_a = spec_for(lundir, ftarget, 1, NODE_A, "a")
    spec_b = spec_for(lundir, ftarget, 1, NODE_B, "b")
    fa = H.make_file(os.path.join(lundir, "blk-a"))
    fb = H.make_file(os.path.join(lundir, "blk-b"))
    lunfs.mount(spec_a, fa, "--block")
    assert lunfs.status()["volumes"][0]["fencing"] == "pr"
    data = os.urandom(8192)
    H.write_at(fa, 1 * MiB, data)
    fd = os.open(fa, os.O_WRONLY)
    os.fsync(fd)
    os.close(fd)
    r = node_b.run("mount", "--block", spec_b, fb)
    H.assert_one_error_line(r, ["held read-write"])
    node_b.mount(spec_b, fb, "--block", "--read-only")
    assert H.read_at(fb, 1 * MiB, 8192) == data
    node_b.umount(fb)
    lunfs.umount(fa)
    assert pr_state(ftarget.url(1))["holder"] is None


def test_fsck_enable_mmp(lunfs, ftarget, lundir):
    """lunfs fsck --enable-mmp adds MMP to a volume made without it."""
    backing = ftarget.luns[1]
    r = H.run(["mkfs.ext4", "-F", "-q", "-O", "^mmp", backing], timeout=60)
    assert r.returncode == 0, r.stderr
    assert "MMP block number" not in dumpe2fs_mmp(backing)
    spec = ftarget.url(1)
    r = lunfs.ok("fsck", "--enable-mmp", spec)
    assert "mmp feature enabled" in r.stdout
    mmp = dumpe2fs_mmp(backing)
    assert mmp["MMP update interval"] == "1"
    assert mmp["mmp_sequence"] == "0xff4d4d50", mmp
    r = H.run(["e2fsck", "-fn", backing], timeout=60)
    assert r.returncode == 0, r.stdout
    assert "already has" in lunfs.ok("fsck", "--enable-mmp", spec).stdout
    d = os.path.join(lundir, "m")
    os.mkdir(d)
    lunfs.mount(spec, d)
    assert lunfs.status()["volumes"][0]["fencing"] == "pr+mmp"
    lunfs.umount(d)
    r = H.run(["e2fsck", "-fn", backing], timeout=60)
    assert r.returncode == 0, r.stdout
