"""Bad input: each case fails with one line 'lunfs: ...' on stderr and exit 1
(2 for usage), and leaves no session at tgtd, no mount, and no volume or
mount in `lunfs status --json`."""
import json
import os

import pytest

import lunfs_harness as H

MiB = H.MiB
USER, PASSWORD = "badinuser", "Bad-Input-Pa55word"


def blockfile(lundir, name="b"):
    return H.make_file(os.path.join(lundir, name))


def spec_file(lundir, fields, name="spec.json"):
    p = os.path.join(lundir, name)
    with open(p, "w") as f:
        json.dump(fields, f)
    return p


def base_fields(t, **kw):
    d = {"targetPortal": t.tgt.portal, "iqn": t.iqn, "lun": 1,
         "volumeMode": "Block"}
    d.update(kw)
    return d


# Each case: (t, lundir) -> (argv after "mount", env, words expected in the
# message or None). The target has LUN 1 and 2 (block mode) open to all.
def c_url_no_lun(t, d):
    return ["--block", f"iscsi://127.0.0.1:{t.tgt.port}/{t.iqn}", blockfile(d)], None, None


def c_url_bad_scheme(t, d):
    return ["--block", f"iscsi:/127.0.0.1:{t.tgt.port}/{t.iqn}/1", blockfile(d)], None, None


def c_url_lun_not_number(t, d):
    return ["--block", f"iscsi://127.0.0.1:{t.tgt.port}/{t.iqn}/one", blockfile(d)], None, None


def c_url_bad_port(t, d):
    return ["--block", f"iscsi://127.0.0.1:99999/{t.iqn}/1", blockfile(d)], None, None


def c_lun_256(t, d):
    return ["--block", t.url(256), blockfile(d)], None, ["lun", "256"]


def c_unknown_iqn(t, d):
    iqn = H.IQN_PREFIX + ":no-such-target"
    return ["--block", f"iscsi://127.0.0.1:{t.tgt.port}/{iqn}/1", blockfile(d)], None, None


def c_lun_missing(t, d):
    return ["--block", t.url(9), blockfile(d)], None, ["9"]


def c_nothing_listens(t, d):
    port = H.free_tcp_port()
    return ["--block", f"iscsi://127.0.0.1:{port}/{t.iqn}/1", blockfile(d)], None, \
        [f"127.0.0.1:{port}"]


def c_wrong_chap(t, d):
    t.add_chap(USER, PASSWORD)
    return ["--block", t.url(1, user=USER), blockfile(d)], \
        {"LUNFS_CHAP_USERNAME": USER, "LUNFS_CHAP_PASSWORD": "Not-The-Pa55word"}, \
        ["chap", "auth"]


def c_lun_0_controller(t, d):
    return ["--block", t.url(0), blockfile(d)], None, None


def c_path_missing(t, d):
    return ["--block", t.url(1), os.path.join(d, "does-not-exist")], None, None


def c_block_path_is_dir(t, d):
    p = os.path.join(d, "adir")
    os.mkdir(p)
    return ["--block", t.url(1), p], None, None


def c_json_unknown_field(t, d):
    return [spec_file(d, base_fields(t, targetPortl=t.tgt.portal)), blockfile(d)], \
        None, ["targetPortl"]


def c_json_lun_string(t, d):
    return [spec_file(d, base_fields(t, lun="1")), blockfile(d)], None, ["lun"]


def c_json_not_json(t, d):
    p = os.path.join(d, "spec.json")
    with open(p, "w") as f:
        f.write("{ this is not json")
    return [p, blockfile(d)], None, None


def c_json_bad_volume_mode(t, d):
    return [spec_file(d, base_fields(t, volumeMode="Blok")), blockfile(d)], None, None


def c_json_missing_iqn(t, d):
    f = base_fields(t)
    del f["iqn"]
    return [spec_file(d, f), blockfile(d)], None, ["iqn"]


def c_password_in_url(t, d):
    return ["--block", f"iscsi://{USER}:{PASSWORD}@127.0.0.1:{t.tgt.port}/{t.iqn}/1",
            blockfile(d)], None, None


def c_secret_file_0644(t, d):
    t.add_chap(USER, PASSWORD)
    p = H.write_secret_file(os.path.join(d, "chap.secret"),
                            {"node.session.auth.username": USER,
                             "node.session.auth.password": PASSWORD}, mode=0o644)
    os.chown(p, 65534, 65534)
    return ["--block", "--chap-secret-file", p, t.url(1, user=USER), blockfile(d)], \
        None, None


def c_secret_file_missing(t, d):
    return ["--block", "--chap-secret-file", os.path.join(d, "nope"),
            t.url(1, user=USER), blockfile(d)], None, None


CASES = [c_url_no_lun, c_url_bad_scheme, c_url_lun_not_number, c_url_bad_port,
         c_lun_256, c_unknown_iqn, c_lun_missing, c_nothing_listens,
         c_wrong_chap, c_lun_0_controller, c_path_missing, c_block_path_is_dir,
         c_json_unknown_field, c_json_lun_string, c_json_not_json,
         c_json_bad_volume_mode, c_json_missing_iqn, c_password_in_url,
         c_secret_file_0644, c_secret_file_missing]


def assert_nothing_left(lunfs, t, lundir):
    assert t.wait_connections(0, timeout=2) == 0, \
        f"session left at tgtd: {t.connections()}"
    left = H.mounts_under(lundir)
    assert left == [], f"mount left: {left}"
    st = lunfs.status()
    assert st["volumes"] == [] and st["mounts"] == [], st
    assert st["sessions"] == [], st


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[2:] for c in CASES])
def test_bad_mount(lunfs, target, lundir, case):
    argv, env, words = case(target, lundir)
    r = lunfs.run("mount", *argv, env=env)
    H.assert_one_error_line(r, words)
    for secret in (PASSWORD, "Not-The-Pa55word"):
        assert secret not in r.stderr and secret not in r.stdout
    assert_nothing_left(lunfs, target, lundir)
    for secret in (PASSWORD, "Not-The-Pa55word"):
        assert H.grep_tree(lunfs.state_dir, secret) == []


def test_path_already_a_lunfs_mount(lunfs, target, lundir):
    b = blockfile(lundir)
    lunfs.mount(target.url(1), b, "--block")
    r = lunfs.run("mount", "--block", target.url(2), b)
    H.assert_one_error_line(r)
    # The first mount is untouched; the second LUN left nothing behind.
    assert H.is_mountpoint(b)
    assert len(H.mounts_under(lundir)) == 1
    st = lunfs.status()
    assert len(st["volumes"]) == 1 and len(st["mounts"]) == 1
    assert st["volumes"][0]["spec"].endswith("/1")
    assert len(st["sessions"]) == 1 and st["sessions"][0]["refs"] == 1
    assert target.wait_connections(1, timeout=1) == 1
    # Same spec, other options: refused, naming the difference.
    r = lunfs.run("mount", "--block", "--read-only", target.url(1), b)
    H.assert_one_error_line(r, ["read-write"])
    # Same spec and options again (a retry): done already, nothing changes.
    r = lunfs.run("mount", "--block", target.url(1), b)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert len(H.mounts_under(lundir)) == 1
    assert lunfs.status()["volumes"][0]["mounts"] == 1
    assert target.wait_connections(1, timeout=1) == 1
    lunfs.umount(b)
    assert_nothing_left(lunfs, target, lundir)


def test_umount_not_mounted(lunfs, target, lundir):
    """Unmounting what is not mounted is what the caller wants already:
    success, with or without a daemon (kubelet's NodeUnpublish retries)."""
    b = blockfile(lundir)
    for p in (b, os.path.join(lundir, "does-not-exist")):
        r = lunfs.run("umount", p)
        assert r.returncode == 0 and r.stderr == "", r.stderr
    lunfs.run("shutdown")
    r = lunfs.run("umount", b)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.parametrize("argv", [
    ["mount"],
    ["mount", "iscsi://127.0.0.1/iqn.x/1"],
    ["mount", "--no-such-option", "iscsi://127.0.0.1/iqn.x/1", "/tmp"],
    ["no-such-command"],
    ["umount"],
], ids=["mount-no-args", "mount-no-path", "unknown-option", "unknown-command",
        "umount-no-args"])
def test_usage_errors(lunfs, lundir, argv):
    r = lunfs.run(*argv)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.strip(), "usage error printed nothing on stderr"
    assert H.mounts_under(lundir) == []
