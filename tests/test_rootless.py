"""A rootless lunfsd (issue 4): the daemon runs as an ordinary user made
for the test, mounts through fusermount3, and serves a LUN that the user
reads and writes; root is only used here to set the test up (the user,
and /dev/fuse's mode, which udev sets to 0666 on a normal Debian)."""
import hashlib
import json
import os
import pwd
import subprocess

import pytest

import lunfs_harness as H

USER = "lunfs-rootless"
MiB = H.MiB


@pytest.fixture(scope="module")
def user():
    for tool in ("useradd", "setpriv", "fusermount3"):
        H.require_tool(tool)
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        r = H.run(["useradd", "--system", "--no-create-home", "--shell",
                   "/usr/sbin/nologin", USER])
        assert r.returncode == 0, r.stderr
        pw = pwd.getpwnam(USER)
    st = os.stat("/dev/fuse")
    os.chmod("/dev/fuse", 0o666)
    yield pw
    os.chmod("/dev/fuse", st.st_mode & 0o7777)


def as_user(pw, argv, env=None, timeout=60):
    e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/",
         "LUNFS_BUILD_DIR": H.build_dir()}
    e.update(env or {})
    cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
           "--clear-groups", "--"] + argv
    return subprocess.run(cmd, env=e, timeout=timeout, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)


def test_rootless_daemon_mounts_reads_writes_unmounts(user, targets, lundir):
    t = targets("rl", luns={1: 64 * MiB, 2: 16 * MiB})
    os.chmod(lundir, 0o755)
    home = os.path.join(lundir, "u")
    os.mkdir(home)
    os.chown(home, user.pw_uid, user.pw_gid)
    state = os.path.join(home, "state")
    mnt = os.path.join(home, "mnt")
    blk = os.path.join(home, "blk")
    lunfs = os.path.join(H.build_dir(), "tools", "lunfs")
    for cmd in (["mkdir", mnt], ["touch", blk]):
        assert as_user(user, cmd).returncode == 0
    base = [lunfs, "--state-dir", state]
    daemon_pid = None
    try:
        r = as_user(user, base + ["mount", t.url(1), mnt])
        assert r.returncode == 0, r.stderr + H.run(["cat", state + "/lunfsd.log"]).stdout
        r = as_user(user, base + ["mount", "--block", t.url(2), blk])
        assert r.returncode == 0, r.stderr
        with open(os.path.join(state, "lunfsd.pid")) as f:
            daemon_pid = int(f.read())
        with open(f"/proc/{daemon_pid}/status") as f:
            uids = [l for l in f if l.startswith("Uid:")][0].split()[1:]
        assert set(map(int, uids)) == {user.pw_uid}, "daemon is not the user"
        assert t.wait_connections(1) == 1

        # The user owns the new volume's root (as mke2fs makes it) and can
        # use it; the kernel sees the FUSE mount as the user's.
        r = as_user(user, ["sh", "-c",
                           f"echo rootless > {mnt}/f && mkdir {mnt}/d && "
                           f"cat {mnt}/f && stat -c %u {mnt}/f"])
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["rootless", str(user.pw_uid)]
        r = as_user(user, ["sh", "-c", "printf rootless-block | dd "
                           f"of={blk} bs=4096 count=1 conv=notrunc,sync,fsync "
                           "status=none"])
        assert r.returncode == 0, r.stderr
        assert H.read_at(t.luns[2], 0, 4096) == \
            b"rootless-block".ljust(4096, b"\0")
        data = os.urandom(4096)
        H.write_at(t.luns[2], 8192, data)  # the reverse: LUN → block file
        r = as_user(user, ["sh", "-c", f"dd if={blk} bs=4096 skip=2 count=1 "
                           "iflag=direct status=none | sha256sum"])
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[0] == hashlib.sha256(data).hexdigest()

        st = as_user(user, base + ["status", "--json"])
        assert st.returncode == 0
        s = json.loads(st.stdout)
        assert len(s["mounts"]) == 2 and s["sessions"][0]["refs"] == 2

        for p in (mnt, blk):
            r = as_user(user, base + ["umount", p])
            assert r.returncode == 0, r.stderr
        assert t.wait_connections(0) == 0
        assert not H.is_mountpoint(mnt) and not H.is_mountpoint(blk)
        r = as_user(user, base + ["shutdown"])
        assert r.returncode == 0, r.stderr
        assert H.wait_until(lambda: not H.pid_alive(daemon_pid), 10)
    finally:
        if daemon_pid and H.pid_alive(daemon_pid):
            os.kill(daemon_pid, 9)
        H.unmount_all_under(lundir)
    r = H.run(["e2fsck", "-fn", t.luns[1]], timeout=60)
    assert r.returncode == 0, r.stdout
    log = open(os.path.join(state, "lunfsd.log")).read()
    assert "AddressSanitizer" not in log and "runtime error" not in log, log
