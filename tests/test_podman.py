"""The OCI hook under Debian's podman, as people run it: the shipped
hooks.d file, `podman run --annotation` (CSV-quoted, as the README shows
it), user namespaces (--uidmap/--gidmap), and `podman kube play` of a Pod
manifest carrying the annotation.

podman runs with private storage, run root, tmp dir and configuration under
the test's directory (nothing of the machine's podman state is touched),
no network, and an image imported from a busybox-static tarball. In this
sandbox podman needs tests/oci_norlimits.py as its runtime (it drops
process.rlimits, which the sandbox refuses, and execs runc or crun).

Oracles: what the container prints, podman's exit status and output, the
target's connection list (tgtadm), the LUN's backing file (debugfs,
e2fsck) and the host's mount table.
"""

import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading

import pytest

import lunfs_harness as H
from test_oci import (BUSYBOX_APPLETS, _busybox, assert_direct, assert_released,
                      attach_records, debugfs_owner, e2fsck_clean,
                      start_daemon)

MiB = H.MiB
IMAGE = "localhost/lunfs-busybox:test"


def csv_annotation(volumes):
    """podman's --annotation parses its value as CSV: the whole KEY=VALUE
    is one quoted field with every inner quote doubled."""
    v = "io.lunfs.volumes=" + json.dumps(volumes)
    return '"' + v.replace('"', '""') + '"'


class Podman:
    def __init__(self, root, lunfs, runtime="runc"):
        self.root = root
        self.lunfs = lunfs
        self.podman = H.require_tool("podman")
        rt = os.path.join(root, "rt")
        os.makedirs(rt)
        os.symlink(os.path.join(H.REPO, "tests", "oci_norlimits.py"),
                   os.path.join(rt, runtime))
        self.runtime = os.path.join(rt, runtime)
        self.runtime_name = runtime
        self.hooks = os.path.join(root, "hooks.d")
        self.write_hook()
        conf = os.path.join(root, "containers.conf")
        with open(conf, "w") as f:
            # kube play's infra container: our image's /pause (podman
            # would otherwise build one from catatonit, not installed).
            f.write('[engine]\nevents_logger = "none"\n'
                    'cgroup_manager = "cgroupfs"\n'
                    f'infra_image = "{IMAGE}"\n')
        storage = os.path.join(root, "storage.conf")
        with open(storage, "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\n'
                    f'graphroot = "{root}/storage"\n'
                    f'runroot = "{root}/run"\n')
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("LUNFS_", "CONTAINERS_"))}
        self.env.update(CONTAINERS_CONF=conf, CONTAINERS_STORAGE_CONF=storage,
                        CONTAINERS_REGISTRIES_CONF=os.path.join(root, "reg"),
                        TMPDIR=os.path.join(root, "tmp"))
        open(os.path.join(root, "reg"), "w").close()
        os.makedirs(os.path.join(root, "tmp"))
        self._n = 0

    def write_hook(self, timeout=None, env=None):
        """The shipped hooks.d file, pointed at the built binary and this
        test's state directory."""
        with open(os.path.join(H.REPO, "tools", "hooks.d", "lunfs.json")) as f:
            h = json.load(f)
        h["hook"]["path"] = self.lunfs.bin
        h["hook"]["args"] = ["lunfs", "--state-dir", self.lunfs.state_dir,
                             "hook"]
        if timeout is not None:
            h["hook"]["timeout"] = timeout
        if env:
            h["hook"]["env"] = env
        os.makedirs(self.hooks, exist_ok=True)
        with open(os.path.join(self.hooks, "lunfs.json"), "w") as f:
            json.dump(h, f)

    def argv(self, *args):
        return [self.podman, "--root", f"{self.root}/storage",
                "--runroot", f"{self.root}/run", "--tmpdir",
                f"{self.root}/tmp", "--runtime", self.runtime,
                "--hooks-dir", self.hooks, "--cgroup-manager", "cgroupfs",
                "--events-backend", "none"] + [str(a) for a in args]

    def _files(self):
        self._n += 1
        return (os.path.join(self.root, f"p{self._n}.out"),
                os.path.join(self.root, f"p{self._n}.err"))

    def run(self, *args, timeout=120):
        out, err = self._files()
        with open(out, "wb") as o, open(err, "wb") as e:
            p = subprocess.Popen(self.argv(*args), stdin=subprocess.DEVNULL,
                                 stdout=o, stderr=e, env=self.env)
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise AssertionError(f"podman {args[:2]} hung")
        return subprocess.CompletedProcess(args, rc, _read(out), _read(err))

    def ok(self, *args, **kw):
        r = self.run(*args, **kw)
        assert r.returncode == 0, (f"podman {' '.join(map(str, args))}: "
                                   f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
                                   f"\n{self.lunfs.log_tail()}")
        return r

    def start(self, *args):
        out, err = self._files()
        o, e = open(out, "wb"), open(err, "wb")
        p = subprocess.Popen(self.argv(*args), stdin=subprocess.DEVNULL,
                             stdout=o, stderr=e, env=self.env)
        o.close()
        e.close()
        p.files = (out, err)
        return p

    def finish(self, p, timeout=60):
        rc = p.wait(timeout=timeout)
        return subprocess.CompletedProcess(p.args, rc, _read(p.files[0]),
                                           _read(p.files[1]))

    def import_image(self):
        rootfs = os.path.join(self.root, "image")
        os.makedirs(os.path.join(rootfs, "bin"))
        for d in ("proc", "dev", "sys", "tmp", "etc"):
            os.makedirs(os.path.join(rootfs, d))
        os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
        shutil.copy(_busybox(), os.path.join(rootfs, "bin", "busybox"))
        for a in BUSYBOX_APPLETS + ("grep", "wc"):
            os.symlink("busybox", os.path.join(rootfs, "bin", a))
        with open(os.path.join(rootfs, "pause"), "w") as f:
            f.write('#!/bin/sh\ntrap "exit 0" TERM INT\n'
                    'while :; do sleep 1000 & wait $!; done\n')
        os.chmod(os.path.join(rootfs, "pause"), 0o755)
        tar = os.path.join(self.root, "image.tar")
        H.run(["tar", "-C", rootfs, "-cf", tar, "."], check=True)
        self.ok("import", "--change", "ENV=PATH=/bin", "--change",
                'CMD ["/pause"]', tar, IMAGE)

    def cleanup(self):
        self.run("pod", "rm", "--all", "--force", timeout=60)
        self.run("rm", "--all", "--force", timeout=60)
        self.run("system", "reset", "--force", timeout=60)


def _read(path):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


@pytest.fixture(params=["runc", "crun"])
def podman(request, lunfs):
    if _busybox() is None:
        pytest.fail("busybox-static is not installed", pytrace=False)
    root = tempfile.mkdtemp(prefix="lunfs-pm-", dir="/tmp")
    os.chmod(root, 0o755)
    pm = None
    try:
        # The storage on a shared mount, as under systemd (podman may
        # still run the runtime in a private mount namespace of its own).
        H.run(["mount", "--bind", root, root], check=True)
        H.run(["mount", "--make-shared", root], check=True)
        # lunfsd already runs, in the host's mount namespace, as under its
        # systemd unit; the hook runs wherever podman puts the runtime.
        start_daemon(lunfs)
        pm = Podman(root, lunfs, request.param)
        pm.import_image()
        yield pm
    finally:
        if pm is not None:
            pm.cleanup()
        H.unmount_all_under(root)
        shutil.rmtree(root, ignore_errors=True)


def fuse_mounts_under(root):
    return [m for m in H.mounts_under(root) if m[1].startswith("fuse")]


def run_args(vols, script, *opts):
    return ["run", "--rm", "--network", "none", *opts, "--annotation",
            csv_annotation(vols), IMAGE, "sh", "-c", script]


# ---------------------------------------------------------------- scenarios

def test_podman_plain(lunfs, target, podman):
    vols = [{"source": target.url(1), "destination": "/data"}]
    r = podman.ok(*run_args(vols, "echo hi > /data/f; sync; "
                                  "grep -c ' /data fuse' /proc/mounts; cat /data/f"))
    assert r.stdout.split() == ["1", "hi"], r
    assert_released(lunfs, target, podman.root)
    e2fsck_clean(target.luns[1])
    assert debugfs_owner(target.luns[1], "/f") == (0, 0)


def test_podman_uidmap(lunfs, target, podman):
    vols = [{"source": target.url(1), "destination": "/data"}]
    r = podman.ok(*run_args(vols, "id -u; echo hi > /data/f; mkdir /data/d; "
                                  "sync; grep -c ' /data fuse' /proc/mounts; "
                                  "stat -c '%u %g' /data/f /data/d",
                            "--uidmap", "0:100000:65536",
                            "--gidmap", "0:100000:65536"))
    assert r.stdout.split() == ["0", "1", "0", "0", "0", "0"], r
    assert_released(lunfs, target, podman.root)
    e2fsck_clean(target.luns[1])
    assert debugfs_owner(target.luns[1], "/f") == (0, 0)
    assert debugfs_owner(target.luns[1], "/d") == (0, 0)


def test_podman_failing_annotation(lunfs, target, podman):
    url = f"iscsi://127.0.0.1:{H.free_tcp_port()}/{target.iqn}/1"
    vols = [{"source": target.url(1), "destination": "/data"},
            {"source": url, "destination": "/other"}]
    hook_err = os.path.join(podman.root, "hook.err")
    r = podman.run(*run_args(vols, "echo SHOULD-NOT-RUN", "--annotation",
                             f"run.oci.hooks.stderr={hook_err}"))
    assert r.returncode != 0
    assert "SHOULD-NOT-RUN" not in r.stdout
    out = r.stdout + r.stderr
    if podman.runtime_name == "runc":
        assert "lunfs hook" in out and "volume 1 (/other)" in out, out
    else:
        # crun reports only the hook's exit status; the reason goes where
        # the container's run.oci.hooks.stderr annotation says.
        assert "error executing hook" in out, out
        out = _read(hook_err)
        assert "lunfs hook" in out and "volume 1 (/other)" in out, out
    assert_released(lunfs, target, podman.root)


def wait_path(path, proc, timeout=30):
    ok = H.wait_until(lambda: os.path.exists(path) or proc.poll() is not None,
                      timeout)
    assert ok and os.path.exists(path), \
        f"{path} never appeared (podman rc={proc.poll()})"


def test_podman_two_maps_share_volume(lunfs, target, podman):
    """Two containers with different user namespaces on one volume at
    once: one session; each sees the other's file as its own root's; the
    session stays until the last one ends."""
    ctl = os.path.join(podman.root, "ctl")
    os.makedirs(ctl)
    os.chmod(ctl, 0o777)
    vols = [{"source": target.url(1), "destination": "/data"}]
    # Each reads the other's file only once both have written (a name
    # looked up before it exists may stay cached as absent in that view).
    script = ("echo {me} > /data/{me}; sync; touch /ctl/{me}.ready; "
              "i=0; while [ ! -e /ctl/{me}.go ] && [ $i -lt 900 ]; do "
              "sleep 0.1; i=$((i+1)); done; cat /data/{other}; "
              "stat -c '%u %g' /data/{other}")
    pa = podman.start(*run_args(vols, script.format(me="a", other="b"),
                                "-v", f"{ctl}:/ctl", "--uidmap",
                                "0:100000:65536", "--gidmap", "0:100000:65536"))
    pb = None
    try:
        wait_path(os.path.join(ctl, "a.ready"), pa)
        pb = podman.start(*run_args(vols, script.format(me="b", other="a"),
                                    "-v", f"{ctl}:/ctl", "--uidmap",
                                    "0:200000:65536", "--gidmap",
                                    "0:200000:65536"))
        wait_path(os.path.join(ctl, "b.ready"), pb)
        assert len(target.connections()) == 1, "one shared session"
        recs = attach_records(lunfs)
        assert len(recs) == 1, recs
        # Both attached straight into their containers (conmon's private
        # namespace no longer matters): one view on the host, no mount
        # at either container's merged/data.
        assert_direct(lunfs, podman.root, 2)
        open(os.path.join(ctl, "a.go"), "w").close()
        ra = podman.finish(pa)
        assert ra.returncode == 0, ra
        assert ra.stdout.split() == ["b", "0", "0"], ra
        # B still runs: its session and bind stay.
        assert len(target.connections()) == 1, target.connections()
        assert_direct(lunfs, podman.root, 1)
    finally:
        for n in ("a.go", "b.go"):
            open(os.path.join(ctl, n), "w").close()
        if pa.poll() is None:
            podman.finish(pa)
    rb = podman.finish(pb)
    assert rb.returncode == 0, rb
    assert rb.stdout.split() == ["a", "0", "0"], rb
    assert_released(lunfs, target, podman.root)
    assert debugfs_owner(target.luns[1], "/a") == (0, 0)
    assert debugfs_owner(target.luns[1], "/b") == (0, 0)
    e2fsck_clean(target.luns[1])


def test_podman_block_and_read_only(lunfs, target, podman):
    seed = [{"source": target.url(1), "destination": "/ro"}]
    podman.ok(*run_args(seed, "echo seeded > /ro/seed"))
    vols = [{"source": target.url(2), "destination": "/dev/xvdb",
             "volumeMode": "Block"},
            {"source": target.url(1), "destination": "/ro", "readOnly": True}]
    r = podman.ok(*run_args(vols, "echo -n blockdata | dd of=/dev/xvdb "
                                  "conv=notrunc 2>/dev/null; sync; "
                                  "head -c 9 /dev/xvdb; echo; cat /ro/seed; "
                                  "touch /ro/x 2>/dev/null || echo RO",
                            "--read-only", "--uidmap", "0:100000:65536",
                            "--gidmap", "0:100000:65536"))
    assert r.stdout.split() == ["blockdata", "seeded", "RO"], r
    assert_released(lunfs, target, podman.root)
    assert H.read_at(target.luns[2], 0, 9) == b"blockdata"
    e2fsck_clean(target.luns[1])


def readme_block(first):
    """The README's indented code block whose first line starts with
    FIRST, unindented."""
    with open(os.path.join(H.REPO, "README.md")) as f:
        lines = f.read().split("\n")
    i = next(i for i, l in enumerate(lines) if l.startswith("    " + first))
    out = []
    while i < len(lines) and (lines[i].startswith("    ") or not lines[i]):
        out.append(lines[i][4:])
        i += 1
    return "\n".join(out).strip() + "\n"


README_URL = "iscsi://10.0.0.5:3260/iqn.2024-01.com.example:store/1"


def test_readme_podman_command(lunfs, target, podman):
    """The README's podman command line, pasted (target and image
    swapped for the test's): podman's CSV parsing accepts it, and the
    file lands on the LUN as the container's root (uid 0)."""
    text = readme_block("podman run").replace("\\\n", " ")
    argv = shlex.split(text)
    assert argv[:2] == ["podman", "run"], argv
    argv = [a.replace(README_URL, target.url(1)) for a in argv[2:]]
    argv = [IMAGE if a == "busybox" else a for a in argv]
    podman.ok("run", "--network", "none", *argv)
    assert_released(lunfs, target, podman.root)
    r = H.run(["debugfs", "-R", "cat /x", target.luns[1]])
    assert r.stdout == "hi\n", r
    assert debugfs_owner(target.luns[1], "/x") == (0, 0)


def test_podman_kube_play(lunfs, target, podman):
    """podman kube play of the README's Pod manifest, whose annotation
    names the volume list ("@web": podman 4.3 refuses a Pod's annotation
    values over 63 characters), down to the file on the LUN and the
    session's end after podman kube down."""
    vdir = os.path.join(podman.root, "volumes.d")
    os.makedirs(vdir)
    with open(os.path.join(vdir, "web.json"), "w") as f:
        json.dump([{"source": target.url(1), "destination": "/data"}], f)
    podman.write_hook(env=[f"LUNFS_VOLUMES_DIR={vdir}"])
    yml = os.path.join(podman.root, "pod.yaml")
    manifest = readme_block("apiVersion: v1")
    assert "io.lunfs.volumes: \"@web\"" in manifest, manifest
    with open(yml, "w") as f:
        f.write(manifest.replace("image: busybox", f"image: {IMAGE}"))
    podman.ok("kube", "play", "--network", "none", yml)
    assert H.wait_until(lambda: "Exited (0)" in podman.ok(
        "ps", "-a", "--filter", "name=web-app",
        "--format", "{{.Status}}").stdout, 30), podman.run("ps", "-a").stdout
    podman.ok("kube", "down", yml)
    assert_released(lunfs, target, podman.root)
    r = H.run(["debugfs", "-R", "cat /x", target.luns[1]])
    assert r.stdout == "hi\n", r
    e2fsck_clean(target.luns[1])


class SilentTarget:
    """A TCP listener on 127.0.0.1 that accepts and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.open = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._drain, args=(c,),
                             daemon=True).start()

    def _drain(self, c):
        self.open += 1
        try:
            while c.recv(4096):
                pass
        except OSError:
            pass
        self.open -= 1

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_podman_hook_time_budget(lunfs, target, podman):
    """A target that never answers: the hook gives up within its own
    hooks.d timeout (4 s here, 120 s shipped), before the runtime would
    kill it, the container fails with the reason, and nothing is left:
    no mount, session or attach record, the connection closed."""
    silent = SilentTarget()
    try:
        podman.write_hook(timeout=4)
        hook_err = os.path.join(podman.root, "hook.err")
        vols = [{"source": f"iscsi://127.0.0.1:{silent.port}/{target.iqn}/1",
                 "destination": "/data"}]
        r = podman.run(*run_args(vols, "echo SHOULD-NOT-RUN", "--annotation",
                                 f"run.oci.hooks.stderr={hook_err}"))
        assert r.returncode != 0 and "SHOULD-NOT-RUN" not in r.stdout
        out = r.stdout + r.stderr
        if podman.runtime_name == "crun":
            out = _read(hook_err)
        assert "time budget" in out and "volume 0 (/data)" in out, out

        def clean():  # once lunfsd has given up the login
            st = lunfs.status()
            return st.get("mounts") == [] and st.get("volumes") == [] and \
                st.get("sessions") == []
        assert H.wait_until(clean, 30), lunfs.status()
        assert attach_records(lunfs) == []
        assert fuse_mounts_under(podman.root) == []
        assert H.wait_until(lambda: silent.open == 0, 10), "connection left"
    finally:
        silent.close()
