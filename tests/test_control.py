"""The control plane under hostile input (issue 5): who may talk to lunfsd,
what a mount PATH may be, how big and how well-formed a request must be,
and where CHAP secrets must never end up.

Oracles: the kernel (connect(2) errno on the socket, SO_PEERCRED as the
daemon sees it: no answer), /proc/self/mountinfo, the daemon staying alive
(ping answers afterwards), and bytes grepped out of files and /proc."""
import json
import os
import socket
import stat
import subprocess
import threading

import pytest

import lunfs_harness as H

MiB = H.MiB
NOBODY = 65534


def sock_path(lunfs):
    return os.path.join(lunfs.state_dir, "lunfsd.sock")


def raw_call(path, payload, timeout=20):
    """Sends PAYLOAD (bytes) as one request, shuts down writing and returns
    what the daemon answered (bytes, maybe empty). Writing runs in a thread:
    a daemon that refuses a huge request early closes while we still write."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    werr = []

    def writer():
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except OSError as ex:
            werr.append(ex)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    chunks = []
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    except ConnectionResetError:
        pass
    t.join(timeout)
    s.close()
    return b"".join(chunks)


def call(lunfs, obj):
    ans = raw_call(sock_path(lunfs), json.dumps(obj).encode())
    return json.loads(ans)


def assert_refused(ans_bytes):
    assert ans_bytes, "daemon closed without an answer"
    ans = json.loads(ans_bytes)
    assert ans.get("ok") is False, ans
    assert isinstance(ans.get("errno"), int) and ans["errno"] > 0, ans
    err = ans.get("error", "")
    assert err and "\n" not in err, ans
    return err


def assert_daemon_alive(lunfs, pid):
    assert H.pid_alive(pid), "lunfsd died\n" + lunfs.log_tail()
    ans = call(lunfs, {"op": "ping"})
    assert ans.get("ok") is True, ans
    assert lunfs.daemon_pid() == pid


@pytest.fixture
def daemon(lunfs):
    """A running daemon and its pid (lunfs status does not start one)."""
    log = open(lunfs.log_path, "ab")
    proc = subprocess.Popen([lunfs.daemon_bin, "--state-dir", lunfs.state_dir],
                            stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    assert H.wait_until(lambda: lunfs.daemon_pid() == proc.pid and
                        os.path.exists(sock_path(lunfs)), 10), lunfs.log_tail()
    yield proc.pid
    # lunfs's teardown shuts it down; reap it here so it is no zombie.
    threading.Thread(target=proc.wait, daemon=True).start()


# ---------------------------------------------------------------- who

NOBODY_CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as ex:
    print(json.dumps({"connect_errno": ex.errno})); sys.exit(0)
try:
    s.sendall(b'{"op":"status"}')
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    print(json.dumps({"connect_errno": 0, "answer": data.decode()}))
except OSError as ex:
    print(json.dumps({"connect_errno": 0, "io_errno": ex.errno, "answer": ""}))
"""


def as_nobody(path):
    r = H.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
               "--clear-groups", "/usr/bin/python3", "-c", NOBODY_CLIENT, path],
              timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_socket_mode_and_owner(lunfs, daemon):
    st = os.stat(sock_path(lunfs))
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    with open(f"/proc/{daemon}/status") as f:
        euid = [l.split()[2] for l in f if l.startswith("Uid:")][0]
    assert st.st_uid == int(euid)


def test_other_uid_refused_by_mode_then_by_peercred(lunfs, daemon, lundir):
    sp = sock_path(lunfs)
    # Let nobody walk to the socket, so that only the socket's own mode
    # stands in the way.
    saved = {p: stat.S_IMODE(os.stat(p).st_mode) for p in (lundir, lunfs.state_dir)}
    sock_mode = stat.S_IMODE(os.stat(sp).st_mode)
    try:
        for p in saved:
            os.chmod(p, 0o711)
        res = as_nobody(sp)
        assert res["connect_errno"] == 13, f"expected EACCES, got {res}"

        # The mode relaxed: connect succeeds, SO_PEERCRED must refuse.
        os.chmod(sp, 0o666)
        res = as_nobody(sp)
        assert res["connect_errno"] == 0, res
        assert res["answer"] == "", f"daemon answered uid {NOBODY}: {res}"
    finally:
        os.chmod(sp, sock_mode)
        for p, m in saved.items():
            os.chmod(p, m)
    assert "refused a connection from uid 65534" in lunfs.log_text()
    assert_daemon_alive(lunfs, daemon)


# ---------------------------------------------------------------- PATH

def test_mount_paths_refused(lunfs, daemon, target, lundir):
    d1 = os.path.join(lundir, "vol1")
    os.mkdir(d1)
    lunfs.mount(target.url(1), d1)
    link = os.path.join(lundir, "link-to-vol1")
    os.symlink(d1, link)
    blk = H.make_file(os.path.join(lundir, "blk"))

    cases = [
        ("over another volume's mount", [target.url(2), d1]),
        ("through a symlink to a lunfs mount", [target.url(2), link]),
        ("over the state directory", [target.url(2), lunfs.state_dir]),
        ("inside the state directory",
         [target.url(2), os.path.join(lunfs.state_dir, "volumes")]),
        ("over /", [target.url(2), "/"]),
        ("over / via ..", [target.url(2), os.path.join(lundir, "..", "..")]),
        ("block over the fs mount", ["--block", target.url(2), d1]),
    ]
    for what, args in cases:
        r = lunfs.run("mount", *args)
        H.assert_one_error_line(r), what
        assert not H.is_mountpoint(lunfs.state_dir), what
    # Only the first mount exists; the refused ones left no volume or
    # session behind (LUN 2 was never attached).
    # (lunfsd's own view of the volume lives under its state directory.)
    assert [m for m, _, _ in H.mounts_under(lundir)
            if not m.startswith(lunfs.state_dir + "/")] == [d1]
    assert H.is_mountpoint("/")  # untouched, trivially
    st = lunfs.status()
    assert [m["path"] for m in st["mounts"]] == [d1]
    assert len(st["volumes"]) == 1
    assert [s["refs"] for s in st["sessions"]] == [1]
    # The block file still works as a target for a real mount.
    lunfs.mount(target.url(2), blk, "--block")
    lunfs.umount(blk)
    lunfs.umount(d1)
    assert target.wait_connections(0) == 0


# ---------------------------------------------------------------- requests

@pytest.mark.parametrize("payload", [
    b"{",
    b"not json at all",
    b"[1,2,3]",
    b'"mount"',
    b"{}",
    b'{"op": 7}',
    b'{"op": "format-everything"}',
    b'{"op": "status", "extra": 1}',
    b'{"op": "mount", "spec": "iscsi://127.0.0.1/x/1"}',
    b'{"op": "mount", "spec": 1, "path": "/tmp"}',
    b'{"op": "umount", "path": ["/"]}',
    b'{"op": "shutdown"} trailing',
], ids=["truncated", "garbage", "array", "string", "no-op", "op-int",
        "unknown-op", "unknown-key", "missing-path", "spec-int", "path-array",
        "trailing-garbage"])
def test_malformed_requests_refused(lunfs, daemon, payload):
    assert_refused(raw_call(sock_path(lunfs), payload))
    assert_daemon_alive(lunfs, daemon)


def test_nul_cannot_smuggle_a_second_request(lunfs, daemon):
    """Bytes after a NUL are never acted on (the daemon reads a C string):
    the hidden shutdown must not run."""
    raw_call(sock_path(lunfs), b'{"op": "ping"}\x00{"op": "shutdown"}')
    assert_daemon_alive(lunfs, daemon)


def test_oversized_request_refused(lunfs, daemon):
    big = b'{"op": "status", "pad": "' + b"x" * (MiB + 4096) + b'"}'
    ans = raw_call(sock_path(lunfs), big)
    # The daemon stops reading past 1 MiB; it answers with a refusal (or, if
    # the kernel discards its answer as we still write, closes).
    if ans:
        err = assert_refused(ans)
        assert "large" in err.lower() or "size" in err.lower(), err
    assert "request too large" in lunfs.log_text()
    assert_daemon_alive(lunfs, daemon)


@pytest.mark.parametrize("cid", ["../x", "../../etc", "a/../b", "..", ".",
                                 "a/b", "", "x" * 200, "a\nb", "-rf"])
def test_bad_container_ids_refused(lunfs, daemon, target, lundir, cid):
    d = os.path.join(lundir, "c")
    os.makedirs(d, exist_ok=True)
    assert_refused(raw_call(sock_path(lunfs), json.dumps(
        {"op": "mount", "spec": target.url(1), "path": d,
         "container": cid}).encode()))
    assert_refused(raw_call(sock_path(lunfs), json.dumps(
        {"op": "release", "container": cid}).encode()))
    assert not H.is_mountpoint(d)
    assert target.connections() == []
    assert_daemon_alive(lunfs, daemon)


# ---------------------------------------------------------------- secrets

CUSER, CSECRET = "faultsuser", "Faults-Chap-S3cr3t-7781"


def test_chap_secret_never_written(lunfs, daemon, targets, lundir):
    t = targets("chap", luns={1: 16 * MiB, 2: 8 * MiB, 3: 8 * MiB})
    t.add_chap(CUSER, CSECRET)
    # Secret file outside the state dir, which is what we grep.
    sdir = os.path.join(lundir, "secret")
    os.mkdir(sdir, 0o700)
    sf = H.write_secret_file(os.path.join(sdir, "chap"), {
        "node.session.auth.username": CUSER,
        "node.session.auth.password": CSECRET})
    spec = H.write_json_spec(os.path.join(lundir, "spec.json"),
                             targetPortal=t.tgt.portal, iqn=t.iqn, lun=1,
                             chapAuthSession=True)
    d = os.path.join(lundir, "fs")
    os.mkdir(d)
    blk = H.make_file(os.path.join(lundir, "blk"))
    # The daemon is started by a command whose environment holds the secret.
    lunfs.mount(t.url(2, user=CUSER), blk, "--block",
                env={"LUNFS_CHAP_USERNAME": CUSER,
                     "LUNFS_CHAP_PASSWORD": CSECRET})
    lunfs.mount(spec, d, "--chap-secret-file", sf)
    with open(os.path.join(d, "f"), "wb") as f:
        f.write(b"data")
    assert t.wait_connections(1) == 1
    # A wrong secret is refused, and its text is not kept either. (LUN 3:
    # a second mount of an attached LUN reuses the volume without a login,
    # so it would not check the secret at all.)
    wrong = "Wrong-Faults-S3cr3t-1234"
    os.mkdir(os.path.join(lundir, "x"))
    r = lunfs.run("mount", t.url(3, user=CUSER + "x"), os.path.join(lundir, "x"),
                  env={"LUNFS_CHAP_USERNAME": CUSER + "x",
                       "LUNFS_CHAP_PASSWORD": wrong})
    assert r.returncode != 0
    pid = lunfs.daemon_pid()
    outs = [lunfs.ok("status").stdout, lunfs.ok("status", "--json").stdout]
    procs = {}
    for name in ("cmdline", "environ"):
        with open(f"/proc/{pid}/{name}", "rb") as f:
            procs[name] = f.read()
    lunfs.umount(d)
    r = lunfs.run("fsck", "--chap-secret-file", sf, spec)
    assert r.returncode == 0, r.stderr
    lunfs.umount(blk)
    assert t.wait_connections(0) == 0
    for secret in (CSECRET, wrong):
        for name, data in procs.items():
            assert secret.encode() not in data, f"secret in /proc/{pid}/{name}"
        for o in outs:
            assert secret not in o
        assert H.grep_tree(lunfs.state_dir, secret) == []
        assert secret not in lunfs.log_text()
        # Nothing the CLI printed either (the harness keeps it in lundir).
        cli = [p for p in H.grep_tree(lundir, secret)
               if not p.startswith(sdir)]
        assert cli == [], f"secret in {cli}"


def test_secrets_for_a_spec_without_chap_refused(lunfs, daemon, target, lundir):
    """The daemon refuses, as the CLI does, session secrets next to a spec
    that does not use CHAP (another client could send them)."""
    b = H.make_file(os.path.join(lundir, "b"))
    req = {"op": "mount", "path": b, "block": True,
           "spec": {"targetPortal": target.tgt.portal, "iqn": target.iqn,
                    "lun": 1},
           "secrets": {"node.session.auth.username": "u",
                       "node.session.auth.password": "Secret-Pa55word-y"}}
    ans = raw_call(sock_path(lunfs), json.dumps(req).encode())
    a = json.loads(ans)
    assert a.get("ok") is not True and "does not use CHAP" in a["error"]
    assert "Secret-Pa55word-y" not in ans.decode()
    assert target.connections() == [] and not H.is_mountpoint(b)
