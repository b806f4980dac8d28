"""The Kubernetes node deployment (tools/kubernetes/): the manifests parse
and hold what a lunfs node DaemonSet needs, and the init container's
installer puts a hook on a node that runs without the node's libraries.
The image itself is built by tools/kubernetes/build-image.sh (README,
"Kubernetes"): minutes of downloads, so not part of this suite."""
import json
import os
import re
import subprocess

import yaml

import lunfs_harness as H

K8S = os.path.join(H.REPO, "tools", "kubernetes")


def _docs(name):
    with open(os.path.join(K8S, name)) as f:
        return {d["kind"]: d for d in yaml.safe_load_all(f) if d}


def _by_name(items):
    return {i["name"]: i for i in items}


def test_daemonset_has_what_lunfsd_needs():
    docs = _docs("lunfs-node.yaml")
    assert set(docs) == {"Namespace", "ConfigMap", "DaemonSet"}
    ds = docs["DaemonSet"]
    assert ds["apiVersion"] == "apps/v1"
    ns = docs["Namespace"]["metadata"]["name"]
    assert ds["metadata"]["namespace"] == ns
    spec = ds["spec"]
    assert spec["selector"]["matchLabels"].items() <= \
        spec["template"]["metadata"]["labels"].items()
    # Replacing lunfsd unmounts volumes in use: never automatically.
    assert spec["updateStrategy"]["type"] == "OnDelete"
    pod = spec["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["terminationGracePeriodSeconds"] >= 60  # the unit's stop time
    vols = _by_name(pod["volumes"])
    (c,) = pod["containers"]
    assert c["securityContext"]["privileged"] is True
    assert c["command"][0] == "/usr/sbin/lunfsd"
    state = c["command"][c["command"].index("--state-dir") + 1]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}

    def host(path):
        return vols[mounts[path]["name"]]["hostPath"]

    assert host("/dev/fuse") == {"path": "/dev/fuse", "type": "CharDevice"}
    # Same paths inside and on the node: the hook hands lunfsd node paths.
    for path in (state, "/var/lib/kubelet/pods", "/var/lib/containers/storage",
                 "/run/containers/storage"):
        assert host(path)["path"] == path, path
        assert mounts[path]["mountPropagation"] == "Bidirectional", path
    # The init container installs the hook and CRI-O's drop-in on the node.
    (ic,) = pod["initContainers"]
    assert ic["image"] == c["image"]
    assert ic["command"][0] == "/usr/lib/lunfs/install-node.sh"
    root = ic["command"][1]
    imounts = {m["mountPath"]: vols[m["name"]] for m in ic["volumeMounts"]}
    assert imounts[root + "/opt/lunfs"]["hostPath"]["path"] == "/opt/lunfs"
    assert imounts[root + "/etc/containers/oci/hooks.d"]["hostPath"]["path"] \
        == "/etc/containers/oci/hooks.d"
    env = {e["name"]: e["value"] for e in ic["env"]}
    conf_dir, conf_name = os.path.split(env["LUNFS_CRIO_CONF"])
    cm = docs["ConfigMap"]
    assert imounts[conf_dir]["configMap"]["name"] == cm["metadata"]["name"]
    crio = cm["data"][conf_name]
    assert "[crio.runtime]" in crio
    assert re.search(r'hooks_dir\s*=\s*\[[^]]*"/etc/containers/oci/hooks.d"',
                     crio)


def test_example_pod_annotation_is_a_volume_list():
    pod = _docs("example-pod.yaml")["Pod"]
    vols = json.loads(pod["metadata"]["annotations"]["io.lunfs.volumes"])
    assert vols and all(os.path.isabs(v["destination"]) for v in vols)
    assert all(v["source"].startswith("iscsi://") for v in vols)


def test_containerfile_installs_the_package_and_runs_lunfsd():
    text = open(os.path.join(K8S, "Containerfile")).read()
    assert re.search(r"^FROM \$\{BASE\}$", text, re.M)
    assert "apt-get install" in text and "/tmp/lunfs_*.deb" in text
    assert "COPY install-node.sh /usr/lib/lunfs/install-node.sh" in text
    ds = _docs("lunfs-node.yaml")["DaemonSet"]
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    entry = json.loads(re.search(r"^ENTRYPOINT (.*)$", text, re.M).group(1))
    assert entry == c["command"]


def test_install_node_puts_a_working_hook_on_the_node(tmp_path):
    """install-node.sh with a directory as the node: the hook wrapper runs
    lunfs with the copied loader and libraries only, the hooks.d file names
    it, CRI-O's drop-in is written; a second run replaces them."""
    conf = tmp_path / "crio.conf"
    conf.write_text("[crio.runtime]\n")
    env = dict(os.environ, LUNFS_BIN=os.path.join(H.build_dir(), "tools", "lunfs"),
               LUNFS_HOOKS_JSON=os.path.join(H.REPO, "tools/hooks.d/lunfs.json"),
               LUNFS_CRIO_CONF=str(conf))
    # The shipped file names /usr/local/bin/lunfs; the package's /usr/bin.
    hooks = tmp_path / "lunfs.json"
    hooks.write_text(open(env["LUNFS_HOOKS_JSON"]).read().replace(
        "/usr/local/bin/lunfs", "/usr/bin/lunfs"))
    env["LUNFS_HOOKS_JSON"] = str(hooks)
    node = tmp_path / "node"
    for _ in range(2):
        r = subprocess.run([os.path.join(K8S, "install-node.sh"), str(node)],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
    h = json.load(open(node / "etc/containers/oci/hooks.d/lunfs.json"))
    assert h["hook"]["path"] == "/opt/lunfs/bin/lunfs"
    assert (node / "etc/crio/crio.conf.d/50-lunfs-hooks.conf").read_text() \
        == "[crio.runtime]\n"
    assert sorted(os.listdir(node / "opt/lunfs")) == ["bin", "lib", "libexec"]
    # No library path of the machine's: only what was copied.
    r = subprocess.run([str(node / "opt/lunfs/bin/lunfs"), "--help"],
                       capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "LD_DEBUG": "libs"})
    assert r.returncode == 0 and r.stdout.startswith("Usage: lunfs"), r.stderr
    # LD_DEBUG lines are "PID: ..."; lunfs's process is the one with json-c.
    inits = {}
    for pid, lib in re.findall(r"^\s*(\d+):\s+calling init: (\S+)",
                               r.stderr, re.M):
        inits.setdefault(pid, []).append(lib)
    (loaded,) = [v for v in inits.values()
                 if any("libjson-c" in p for p in v)]
    # The wrapper shell exec'ed it (same pid): from the copied loader on.
    lib = str(node / "opt/lunfs/lib") + "/"
    loaded = [os.path.normpath(p) for p in loaded]
    first = min(i for i, p in enumerate(loaded) if p.startswith(lib))
    tail = loaded[first:]
    assert all(p.startswith(lib) for p in tail), tail
    assert lib + "libc.so.6" in tail and lib + "libjson-c.so.5" in tail
