"""Host-wide reservations: across users, with planted lock tables, and by the ten thousand."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_services import locks
from pytest_services._reserve import registry as _registry

OTHER_UID = 65534

# Reserves ports and displays as the user it is told to become, prints them (and any warning),
# then holds them until its stdin closes.  Everything is imported before it drops its
# privileges: the interpreter's own files may not be readable by that user.
ALLOCATOR = """
import json, logging, os, sys, warnings
from pytest_services._reserve import displays, ports
from pytest_services._reserve import registry as _registry

lock_dir, count, uid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if uid != os.getuid():
    os.setgid(uid)
    os.setuid(uid)
log = logging.getLogger("allocator")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    got = [ports.get_free_port(lock_dir, log, 30) for _ in range(count)]
    shown = [displays.get_free_display(lock_dir, log, 30) for _ in range(3)]
print(json.dumps({"ports": got, "displays": shown, "warnings": [str(w.message) for w in caught],
                  "tables": sorted({t.path for t in _registry._tables.values()})}), flush=True)
sys.stdin.read()
"""


def _allocate(lock_dir: str, count: int, uid: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", ALLOCATOR, lock_dir, str(count), str(uid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _report(process: subprocess.Popen[str]) -> dict[str, list[object]]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.communicate("")[1]
    report: dict[str, list[object]] = json.loads(line)
    return report


@pytest.fixture
def host_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private stand-in for ``/tmp`` as the folder of the host-wide tables: world-writable
    and sticky, like ``/tmp`` itself."""
    path = tempfile.mkdtemp(prefix="host-locks-", dir="/tmp")
    os.chmod(path, 0o1777)
    monkeypatch.setenv(_registry.HOST_LOCK_DIR_ENV, path)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def lock_dir_of(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """Makes a lock folder of the given user, in /tmp where any user can reach it."""
    made: list[str] = []

    def make(uid: int) -> str:
        made.append(tempfile.mkdtemp(prefix=f"locks-{uid}-", dir="/tmp"))
        os.chown(made[-1], uid, uid)
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def other_user() -> int:
    if os.getuid() != 0:
        pytest.skip("needs root to act as a second user")
    return OTHER_UID


def test_two_users_never_share_ports_or_displays(
    host_dir: str, other_user: int, lock_dir_of: Callable[[int], str]
) -> None:
    env = dict(os.environ)
    mine = _allocate(lock_dir_of(os.getuid()), 300, os.getuid(), env)
    theirs = _allocate(lock_dir_of(other_user), 300, other_user, env)
    try:
        reports = [_report(mine), _report(theirs)]
    finally:
        outputs = [proc.communicate("") for proc in (mine, theirs)]
    for report, (_out, err) in zip(reports, outputs):
        assert report["warnings"] == [], err
        assert report["tables"] == [
            f"{host_dir}/pytest-services-display.table",
            f"{host_dir}/pytest-services-port.table",
        ]
    ports = [p for r in reports for p in r["ports"]]
    displays = [d for r in reports for d in r["displays"]]
    assert len(ports) == len(set(ports)) == 600
    assert len(displays) == len(set(displays)) == 6


@pytest.mark.parametrize("planted", ["folder", "symlink", "foreign file"])
def test_planted_table_falls_back_to_the_users_own(
    host_dir: str, other_user: int, planted: str, lock_dir_of: Callable[[int], str]
) -> None:
    table = Path(host_dir, "pytest-services-port.table")
    if planted == "folder":
        table.mkdir()
        reason = "Is a directory"
    elif planted == "symlink":
        table.symlink_to("/etc/passwd")
        reason = "it is a symbolic link"
    else:
        table.write_text("")
        table.chmod(0o600)  # root's, closed to the other user
        reason = "Permission denied"
    lock_dir = lock_dir_of(other_user)
    process = _allocate(lock_dir, 5, other_user, dict(os.environ))
    try:
        report = _report(process)
    finally:
        process.communicate("")
    assert len(set(report["ports"])) == 5
    (warning,) = report["warnings"]
    assert warning == (
        f"Cannot open the lock table {table}: {reason}. Reserving ports in "
        f"{lock_dir}/port.table instead, which only your own sessions see: other users' "
        f"sessions on this host may pick the same ports. Remove {table}, or set "
        f"{_registry.HOST_LOCK_DIR_ENV} to a folder every user may write to."
    )
    assert f"{host_dir}/pytest-services-display.table" in report["tables"]
    assert Path("/etc/passwd").read_text().startswith("root:")  # never written to


@pytest.mark.slow
def test_twenty_thousand_ports_under_ulimit_1024(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        """
    )
    pytester.makepyfile(
        """
        import os, socket

        def test_many(port_getter):
            before = len(os.listdir("/proc/self/fd"))
            ports = [port_getter() for _ in range(20000)]
            assert len(set(ports)) == 20000
            assert len(os.listdir("/proc/self/fd")) - before <= 2
            with socket.socket() as sock:  # still reserved, and free to bind
                sock.bind(("127.0.0.1", ports[0]))

        def test_after(port_getter, tmp_path):
            assert port_getter()
            (tmp_path / "still-works").write_text("yes")
        """
    )
    # Ports from the kernel's ephemeral range, which sessions on their defaults leave alone,
    # so that this test does not starve other test sessions on the host.
    result = pytester.runpytest_subprocess(
        "-p", "no:xdist", "-p", "no:cacheprovider", "--services-port-range=33000-60000"
    )
    result.assert_outcomes(passed=2)


HOLD = """
import logging, sys
from pytest_services import locks
port = locks.lock_resource("port", lambda taken: int(sys.argv[2]), sys.argv[1], logging.getLogger())
print(port, flush=True)
sys.stdin.read()
"""


def test_every_holder_is_listed_whatever_order_they_locked_in(
    host_dir: str, tmp_path: Path
) -> None:
    # The kernel answers a lock query with the first conflicting lock it keeps, which is
    # not the lowest one when several holders took ports in decreasing order.
    holders = []
    try:
        for port in (20500, 20300, 20100):
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLD, str(tmp_path), str(port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            holders.append(holder)
            assert holder.stdout is not None and holder.stdout.readline() == f"{port}\n"
        with locks.locked_resources("port", tmp_path) as taken:
            assert {20100, 20300, 20500} <= set(taken)
    finally:
        for holder in holders:
            holder.communicate("")
