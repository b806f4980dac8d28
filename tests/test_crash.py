"""Crash safety through the journal (issue 16): lunfsd is killed with -9 at
random moments of a churn (copies, renames, unlinks, appends with fsync)
against a real tgtd, several rounds. Each time the next daemon needs only a
journal replay (its log says so and never runs e2fsck), every fsync'd file
is there with its bytes, and e2fsck -fn finds nothing to fix. Oracles:
e2fsck, the daemon's log, the files read back."""
import os
import random
import shutil
import threading

import lunfs_harness as H

MiB = H.MiB


def churn(d, stop, synced, errors, seed):
    """Until stop: create, copy, rename, unlink, append + fsync. synced maps
    a name to the bytes it had at its last fsync."""
    rnd = random.Random(seed)
    n = 0
    try:
        while not stop.is_set():
            n += 1
            name = f"c{seed}-{n}"
            data = rnd.randbytes(rnd.choice([100, 5000, 70000, 300000]))
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            if n % 3 == 0:
                os.rename(os.path.join(d, name),
                          os.path.join(d, "sub", name + ".r"))
            if n % 4 == 0 and n > 4:
                old = f"c{seed}-{n - 4}"
                for p in (os.path.join(d, old),
                          os.path.join(d, "sub", old + ".r")):
                    if os.path.exists(p):
                        os.unlink(p)
            if n % 5 == 0:
                shutil.copyfile(os.path.join(d, "log"),
                                os.path.join(d, f"copy{seed}-{n}"))
            with open(os.path.join(d, "log"), "ab") as f:
                line = f"{seed} {n}\n".encode() * 20
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
                f.seek(0)
            with open(os.path.join(d, "log"), "rb") as f:
                synced["log"] = f.read()
    except OSError as ex:
        errors.append(ex)  # the daemon died under us: expected


def test_kill9_during_churn_needs_only_replay(lunfs, targets, lundir):
    t = targets("crash", luns={1: 64 * MiB})
    d = os.path.join(lundir, "fs")
    os.mkdir(d)
    lunfs.mount(t.url(1), d)
    os.mkdir(os.path.join(d, "sub"))
    with open(os.path.join(d, "log"), "wb") as f:
        f.write(b"start\n")
        f.flush()
        os.fsync(f.fileno())
    rnd = random.Random(16)
    for rnd_i in range(3):
        stop = threading.Event()
        synced, errors = {}, []
        th = threading.Thread(target=churn,
                              args=(d, stop, synced, errors, rnd_i))
        th.start()
        # A random moment of the churn, after at least one fsync.
        assert H.wait_until(lambda: "log" in synced, 30), errors
        threading.Event().wait(rnd.uniform(0.2, 1.5))
        lunfs.kill_daemon()
        stop.set()
        th.join(60)
        assert not th.is_alive(), "churn stuck after the daemon died"
        want_log = synced["log"]

        # The next command starts a daemon that replays (after waiting out
        # the dead holder's MMP interval) and serves again.
        assert H.wait_until(lambda: lunfs.status()["mounts"], 60), \
            lunfs.log_tail()
        assert H.wait_until(
            lambda: lunfs.log_text().count("recovered by journal replay")
            == rnd_i + 1, 60), lunfs.log_tail()
        assert H.wait_until(
            lambda: os.path.exists(os.path.join(d, "log")), 60), \
            lunfs.log_tail()
        log = lunfs.log_text()
        assert "e2fsck" not in log, "a journaled volume was repaired:\n" + \
            lunfs.log_tail()
        with open(os.path.join(d, "log"), "rb") as f:
            got = f.read()
        # The fsync'd bytes are there; an append that was in flight may
        # be there too, whole or not at all.
        assert got.startswith(want_log), (len(got), len(want_log))
        assert got == want_log or got.endswith(b"\n")

    lunfs.umount(d)
    assert t.wait_connections(0) == 0
    r = H.run(["e2fsck", "-fn", t.luns[1]], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
