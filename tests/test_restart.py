"""Restart safety (issue 4): lunfsd is killed with volumes attached; the
next daemon cleans the dead FUSE mounts and serves the volumes again from
its attach records, recovering an unclean filesystem first. Oracles: the
target's own session table (tgtadm), e2fsck and the bytes on the LUN."""
import errno
import json
import os

import pytest

import lunfs_harness as H

MiB = H.MiB


@pytest.fixture
def rtarget(targets):
    return targets("rs", luns={1: 64 * MiB, 2: 16 * MiB})


def wait_mounts(lunfs, n, timeout=60):
    box = {}

    def ok():  # served: status also lists mounts still "attaching"
        box["st"] = lunfs.status()
        return [m["state"] for m in box["st"]["mounts"]] == ["attached"] * n
    assert H.wait_until(ok, timeout), \
        f"expected {n} mounts, status: {box.get('st')}\n{lunfs.log_tail()}"
    return box["st"]


def records(lunfs):
    d = os.path.join(lunfs.state_dir, "volumes")
    return [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".json")]


def test_kill9_then_next_command_reattaches(lunfs, rtarget, lundir):
    d1 = os.path.join(lundir, "fs")
    os.mkdir(d1)
    b1 = H.make_file(os.path.join(lundir, "blk"))
    lunfs.mount(rtarget.url(1), d1)
    lunfs.mount(rtarget.url(2), b1, "--block")
    assert rtarget.wait_connections(1) == 1

    # Attach records: one per volume, 0600, no secret, the mounts listed.
    recs = records(lunfs)
    assert len(recs) == 2
    for r in recs:
        assert os.stat(r).st_mode & 0o777 == 0o600
        with open(r) as f:
            rec = json.load(f)
        assert rec["mounts"] and rec["mounts"][0]["path"] in (d1, b1)

    data = os.urandom(3 * MiB + 123)
    with open(os.path.join(d1, "synced"), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.mkdir(os.path.join(d1, "dir"))
    dfd = os.open(d1, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)  # a new name is durable once its directory is fsync'd
    os.close(dfd)
    blk = os.urandom(64 * 1024)
    H.write_at(b1, 1 * MiB, blk)
    fd = os.open(b1, os.O_WRONLY)
    os.fsync(fd)
    os.close(fd)

    old = lunfs.daemon_pid()
    lunfs.kill_daemon()
    assert not H.pid_alive(old)
    with pytest.raises(OSError) as ex:
        os.listdir(d1)
    # ECANCELED: over io_uring, until the kernel has torn the dead
    # daemon's rings down and with them the connection.
    assert ex.value.errno in (errno.ENOTCONN, errno.ECONNABORTED,
                              errno.ECANCELED)

    # The next command (status) starts a daemon, which serves both again.
    st = wait_mounts(lunfs, 2)
    new = lunfs.daemon_pid()
    assert new and new != old
    assert sorted(m["path"] for m in st["mounts"]) == sorted([d1, b1])
    assert [s["refs"] for s in st["sessions"]] == [2]
    assert rtarget.wait_connections(1) == 1, "old session leaked or none"
    with open(os.path.join(d1, "synced"), "rb") as f:
        assert f.read() == data
    assert os.path.isdir(os.path.join(d1, "dir"))
    assert H.read_at(b1, 1 * MiB, len(blk)) == blk
    # A journaled volume needs a replay, never a repair (issue 16).
    log = lunfs.log_text()
    assert "recovered by journal replay" in log, "volume not replayed"
    assert "e2fsck" not in log, "a journaled volume was repaired"

    # Only one mount at each path: the dead one was detached.
    assert sum(1 for m in H.mounts() if m[0] == d1) == 1

    lunfs.umount(d1)
    lunfs.umount(b1)
    assert rtarget.wait_connections(0) == 0
    assert records(lunfs) == []
    r = H.run(["e2fsck", "-fn", rtarget.luns[1]], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_kill9_volume_with_env_secret_is_released(lunfs, targets, lundir):
    t = targets("chap", luns={1: 16 * MiB})
    t.add_chap("alice", "alice-secret-0123")
    b1 = H.make_file(os.path.join(lundir, "blk"))
    env = {"LUNFS_CHAP_USERNAME": "alice",
           "LUNFS_CHAP_PASSWORD": "alice-secret-0123"}
    lunfs.mount(t.url(1, user="alice"), b1, "--block", env=env)
    assert t.wait_connections(1) == 1
    lunfs.kill_daemon()

    # The secret is nowhere in the state the new daemon reads, so it
    # cannot log in again: the volume is released and says why.
    st = lunfs.status()
    assert H.wait_until(lambda: "could not re-attach" in lunfs.log_text(), 20), \
        lunfs.log_tail()
    st = lunfs.status()
    assert st["mounts"] == [] and st["sessions"] == []
    assert not H.is_mountpoint(b1)
    assert t.wait_connections(0) == 0
    assert records(lunfs) == []
    assert H.grep_tree(lunfs.state_dir, "alice-secret-0123") == []
