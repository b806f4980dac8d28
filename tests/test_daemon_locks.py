"""lunfsd never stalls on one sick target: locks follow what is shared
(volume, path, target), status reads a snapshot without waiting, requests
are idempotent. A "hung target" here is a TCP listener that accepts and
never answers, like a hung array or a half-dead gateway."""
import os
import socket
import threading
import time

import lunfs_harness as H

HUNG_IQN = "iqn.2026-12.io.lunfs.test:hung"


class HungPortal:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = False
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def url(self, lun):
        return f"iscsi://127.0.0.1:{self.port}/{HUNG_IQN}/{lun}"

    def open_connections(self):
        """Connections the peer has not closed yet."""
        n = 0
        for c in self.conns:
            c.setblocking(False)
            try:
                while c.recv(65536):  # what it sent, then EOF if closed
                    pass
                continue  # closed by lunfsd
            except BlockingIOError:
                n += 1
            except OSError:
                pass
        return n

    def close(self):
        self.stop = True
        self.sock.close()
        for c in self.conns:
            c.close()


class Background:
    """One lunfs command run on a thread: is it still in flight?"""

    def __init__(self, lunfs, *args):
        self.result = None
        self.t = threading.Thread(target=self._run, args=(lunfs, args))
        self.t.start()

    def _run(self, lunfs, args):
        self.result = lunfs.run(*args, timeout=120)

    def in_flight(self):
        return self.t.is_alive()

    def wait(self, timeout=60):
        self.t.join(timeout)
        assert not self.t.is_alive(), "request never answered"
        return self.result


def entry(st, kind, key, value):
    for e in st[kind]:
        if e.get(key) == value:
            return e
    return None


def timed(fn, *a, **kw):
    t0 = time.monotonic()
    r = fn(*a, **kw)
    return r, time.monotonic() - t0


def test_hung_target_stalls_nothing_else(lunfs, target, lundir):
    """While a mount against a target that never answers its login waits,
    status, a mount and an unmount of a healthy target each answer, and
    the hung request is still in flight after each of them."""
    hung = HungPortal()
    a, b, h = (os.path.join(lundir, n) for n in ("a", "b", "h"))
    for d in (a, b, h):
        os.mkdir(d)
    try:
        lunfs.mount(target.url(1), a)
        bg = Background(lunfs, "mount", hung.url(1), h)
        # The hung login shows in status as what the pod waits for.
        assert H.wait_until(lambda: entry(lunfs.status(), "volumes", "spec",
                                          hung.url(1)) is not None, 10)
        assert bg.in_flight()
        lat = {}
        st, lat["status"] = timed(lunfs.status)
        v = entry(st, "volumes", "spec", hung.url(1))
        assert v["state"] == "attaching" and v["since"].endswith("Z"), v
        m = entry(st, "mounts", "path", h)
        assert m and m["state"] == "attaching", st["mounts"]
        assert entry(st, "mounts", "path", a)["state"] == "attached"
        assert bg.in_flight()
        assert hung.open_connections() >= 1

        _, lat["mount"] = timed(lunfs.mount, target.url(2), b)
        assert bg.in_flight()
        with open(os.path.join(b, "f"), "w") as f:
            f.write("healthy")
        _, lat["umount"] = timed(lunfs.umount, a)
        assert bg.in_flight(), "the hung mount ended before the others"
        st = lunfs.status()
        assert entry(st, "volumes", "spec", hung.url(1))["state"] == \
            "attaching"
        assert entry(st, "mounts", "path", a) is None
        print(f"\nwhile a login hangs: status {lat['status']*1000:.0f} ms, "
              f"mount {lat['mount']*1000:.0f} ms, "
              f"umount {lat['umount']*1000:.0f} ms")

        r = bg.wait(60)
        H.assert_one_error_line(r, ["timed out", "timeout"])
        st = lunfs.status()
        assert entry(st, "volumes", "spec", hung.url(1)) is None
        assert entry(st, "mounts", "path", h) is None
        assert not H.is_mountpoint(h)
        assert H.wait_until(lambda: hung.open_connections() == 0, 5)
        lunfs.umount(b)
    finally:
        hung.close()


def test_timeout_leaves_nothing_behind(lunfs, target, lundir):
    """A mount whose login cannot finish within --timeout fails at its
    deadline with nothing mounted; what it started (the login) ends soon
    after and leaves no session, volume, mount or record. A request that
    finishes in time is unaffected."""
    hung = HungPortal()
    h, a = os.path.join(lundir, "h"), os.path.join(lundir, "a")
    os.mkdir(h)
    os.mkdir(a)
    try:
        r, took = timed(lunfs.run, "mount", "--timeout", "1.5", hung.url(1), h)
        H.assert_one_error_line(r, ["timed out"])
        assert not H.is_mountpoint(h)
        # The login goes on in the background until its own (shortened)
        # timeout, then everything it made is undone.
        assert H.wait_until(lambda: hung.open_connections() == 0, 10)
        assert H.wait_until(
            lambda: not lunfs.status()["volumes"]
            and not lunfs.status()["mounts"], 5)
        assert lunfs.status()["sessions"] == []
        assert os.listdir(os.path.join(lunfs.state_dir, "volumes")) == []
        print(f"\nmount --timeout 1.5 against a hung target answered in "
              f"{took:.2f} s")
        lunfs.mount(target.url(1), a, "--timeout", "60")
        assert lunfs.status()["mounts"][0]["state"] == "attached"
        lunfs.ok("umount", "--timeout", "60", a)
        for bad in ("0", "-1", "x", "100000"):
            r = lunfs.run("mount", "--timeout", bad, target.url(1), a)
            assert r.returncode == 2 and "--timeout" in r.stderr, r.stderr
    finally:
        hung.close()


def test_idempotent_after_kill9(lunfs, target, lundir):
    """The same mount again is success and changes nothing — also right
    after a kill -9 and restart, while the new daemon re-serves the
    recorded mounts; other options are an error; unmounting twice is
    success, after a restart too."""
    a, b = os.path.join(lundir, "a"), H.make_file(
        os.path.join(lundir, "b"))
    os.mkdir(a)
    fs_opts = ("--uidmap", "0:0:1000", "--fsgroup", "2000")
    lunfs.mount(target.url(1), a, *fs_opts)
    lunfs.mount(target.url(2), b, "--block")
    with open(os.path.join(a, "f"), "w") as f:
        f.write("before")
        f.flush()
        os.fsync(f.fileno())
    dfd = os.open(a, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)  # the new name too
    os.close(dfd)
    lunfs.mount(target.url(1), a, *fs_opts)  # again: nothing changes
    st = lunfs.status()
    assert len(st["mounts"]) == 2 and st["sessions"][0]["refs"] == 2
    old = lunfs.daemon_pid()
    lunfs.kill_daemon()
    # The retry starts a daemon that re-serves the records: it meets
    # the recovery's mount, whichever comes first.
    lunfs.mount(target.url(1), a, *fs_opts)
    lunfs.mount(target.url(2), b, "--block")
    assert lunfs.daemon_pid() != old
    st = lunfs.status()
    assert sorted(m["path"] for m in st["mounts"]) == sorted([a, b])
    assert all(m["state"] == "attached" for m in st["mounts"])
    assert len(st["volumes"]) == 2 and st["sessions"][0]["refs"] == 2
    assert target.wait_connections(1, timeout=1) == 1
    with open(os.path.join(a, "f")) as f:
        assert f.read() == "before"
    # Different options at a mounted path: a clear error, nothing changes.
    r = lunfs.run("mount", "--fsgroup", "2001", "--uidmap", "0:0:1000",
                  target.url(1), a)
    H.assert_one_error_line(r, ["fsgroup"])
    r = lunfs.run("mount", target.url(2), a)
    H.assert_one_error_line(r, ["already a lunfs mount"])
    assert len(lunfs.status()["mounts"]) == 2
    lunfs.umount(a)
    lunfs.umount(a)
    lunfs.kill_daemon()
    # After a restart the unmount meets the re-served mount.
    lunfs.umount(b)
    lunfs.umount(b)
    st = lunfs.status()
    assert st["mounts"] == [] and st["volumes"] == [] and \
        st["sessions"] == []
    assert not H.is_mountpoint(a) and not H.is_mountpoint(b)
    assert os.listdir(os.path.join(lunfs.state_dir, "volumes")) == []
