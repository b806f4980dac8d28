"""The OCI hook under a real runtime: Debian's runc runs a busybox-static
container whose config.json names `lunfs hook` for createRuntime and
poststop and whose annotation io.lunfs.volumes names an iSCSI volume.

The oracles are outside lunfs: what the container prints, the target's
connection list (tgtadm), the LUN's backing file (e2fsck, debugfs) and the
host's mount table.

The bundles live either on a shared mount or on a private one: both are
exercised. A filesystem volume is attached directly in the container's
mount namespace (lunfsd hands the hook a detached bind of the volume's
view, the hook idmaps it with the container's user namespace): nothing
is mounted at the bundle's path on the host. A block volume is mounted at
the host path, which propagates into the container (shared) or which the
hook clones into it (private).
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

import lunfs_harness as H

MiB = H.MiB
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "stat", "id", "touch", "mkdir",
                   "sync", "sleep", "test", "[", "dd", "head")
CHAP_USER, CHAP_PASSWORD = "ociuser", "0ci-Chap-Secret-9"


def _busybox():
    for p in ("/bin/busybox", "/usr/bin/busybox"):
        if os.access(p, os.X_OK):
            r = H.run(["file", "-L", p]) if shutil.which("file") else None
            if r is None or "statically" in r.stdout or "static-pie" in r.stdout:
                return p
    return None


class Runc:
    """Bundles and containers in one directory; runc's own state under it.
    Output goes to files, not pipes: a daemon that the hook starts must not
    keep a pipe of ours open."""

    def __init__(self, root, lunfs, runtime="runc"):
        self.root = root
        self.lunfs = lunfs
        self.spec_tool = H.require_tool("runc")
        if runtime == "runc":
            self.runc = self.spec_tool
        else:
            # crun through the sandbox wrapper (see tests/oci_norlimits.py)
            H.require_tool(runtime)
            rt = os.path.join(root, "rt")
            os.makedirs(rt)
            self.runc = os.path.join(rt, runtime)
            os.symlink(os.path.join(H.REPO, "tests", "oci_norlimits.py"),
                       self.runc)
        self.busybox = _busybox()
        self.ids = []
        self._n = 0

    def bundle(self, volumes, script, uidmap_host=None, raw_annotation=None,
               hook_stage_arg=True):
        """A bundle whose container runs `sh -c SCRIPT`. uidmap_host: map
        container ids 0..65535 to host ids from there (user namespace)."""
        self._n += 1
        b = os.path.join(self.root, f"b{self._n}")
        rootfs = os.path.join(b, "rootfs")
        os.makedirs(os.path.join(rootfs, "bin"))
        for d in ("proc", "dev", "sys", "tmp"):
            os.makedirs(os.path.join(rootfs, d))
        os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
        shutil.copy(self.busybox, os.path.join(rootfs, "bin", "busybox"))
        for a in BUSYBOX_APPLETS:
            os.symlink("busybox", os.path.join(rootfs, "bin", a))
        H.run([self.spec_tool, "spec"], cwd=b, check=True)
        with open(os.path.join(b, "config.json")) as f:
            cfg = json.load(f)
        cfg["process"]["args"] = ["sh", "-c", script]
        cfg["process"]["terminal"] = False
        cfg["process"]["env"] = ["PATH=/bin"]
        cfg["root"] = {"path": "rootfs", "readonly": False}
        ann = raw_annotation if raw_annotation is not None else json.dumps(volumes)
        cfg["annotations"] = {"io.lunfs.volumes": ann}
        hook = os.path.join(H.build_dir(), "tools", "lunfs")
        cfg["hooks"] = {
            stage: [{"path": hook,
                     "args": ["lunfs", "--state-dir", self.lunfs.state_dir,
                              "hook"] + ([stage] if hook_stage_arg else []),
                     "timeout": 60}]
            for stage in ("createRuntime", "poststop")}
        if uidmap_host is not None:
            lx = cfg["linux"]
            if not any(n["type"] == "user" for n in lx["namespaces"]):
                lx["namespaces"].append({"type": "user"})
            m = [{"containerID": 0, "hostID": uidmap_host, "size": 65536}]
            lx["uidMappings"] = m
            lx["gidMappings"] = m
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        return b

    def _argv(self, b, cid):
        return [self.runc, "--root", os.path.join(self.root, "runc"), "run",
                "-b", b, cid]

    def _new_id(self):
        cid = "lf-" + uuid.uuid4().hex[:12]
        self.ids.append(cid)
        return cid

    def run(self, b, timeout=90):
        """runc run in the foreground; returns CompletedProcess."""
        cid = self._new_id()
        out, err = os.path.join(b, "out"), os.path.join(b, "err")
        # Append mode: the hook may write to the runtime's stderr too
        # (crun discards the hook's own), through another open file.
        with open(out, "ab") as o, open(err, "ab") as e:
            p = subprocess.Popen(self._argv(b, cid), stdin=subprocess.DEVNULL,
                                 stdout=o, stderr=e)
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise AssertionError(f"runc run {cid} hung")
        return subprocess.CompletedProcess(p.args, rc, _read(out), _read(err))

    def start(self, b):
        """runc run in the background; finish() waits for it."""
        cid = self._new_id()
        o = open(os.path.join(b, "out"), "ab")
        e = open(os.path.join(b, "err"), "ab")
        p = subprocess.Popen(self._argv(b, cid), stdin=subprocess.DEVNULL,
                             stdout=o, stderr=e)
        o.close()
        e.close()
        p.bundle = b
        p.cid = cid
        return p

    def finish(self, p, timeout=60):
        rc = p.wait(timeout=timeout)
        return subprocess.CompletedProcess(p.args, rc,
                                           _read(os.path.join(p.bundle, "out")),
                                           _read(os.path.join(p.bundle, "err")))

    def root_of(self, p):
        """/proc/PID/root of p's running container: its own view."""
        r = H.run([self.runc, "--root", os.path.join(self.root, "runc"),
                   "state", p.cid])
        if r.returncode:
            return None
        return f"/proc/{json.loads(r.stdout)['pid']}/root"

    def cleanup(self):
        for cid in self.ids:
            H.run([self.runc, "--root", os.path.join(self.root, "runc"),
                   "delete", "--force", cid], timeout=30)


def start_daemon(lunfs, *args):
    """lunfsd started beforehand, in the host's mount namespace, as under
    its systemd unit."""
    with open(os.path.join(lunfs.state_dir, "lunfsd.log"), "ab") as log:
        subprocess.Popen([lunfs.daemon_bin, "--state-dir", lunfs.state_dir,
                          *args],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True)
    sock = os.path.join(lunfs.state_dir, "lunfsd.sock")

    def up():
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(sock)
            return True
        except OSError:
            return False
        finally:
            s.close()
    assert H.wait_until(up, 10), lunfs.log_tail()


def _read(path):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


def _ok(r):
    assert r.returncode == 0, (f"runc exited {r.returncode}\nstdout: {r.stdout}"
                               f"\nstderr: {r.stderr}")
    return r


@pytest.fixture(params=["shared-runc", "private-runc", "shared-crun",
                        "private-crun"])
def runc(request, lunfs):
    """Bundles in a fresh 0755 directory (user-namespaced containers must
    reach their rootfs), made a shared mount point or left private; run
    by runc or by crun (which orders its mounts differently)."""
    if os.geteuid() != 0:
        pytest.fail("these scenarios run runc as root (the suite runs as "
                    "root; see tools/check.sh)", pytrace=False)
    mode, runtime = request.param.split("-")
    if runtime == "crun":
        # `crun run` is a child subreaper and waits for every process
        # left under it, so a daemon that the hook starts would hold the
        # container's run open: crun needs lunfsd running already.
        start_daemon(lunfs)
    rc = Runc(tempfile.mkdtemp(prefix="lunfs-oci-", dir="/tmp"), lunfs,
              runtime)
    if rc.busybox is None:
        pytest.fail("busybox-static is not installed (apt-get install "
                    "busybox-static)", pytrace=False)
    os.chmod(rc.root, 0o755)
    if mode == "shared":
        H.run(["mount", "--bind", rc.root, rc.root], check=True)
        H.run(["mount", "--make-shared", rc.root], check=True)
    rc.mode = mode
    yield rc
    rc.cleanup()
    H.unmount_all_under(rc.root)
    shutil.rmtree(rc.root, ignore_errors=True)


@pytest.fixture(params=["runc", "crun"])
def runc_private(request, lunfs):
    """As `runc`, private mount only (for the failure scenarios)."""
    if request.param == "crun":
        start_daemon(lunfs)
    rc = Runc(tempfile.mkdtemp(prefix="lunfs-oci-", dir="/tmp"), lunfs,
              request.param)
    if rc.busybox is None:
        pytest.fail("busybox-static is not installed", pytrace=False)
    os.chmod(rc.root, 0o755)
    yield rc
    rc.cleanup()
    H.unmount_all_under(rc.root)
    shutil.rmtree(rc.root, ignore_errors=True)


def fuse_mounts_under(root):
    return [m for m in H.mounts_under(root) if m[1].startswith("fuse")]


def attach_records(lunfs):
    d = os.path.join(lunfs.state_dir, "volumes")
    out = []
    if os.path.isdir(d):
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name)) as f:
                out.append(f.read())
    return out


def assert_released(lunfs, t, root):
    assert fuse_mounts_under(root) == []
    assert attach_records(lunfs) == [], "attach records left behind"
    assert t.wait_connections(0) == 0, "session left on the target"
    st = lunfs.status()
    assert st.get("mounts") == [] and st.get("volumes") == [] and \
        st.get("sessions") == [], f"status not empty: {st}"


def assert_direct(lunfs, root, n):
    """n filesystem mounts, all attached straight into their containers:
    no FUSE mount under the bundles' root on the host, one view (under the
    state dir) in the host's mount table, and status says "direct"."""
    assert fuse_mounts_under(root) == [], "a host-path mount exists"
    views = fuse_mounts_under(lunfs.state_dir)
    assert len(views) == 1 and "/views/" in views[0][0], views
    st = lunfs.status()
    assert [(m["view"], m["attach"]) for m in st["mounts"]] == \
        [("idmapped", "direct")] * n, st["mounts"]


def e2fsck_clean(path):
    r = H.run(["e2fsck", "-fn", path], timeout=60)
    assert r.returncode == 0, f"e2fsck -fn {path}: {r.returncode}\n{r.stdout}{r.stderr}"


def debugfs_owner(backing, path):
    r = H.run(["debugfs", "-R", f"stat {path}", backing])
    for line in r.stdout.splitlines():
        if line.strip().startswith("User:"):
            f = line.split()
            return int(f[1]), int(f[3])
    raise AssertionError(f"debugfs stat {path}: {r.stdout}{r.stderr}")


def wait_file(path, proc, timeout=30):
    ok = H.wait_until(lambda: os.path.exists(path) or proc.poll() is not None,
                      timeout)
    assert ok and os.path.exists(path), \
        f"{path} never appeared (runc rc={proc.poll()})"


# A container that signals readiness in its own /tmp (outside the volume)
# and waits for the test's go file there, so the test looks at it alive.
def hold(script, name="ready"):
    return (f"{script}; sync; touch /tmp/{name}; "
            f"i=0; while [ ! -e /tmp/go ] && [ $i -lt 600 ]; do sleep 0.1; "
            f"i=$((i+1)); done")


def go(b):
    open(os.path.join(b, "rootfs", "tmp", "go"), "w").close()


# ---------------------------------------------------------------- scenarios

def test_write_release_reread(lunfs, target, runc):
    vols = [{"source": target.url(1), "destination": "/data"}]
    b1 = runc.bundle(vols, "echo data > /data/f; mkdir /data/d; "
                           "echo more > /data/d/g; sync; cat /data/f")
    r = _ok(runc.run(b1))
    assert r.stdout.strip() == "data"
    assert_released(lunfs, target, runc.root)
    # The rootfs directory under the mount was never written.
    assert os.listdir(os.path.join(b1, "rootfs", "data")) == []

    b2 = runc.bundle(vols, "cat /data/f /data/d/g; ls /data")
    r = _ok(runc.run(b2))
    assert r.stdout.split() == ["data", "more", "d", "f", "lost+found"]
    assert_released(lunfs, target, runc.root)
    e2fsck_clean(target.luns[1])


def test_block_and_read_only_volumes(lunfs, target, runc):
    vols = [{"source": target.url(2), "destination": "/dev/xvdb",
             "volumeMode": "Block"},
            {"source": target.url(1), "destination": "/ro", "readOnly": True}]
    # LUN 1 must hold a filesystem before a read-only mount can serve it.
    pre = runc.bundle([{"source": target.url(1), "destination": "/ro"}],
                      "echo seeded > /ro/seed")
    _ok(runc.run(pre))
    b = runc.bundle(vols, "echo -n blockdata | dd of=/dev/xvdb conv=notrunc "
                          "2>/dev/null; sync; head -c 9 /dev/xvdb; echo; "
                          "cat /ro/seed; touch /ro/x 2>/dev/null || echo RO")
    r = _ok(runc.run(b))
    assert r.stdout.split() == ["blockdata", "seeded", "RO"]
    assert_released(lunfs, target, runc.root)
    assert H.read_at(target.luns[2], 0, 9) == b"blockdata"
    e2fsck_clean(target.luns[1])


def test_user_namespace_ids(lunfs, target, runc):
    vols = [{"source": target.url(1), "destination": "/data"}]
    b = runc.bundle(vols, hold("id -u; echo x > /data/f; mkdir /data/d; "
                               "stat -c '%u %g' /data/f /data/d"),
                    uidmap_host=100000)
    p = runc.start(b)
    try:
        wait_file(os.path.join(b, "rootfs", "tmp", "ready"), p)
        assert_direct(lunfs, runc.root, 1)
        # The host sees the container's files at their host ids, through
        # the container's own root.
        croot = runc.root_of(p)
        st = os.stat(croot + "/data/f")
        assert (st.st_uid, st.st_gid) == (100000, 100000)
        assert os.stat(croot + "/data/d").st_uid == 100000
        assert not os.path.exists(os.path.join(b, "rootfs", "data", "f"))
    finally:
        go(b)
        r = _ok(runc.finish(p))
    assert r.stdout.split() == ["0", "0", "0", "0", "0"]
    assert_released(lunfs, target, runc.root)
    assert debugfs_owner(target.luns[1], "/f") == (0, 0)
    assert debugfs_owner(target.luns[1], "/d") == (0, 0)
    e2fsck_clean(target.luns[1])


def test_two_containers_share_volume(lunfs, target, runc):
    vols = [{"source": target.url(1), "destination": "/data"}]
    wait_for = ("i=0; while [ ! -e /data/{0} ] && [ $i -lt 300 ]; do "
                "sleep 0.1; i=$((i+1)); done; cat /data/{0}; "
                "stat -c '%u' /data/{0}")
    ba = runc.bundle(vols, hold("echo from-a > /data/a; sync; " +
                                wait_for.format("b")), uidmap_host=100000)
    bb = runc.bundle(vols, hold("echo from-b > /data/b; sync; " +
                                wait_for.format("a")), uidmap_host=200000)
    pa = runc.start(ba)
    pb = None
    try:
        assert H.wait_until(lambda: pa.poll() is not None or (
            runc.root_of(pa) and os.path.exists(runc.root_of(pa) + "/data/a")),
            30), f"a never written (runc rc={pa.poll()})"
        pb = runc.start(bb)
        wait_file(os.path.join(ba, "rootfs", "tmp", "ready"), pa)
        wait_file(os.path.join(bb, "rootfs", "tmp", "ready"), pb)
        assert target.wait_connections(1) == 1, "one shared session"
        recs = attach_records(lunfs)
        assert len(recs) == 1 and pa.cid in recs[0] and pb.cid in recs[0], recs
        assert_direct(lunfs, runc.root, 2)
        # Each container's view shows the other's file under its own map.
        assert os.stat(runc.root_of(pa) + "/data/b").st_uid == 100000
        assert os.stat(runc.root_of(pb) + "/data/a").st_uid == 200000
        go(ba)
        ra = _ok(runc.finish(pa))
        assert ra.stdout.split() == ["from-b", "0"], (ra.stdout, ra.stderr)
        # B still runs: the session and its bind stay.
        assert len(target.connections()) == 1, target.connections()
        assert_direct(lunfs, runc.root, 1)
    finally:
        go(ba)
        if pb is not None:
            go(bb)
    rb = _ok(runc.finish(pb))
    assert rb.stdout.split() == ["from-a", "0"], (rb.stdout, rb.stderr)
    assert_released(lunfs, target, runc.root)
    e2fsck_clean(target.luns[1])


def test_iscsi_object_chap_and_stage_from_status(lunfs, targets, runc_private):
    t = targets("chap", luns={1: 16 * MiB})
    t.add_chap(CHAP_USER, CHAP_PASSWORD)
    sec = H.write_secret_file(os.path.join(runc_private.root, "chap"),
                              {"node.session.auth.username": CHAP_USER,
                               "node.session.auth.password": CHAP_PASSWORD})
    vols = [{"iscsi": {"targetPortal": t.tgt.portal, "iqn": t.iqn, "lun": 1,
                       "fsType": "ext4", "chapAuthSession": True},
             "destination": "/vol/data", "chapSecretFile": sec}]
    b = runc_private.bundle(vols, "echo ok > /vol/data/f; cat /vol/data/f",
                            hook_stage_arg=False)
    r = _ok(runc_private.run(b))
    assert r.stdout.strip() == "ok"
    assert_released(lunfs, t, runc_private.root)
    # No secret in the state directory or the runtime's state.
    assert H.grep_tree(lunfs.state_dir, CHAP_PASSWORD) == []
    assert H.grep_tree(os.path.join(runc_private.root, "runc"), CHAP_PASSWORD) == []


def _bad_unknown_key(t, root):
    return [{"source": t.url(1), "destination": "/data", "readonly": True}], \
        ["unknown key", "readonly"]


def _bad_unreachable(t, root):
    url = f"iscsi://127.0.0.1:{H.free_tcp_port()}/{t.iqn}/1"
    return [{"source": url, "destination": "/data"}], \
        ["connect", "refused", "unreachable", "reach"]


def _bad_chap(t, root):
    t.add_chap(CHAP_USER, CHAP_PASSWORD)
    sec = H.write_secret_file(os.path.join(root, "chap"),
                              {"node.session.auth.username": CHAP_USER,
                               "node.session.auth.password": "wrong-secret"})
    return [{"source": t.url(1, user=CHAP_USER), "destination": "/data",
             "chapSecretFile": sec}], ["auth", "chap"]


def _bad_second_volume(t, root):
    # The first volume mounts, the second fails: the first is released.
    url = f"iscsi://127.0.0.1:{H.free_tcp_port()}/{t.iqn}/1"
    return [{"source": t.url(1), "destination": "/data"},
            {"source": url, "destination": "/other"}], ["volume 1"]


def _bad_hidden(t, root):
    # Mounted on the host side, but the container's own sysfs covers
    # /sys, where no mount point can be made: the destination would not
    # be the volume, so the container must not start.
    return [{"source": t.url(1), "destination": "/sys/lunfs"}], \
        ["does not reach the container"]


@pytest.mark.parametrize("bad", [_bad_unknown_key, _bad_unreachable,
                                 _bad_chap, _bad_second_volume, _bad_hidden],
                         ids=["unknown-key", "unreachable", "wrong-chap",
                              "second-volume", "hidden"])
def test_failing_hook_fails_container(lunfs, targets, runc_private, bad):
    t = targets("bad", luns={1: 16 * MiB})
    vols, words = bad(t, runc_private.root)
    b = runc_private.bundle(vols, "echo SHOULD-NOT-RUN")
    r = runc_private.run(b)
    assert r.returncode != 0
    assert "SHOULD-NOT-RUN" not in r.stdout
    assert "lunfs hook" in r.stderr, r.stderr
    low = r.stderr.lower()
    assert any(w in low for w in words), f"no reason in stderr: {r.stderr}"
    assert_released(lunfs, t, runc_private.root)


def test_invalid_annotation_json(lunfs, runc_private):
    b = runc_private.bundle(None, "echo SHOULD-NOT-RUN", raw_annotation="[{")
    r = runc_private.run(b)
    assert r.returncode != 0 and "not valid JSON" in r.stderr


def _hook(lunfs, stage, state):
    p = subprocess.run([lunfs.bin, "--state-dir", lunfs.state_dir, "hook"] +
                       ([stage] if stage else []),
                       input=json.dumps(state), capture_output=True, text=True,
                       timeout=30)
    return p


def test_poststop_idempotent(lunfs, target, runc_private):
    vols = [{"source": target.url(1), "destination": "/data"}]
    b = runc_private.bundle(vols, "echo x > /data/f")
    _ok(runc_private.run(b))
    cid = runc_private.ids[-1]
    state = {"ociVersion": "1.0.2", "id": cid, "status": "stopped", "pid": 0,
             "bundle": b, "annotations": {}}
    for stage in ("poststop", "poststop", None):
        p = _hook(lunfs, stage, state)
        assert p.returncode == 0, p.stderr
        assert p.stderr == ""
    assert_released(lunfs, target, runc_private.root)
    # With no daemon at all, poststop still succeeds and starts none.
    lunfs.ok("shutdown")
    H.wait_until(lambda: not lunfs.daemon_pid() or
                 not H.pid_alive(lunfs.daemon_pid()), 10)
    p = _hook(lunfs, "poststop", state)
    assert p.returncode == 0, p.stderr
    pid = lunfs.daemon_pid()
    assert not pid or not H.pid_alive(pid)


def test_hook_rejects_bad_input(lunfs, tmp_path):
    p = _hook(lunfs, "createRuntime", {"status": "creating"})
    assert p.returncode != 0 and "state" in p.stderr
    p = _hook(lunfs, "bogus", {"id": "x", "bundle": str(tmp_path)})
    assert p.returncode == 2 and "stage" in p.stderr
    # A container without our annotation is none of our business.
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"root": {"path": "rootfs"}, "annotations": {}}, f)
    p = _hook(lunfs, "createRuntime", {"id": "x", "bundle": str(tmp_path),
                                       "status": "creating", "pid": 1})
    assert p.returncode == 0 and p.stderr == ""


def test_hooks_d_file():
    """The shipped hooks.d file is containers-common 1.0.0 and fires on our
    annotation only; its args carry no stage (taken from the state)."""
    import re
    with open(os.path.join(H.REPO, "tools", "hooks.d", "lunfs.json")) as f:
        h = json.load(f)
    assert h["version"] == "1.0.0"
    assert set(h) == {"version", "hook", "when", "stages"}
    assert sorted(h["stages"]) == ["createRuntime", "poststop"]
    assert os.path.isabs(h["hook"]["path"])
    assert h["hook"]["args"][-1] == "hook"
    (kre, vre), = h["when"]["annotations"].items()
    assert re.search(kre, "io.lunfs.volumes")
    assert not re.search(kre, "io.lunfs.volumesX")
    assert re.search(vre, '[{"source": "iscsi://h/iqn/1"}]')


def test_annotation_discard_gives_space_back(lunfs, targets, runc_private):
    """"discard": true in the annotation: the blocks a container frees go
    back to a thin LUN without fstrim (at the latest when the volume is
    released)."""
    t = targets("disc", luns={1: 64 * MiB})
    t.tgt.tgtadm("--lld", "iscsi", "--op", "update", "--mode", "logicalunit",
                 "--tid", str(t.tid), "--lun", "1", "--params",
                 "thin_provisioning=1")
    vols = [{"source": t.url(1), "destination": "/data", "discard": True}]
    b = runc_private.bundle(
        vols, "dd if=/dev/urandom of=/data/f bs=1M count=16 conv=fsync "
        "2>/dev/null; : > /data/f; echo done")
    r = _ok(runc_private.run(b))
    assert r.stdout.strip() == "done", r.stderr
    assert_released(lunfs, t, runc_private.root)
    assert os.stat(t.luns[1]).st_blocks * 512 < 8 * MiB, lunfs.log_tail(40)
    e2fsck_clean(t.luns[1])
