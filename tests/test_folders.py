"""Session folders: where they are, who may enter them, and that they are removed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_services import folders

FOLDERS_PROBE = """
    import os, json, pathlib

    def test_folders(root_dir, base_dir, temp_dir, memory_root_dir, memory_base_dir,
                     memory_temp_dir, run_dir, lock_dir):
        values = dict(root_dir=str(root_dir), base_dir=base_dir, temp_dir=temp_dir,
                      memory_root_dir=memory_root_dir, memory_base_dir=memory_base_dir,
                      memory_temp_dir=memory_temp_dir, run_dir=run_dir, lock_dir=lock_dir)
        for name in ("base_dir", "temp_dir", "memory_base_dir", "memory_temp_dir", "run_dir",
                     "lock_dir"):
            assert os.path.isdir(values[name]), name
        pathlib.Path(temp_dir, "leftover").write_text("x")
        pathlib.Path(os.environ["PROBE_OUT"]).write_text(json.dumps(values))
        assert os.environ.get("PROBE_FAIL") != "1", "failing on purpose"
"""


def _run(pytester: pytest.Pytester, *args: str, fail: bool = False) -> dict[str, str]:
    import json

    out = pytester.path / "probe.json"
    pytester.makepyfile(test_probe=FOLDERS_PROBE)
    env = {"PROBE_OUT": str(out), "PROBE_FAIL": "1" if fail else "0"}
    for key, value in env.items():
        os.environ[key] = value
    try:
        result = pytester.runpytest_subprocess(*args)
    finally:
        for key in env:
            del os.environ[key]
    result.assert_outcomes(**({"failed": 1} if fail else {"passed": 1}))
    values: dict[str, str] = json.loads(out.read_text())
    return values


@pytest.mark.parametrize("fail", [False, True], ids=["passing", "failing"])
def test_session_folders_created_private_and_removed(pytester: pytest.Pytester, fail: bool) -> None:
    values = _run(pytester, fail=fail)
    assert Path(values["temp_dir"]).parent == Path(values["base_dir"])
    assert Path(values["base_dir"]).parent == Path(values["root_dir"])
    assert Path(values["memory_base_dir"]).parent == Path(values["memory_root_dir"])
    assert Path(values["run_dir"]).parent == Path(values["memory_base_dir"])
    for name in ("base_dir", "memory_base_dir"):
        assert not os.path.exists(values[name]), f"{name} left behind"
    lock = os.stat(values["lock_dir"])
    assert stat.S_IMODE(lock.st_mode) == 0o700
    assert lock.st_uid == os.getuid()


def test_memory_root_is_shm_when_present_and_roomy(pytester: pytest.Pytester) -> None:
    values = _run(pytester)
    roomy = (
        os.path.isdir("/dev/shm")
        and os.access("/dev/shm", os.W_OK | os.X_OK)
        and shutil.disk_usage("/dev/shm").free >= folders.MIN_MEMORY_FREE
    )
    assert values["memory_root_dir"] == ("/dev/shm" if roomy else values["root_dir"])


@pytest.mark.parametrize("kind", ["str", "pathlib"])
def test_root_dir_override(pytester: pytest.Pytester, kind: str) -> None:
    root = pytester.path / "my-root"
    value = repr(str(root)) if kind == "str" else f"pathlib.Path({str(root)!r})"
    pytester.makeconftest(
        f"""
        import pathlib, pytest

        @pytest.fixture(scope="session")
        def root_dir():
            return {value}
        """
    )
    values = _run(pytester)
    assert Path(values["base_dir"]).parent == root
    assert not os.path.exists(values["base_dir"])
    assert root.is_dir()


def test_two_sessions_share_lock_dir_but_not_base_dir(pytester: pytest.Pytester) -> None:
    first = _run(pytester)
    second = _run(pytester, "-p", "xdist")
    assert first["lock_dir"] == second["lock_dir"]
    assert first["base_dir"] != second["base_dir"]


def test_lock_dir_of_another_owner_is_refused(tmp_path: Path) -> None:
    from pytest_services.folders import FolderError, private_dir

    target = tmp_path / "not-a-dir"
    target.write_text("")
    with pytest.raises(FolderError, match="must be a folder"):
        private_dir(target)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    private_dir(shared)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o700
    if os.getuid() == 0:
        os.chown(shared, 65534, 65534)
        with pytest.raises(FolderError, match="belongs to uid 65534, not to you"):
            private_dir(shared)
    blocked = tmp_path / "file" / "sub"
    (tmp_path / "file").write_text("")
    with pytest.raises(FolderError, match="Cannot create the folder .*/file/sub"):
        private_dir(blocked)


def test_socket_path_too_long_for_a_unix_socket(tmp_path: Path) -> None:
    from pytest_services.folders import FolderError, socket_path

    assert socket_path(tmp_path, "ok.sock") == str(tmp_path / "ok.sock")
    with pytest.raises(FolderError, match=r"is longer than 107 bytes, the limit of unix sockets"):
        socket_path(tmp_path / ("x" * 120), "server.sock")


HOLD_FOLDERS = """
    import json, os, pathlib, time
    from pytest_services._engine import reaper as _reaper

    def test_hold(base_dir, memory_base_dir, temp_dir, watcher_getter, request):
        pathlib.Path(temp_dir, "data").write_bytes(b"x" * 4096)
        service = watcher_getter("sleep", ["600"], request=request)
        info = dict(base_dir=base_dir, memory_base_dir=memory_base_dir,
                    watchdog=_reaper.watchdog_pid(), service=service.pid)
        pathlib.Path({out!r}).write_text(json.dumps(info))
        time.sleep(600)
"""


def _hold_folders(pytester: pytest.Pytester, name: str) -> tuple[Any, dict[str, Any]]:
    out = pytester.path / f"{name}.json"
    pytester.makepyfile(**{f"test_{name}": HOLD_FOLDERS.format(out=str(out))})
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--run-services", "-p", "no:cacheprovider",
         "-p", "no:xdist", f"test_{name}.py"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not out.exists() or not out.read_text():
        assert inner.poll() is None, "inner pytest ended early"
        assert time.monotonic() < deadline, "inner pytest never created its folders"
        time.sleep(0.05)
    return inner, json.loads(out.read_text())


def _gone_within(paths: list[str], seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while any(os.path.exists(p) for p in paths) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in paths if os.path.exists(p)]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_folders_of_a_killed_session_are_removed(pytester: pytest.Pytester, signum: int) -> None:
    inner, info = _hold_folders(pytester, "killed")
    folders = [info["base_dir"], info["memory_base_dir"]]
    assert all(os.path.isdir(path) for path in folders)
    inner.send_signal(signum)
    inner.wait(30)
    assert _gone_within(folders, 15) == [], "a killed session left its folders"


@pytest.mark.slow
def test_next_session_sweeps_folders_of_dead_sessions_only(pytester: pytest.Pytester) -> None:
    # Memory folders of their own, where no other session of the user sweeps.
    pytester.makeconftest(
        f"""
        import pytest

        @pytest.fixture(scope="session")
        def memory_root_dir():
            return {str(pytester.path / "memory")!r}
        """
    )
    dead, dead_info = _hold_folders(pytester, "dead")
    live, live_info = _hold_folders(pytester, "live")
    try:
        os.kill(dead_info["watchdog"], signal.SIGKILL)  # nothing can clean up after it now
        dead.kill()
        dead.wait()
        dead_folders = [dead_info["base_dir"], dead_info["memory_base_dir"]]
        time.sleep(1)
        assert all(os.path.isdir(path) for path in dead_folders)
        pytester.makepyfile(test_next="def test_next(base_dir, memory_base_dir): pass")
        result = pytester.runpytest_subprocess("-p", "no:xdist", "test_next.py")
        result.assert_outcomes(passed=1)
        assert [p for p in dead_folders if os.path.exists(p)] == []
        assert os.path.isdir(live_info["base_dir"]) and os.path.isdir(live_info["memory_base_dir"])
    finally:
        live.kill()
        live.wait()
        with contextlib.suppress(OSError):  # its watchdog was killed: nobody else stops it
            os.killpg(dead_info["service"], signal.SIGKILL)


@pytest.mark.slow
def test_relative_paths_are_taken_from_where_pytest_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A short folder, so that the socket paths below it fit in a unix socket address.
    where = Path(tempfile.mkdtemp(prefix="rel-", dir="/tmp"))
    try:
        (where / "conftest.py").write_text(
            textwrap.dedent(
                """
                import pytest

                @pytest.fixture(scope="session")
                def root_dir():
                    return "disk"

                @pytest.fixture(scope="session")
                def memory_root_dir():
                    return "memory"
                """
            )
        )
        (where / "test_relative.py").write_text(
            textwrap.dedent(
                """
                import os

                import MySQLdb

                def test_services(memcached_client, mysql_database, mysql_socket, base_dir,
                                  memory_base_dir):
                    memcached_client.set("key", "value")
                    assert memcached_client.get("key") == "value"
                    db = MySQLdb.connect(unix_socket=mysql_socket, user="root", db=mysql_database)
                    db.cursor().execute("CREATE TABLE t (i INT)")
                    assert base_dir.startswith(os.path.join(os.getcwd(), "disk", ""))
                    assert memory_base_dir.startswith(os.path.join(os.getcwd(), "memory", ""))
                """
            )
        )
        monkeypatch.setenv("PYTEST_SERVICES_CACHE_DIR", ".ci-cache/pytest-services")
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "--run-services", "-p", "no:xdist",
             "-p", "no:cacheprovider", "-q"],
            cwd=where,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout
        assert "1 passed" in result.stdout
        assert (where / ".ci-cache" / "pytest-services" / "mysql").is_dir()
    finally:
        shutil.rmtree(where)


def test_folders_planted_by_another_user_are_moved_around(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to plant a folder as another user")
    shm = pytester.path / "shm"  # stands in for /dev/shm, which other sessions use
    shm.mkdir()
    shm.chmod(0o1777)
    for name in (f"pytest-services-locks-{os.getuid()}", f"pytest-services-cache-{os.getuid()}"):
        (shm / name).mkdir(mode=0o700)
        os.chown(shm / name, 65534, 65534)
    monkeypatch.setenv("HOME", str(pytester.path / "home"))
    pytester.makeconftest(f"from pytest_services import folders\nfolders.SHM = {str(shm)!r}\n")
    pytester.makepyfile(
        """
        import os
        from pytest_services._db.mysql import server as _mysql_server

        def test_sessions_still_work(lock_dir, port_getter, memory_root_dir):
            home = os.path.expanduser("~/.cache/pytest-services")
            assert lock_dir == os.path.join(home, "locks")
            assert port_getter()
            assert _mysql_server.cache_root(memory_root_dir) == os.path.join(home, "cache")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-W", "always")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            f"*FolderWarning: The folder {shm}/pytest-services-locks-* belongs to uid 65534, "
            "not to you (uid 0); remove it or use another location. Using */home/.cache/"
            "pytest-services/locks instead, for every session of yours while it stays.",
        ]
    )


def _interpreter_for_nobody() -> list[str] | None:
    """A command that runs this Python's packages as another user, if one can reach them."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (os.path.realpath(sys.executable), f"/usr/bin/{version}"):
        path = Path(candidate)
        parents = [parent for parent in path.parents if parent != Path("/")]
        if path.exists() and all(parent.stat().st_mode & 0o001 for parent in parents):
            return [candidate]
    return None


def test_planted_folders_without_a_writable_home_fall_back_to_a_private_one() -> None:
    """A service account (HOME unwritable) whose lock and cache folders another user took.

    The session runs as nobody where an interpreter of this Python is open to it; elsewhere
    (a Python under /root) it runs as root, with HOME where nobody may create anything.
    """
    if os.getuid() != 0:
        pytest.skip("needs root to run a session as another user and plant folders for it")
    interpreter = _interpreter_for_nobody()
    user, planter = (65534, 0) if interpreter else (0, 65534)
    home = "/nonexistent" if interpreter else "/proc/nonexistent"
    world = Path(tempfile.mkdtemp(prefix="pytest-services-test-"))
    try:
        world.chmod(0o755)
        shm, tmp, project = world / "shm", world / "tmp", world / "project"
        for folder in (shm, tmp, project):
            folder.mkdir()
        shm.chmod(0o1777)
        tmp.chmod(0o1777)
        for name in (f"pytest-services-locks-{user}", f"pytest-services-cache-{user}"):
            (shm / name).mkdir(mode=0o700)
            os.chown(shm / name, planter, planter)
        (project / "conftest.py").write_text(
            f"from pytest_services import folders\nfolders.SHM = {str(shm)!r}\n"
        )
        (project / "test_account.py").write_text(
            textwrap.dedent(
                f"""
                import os
                from pytest_services._db.mysql import server as _mysql_server

                def test_sessions_still_work(lock_dir, port_getter, memory_root_dir):
                    assert os.path.dirname(lock_dir) == {str(tmp)!r}
                    assert os.stat(lock_dir).st_uid == os.getuid() == {user}
                    assert port_getter() and port_getter()
                    cache = _mysql_server.cache_root(memory_root_dir)
                    assert os.path.dirname(cache) == {str(tmp)!r} and cache != lock_dir
                    assert _mysql_server.cache_root(memory_root_dir) == cache  # one per process
                    with open(os.path.join(lock_dir, "leftover"), "w"):
                        pass
                """
            )
        )
        packages = [str(Path(folders.__file__).parents[1]), *site.getsitepackages()]
        env = {
            "PATH": os.environ["PATH"],
            "HOME": home,
            "TMPDIR": str(tmp),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.pathsep.join(packages),
        }
        command = [*(interpreter or [sys.executable]), "-m", "pytest", "-p", "no:cacheprovider"]
        result = subprocess.run(
            [*command, "-p", "no:xdist", "-W", "always", "-rA"],
            cwd=project,
            env=env,
            user=user,
            group=user,
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        for name in ("locks", "cache"):
            warning = re.search(
                rf"FolderWarning: The folder {shm}/pytest-services-{name}-{user} belongs to "
                rf"uid {planter}, not to you \(uid {user}\); remove it or use another location\. "
                rf"Cannot create the folder {home}/\.cache/pytest-services/{name}: [^.]+\. "
                r"Using (\S+) instead, for this process only: ",
                output,
            )
            assert warning, output
            assert warning.group(1).startswith(f"{tmp}/pytest-services-{name}-")
        assert "other sessions of yours lock elsewhere" in output
        # Private to the session: removed with it, whatever was left inside.
        assert sorted(os.listdir(tmp)) == [], output
    finally:
        shutil.rmtree(world)
