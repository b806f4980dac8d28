"""Test harness for lunfs: a private tgtd, targets/LUNs/CHAP/ACL helpers, and
a wrapper around the lunfs CLI with a private state directory.

Everything here talks only to 127.0.0.1 and ends only processes it started,
by PID.
"""

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IQN_PREFIX = "iqn.2026-11.io.lunfs.test"
MiB = 1024 * 1024


def build_dir():
    return os.environ.get("LUNFS_BUILD_DIR", os.path.join(REPO, "build"))


def require_tool(name):
    """Return the absolute path of NAME; raise (fail the test) if missing."""
    path = shutil.which(name)
    if path is None:
        for d in ("/usr/sbin", "/sbin", "/usr/bin"):
            cand = os.path.join(d, name)
            if os.access(cand, os.X_OK):
                return cand
        raise RuntimeError(f"required tool {name!r} is not installed (not on PATH)")
    return path


def free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def wait_until(pred, timeout=5.0, interval=0.05):
    """Poll PRED until it returns a truthy value or TIMEOUT passes; return
    the last value."""
    deadline = time.monotonic() + timeout
    while True:
        val = pred()
        if val or time.monotonic() >= deadline:
            return val
        time.sleep(interval)


FUSE_URING_PARAM = "/sys/module/fuse/parameters/enable_uring"


@contextlib.contextmanager
def fuse_uring(value):
    """The fuse module's enable_uring set to value ("Y" or "N") for new
    FUSE connections, restored afterwards."""
    with open(FUSE_URING_PARAM) as f:
        old = f.read().strip()
    with open(FUSE_URING_PARAM, "w") as f:
        f.write(value)
    try:
        yield
    finally:
        with open(FUSE_URING_PARAM, "w") as f:
            f.write(old)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def read_at(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def write_at(path, offset, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def run(argv, timeout=30, check=False, **kw):
    """subprocess.run with captured text output and a timeout."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          check=check, **kw)


# ---------------------------------------------------------------- mounts

def kernel_umount(mp, backing, timeout=30.0):
    """Unmount a kernel loop mount of BACKING at MP and wait until its loop
    device is released. Until then the kernel may still write to BACKING
    (a lazy unmount, or a mount kept busy for a moment, finishes later and
    writes the superblock back), over whatever the test writes next."""
    for _ in range(50):
        if run(["umount", mp]).returncode == 0:
            break
        time.sleep(0.1)
    else:
        run(["umount", "-l", mp])
    released = wait_until(
        lambda: run(["losetup", "-j", backing]).stdout.strip() == "",
        timeout=timeout, interval=0.05)
    assert released, f"the loop device of {backing} was not released " \
        f"within {timeout} s of unmounting {mp}"


def _unescape_mountinfo(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts():
    """List of (mountpoint, fstype, source) from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            out.append((_unescape_mountinfo(fields[4]),
                        rfields[0] if rfields else "",
                        _unescape_mountinfo(rfields[1]) if len(rfields) > 1 else ""))
    return out


def mounts_under(root):
    root = os.path.realpath(str(root))
    res = []
    for mp, fstype, src in mounts():
        if mp == root or mp.startswith(root + "/"):
            res.append((mp, fstype, src))
    return res


def is_mountpoint(path):
    path = os.path.realpath(str(path))
    return any(mp == path for mp, _, _ in mounts())


def unmount_all_under(root):
    """Unmount everything mounted under ROOT, deepest first. Returns the list
    of mountpoints that had to be cleaned up."""
    cleaned = []
    for _ in range(3):
        left = mounts_under(root)
        if not left:
            break
        for mp, fstype, _ in sorted(left, key=lambda m: -len(m[0])):
            cleaned.append(mp)
            if fstype.startswith("fuse"):
                r = subprocess.run(["fusermount3", "-u", "-z", mp],
                                   capture_output=True, timeout=10)
                if r.returncode == 0:
                    continue
            subprocess.run(["umount", "-l", mp], capture_output=True, timeout=10)
    return cleaned


# ---------------------------------------------------------------- tgtd

class Target:
    def __init__(self, tgt, tid, iqn, tmpdir):
        self.tgt = tgt
        self.tid = tid
        self.iqn = iqn
        self.tmpdir = tmpdir
        self.luns = {}  # lun -> backing path
        self.accounts = []

    def url(self, lun, user=None, port=None):
        u = f"{user}@" if user else ""
        return f"iscsi://{u}127.0.0.1:{port or self.tgt.port}/{self.iqn}/{lun}"

    def add_lun(self, lun, size=16 * MiB, path=None, readonly=False):
        if path is None:
            path = os.path.join(self.tmpdir, f"tid{self.tid}-lun{lun}.img")
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.truncate(size)
        args = ["--lld", "iscsi", "--op", "new", "--mode", "logicalunit",
                "--tid", str(self.tid), "--lun", str(lun), "-b", path]
        self.tgt.tgtadm(*args)
        if readonly:
            self.tgt.tgtadm("--lld", "iscsi", "--op", "update", "--mode",
                            "logicalunit", "--tid", str(self.tid), "--lun",
                            str(lun), "--params", "readonly=1")
        self.luns[lun] = path
        return path

    def allow_all(self):
        self.tgt.tgtadm("--lld", "iscsi", "--op", "bind", "--mode", "target",
                        "--tid", str(self.tid), "-I", "ALL")

    def allow_initiator(self, iqn):
        self.tgt.tgtadm("--lld", "iscsi", "--op", "bind", "--mode", "target",
                        "--tid", str(self.tid), "-Q", iqn)

    def add_chap(self, user, password, outgoing=False):
        """Create account USER and bind it to this target (incoming CHAP: the
        initiator proves itself; outgoing: the target proves itself)."""
        self.tgt.new_account(user, password)
        args = ["--lld", "iscsi", "--op", "bind", "--mode", "account",
                "--tid", str(self.tid), "--user", user]
        if outgoing:
            args.append("--outgoing")
        self.tgt.tgtadm(*args)
        self.accounts.append(user)

    def connections(self):
        return self.tgt.connections(self.tid)

    def wait_connections(self, n, timeout=5.0):
        """Poll until the target has exactly N connections; return the last
        count seen."""
        last = [None]

        def ok():
            last[0] = len(self.connections())
            return last[0] == n
        wait_until(ok, timeout)
        return last[0]

    def delete(self):
        self.tgt.tgtadm("--lld", "iscsi", "--op", "delete", "--force",
                        "--mode", "target", "--tid", str(self.tid), check=False)
        for user in self.accounts:
            self.tgt.tgtadm("--lld", "iscsi", "--op", "delete", "--mode",
                            "account", "--user", user, check=False)


class Tgtd:
    """A private tgtd on a random control port and a free iSCSI port."""

    def __init__(self, workdir):
        self.workdir = str(workdir)
        self.tgtd = require_tool("tgtd")
        self.tgtadm_bin = require_tool("tgtadm")
        self.proc = None
        self.control = None
        self.port = None
        self._tid = 0
        self._lock = threading.Lock()

    @property
    def portal(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        errors = []
        for _ in range(5):
            control = random.randint(2000, 32767)  # tgtd -C caps at 32767
            if os.path.exists(f"/var/run/tgtd/socket.{control}") or \
               os.path.exists(f"/var/run/tgtd/socket.{control}.lock"):
                continue
            port = free_tcp_port()
            log = open(os.path.join(self.workdir, f"tgtd-{control}.log"), "wb")
            proc = subprocess.Popen(
                [self.tgtd, "-f", "-C", str(control), "--iscsi",
                 f"portal=127.0.0.1:{port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
            log.close()
            self.proc, self.control, self.port = proc, control, port
            if self._wait_ready():
                return self
            errors.append(f"control {control} port {port}: rc={proc.poll()}")
            self.stop()
        raise RuntimeError("tgtd did not start: " + "; ".join(errors))

    def _wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            r = subprocess.run([self.tgtadm_bin, "-C", str(self.control), "--op",
                                "show", "--mode", "sys"], capture_output=True,
                               timeout=10)
            if r.returncode == 0:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), 1):
                        return True
                except OSError:
                    pass
            time.sleep(0.05)
        return False

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # tgtd ignores SIGTERM while it serves a session.
            os.kill(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for suffix in ("", ".lock"):
            try:
                os.unlink(f"/var/run/tgtd/socket.{self.control}{suffix}")
            except OSError:
                pass
        self.proc = None

    def tgtadm(self, *args, check=True):
        r = subprocess.run([self.tgtadm_bin, "-C", str(self.control), *args],
                           capture_output=True, text=True, timeout=20)
        if check and r.returncode != 0:
            raise RuntimeError(f"tgtadm {' '.join(args)} failed ({r.returncode}): "
                               f"{r.stdout}{r.stderr}")
        return r

    def new_target(self, name, tmpdir):
        with self._lock:
            self._tid += 1
            tid = self._tid
        iqn = f"{IQN_PREFIX}:{name}"
        self.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "target",
                    "--tid", str(tid), "-T", iqn)
        return Target(self, tid, iqn, str(tmpdir))

    def new_account(self, user, password):
        self.tgtadm("--lld", "iscsi", "--op", "new", "--mode", "account",
                    "--user", user, "--password", password)

    def connections(self, tid):
        """Connections of target TID as a list of dicts with keys session,
        connection, initiator, ip."""
        r = self.tgtadm("--lld", "iscsi", "--op", "show", "--mode", "conn",
                        "--tid", str(tid), check=False)
        if r.returncode != 0:
            if "can't find the target" in r.stderr + r.stdout:
                return []
            raise RuntimeError(f"tgtadm show conn failed: {r.stderr}")
        conns = []
        session = None
        for line in r.stdout.splitlines():
            s = line.strip()
            if s.startswith("Session:"):
                session = s.split(":", 1)[1].strip()
            elif s.startswith("Connection:"):
                conns.append({"session": session,
                              "connection": s.split(":", 1)[1].strip()})
            elif s.startswith("Initiator:") and conns:
                conns[-1]["initiator"] = s.split(":", 1)[1].strip()
            elif s.startswith("IP Address:") and conns:
                conns[-1]["ip"] = s.split(":", 1)[1].strip()
        return conns


# ---------------------------------------------------------------- lunfs CLI

FORBIDDEN_LOG = ("AddressSanitizer", "runtime error", "LeakSanitizer",
                 "ThreadSanitizer")


class Lunfs:
    """The lunfs CLI with a private state directory."""

    def __init__(self, state_dir, tmpdir):
        self.state_dir = str(state_dir)
        self.tmpdir = str(tmpdir)
        os.makedirs(self.state_dir, exist_ok=True)
        self.bin = os.path.join(build_dir(), "tools", "lunfs")
        self.daemon_bin = os.path.join(build_dir(), "tools", "lunfsd")
        self._n = 0
        self._watchdog = None
        self.watchdog_fired = False
        for b in (self.bin, self.daemon_bin):
            if not os.access(b, os.X_OK):
                raise RuntimeError(f"lunfs binary missing: {b} (build first; "
                                   f"LUNFS_BUILD_DIR={build_dir()})")

    # stdout/stderr go to files rather than pipes: a daemon that the CLI
    # spawns may inherit them, and waiting for pipe EOF would then hang.
    def run(self, *args, env=None, timeout=60, state_dir=True):
        self._n += 1
        outp = os.path.join(self.tmpdir, f".cli{self._n}.out")
        errp = os.path.join(self.tmpdir, f".cli{self._n}.err")
        e = {k: v for k, v in os.environ.items() if not k.startswith("LUNFS_")}
        e["LUNFS_BUILD_DIR"] = build_dir()
        if env:
            e.update(env)
        argv = [self.bin]
        if state_dir:
            argv += ["--state-dir", self.state_dir]
        argv += [str(a) for a in args]
        with open(outp, "wb") as out, open(errp, "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, env=e)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"lunfs {' '.join(argv[1:])} did not finish "
                                     f"within {timeout}s")
        with open(outp, "rb") as f:
            stdout = f.read().decode(errors="replace")
        with open(errp, "rb") as f:
            stderr = f.read().decode(errors="replace")
        return subprocess.CompletedProcess(argv, rc, stdout, stderr)

    def ok(self, *args, **kw):
        r = self.run(*args, **kw)
        assert r.returncode == 0, (f"lunfs {' '.join(map(str, args))} exited "
                                   f"{r.returncode}: {r.stderr.strip()}"
                                   f"\n--- daemon log tail ---\n{self.log_tail()}")
        return r

    def mount(self, spec, path, *opts, **kw):
        return self.ok("mount", *opts, spec, path, **kw)

    def umount(self, path, **kw):
        return self.ok("umount", path, **kw)

    def status(self):
        r = self.ok("status", "--json")
        try:
            return json.loads(r.stdout)
        except ValueError as ex:
            raise AssertionError(f"lunfs status --json printed no JSON ({ex}): "
                                 f"{r.stdout!r}")

    @property
    def log_path(self):
        return os.path.join(self.state_dir, "lunfsd.log")

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])

    def daemon_pid(self):
        try:
            with open(os.path.join(self.state_dir, "lunfsd.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def kill_daemon(self):
        pid = self.daemon_pid()
        if pid and pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            wait_until(lambda: not pid_alive(pid), 5)
            # The thread group leader turns zombie before its last thread
            # has exited and closed the control socket: until then a client
            # lands in the dead daemon's backlog and is reset.
            wait_until(lambda: not self._socket_answers(), 5)

    def _socket_answers(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(os.path.join(self.state_dir, "lunfsd.sock"))
            except OSError:
                return False
        return True

    def start_watchdog(self, seconds):
        """Kill the daemon if the test runs longer than SECONDS: that aborts
        FUSE requests which would otherwise block the test forever."""
        def fire():
            self.watchdog_fired = True
            self.kill_daemon()
        self._watchdog = threading.Timer(seconds, fire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def teardown(self, roots):
        """Shut the daemon down, clean up leftovers, and return a list of
        problems found (leftover mounts are cleaned, not reported as errors
        here; ASan/UBSan reports in the log are)."""
        problems = []
        if self._watchdog:
            self._watchdog.cancel()
        pid = self.daemon_pid()
        if pid and pid_alive(pid):
            try:
                r = self.run("shutdown", timeout=20)
                if r.returncode != 0:
                    problems.append(f"lunfs shutdown exited {r.returncode}: "
                                    f"{r.stderr.strip()}")
            except AssertionError as ex:
                problems.append(str(ex))
            if not wait_until(lambda: not pid_alive(pid), 10):
                problems.append(f"lunfsd {pid} still alive after shutdown; killed")
                self.kill_daemon()
        for root in roots:
            unmount_all_under(root)
        if self.watchdog_fired:
            problems.append("test exceeded its time limit; daemon was killed")
        bad = [l for l in self.log_text().splitlines()
               if any(w in l for w in FORBIDDEN_LOG)]
        if bad:
            problems.append("daemon log has sanitizer reports:\n" +
                            "\n".join(bad[:20]))
        return problems


# ---------------------------------------------------------------- helpers

def write_secret_file(path, values, mode=0o600, as_json=False):
    if as_json:
        text = json.dumps(values)
    else:
        text = "".join(f"{k}={v}\n" for k, v in values.items())
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(str(path), mode)
    return str(path)


def write_json_spec(path, **fields):
    with open(str(path), "w") as f:
        json.dump(fields, f)
    return str(path)


def make_file(path, size=0):
    with open(str(path), "wb") as f:
        if size:
            f.truncate(size)
    return str(path)


def dd(*args, timeout=60):
    r = run(["dd", "status=none", *args], timeout=timeout)
    assert r.returncode == 0, f"dd {' '.join(args)} failed: {r.stderr}"
    return r


def assert_one_error_line(r, words=None, code=1):
    """The CLI failed with CODE and exactly one line 'lunfs: ...' on stderr;
    if WORDS is given, one of them (case-insensitive) is in it."""
    lines = r.stderr.splitlines()
    assert r.returncode == code, (f"expected exit {code}, got {r.returncode}; "
                                  f"stderr={r.stderr!r}")
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert lines[0].startswith("lunfs: "), f"stderr line not 'lunfs: ...': {lines[0]!r}"
    assert len(lines[0]) > len("lunfs: "), "empty reason"
    if words:
        low = lines[0].lower()
        assert any(w.lower() in low for w in words), \
            f"stderr {lines[0]!r} mentions none of {words}"
    return lines[0]


def grep_tree(root, needle):
    """Files under ROOT whose bytes contain NEEDLE."""
    hits = []
    nb = needle.encode()
    for dirpath, _, files in os.walk(str(root)):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                with open(p, "rb") as f:
                    if nb in f.read():
                        hits.append(p)
            except OSError:
                pass
    return hits
