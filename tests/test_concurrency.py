"""Concurrency (issue 5): many clients mount and unmount volumes of one
target at once, for a bounded number of rounds.

Oracles, none of them lunfs's own bookkeeping alone:
- every CLI call has a timeout (no deadlock), and the final state is
  empty: status, /proc/self/mountinfo and tgtd's connection table;
- tgtd numbers sessions with a counter (TSIH, "Session: N" in tgtadm show
  conn) that it bumps by one per successful login. A probe mount before and
  after the run reads that counter, so the number of logins the target saw
  in between is exact, with no polling race;
- the daemon logs "logged in" and "logged out" once per session (session.c).
  Between the probes the lines for our IQN must alternate strictly, starting
  with a login and ending with a logout: a login while a session existed
  (refs > 0) or a logout that left another session would break the
  alternation. So every login was a 0 -> 1 transition of the reference
  count and every logout a 1 -> 0, and the target's login count must equal
  the number of such transitions the daemon reported;
- a sampler of tgtd's connections must never see two sessions at once
  (sampling can miss things, but anything it sees is real).
The first ROUNDS rounds run in lock step (a barrier after the mounts and
after the unmounts), so the test itself knows the count went 0 -> 1 exactly
once per round; the free-running rounds after them overlap at random."""
import os
import random
import re
import threading

import pytest

import lunfs_harness as H

MiB = H.MiB
BLOCK_CLIENTS = 8   # threads mounting block volumes (LUNs 1-4, two each)
FS_CLIENTS = 3      # threads mounting filesystem volumes (LUNs 5-6)
ROUNDS = 5          # lock-step rounds: all mount, all unmount
FREE_ROUNDS = 4     # then rounds at each client's own pace


@pytest.fixture
def ctgt(lundir):
    d = os.path.join(lundir, "ctgt")
    os.mkdir(d)
    t = H.Tgtd(d).start()
    yield t
    t.stop()


def tsih(t):
    conns = t.connections()
    assert len(conns) == 1, conns
    return int(conns[0]["session"])


def probe(lunfs, t, path):
    lunfs.mount(t.url(1), path, "--block")
    n = tsih(t)
    lunfs.umount(path)
    assert t.wait_connections(0) == 0
    return n


def session_lines(text, iqn):
    pat = re.compile(r"iscsi://[^ ]*/" + re.escape(iqn) + r": (logged in|logged out)")
    return [m.group(1) for m in pat.finditer(text)]


def test_many_clients_mount_umount(lunfs, ctgt, lundir):
    t = ctgt.new_target("conc", os.path.join(lundir, "ctgt"))
    for lun in (1, 2, 3, 4):
        t.add_lun(lun, 8 * MiB)
    for lun in (5, 6):
        t.add_lun(lun, 16 * MiB)
    t.allow_all()

    probe_path = H.make_file(os.path.join(lundir, "probe"))
    first = probe(lunfs, t, probe_path)
    log_from = len(lunfs.log_text())

    errors = []
    max_conns = [0]
    stop = threading.Event()      # ends the sampler

    def sampler():
        while not stop.is_set():
            try:
                max_conns[0] = max(max_conns[0], len(t.connections()))
            except Exception as ex:  # tgtadm hiccup: report, keep going
                errors.append(f"sampler: {ex!r}")
            stop.wait(0.05)

    nclients = BLOCK_CLIENTS + FS_CLIENTS
    barrier = threading.Barrier(nclients, timeout=90)

    def block_round(i, rnd, step):
        path = os.path.join(lundir, f"blk{i}")
        if step == "mount":
            lunfs.mount(t.url(1 + i % 4), path, "--block", timeout=60)
            assert os.path.getsize(path) == 8 * MiB
            # Each client owns one 4 KiB slot of its LUN.
            rec = f"client {i} round {rnd}".encode().ljust(4096, b".")
            H.write_at(path, (i // 4) * 4096, rec)
            assert H.read_at(path, (i // 4) * 4096, 4096) == rec
        else:
            lunfs.umount(path, timeout=60)

    def fs_round(j, rnd, step):
        d = os.path.join(lundir, f"fs{j}")
        if step == "mount":
            lunfs.mount(t.url(5 + j % 2), d, timeout=60)
            name = os.path.join(d, f"c{j}")
            with open(name, "w") as f:
                f.write(f"client {j} round {rnd}")
            with open(name) as f:
                assert f.read() == f"client {j} round {rnd}"
        else:
            lunfs.umount(d, timeout=60)

    def client(kind, k):
        fn = block_round if kind == "block" else fs_round
        if kind == "block":
            H.make_file(os.path.join(lundir, f"blk{k}"))
        else:
            os.mkdir(os.path.join(lundir, f"fs{k}"))
        rng = random.Random(k)
        rnd = step = None
        try:
            for rnd in range(ROUNDS):
                for step in ("mount", "umount"):
                    fn(k, rnd, step)
                    barrier.wait()
            for rnd in range(ROUNDS, ROUNDS + FREE_ROUNDS):
                for step in ("mount", "umount"):
                    fn(k, rnd, step)
                    threading.Event().wait(rng.random() * 0.2)
        except threading.BrokenBarrierError:
            pass  # another client failed and said why
        except Exception as ex:
            errors.append(f"{kind} client {k} round {rnd} {step}: {ex}")
            barrier.abort()

    threads = [threading.Thread(target=client, args=("block", i), daemon=True)
               for i in range(BLOCK_CLIENTS)]
    threads += [threading.Thread(target=client, args=("fs", j), daemon=True)
                for j in range(FS_CLIENTS)]
    samp = threading.Thread(target=sampler, daemon=True)
    samp.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join(150)
    stop.set()
    samp.join(10)
    assert not any(th.is_alive() for th in threads), \
        "a client is stuck (deadlock?)\n" + lunfs.log_tail()
    assert errors == [], "\n".join(errors[:10]) + "\n" + lunfs.log_tail()

    # Nothing leaked.
    st = lunfs.status()
    assert st["sessions"] == [] and st["volumes"] == [] and st["mounts"] == [], st
    assert H.mounts_under(lundir) == []
    assert t.wait_connections(0) == 0
    assert max_conns[0] <= 1, f"target saw {max_conns[0]} sessions at once"

    text = lunfs.log_text()[log_from:]
    last = probe(lunfs, t, probe_path)
    target_logins = last - first - 1
    lines = session_lines(text, t.iqn)
    assert lines, "daemon logged no session lines"
    assert all(a != b for a, b in zip(lines, lines[1:])) and \
        lines[0] == "logged in" and lines[-1] == "logged out", \
        f"logins and logouts do not alternate: {lines}"
    transitions = lines.count("logged in")
    # Lock-step rounds: exactly one 0 -> 1 each; free rounds: at least one.
    assert ROUNDS + 1 <= transitions <= ROUNDS + FREE_ROUNDS * nclients
    print(f"logins at target {target_logins}, daemon transitions {transitions}, max conns {max_conns[0]}")
    assert target_logins == transitions, \
        (f"target saw {target_logins} logins, the daemon reported "
         f"{transitions} 0->1 transitions")
    # The filesystems are consistent after all that.
    for lun in (5, 6):
        r = H.run(["e2fsck", "-fn", t.luns[lun]], timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def test_reads_racing_truncate_never_see_another_files_blocks(lunfs, target,
                                                               lundir):
    """Reads reply from the device's I/O thread after they have let go of
    the inode's lock (fsops' asynchronous read path). A truncate racing
    them must still not free blocks they are reading: a reader re-reads
    file A (all 0xAA) with O_DIRECT, so every read reaches lunfs, while a
    writer truncates A, fills B with 0xBB (the allocator hands out A's
    freed blocks first), deletes B and rewrites A. A read may be short (A
    was empty) but must never return a byte of B. (tgtd serves one
    session's commands in order, so the window is narrow: this guards the
    reply path as a whole — buffers, offsets, lengths — more than it can
    force the race itself.)"""
    import mmap
    d = os.path.join(lundir, "fs")
    os.mkdir(d)
    lunfs.mount(target.url(1), d)
    a, b = os.path.join(d, "a"), os.path.join(d, "b")
    A, B = b"\xaa" * MiB, b"\xbb" * MiB
    with open(a, "wb") as f:
        f.write(A)
    done = threading.Event()
    # Set by the reader each time a read returned bytes of A: the writer
    # waits for one before it truncates again, so that reads of a
    # non-empty A race every truncate. (Without it, under load the reader
    # could run only while A was empty, when the kernel answers from its
    # cached size without asking lunfs, and the test checked nothing.)
    saw_data = threading.Event()
    seen = {"reads": 0, "bytes": 0, "bad": None, "error": None}

    def reader():
        buf = mmap.mmap(-1, MiB)
        fd = os.open(a, os.O_RDONLY | os.O_DIRECT)
        try:
            while not done.is_set():
                n = os.preadv(fd, [buf], 0)
                seen["reads"] += 1
                seen["bytes"] += n
                chunk = buf[:n]
                if chunk.strip(b"\xaa\x00"):
                    seen["bad"] = sorted(set(chunk))[:8]
                    return
                if n:
                    saw_data.set()
        except OSError as e:
            seen["error"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for rounds in range(60):
            if not saw_data.wait(30):
                break  # the reader stopped or is stuck: see below
            saw_data.clear()
            os.truncate(a, 0)
            with open(b, "wb") as f:
                f.write(B)
            os.unlink(b)
            with open(a, "r+b") as f:
                f.write(A)
    finally:
        done.set()
        t.join(60)
    assert not t.is_alive(), "reader hung"
    assert seen["error"] is None, seen["error"]
    assert seen["bad"] is None, f"a read of A returned bytes {seen['bad']}"
    assert seen["reads"] > 0 and seen["bytes"] > 0, seen
    assert rounds == 59, f"the reader saw no data of A for 30 s ({seen})"
    with open(a, "rb") as f:
        assert f.read() == A
    lunfs.umount(d)
    r = H.run(["e2fsck", "-fn", target.luns[1]], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
