"""Port and display reservations: unique under real contention, never stale, clear on bad input."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_services import locks
from pytest_services._reserve import ports
from pytest_services._reserve import registry as _registry
from pytest_services.folders import FolderError
from pytest_services.locks import (
    LockError,
    file_lock,
    get_free_display,
    get_free_port,
    lock_resource,
    locked_resources,
    unlock_display,
    unlock_port,
    unlock_resource,
)

log = logging.getLogger("test_locks")

# One competing process: reserves ports and displays, binds every port to prove it is free,
# reports, then holds everything until told to stop (its stdin closes).
ALLOCATOR = """
import json, logging, socket, sys
from pytest_services.locks import get_free_display, get_free_port

lock_dir, count = sys.argv[1], int(sys.argv[2])
log = logging.getLogger("allocator")
ports = [get_free_port(lock_dir, log, 30) for _ in range(count)]
displays = [get_free_display(lock_dir, log, 30) for _ in range(3)]
sockets = []
for port in ports:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    sockets.append(sock)
print(json.dumps({"ports": ports, "displays": displays}), flush=True)
sys.stdin.read()
"""


def _start_allocators(lock_dir: Path, processes: int, count: int) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", ALLOCATOR, str(lock_dir), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]


def test_unique_across_competing_processes(tmp_path: Path) -> None:
    allocators = _start_allocators(tmp_path, processes=6, count=30)
    try:
        reports = []
        for proc in allocators:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, proc.communicate()[1]
            reports.append(json.loads(line))
        ports = [p for r in reports for p in r["ports"]]
        displays = [d for r in reports for d in r["displays"]]
        assert len(ports) == len(set(ports)) == 180
        assert len(displays) == len(set(displays)) == 18
        low, high = locks.ephemeral_port_range()
        assert not any(low <= port <= high for port in ports)
    finally:
        for proc in allocators:
            proc.communicate("")


def test_killed_holder_frees_its_ports_at_once(tmp_path: Path) -> None:
    (holder,) = _start_allocators(tmp_path, processes=1, count=5)
    assert holder.stdout is not None
    held = json.loads(holder.stdout.readline())["ports"]
    with locked_resources("port", tmp_path) as taken:
        assert set(held) <= set(taken)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with locked_resources("port", tmp_path) as taken:
        assert not set(held) & set(taken)
    wanted = iter(held)
    got = [lock_resource("port", lambda _taken: next(wanted), tmp_path, log) for _ in held]
    assert got == held
    for port in got:
        unlock_port(port, tmp_path, log)


SESSION_TEST = """
import json, os, pathlib, socket, time

OUT = pathlib.Path({out!r})

def test_reserve(port_getter, display_getter, worker_id):
    ports = [port_getter() for _ in range(10)]
    displays = [display_getter() for _ in range(2)]
    held = [socket.socket() for _ in ports]
    for sock, port in zip(held, ports):
        sock.bind(("127.0.0.1", port))
    me = OUT / f"{{os.getpid()}}.json"
    me.write_text(json.dumps({{"ports": ports, "displays": displays}}))
    deadline = time.monotonic() + 60
    while len(list(OUT.glob("*.json"))) < 4:
        assert time.monotonic() < deadline, "the other workers never reported"
        time.sleep(0.05)
"""


def test_two_concurrent_sessions_under_xdist(pytester: pytest.Pytester) -> None:
    out = pytester.path / "out"
    out.mkdir()
    pytester.makepyfile(SESSION_TEST.format(out=str(out)))
    sessions = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-n",
                "2",
                "-p",
                "no:cacheprovider",
                "-q",
                "--dist",
                "each",
            ],
            cwd=pytester.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=180)[0] for proc in sessions]
    for proc, output in zip(sessions, outputs):
        assert proc.returncode == 0, output
    reports = [json.loads(path.read_text()) for path in out.glob("*.json")]
    assert len(reports) == 4
    ports = [p for r in reports for p in r["ports"]]
    displays = [d for r in reports for d in r["displays"]]
    assert len(ports) == len(set(ports)) == 40
    assert len(displays) == len(set(displays)) == 8


def test_port_getter_releases_at_session_end(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_services._reserve import registry as _registry

        def test_port(port_getter, lock_dir):
            port = port_getter()
            assert isinstance(port, int)
            assert _registry.is_taken("port", port, lock_dir)
            print(f"PORT={port} LOCKDIR={lock_dir}")
        """
    )
    result = pytester.runpytest_subprocess("-s", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    line = next(line for line in result.outlines if "PORT=" in line)
    port, lock_dir = (part.split("=", 1)[1] for part in line.split()[-2:])
    assert not _registry.is_taken("port", int(port), lock_dir)


def test_file_lock_as_real_conftest_files_use_it(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with file_lock(str(path), remove=False, timeout=30) as fd:
        fd.seek(0)
        fd.truncate()
        fd.write(json.dumps({"version": 1}))
        fd.flush()
    with file_lock(path, remove=False) as fd:
        assert json.loads(fd.read()) == {"version": 1}
    with file_lock(path):
        pass
    assert not path.exists()


def test_file_lock_times_out_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "busy.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys
            from pytest_services.locks import file_lock
            with file_lock({str(path)!r}) as fd:
                print("locked", flush=True)
                sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        started = time.monotonic()
        with (
            pytest.raises(
                LockError, match=r"Timed out after 0.5 s waiting for the lock file .*busy.lock"
            ),
            file_lock(path, timeout=0.5),
        ):
            pass
        assert time.monotonic() - started >= 0.5
    finally:
        holder.communicate("")
    with file_lock(path, timeout=0.5):
        pass


def test_module_functions_of_2_2(tmp_path: Path) -> None:
    port = get_free_port(str(tmp_path), log, 20)
    display = get_free_display(str(tmp_path), log, 20)
    with locked_resources("port", str(tmp_path)) as taken:
        assert port in taken
    with locked_resources("display", str(tmp_path)) as taken:
        assert display in taken
    unlock_port(port, str(tmp_path), log)
    unlock_display(display, str(tmp_path), log)
    with locked_resources("port", str(tmp_path)) as taken:
        assert port not in taken
        free = next(p for p in range(12345, 13000) if p not in taken)
        taken.append(free)  # reserving through the list, as 2.2 allowed
    with locked_resources("port", str(tmp_path)) as taken:
        assert free in taken
        taken.remove(free)
    with locked_resources("port", str(tmp_path)) as taken:
        assert free not in taken
    with locked_resources("name", str(tmp_path)) as names:
        names.append("alpha")  # resources that are not numbers have a lock file each
    assert (tmp_path / "name-alpha.lock").exists()
    with locked_resources("name", str(tmp_path)) as names:
        assert names == ["alpha"]
        names.remove("alpha")
    assert not (tmp_path / "name-alpha.lock").exists()
    token = lock_resource("token", lambda taken: len(taken), str(tmp_path), log, 5)
    second = lock_resource("token", lambda taken: len(taken), str(tmp_path), log, 5)
    assert (token, second) == (0, 1)
    unlock_resource("token", token, str(tmp_path), log)
    unlock_resource("token", second, str(tmp_path), log)


def test_display_with_an_x_lock_is_skipped(tmp_path: Path) -> None:
    first = get_free_display(tmp_path, log)
    unlock_display(first, tmp_path, log)
    fake = Path(locks.X_LOCK.format(first))
    fake.write_text(f"{os.getpid():>10}\n")  # held by a live process
    try:
        second = get_free_display(tmp_path, log)
        assert second != first
        unlock_display(second, tmp_path, log)
    finally:
        fake.unlink()


def test_stale_x_lock_of_a_dead_server_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    first = get_free_display(tmp_path, log)
    unlock_display(first, tmp_path, log)
    stale = Path(locks.X_LOCK.format(first))
    stale.write_text(f"{dead.pid:>10}\n")
    try:
        assert get_free_display(tmp_path, log) == first
        unlock_display(first, tmp_path, log)
    finally:
        stale.unlink()


def test_display_with_only_an_abstract_socket_is_skipped(tmp_path: Path) -> None:
    import socket

    first = get_free_display(tmp_path, log)
    unlock_display(first, tmp_path, log)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind("\0" + locks.X_SOCKET.format(first))
        server.listen()
        second = get_free_display(tmp_path, log)
        assert second != first
        unlock_display(second, tmp_path, log)


def test_corrupt_lock_file_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "name-alpha.lock"
    path.write_bytes(b"\x00\xffgarbage{{{")
    name = lock_resource("name", lambda taken: "alpha", tmp_path, log)
    assert name == "alpha"
    assert path.read_text() == f"held by pid {os.getpid()}\n"
    unlock_resource("name", name, tmp_path, log)


def test_unusable_lock_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "name-beta.lock").mkdir()
    with pytest.raises(
        LockError, match=r"Cannot open the lock file .*name-beta.lock: Is a directory"
    ):
        lock_resource("name", lambda taken: "beta", tmp_path, log)
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "name-gamma.lock").symlink_to(target)
    with pytest.raises(LockError, match=r"Cannot open the lock file .*name-gamma.lock"):
        lock_resource("name", lambda taken: "gamma", tmp_path, log)


def test_lock_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(FolderError, match="Cannot create the folder .*file/locks"):
        lock_resource("slot", lambda taken: 1, tmp_path / "file" / "locks", log)


def test_ephemeral_range_that_covers_every_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("1024\t65535\n")
    monkeypatch.setattr(ports, "PORT_RANGE_FILE", str(range_file))
    port = get_free_port(tmp_path, log)
    assert 10000 <= port <= 65535
    unlock_port(port, tmp_path, log)


def test_port_range_that_is_all_taken(tmp_path: Path) -> None:
    first = get_free_port(tmp_path, log, port_range=(40000, 40100))
    held = [first]
    with pytest.raises(LockError) as caught:
        for _ in range(200):
            held.append(get_free_port(tmp_path, log, port_range=(40000, 40100)))
    assert str(caught.value).startswith("Every port in 40000-40100 is reserved or does not bind")
    assert "--services-port-range=LOW-HIGH" in str(caught.value)
    assert all(40000 <= port <= 40100 for port in held)
    for port in held:
        unlock_port(port, tmp_path, log)


def test_getter_that_proposes_only_taken_resources_gives_up(tmp_path: Path) -> None:
    lock_resource("slot", lambda taken: 1, tmp_path, log)
    with pytest.raises(LockError, match=r"No free slot found after trying 1 \(1 s timeout\)"):
        lock_resource("slot", lambda taken: 1, tmp_path, log, 1)
