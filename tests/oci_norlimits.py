#!/usr/bin/env python3
"""Test scaffolding, not part of lunfs: an OCI runtime wrapper for podman in
this sandbox, where setrlimit(RLIMIT_NOFILE/NPROC) fails and so would every
container that podman's default process.rlimits reach. It deletes
process.rlimits from the bundle's config.json on `create`/`run` and execs
the real runtime, chosen by the name it is called by (a symlink named
`runc` or `crun`): `podman --runtime DIR/crun`.

crun (1.8) also refuses this sandbox's hybrid cgroup layout while the
cgroup2 hierarchy at /sys/fs/cgroup/unified has a controller (hugetlb):
crun runs in a mount namespace of its own (propagation unchanged, so the
container's mounts still behave as on the host) where that hierarchy is
unmounted, and sees plain cgroup v1."""
import json
import os
import shutil
import sys

REAL = {"runc": ("/usr/sbin/runc", "/usr/bin/runc"),
        "crun": ("/usr/bin/crun", "/usr/sbin/crun")}

UNIFIED = "/sys/fs/cgroup/unified"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"


def bundle_of(args):
    for i, a in enumerate(args):
        if a in ("--bundle", "-b") and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--bundle="):
            return a.split("=", 1)[1]
    return "."


def main():
    name = os.path.basename(sys.argv[0])
    args = sys.argv[1:]
    real = next((p for p in REAL.get(name, ()) if os.access(p, os.X_OK)),
                None) or shutil.which(name)
    if not real:
        sys.exit(f"oci_norlimits: no real runtime for '{name}'")
    if "create" in args or "run" in args:
        cfg = os.path.join(bundle_of(args), "config.json")
        with open(cfg) as f:
            c = json.load(f)
        if c.get("process", {}).pop("rlimits", None) is not None:
            with open(cfg + ".tmp", "w") as f:
                json.dump(c, f)
            os.rename(cfg + ".tmp", cfg)
    if name == "crun" and os.path.ismount(UNIFIED):
        os.execv(UNSHARE, [UNSHARE, "-m", "--propagation", "unchanged", "sh",
                           "-c", f'umount {UNIFIED} && exec "$0" "$@"', real]
                 + args)
    os.execv(real, [real] + args)


if __name__ == "__main__":
    main()
