"""Install and package: `cmake --install` (default layout and DESTDIR with
prefix /usr), the man pages made from --help, and the Debian package —
installed on this machine, the README's demo run against the installed
binaries, then purged with nothing left."""
import json
import os
import re
import subprocess

import lunfs_harness as H

LOCK = ["-o", "DPkg::Lock::Timeout=300"]
WANTS = "/etc/systemd/system/multi-user.target.wants/lunfsd.service"


def _install(tmp_path, *args, env=None):
    r = subprocess.run(["cmake", "--install", H.build_dir(), *args],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def _hook_path(path):
    with open(path) as f:
        return json.load(f)["hook"]["path"]


def _exec_start(path):
    with open(path) as f:
        (line,) = [l for l in f if l.startswith("ExecStart=")]
    return line.split("=", 1)[1].split()[0]


def test_cmake_install_prefix(tmp_path):
    """A private prefix: everything stays under it, the unit and the hooks.d
    file name the installed binaries, and the installed lunfs starts the
    installed lunfsd from PREFIX/sbin (not on PATH) by itself."""
    pre = tmp_path / "pre"
    _install(tmp_path, "--prefix", str(pre))
    for rel in ("bin/lunfs", "sbin/lunfsd"):
        assert os.access(pre / rel, os.X_OK), rel
    for rel in ("share/man/man8/lunfs.8", "share/man/man8/lunfsd.8"):
        assert (pre / rel).is_file(), rel
    assert _exec_start(pre / "lib/systemd/system/lunfsd.service") == \
        str(pre / "sbin/lunfsd")
    assert _hook_path(pre / "etc/containers/oci/hooks.d/lunfs.json") == \
        str(pre / "bin/lunfs")

    img, mnt, state = tmp_path / "img", tmp_path / "m", tmp_path / "s"
    H.make_file(img, 32 << 20)
    mnt.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "LUNFS_DAEMON"}
    env["PATH"] = "/usr/bin:/bin"
    lunfs = [str(pre / "bin/lunfs"), "--state-dir", str(state)]
    try:
        r = H.run(lunfs + ["mount", f"file://{img}", str(mnt)], env=env)
        assert r.returncode == 0, r.stderr
        pid = int((state / "lunfsd.pid").read_text())
        assert os.readlink(f"/proc/{pid}/exe") == str(pre / "sbin/lunfsd")
    finally:
        H.run(lunfs + ["shutdown"], env=env)
        H.unmount_all_under(str(tmp_path))


def test_destdir_prefix_usr(tmp_path):
    """DESTDIR=D cmake --install --prefix /usr: the package layout, naming
    /usr paths; the hooks.d file goes where podman and CRI-O read it."""
    d = tmp_path / "d"
    _install(tmp_path, "--prefix", "/usr",
             env=dict(os.environ, DESTDIR=str(d)))
    found = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    assert found == ["etc/containers/oci/hooks.d/lunfs.json",
                     "usr/bin/lunfs", "usr/lib/systemd/system/lunfsd.service",
                     "usr/sbin/lunfsd", "usr/share/man/man8/lunfs.8",
                     "usr/share/man/man8/lunfsd.8"]
    assert _exec_start(d / "usr/lib/systemd/system/lunfsd.service") == \
        "/usr/sbin/lunfsd"
    assert _hook_path(d / "etc/containers/oci/hooks.d/lunfs.json") == \
        "/usr/bin/lunfs"


def _options(text):
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", text))


def test_man_pages_are_the_help(tmp_path):
    """The man pages are the programs' --help (and `lunfs help CMD` for
    every command it lists), rendered by groff without a warning."""
    b = H.build_dir()
    lunfs, lunfsd = f"{b}/tools/lunfs", f"{b}/tools/lunfsd"
    for prog, page in ((lunfs, "lunfs.8"), (lunfsd, "lunfsd.8")):
        src = open(f"{b}/tools/{page}").read()
        r = subprocess.run(["groff", "-ww", "-z", "-man"], input=src,
                           capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        plain = src.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")
        helps = [H.run([prog, "--help"]).stdout]
        if prog == lunfs:
            cmds = re.findall(r"^  ([a-z]+) ", helps[0], re.M)
            assert {"mount", "umount", "status", "fsck", "hook"} <= set(cmds)
            helps += [H.run([prog, "help", c]).stdout for c in cmds]
        for h in helps:
            first = h.splitlines()[0][len("Usage: "):].split(" ", 1)[-1]
            assert first in plain, first
            missing = _options(h) - _options(plain)
            assert not missing, f"{page} lacks {missing}"
    # The page in the build tree is what the generator makes now.
    out = tmp_path / "lunfs.8"
    subprocess.run(["python3", f"{H.REPO}/tools/manpage.py", lunfs, "8",
                    str(out), "lunfsd(8)"], check=True)
    assert out.read_text() == open(f"{b}/tools/lunfs.8").read()


def _dpkg_status(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                       capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


def test_deb_install_demo_purge(tmp_path):
    """tools/package.sh builds the .deb; apt installs it (unit not enabled),
    the README's demo runs on the installed binaries; reinstalled with
    LUNFS_ENABLE_UNIT=1 the unit is enabled; purge leaves nothing."""
    assert "installed" not in _dpkg_status("lunfs").split()[-1:], \
        "a lunfs package is already installed on this machine"
    r = subprocess.run([f"{H.REPO}/tools/package.sh", str(tmp_path)],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, LUNFS_BUILD_DIR=H.build_dir()))
    assert r.returncode == 0, r.stderr
    deb = r.stdout.strip()
    info = lambda f: H.run(["dpkg-deb", "-f", deb, f]).stdout.strip()
    assert info("Package") == "lunfs"
    depends = info("Depends")
    for lib in ("libiscsi7", "libext2fs2", "libfuse3-3", "libjson-c5"):
        assert re.search(rf"\b{lib} \(>= ", depends), depends
    ctl = tmp_path / "ctl"
    H.run(["dpkg-deb", "-e", deb, str(ctl)], check=True)
    assert (ctl / "conffiles").read_text().split() == \
        ["/etc/containers/oci/hooks.d/lunfs.json"]

    apt = ["apt-get", "-y", "-qq", *LOCK]
    env = {k: v for k, v in os.environ.items() if k != "LUNFS_DAEMON"}
    env.update(DEBIAN_FRONTEND="noninteractive",
               PATH="/usr/sbin:/usr/bin:/sbin:/bin")
    try:
        r = subprocess.run(apt + ["install", "--no-install-recommends", deb],
                           capture_output=True, text=True, env=env,
                           timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        files = H.run(["dpkg-query", "-L", "lunfs"]).stdout.split()
        assert "/usr/bin/lunfs" in files and "/usr/sbin/lunfsd" in files
        assert _exec_start("/usr/lib/systemd/system/lunfsd.service") == \
            "/usr/sbin/lunfsd"
        assert _hook_path("/etc/containers/oci/hooks.d/lunfs.json") == \
            "/usr/bin/lunfs"
        # Not asked for: not enabled.
        assert not os.path.lexists(WANTS)
        r = subprocess.run(["man", "-w", "lunfsd"], capture_output=True,
                           text=True, env=env)
        assert r.stdout.strip() == "/usr/share/man/man8/lunfsd.8.gz", r.stderr

        r = subprocess.run([f"{H.REPO}/tools/demo.sh", "--installed"],
                           capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert "$ /usr/bin/lunfs --state-dir" in r.stdout
        assert "hello from lunfs" in r.stdout
        assert "connections left at the target: 0" in r.stdout

        # Asked for (here on a reinstall, which configures again): enabled.
        r = subprocess.run(apt + ["install", "--reinstall", deb],
                           capture_output=True, text=True, timeout=600,
                           env=dict(env, LUNFS_ENABLE_UNIT="1"))
        assert r.returncode == 0, r.stdout + r.stderr
        assert os.readlink(WANTS).endswith("/systemd/system/lunfsd.service")
    finally:
        r = subprocess.run(apt + ["purge", "lunfs"], capture_output=True,
                           text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _dpkg_status("lunfs") in ("", "unknown ok not-installed")
    left = [f for f in files if os.path.isfile(f) or f.endswith("/lunfs")
            and os.path.exists(f)]
    assert left == []
    assert not os.path.lexists(WANTS)
    assert not [f for f in os.listdir("/var/lib/dpkg/info")
                if f.startswith("lunfs.")]

