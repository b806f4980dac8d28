"""The harness itself, against tgtd and libiscsi's own tools only."""
import lunfs_harness as H


def test_tgtd_up(tgt):
    r = tgt.tgtadm("--op", "show", "--mode", "sys")
    assert "State: ready" in r.stdout


def test_target_lun_size(target):
    r = H.run(["iscsi-readcapacity16", target.url(1)])
    assert r.returncode == 0, r.stderr
    assert "Total size:16777216" in r.stdout
    r = H.run(["iscsi-inq", target.url(1)])
    assert r.returncode == 0, r.stderr
    assert "DIRECT_ACCESS" in r.stdout
    assert target.connections() == []


def test_lun_data_visible_over_iscsi(target, lundir):
    # iscsi-inq/readcapacity do not read data; iscsi-perf reads blocks, so a
    # held connection is visible at tgtd while it runs.
    import subprocess
    p = subprocess.Popen(["iscsi-perf", "-t", "2", target.url(1)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        n = target.wait_connections(1, timeout=3)
        assert n == 1
        conns = target.connections()
        assert conns[0]["ip"] == "127.0.0.1"
        assert conns[0]["initiator"]
    finally:
        p.kill()
        p.wait()
    assert target.wait_connections(0, timeout=5) == 0


def test_chap_account(targets):
    t = targets("chap", luns={1: 8 * H.MiB})
    t.add_chap("harnessuser", "harnesspass12")
    r = H.run(["iscsi-inq", t.url(1)])
    assert r.returncode != 0, "login without CHAP should fail"
    r = H.run(["iscsi-inq", f"iscsi://harnessuser%harnesspass12@127.0.0.1:{t.tgt.port}/{t.iqn}/1"])
    assert r.returncode == 0, r.stderr
    r = H.run(["iscsi-inq", f"iscsi://harnessuser%wrongpass1234@127.0.0.1:{t.tgt.port}/{t.iqn}/1"])
    assert r.returncode != 0


def test_initiator_acl(targets):
    t = targets("acl", allow_all=False, luns={1: 8 * H.MiB})
    t.allow_initiator(H.IQN_PREFIX + ":allowed")
    r = H.run(["iscsi-inq", "-i", H.IQN_PREFIX + ":other", t.url(1)])
    assert r.returncode != 0
    r = H.run(["iscsi-inq", "-i", H.IQN_PREFIX + ":allowed", t.url(1)])
    assert r.returncode == 0, r.stderr


def test_mutual_chap_account(targets):
    t = targets("mutual", luns={1: 8 * H.MiB})
    t.add_chap("mutin", "mutinpass1234")
    t.add_chap("mutout", "mutoutpass123", outgoing=True)
    base = f"iscsi://mutin%mutinpass1234@127.0.0.1:{t.tgt.port}/{t.iqn}/1"
    r = H.run(["iscsi-inq", base + "?target_user=mutout&target_password=mutoutpass123"])
    assert r.returncode == 0, r.stderr
    r = H.run(["iscsi-inq", base + "?target_user=mutout&target_password=wrongwrong123"])
    assert r.returncode != 0, "libiscsi accepted a target with the wrong mutual secret"
