"""Session sharing, per-volume initiator names, CHAP and ACLs. The oracle is
tgtd's own view of its connections (tgtadm --op show --mode conn)."""
import os

import lunfs_harness as H

MiB = H.MiB
OTHER_INITIATOR = H.IQN_PREFIX + ":initiator-other"
AUTH_WORDS = ("chap", "authentication", "auth")


def blockfile(lundir, name):
    return H.make_file(os.path.join(lundir, name))


def session_for(status, iqn):
    return [s for s in status["sessions"] if s["target"] == iqn]


def test_two_luns_share_one_session(lunfs, target, lundir):
    b1, b2 = blockfile(lundir, "b1"), blockfile(lundir, "b2")
    lunfs.mount(target.url(1), b1, "--block")
    assert target.wait_connections(1) == 1
    lunfs.mount(target.url(2), b2, "--block")
    assert target.wait_connections(1, timeout=1) == 1, target.connections()
    st = lunfs.status()
    sess = session_for(st, target.iqn)
    assert len(sess) == 1, st["sessions"]
    assert sess[0]["refs"] == 2 and sess[0]["connected"] is True
    assert sess[0]["portal"] == target.tgt.portal
    assert len(st["volumes"]) == 2 and len(st["mounts"]) == 2

    lunfs.umount(b1)
    assert not H.is_mountpoint(b1) and H.is_mountpoint(b2)
    assert target.wait_connections(1, timeout=1) == 1
    sess = session_for(lunfs.status(), target.iqn)
    assert len(sess) == 1 and sess[0]["refs"] == 1

    lunfs.umount(b2)
    assert target.wait_connections(0, timeout=5) == 0, \
        "last umount did not log out of the target"
    st = lunfs.status()
    assert st["sessions"] == [] and st["volumes"] == [] and st["mounts"] == []


def test_same_lun_twice_is_one_volume_one_session(lunfs, target, lundir):
    b1, b2 = blockfile(lundir, "b1"), blockfile(lundir, "b2")
    lunfs.mount(target.url(1), b1, "--block")
    lunfs.mount(target.url(1), b2, "--block")
    assert target.wait_connections(1, timeout=1) == 1
    st = lunfs.status()
    assert len(st["volumes"]) == 1 and st["volumes"][0]["mounts"] == 2
    assert len(st["mounts"]) == 2
    # A write through one mount is read through the other, even where the
    # other had cached the old bytes.
    assert H.read_at(b2, 4096, 8192) == bytes(8192)
    data = os.urandom(8192)
    fd = os.open(b1, os.O_WRONLY)
    os.pwrite(fd, data, 4096)
    os.fsync(fd)
    os.close(fd)
    assert H.read_at(b2, 4096, 8192) == data, "stale data read via the other mount"
    lunfs.umount(b1)
    assert target.wait_connections(1, timeout=1) == 1
    lunfs.umount(b2)
    assert target.wait_connections(0) == 0


def test_own_initiator_name_opens_second_session(lunfs, target, lundir):
    b1, b2 = blockfile(lundir, "b1"), blockfile(lundir, "b2")
    lunfs.mount(target.url(1), b1, "--block")
    assert target.wait_connections(1) == 1
    default_init = target.connections()[0]["initiator"]
    assert default_init != OTHER_INITIATOR
    spec = H.write_json_spec(os.path.join(lundir, "spec.json"),
                             targetPortal=target.tgt.portal, iqn=target.iqn,
                             lun=2, initiatorName=OTHER_INITIATOR,
                             volumeMode="Block")
    lunfs.mount(spec, b2)
    assert target.wait_connections(2) == 2, target.connections()
    inits = sorted(c["initiator"] for c in target.connections())
    assert inits == sorted([default_init, OTHER_INITIATOR])
    st = lunfs.status()
    sess = session_for(st, target.iqn)
    assert len(sess) == 2
    assert sorted(s["initiator"] for s in sess) == inits
    assert all(s["refs"] == 1 for s in sess)
    lunfs.umount(b2)
    assert target.wait_connections(1) == 1
    assert target.connections()[0]["initiator"] == default_init
    lunfs.umount(b1)
    assert target.wait_connections(0) == 0


def test_initiator_name_option(lunfs, targets, lundir):
    t = targets("acl", allow_all=False, luns={1: 8 * MiB})
    t.allow_initiator(OTHER_INITIATOR)
    b = blockfile(lundir, "b")
    lunfs.mount(t.url(1), b, "--block", "--initiator-name", OTHER_INITIATOR)
    assert t.wait_connections(1) == 1
    assert t.connections()[0]["initiator"] == OTHER_INITIATOR
    lunfs.umount(b)
    assert t.wait_connections(0) == 0


def test_acl_admits_volume_with_its_initiator_name(lunfs, targets, lundir):
    t = targets("acl", allow_all=False, luns={1: 8 * MiB})
    t.allow_initiator(OTHER_INITIATOR)
    spec = H.write_json_spec(os.path.join(lundir, "spec.json"),
                             targetPortal=t.tgt.portal, iqn=t.iqn, lun=1,
                             initiatorName=OTHER_INITIATOR, volumeMode="Block")
    b = blockfile(lundir, "b")
    lunfs.mount(spec, b)
    assert t.wait_connections(1) == 1
    lunfs.umount(b)
    assert t.wait_connections(0) == 0


def test_acl_for_another_initiator_refuses(lunfs, targets, lundir):
    t = targets("acl", allow_all=False, luns={1: 8 * MiB})
    t.allow_initiator(OTHER_INITIATOR)
    b = blockfile(lundir, "b")
    r = lunfs.run("mount", "--block", t.url(1), b)
    H.assert_one_error_line(r)
    assert t.wait_connections(0, timeout=1) == 0
    assert not H.is_mountpoint(b)
    st = lunfs.status()
    assert st["volumes"] == [] and st["mounts"] == [] and st["sessions"] == []


# ---------------------------------------------------------------- CHAP

USER, PASSWORD = "lunfsuser", "S3cret-Chap-Pa55"
TUSER, TPASSWORD = "lunfstarget", "T4rget-Chap-Pa55"


def chap_target(targets, mutual=False):
    t = targets("chap", luns={1: 8 * MiB, 2: 8 * MiB})
    t.add_chap(USER, PASSWORD)
    if mutual:
        t.add_chap(TUSER, TPASSWORD, outgoing=True)
    return t


def secret_file(lundir, as_json=False, mutual=False, password=PASSWORD,
                password_in=TPASSWORD, name="chap.secret", mode=0o600):
    vals = {"node.session.auth.username": USER,
            "node.session.auth.password": password}
    if mutual:
        vals["node.session.auth.username_in"] = TUSER
        vals["node.session.auth.password_in"] = password_in
    return H.write_secret_file(os.path.join(lundir, name), vals, mode=mode,
                               as_json=as_json)


def chap_json_spec(lundir, t, lun=1):
    return H.write_json_spec(os.path.join(lundir, "spec.json"),
                             targetPortal=t.tgt.portal, iqn=t.iqn, lun=lun,
                             chapAuthSession=True, volumeMode="Block")


def test_chap_json_spec_secret_file(lunfs, targets, lundir):
    t = chap_target(targets)
    b = blockfile(lundir, "b")
    lunfs.mount(chap_json_spec(lundir, t), b, "--chap-secret-file",
                secret_file(lundir))
    assert t.wait_connections(1) == 1
    assert os.path.getsize(b) == 8 * MiB
    lunfs.umount(b)
    assert t.wait_connections(0) == 0


def test_chap_url_user_json_secret_file(lunfs, targets, lundir):
    t = chap_target(targets)
    b = blockfile(lundir, "b")
    lunfs.mount(t.url(1, user=USER), b, "--block", "--chap-secret-file",
                secret_file(lundir, as_json=True))
    assert t.wait_connections(1) == 1
    lunfs.umount(b)
    assert t.wait_connections(0) == 0


def test_chap_env(lunfs, targets, lundir):
    t = chap_target(targets)
    b = blockfile(lundir, "b")
    lunfs.mount(t.url(1, user=USER), b, "--block",
                env={"LUNFS_CHAP_USERNAME": USER, "LUNFS_CHAP_PASSWORD": PASSWORD})
    assert t.wait_connections(1) == 1
    lunfs.umount(b)
    assert t.wait_connections(0) == 0


def test_chap_missing_secret_fails(lunfs, targets, lundir):
    t = chap_target(targets)
    b = blockfile(lundir, "b")
    r = lunfs.run("mount", "--block", t.url(1), b)
    H.assert_one_error_line(r)
    assert t.wait_connections(0, timeout=1) == 0
    assert not H.is_mountpoint(b)


def test_chap_wrong_secret_fails(lunfs, targets, lundir):
    t = chap_target(targets)
    b = blockfile(lundir, "b")
    r = lunfs.run("mount", "--chap-secret-file",
                  secret_file(lundir, password="Wrong-Pa55word-x"),
                  chap_json_spec(lundir, t), b)
    H.assert_one_error_line(r, AUTH_WORDS)
    assert "Wrong-Pa55word-x" not in r.stderr
    assert t.wait_connections(0, timeout=1) == 0
    assert not H.is_mountpoint(b)
    st = lunfs.status()
    assert st["volumes"] == [] and st["mounts"] == [] and st["sessions"] == []


def test_chap_secret_file_needs_a_spec_that_uses_chap(lunfs, targets, lundir):
    """A secret file next to a spec without CHAP (URL without user@, JSON
    without chapAuthSession) is an error naming both ways to turn CHAP on,
    made before any login; the same file with user@ in the URL works."""
    t = chap_target(targets)
    b = blockfile(lundir, "b")
    sf = secret_file(lundir)
    plain_json = H.write_json_spec(os.path.join(lundir, "plain.json"),
                                   targetPortal=t.tgt.portal, iqn=t.iqn,
                                   lun=1, volumeMode="Block")
    for spec in (t.url(1), plain_json):
        r = lunfs.run("mount", "--block", "--chap-secret-file", sf, spec, b)
        line = H.assert_one_error_line(r, ["does not use CHAP"])
        assert "iscsi://USER@" in line and '"chapAuthSession": true' in line
        assert PASSWORD not in line
        assert t.connections() == [] and not H.is_mountpoint(b)
    # The hook's chapSecretFile goes the same way (lunfs fsck too).
    r = lunfs.run("fsck", "--chap-secret-file", sf, t.url(1))
    H.assert_one_error_line(r, ["does not use CHAP"])
    lunfs.mount(t.url(1, user=USER), b, "--block", "--chap-secret-file", sf)
    assert t.wait_connections(1) == 1
    lunfs.umount(b)


def test_target_requires_chap_is_not_a_wrong_secret(lunfs, targets, lundir):
    """tgtd answers a login without CHAP with the status of a wrong secret
    (Authentication failure, 0x0201); lunfs knows it offered none and says
    the target requires CHAP. Session secrets in the environment are for
    the mounts that use CHAP: a plain volume mounts with them set."""
    t = chap_target(targets)
    b = blockfile(lundir, "b")
    r = lunfs.run("mount", "--block", t.url(1), b)
    line = H.assert_one_error_line(r, ["the target requires CHAP"])
    assert "check the CHAP user and secret" not in line
    assert "iscsi://USER@" in line and "--chap-secret-file" in line
    assert t.wait_connections(0, timeout=1) == 0
    r = lunfs.run("mount", "--block", "--chap-secret-file",
                  secret_file(lundir, password="Wrong-Pa55word-x"),
                  t.url(1, user=USER), b)
    line = H.assert_one_error_line(r, ["check the CHAP user and secret"])
    assert "requires CHAP" not in line

    plain = targets("plain", luns={1: 8 * MiB})
    lunfs.mount(plain.url(1), b, "--block",
                env={"LUNFS_CHAP_USERNAME": USER,
                     "LUNFS_CHAP_PASSWORD": PASSWORD})
    assert plain.wait_connections(1) == 1
    lunfs.umount(b)


def test_mutual_chap(lunfs, targets, lundir):
    t = chap_target(targets, mutual=True)
    b = blockfile(lundir, "b")
    lunfs.mount(chap_json_spec(lundir, t), b, "--chap-secret-file",
                secret_file(lundir, mutual=True))
    assert t.wait_connections(1) == 1
    lunfs.umount(b)
    assert t.wait_connections(0) == 0


def test_mutual_chap_wrong_target_secret_fails(lunfs, targets, lundir):
    t = chap_target(targets, mutual=True)
    b = blockfile(lundir, "b")
    r = lunfs.run("mount", "--chap-secret-file",
                  secret_file(lundir, mutual=True, password_in="Wrong-Target-P4ss"),
                  chap_json_spec(lundir, t), b)
    H.assert_one_error_line(r, AUTH_WORDS)
    assert t.wait_connections(0, timeout=1) == 0
    assert not H.is_mountpoint(b)


def test_secrets_not_leaked(lunfs, targets, lundir):
    t = chap_target(targets, mutual=True)
    b1, b2 = blockfile(lundir, "b1"), blockfile(lundir, "b2")
    lunfs.mount(chap_json_spec(lundir, t, 1), b1, "--chap-secret-file",
                secret_file(lundir, mutual=True))
    lunfs.mount(t.url(2, user=USER), b2, "--block",
                env={"LUNFS_CHAP_USERNAME": USER, "LUNFS_CHAP_PASSWORD": PASSWORD})
    # (Whether mutual and one-way CHAP mounts share a session is not the
    # point here.)
    assert len(t.connections()) >= 1
    st_out = lunfs.ok("status", "--json").stdout
    st_text = lunfs.ok("status").stdout
    pid = lunfs.daemon_pid()
    assert pid and H.pid_alive(pid), "no live daemon pid in STATE_DIR/lunfsd.pid"
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().decode(errors="replace")
    for secret in (PASSWORD, TPASSWORD):
        assert secret not in st_out and secret not in st_text
        assert secret not in cmdline
        hits = H.grep_tree(lunfs.state_dir, secret)
        assert hits == [], f"secret found in {hits}"
    lunfs.umount(b1)
    lunfs.umount(b2)
    assert t.wait_connections(0) == 0
    for secret in (PASSWORD, TPASSWORD):
        assert H.grep_tree(lunfs.state_dir, secret) == []


def test_daemon_started_with_chap_env_does_not_keep_it(lunfs, targets, lundir):
    """The first command starts the daemon; a CHAP password in that
    command's environment must not live on in the daemon's environment."""
    t = chap_target(targets)
    b = blockfile(lundir, "b")
    lunfs.mount(t.url(1, user=USER), b, "--block",
                env={"LUNFS_CHAP_USERNAME": USER, "LUNFS_CHAP_PASSWORD": PASSWORD})
    pid = lunfs.daemon_pid()
    assert pid and H.pid_alive(pid)
    with open(f"/proc/{pid}/environ", "rb") as f:
        assert PASSWORD.encode() not in f.read()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert PASSWORD.encode() not in f.read()
    lunfs.umount(b)


def test_attached_chap_volume_is_not_shared_without_its_secret(lunfs, targets,
                                                               lundir):
    """A LUN attached with CHAP is not handed to a second mount that does
    not present the same credentials (a wrong or missing secret would
    otherwise skip authentication)."""
    t = chap_target(targets)
    b1, b2, b3 = (blockfile(lundir, n) for n in ("b1", "b2", "b3"))
    env_ok = {"LUNFS_CHAP_USERNAME": USER, "LUNFS_CHAP_PASSWORD": PASSWORD}
    lunfs.mount(t.url(1, user=USER), b1, "--block", env=env_ok)
    r = lunfs.run("mount", "--block", t.url(1, user=USER), b2,
                  env={"LUNFS_CHAP_USERNAME": USER,
                       "LUNFS_CHAP_PASSWORD": "not-the-secret-123"})
    H.assert_one_error_line(r, ["credentials", "chap"])
    assert not H.is_mountpoint(b2)
    lunfs.mount(t.url(1, user=USER), b3, "--block", env=env_ok)
    st = lunfs.status()
    assert len(st["mounts"]) == 2 and st["sessions"][0]["refs"] == 1
    lunfs.umount(b1)
    lunfs.umount(b3)
    assert t.wait_connections(0) == 0
