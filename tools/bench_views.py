#!/usr/bin/env python3
"""What a second and a tenth mount of one volume cost, both ways.

    sudo tools/bench_views.py [--mounts 10] [--files 2000]

Runs a private lunfsd twice on a local image (file://; the figures are
about the FUSE side, not iSCSI): once with one kernel view per volume
(idmapped binds, the default) and once with `--per-mount-views` (each mount
its own FUSE mount, lunfs mapping ids). Each run mounts the volume N times
with different uid/gid maps, fills the first mount with small files, and
after mount k runs `ls -l` through it once: the first listing through that
mount. It prints lunfsd's resident memory (VmRSS) and the FUSE requests
that listing cost (from `lunfs status --json`; an idmapped mount reports
its view's counts, and the difference is taken around the listing).
The kernel's own memory for inodes and page cache is not counted: a view
keeps one copy of each, per-mount views one per mount.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def lunfs_bin():
    b = os.environ.get("LUNFS_BUILD_DIR", os.path.join(HERE, "..", "build"))
    p = os.path.join(b, "tools", "lunfs")
    if not os.access(p, os.X_OK):
        sys.exit(f"bench_views: {p} missing: build first")
    return p


def run_mode(mode, root, nmounts, nfiles):
    lf_bin = lunfs_bin()
    state = os.path.join(root, "state")
    img = os.path.join(root, "img")
    with open(img, "wb") as f:
        f.truncate(256 << 20)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNFS_")}
    if mode == "fuse-map":
        env["LUNFS_PER_MOUNT_VIEWS"] = "1"

    def lf(*a):
        r = subprocess.run([lf_bin, "--state-dir", state] + list(a),
                           capture_output=True, text=True, env=env)
        if r.returncode:
            sys.exit(f"bench_views: lunfs {' '.join(a)}: {r.stderr.strip()}")
        return r.stdout

    def status():
        return json.loads(lf("status", "--json"))

    def rss_mib(pid):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    rows, mps = [], []
    try:
        for k in range(nmounts):
            mp = os.path.join(root, f"m{k}")
            os.mkdir(mp)
            mps.append(mp)
            maps = [] if k == 0 else [
                "--uidmap", f"0:{100000 * k}:65536",
                "--gidmap", f"0:{100000 * k}:65536"]
            lf("mount", *maps, f"file://{img}", mp)
            if k == 0:
                for i in range(nfiles):
                    open(os.path.join(mp, f"f{i:05d}"), "w").close()
                subprocess.run(["ls", "-l", mp], capture_output=True)
                continue
            before = {m["path"]: m["fuse_requests"]
                      for m in status()["mounts"]}[mp]
            subprocess.run(["ls", "-l", mp], capture_output=True, check=True)
            st = status()
            after = {m["path"]: m["fuse_requests"] for m in st["mounts"]}[mp]
            delta = {n: after.get(n, 0) - before.get(n, 0) for n in after}
            delta = {n: v for n, v in sorted(delta.items()) if v > 0}
            view = {m["path"]: m.get("view") for m in st["mounts"]}[mp]
            rows.append((k + 1, view, rss_mib(st["pid"]), delta))
    finally:
        for mp in reversed(mps):
            subprocess.run([lf_bin, "--state-dir", state, "umount", mp],
                           capture_output=True, env=env)
        subprocess.run([lf_bin, "--state-dir", state, "shutdown"],
                       capture_output=True, env=env)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mounts", type=int, default=10)
    p.add_argument("--files", type=int, default=2000)
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_views: run as root (idmapped mounts need it)")
    print(f"one volume, {a.mounts} mounts with different maps, "
          f"{a.files} files; `ls -l` once through each mount after the first")
    for mode in ("idmapped", "fuse-map"):
        root = tempfile.mkdtemp(prefix="lunfs-bv-", dir="/tmp")
        os.chmod(root, 0o755)
        try:
            rows = run_mode(mode, root, a.mounts, a.files)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        for n, view, rss, delta in rows:
            if n in (2, a.mounts):
                kinds = ", ".join(f"{k} {v}" for k, v in delta.items())
                print(f"  {mode:8s} mount #{n:<2d} (view {view}): lunfsd "
                      f"RSS {rss:5.1f} MiB; ls -l: {sum(delta.values())} "
                      f"requests ({kinds})")


if __name__ == "__main__":
    main()
