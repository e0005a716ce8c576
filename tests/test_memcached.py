"""The memcached fixtures, each run against a real memcached in an inner pytest session."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

needs_memcached = pytest.mark.skipif(
    shutil.which("memcached") is None,
    reason="memcached is not installed: apt-get install memcached",
)
needs_pylibmc = pytest.mark.skipif(
    importlib.util.find_spec("pylibmc") is None,
    reason="pylibmc is not installed: pip install 'pytest-services[memcached]'",
)

# Inner tests write what they saw here; the outer test reads it after the session ended.
REPORT = """
import json
import os


def report(name, **values):
    with open(os.path.join({folder!r}, name + ".json"), "w") as out:
        json.dump(values, out)
"""


def _report(pytester: pytest.Pytester, name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((pytester.path / f"{name}.json").read_text())
    return data


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _conftest(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(REPORT.format(folder=str(pytester.path)))


@needs_memcached
@needs_pylibmc
def test_client_stores_and_server_stops_with_session(pytester: pytest.Pytester) -> None:
    _conftest(pytester)
    pytester.makepyfile(
        """
        from conftest import report


        def test_set_get(memcached, memcached_client, memcached_socket, run_dir):
            assert memcached_client.set("greeting", "hello")
            assert memcached_client.get("greeting") == "hello"
            assert memcached.poll() is None
            assert memcached_socket.startswith(run_dir)
            report("server", pid=memcached.pid, socket=memcached_socket)
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(passed=1)
    server = _report(pytester, "server")
    assert isinstance(server["pid"], int)
    assert not _running(server["pid"])
    assert not os.path.exists(str(server["socket"]))


@needs_memcached
@needs_pylibmc
def test_memcached_clean_empties_the_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_store(memcached_client):
            memcached_client.set("left-over", 1)


        def test_kept_without_clean(memcached_client):
            assert memcached_client.get("left-over") == 1


        def test_gone_with_clean(memcached_client, memcached_clean):
            assert memcached_client.get("left-over") is None
            memcached_client.set("fresh", 2)
            assert memcached_client.get("fresh") == 2
        """
    )
    result = pytester.runpytest_subprocess("--run-services", "-p", "no:randomly")
    result.assert_outcomes(passed=3)


@needs_memcached
@needs_pylibmc
def test_do_memcached_clean_false_keeps_data(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest


        @pytest.fixture(scope="session")
        def do_memcached_clean():
            return False
        """
    )
    pytester.makepyfile(
        """
        def test_store(memcached_client):
            memcached_client.set("kept", 1)


        def test_still_there(memcached_client, memcached_clean):
            assert memcached_client.get("kept") == 1
        """
    )
    result = pytester.runpytest_subprocess("--run-services", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


@needs_memcached
@needs_pylibmc
def test_connection_works_for_a_new_client(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pylibmc


        def test_fresh_client(memcached, memcached_connection, memcached_client, memcached_socket):
            assert memcached_connection == memcached_socket
            memcached_client.set("shared", "value")
            client = pylibmc.Client([memcached_connection])
            try:
                assert client.get("shared") == "value"
                ((_, stats),) = client.get_stats()
                assert int(stats["pid"]) == memcached.pid
            finally:
                client.disconnect_all()
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(passed=1)


@needs_memcached
def test_listens_on_private_unix_socket_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        import stat


        def socket_inodes(pid):
            inodes = set()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
            return inodes


        def table(name, inode_column, path=None):
            try:
                with open(f"/proc/net/{name}") as lines:
                    rows = [line.split() for line in list(lines)[1:]]
            except FileNotFoundError:
                return set()
            return {row[inode_column] for row in rows if path is None or row[-1] == path}


        def test_unix_only(memcached, memcached_socket):
            sockets = socket_inodes(memcached.pid)
            assert sockets & table("unix", 6, path=memcached_socket)
            for name in ("tcp", "tcp6", "udp", "udp6"):
                assert not sockets & table(name, 9), f"memcached has a {name} socket"
            info = os.stat(memcached_socket)
            assert stat.S_ISSOCK(info.st_mode)
            assert info.st_uid == os.getuid()
            assert stat.S_IMODE(info.st_mode) & 0o077 == 0
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(passed=1)


@needs_memcached
@needs_pylibmc
def test_each_xdist_worker_gets_its_own_server(pytester: pytest.Pytester) -> None:
    _conftest(pytester)
    pytester.makepyfile(
        """
        import os

        from conftest import report


        def test_own_server(memcached, memcached_socket, memcached_client, memcached_clean):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            assert memcached_client.get("owner") is None
            memcached_client.set("owner", worker)
            assert memcached_client.get("owner") == worker
            report(worker, pid=memcached.pid, socket=memcached_socket)
        """
    )
    # No --run-services: xdist workers start services by themselves.
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "each")
    result.assert_outcomes(passed=2)
    servers = [_report(pytester, worker) for worker in ("gw0", "gw1")]
    assert servers[0]["pid"] != servers[1]["pid"]
    assert servers[0]["socket"] != servers[1]["socket"]
    for server in servers:
        assert isinstance(server["pid"], int)
        assert not _running(server["pid"])


def test_missing_binary_names_the_package(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = pytester.mkdir("empty-bin")
    monkeypatch.setenv("PATH", str(empty))
    pytester.makepyfile(
        """
        def test_needs_server(memcached):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*Debian package 'memcached': apt-get install memcached*"])


def test_socket_path_too_long_is_reported(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest


        @pytest.fixture(scope="session")
        def run_dir(tmp_path_factory):
            return str(tmp_path_factory.mktemp("x" * 120))
        """
    )
    pytester.makepyfile(
        """
        def test_needs_server(memcached):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*is longer than 107 bytes, the limit of unix sockets*"])


def test_fixtures_are_none_without_services(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(pytester.mkdir("empty-bin")))
    pytester.makeconftest(
        """
        import sys

        sys.modules["pylibmc"] = None  # not needed when services are off
        """
    )
    pytester.makepyfile(
        """
        def test_off(
            memcached,
            memcached_socket,
            memcached_connection,
            memcached_client,
            do_memcached_clean,
            memcached_clean,
        ):
            assert memcached is None
            assert memcached_socket is None
            assert memcached_connection is None
            assert memcached_client is None
            assert do_memcached_clean is False
            assert memcached_clean is None
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


@needs_memcached
def test_client_without_pylibmc_skips_with_hint(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import sys

        sys.modules["pylibmc"] = None  # import pylibmc now raises ImportError
        """
    )
    pytester.makepyfile(
        """
        def test_client(memcached_client):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--run-services", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*pylibmc is not installed: pip install*"])
