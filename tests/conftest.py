import os
import re
import shutil
import tempfile

import pytest

import lunfs_harness as H

# Per-test limit: past it the daemon is killed so that a hung FUSE request
# cannot block the whole run.
TEST_TIME_LIMIT = float(os.environ.get("LUNFS_TEST_TIME_LIMIT", "90"))


@pytest.fixture(scope="session", autouse=True)
def fuse_transport():
    """LUNFS_TEST_FUSE_URING=1 (or 0) runs the session with the fuse
    module's enable_uring on (off), so that every scenario runs over
    io_uring (over /dev/fuse); restored at the end. Unset: as found."""
    want = os.environ.get("LUNFS_TEST_FUSE_URING")
    if want not in ("0", "1"):
        yield
        return
    assert os.path.exists(H.FUSE_URING_PARAM), (
        f"LUNFS_TEST_FUSE_URING={want}: {H.FUSE_URING_PARAM} missing")
    with H.fuse_uring("Y" if want == "1" else "N"):
        yield


@pytest.fixture(scope="session")
def tgt(tmp_path_factory):
    """A private tgtd for the whole run; SIGKILLed by PID at the end."""
    d = tmp_path_factory.mktemp("tgtd")
    t = H.Tgtd(d).start()
    yield t
    t.stop()


def _short_name(request):
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return name[:40].strip("-")


@pytest.fixture
def lundir():
    """A short tmp dir (unix socket paths are limited to 108 bytes)."""
    d = tempfile.mkdtemp(prefix="lunfs-", dir="/tmp")
    yield d
    H.unmount_all_under(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def targets(tgt, lundir, request):
    """Factory: targets('x') creates a target with a unique IQN; all are
    deleted (--force) at test end."""
    made = []
    base = _short_name(request)

    def make(suffix="t", allow_all=True, luns=None):
        t = tgt.new_target(f"{base}-{suffix}-{len(made)}", lundir)
        made.append(t)
        for lun, size in (luns or {}).items():
            t.add_lun(lun, size)
        if allow_all:
            t.allow_all()
        return t
    yield make
    for t in made:
        t.delete()


@pytest.fixture
def target(targets):
    """One target with LUN 1 and LUN 2 (16 MiB each), open to all."""
    return targets("t", luns={1: 16 * H.MiB, 2: 16 * H.MiB})


@pytest.fixture
def lunfs(targets, lundir, request):
    """The lunfs CLI with its own state dir. At teardown: lunfs shutdown,
    kill the daemon by PID if still alive, unmount leftovers, and fail on
    sanitizer reports in the daemon log. Depends on `targets` so that it is
    torn down before the targets are deleted."""
    state = os.path.join(lundir, "state")
    lf = H.Lunfs(state, lundir)
    lf.start_watchdog(TEST_TIME_LIMIT)
    yield lf
    problems = lf.teardown([lundir])
    if problems:
        pytest.fail("lunfs teardown: " + "\n".join(problems), pytrace=False)
