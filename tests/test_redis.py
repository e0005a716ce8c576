"""The Redis fixtures, each run against a real redis-server in an inner pytest session."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proc_support import alive, processes_naming

from pytest_services import checkers
from pytest_services.process import ServiceStartError, start_service
from pytest_services.redis import RedisPing, find_redis_server, redis_arguments

REDIS_SERVER = shutil.which("redis-server") or shutil.which("valkey-server")
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed: apt-get install redis-server"
)
needs_redis_py = pytest.mark.skipif(
    importlib.util.find_spec("redis") is None,
    reason="redis-py is not installed: pip install 'pytest-services[redis]'",
)

# Inner tests write what they saw here; the outer test reads it after the session ended.
REPORT = """
import json
import os


def report(label, **values):
    with open(os.path.join({folder!r}, label + ".json"), "w") as out:
        json.dump(values, out)
"""


def _conftest(pytester: pytest.Pytester, extra: str = "") -> None:
    pytester.makeconftest(REPORT.format(folder=str(pytester.path)) + extra)


def _report(pytester: pytest.Pytester, name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((pytester.path / f"{name}.json").read_text())
    return data


def _assert_gone(server: dict[str, object]) -> None:
    assert isinstance(server["pid"], int)
    assert not alive(server["pid"])
    assert not processes_naming(str(server["socket"]))


@needs_redis
@needs_redis_py
def test_client_stores_and_server_stops_with_session(pytester: pytest.Pytester) -> None:
    _conftest(pytester)
    pytester.makepyfile(
        """
        from conftest import report


        def test_set_get(redis, redis_client, redis_socket, redis_url, run_dir, memory_temp_dir):
            assert redis_client.set("greeting", "hello")
            assert redis_client.get("greeting") == b"hello"
            assert redis.poll() is None
            assert redis_socket.startswith(run_dir)
            assert redis_url == f"unix://{redis_socket}?db=0"
            assert redis_client.info("server")["process_id"] == redis.pid
            config = redis_client.config_get("*")
            assert config["save"] == "" and config["appendonly"] == "no"
            assert config["dir"].startswith(memory_temp_dir)
            report("server", pid=redis.pid, socket=redis_socket)
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(passed=1)
    server = _report(pytester, "server")
    _assert_gone(server)
    assert not os.path.exists(str(server["socket"]))


@needs_redis
@needs_redis_py
def test_redis_clean_empties_every_database(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import redis as redis_py


        def test_store(redis_client, redis_url):
            redis_client.set("left-over", 1)
            other = redis_py.Redis.from_url(redis_url.replace("db=0", "db=3"))
            other.set("in-db-3", 1)
            other.close()


        def test_kept_without_clean(redis_client):
            assert redis_client.get("left-over") == b"1"


        def test_gone_with_clean(redis_client, redis_url, redis_clean):
            assert redis_client.dbsize() == 0
            other = redis_py.Redis.from_url(redis_url.replace("db=0", "db=3"))
            assert other.dbsize() == 0
            other.close()
            redis_client.set("fresh", 2)


        def test_clean_again(redis_client, redis_clean):
            assert redis_client.get("fresh") is None
        """
    )
    result = pytester.runpytest_subprocess("--run-services", "-p", "no:randomly")
    result.assert_outcomes(passed=4)


@needs_redis
@needs_redis_py
def test_do_redis_clean_false_keeps_data(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest


        @pytest.fixture(scope="session")
        def do_redis_clean():
            return False
        """
    )
    pytester.makepyfile(
        """
        def test_store(redis_client):
            redis_client.set("kept", 1)


        def test_still_there(redis_client, redis_clean):
            assert redis_client.get("kept") == b"1"
        """
    )
    result = pytester.runpytest_subprocess("--run-services", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


@needs_redis
@needs_redis_py
def test_redis_args_reach_the_server(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest


        @pytest.fixture(scope="session")
        def redis_args():
            return ["--maxmemory", "64mb", "--databases", "4"]
        """
    )
    pytester.makepyfile(
        """
        import redis as redis_py
        import pytest


        def test_options(redis_client, redis_url):
            assert redis_client.config_get("maxmemory") == {"maxmemory": str(64 * 1024 * 1024)}
            assert redis_client.config_get("databases") == {"databases": "4"}
            assert redis_client.config_get("save") == {"save": ""}  # ours are still there
            too_far = redis_py.Redis.from_url(redis_url.replace("db=0", "db=4"))
            with pytest.raises(redis_py.ResponseError, match="DB index is out of range"):
                too_far.ping()
            too_far.close()
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(passed=1)


def test_redis_args_as_a_string_is_refused() -> None:
    with pytest.raises(TypeError, match=r"redis_args must be a list of options, such as"):
        redis_arguments("/run/redis.sock", "/run/data", "--maxmemory 64mb")  # type: ignore[arg-type]


@needs_redis
def test_redis_args_with_a_number_names_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest


        @pytest.fixture(scope="session")
        def redis_args():
            return ["--databases", 4]
        """
    )
    pytester.makepyfile(
        """
        def test_server(redis):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*arguments[[]*[]] is the int 4; arguments must be str or pathlib.Path: write '4'.*"]
    )


SOCKET_TABLES = """
import os


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
"""


@needs_redis
def test_listens_on_private_unix_socket_only(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(SOCKET_TABLES)
    pytester.makepyfile(
        """
        import os
        import stat

        from conftest import socket_inodes, table


        def test_unix_only(redis, redis_socket):
            sockets = socket_inodes(redis.pid)
            assert sockets & table("unix", 6, path=redis_socket)
            for name in ("tcp", "tcp6", "udp", "udp6"):
                assert not sockets & table(name, 9), f"redis-server has a {name} socket"
            info = os.stat(redis_socket)
            assert stat.S_ISSOCK(info.st_mode)
            assert info.st_uid == os.getuid()
            assert stat.S_IMODE(info.st_mode) & 0o077 == 0
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(passed=1)


@needs_redis
@needs_redis_py
def test_tcp_port_when_asked(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        SOCKET_TABLES
        + """
import pytest


@pytest.fixture(scope="session")
def redis_port(port_getter):
    return port_getter()


@pytest.fixture(scope="session")
def redis_args(redis_port):
    return ["--port", str(redis_port), "--bind", "127.0.0.1"]
"""
    )
    pytester.makepyfile(
        """
        import redis as redis_py

        from conftest import socket_inodes, table


        def test_over_tcp(redis, redis_client, redis_port):
            assert socket_inodes(redis.pid) & table("tcp", 9)
            over_tcp = redis_py.Redis(host="127.0.0.1", port=redis_port)
            over_tcp.set("via", "tcp")
            assert redis_client.get("via") == b"tcp"
            assert over_tcp.info("server")["process_id"] == redis.pid
            over_tcp.close()
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(passed=1)


@needs_redis
@needs_redis_py
def test_each_xdist_worker_gets_its_own_server(pytester: pytest.Pytester) -> None:
    _conftest(pytester)
    pytester.makepyfile(
        """
        import os

        from conftest import report


        def test_own_server(redis, redis_socket, redis_client, redis_clean):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            assert redis_client.get("owner") is None
            redis_client.set("owner", worker)
            assert redis_client.get("owner") == worker.encode()
            report(worker, pid=redis.pid, socket=redis_socket)
        """
    )
    # No --run-services: xdist workers start services by themselves.
    result = pytester.runpytest_subprocess("-n", "3", "--dist", "each")
    result.assert_outcomes(passed=3)
    servers = [_report(pytester, worker) for worker in ("gw0", "gw1", "gw2")]
    assert len({server["pid"] for server in servers}) == 3
    assert len({server["socket"] for server in servers}) == 3
    for server in servers:
        _assert_gone(server)


@needs_redis
@needs_redis_py
def test_concurrent_sessions_never_share_a_server(pytester: pytest.Pytester) -> None:
    _conftest(pytester)
    pytester.makepyfile(
        """
        import os
        import time

        from conftest import report

        FOLDER = os.path.dirname(os.path.abspath(__file__))


        def wait_for(name):
            deadline = time.monotonic() + 120
            while not os.path.exists(os.path.join(FOLDER, name + ".json")):
                assert time.monotonic() < deadline, f"{name} never came"
                time.sleep(0.01)


        def test_while_the_other_runs(redis, redis_socket, redis_client):
            me, other = os.environ["SESSION_NAME"], os.environ["OTHER_SESSION"]
            redis_client.set("owner", me)
            report(me, pid=redis.pid, socket=redis_socket)
            wait_for(other)  # both servers run now, and the other wrote its own name
            assert redis_client.get("owner") == me.encode()
            assert redis_client.dbsize() == 1
            report(me + "-checked", pid=redis.pid, socket=redis_socket)
            wait_for(other + "-checked")  # neither stops before both have looked
        """
    )
    command = [sys.executable, "-m", "pytest", "--run-services", "-p", "no:cacheprovider", "-q"]
    sessions = [
        subprocess.Popen(
            command,
            cwd=pytester.path,
            env={**os.environ, "SESSION_NAME": me, "OTHER_SESSION": other},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for me, other in (("one", "two"), ("two", "one"))
    ]
    outputs = [session.communicate(timeout=300)[0].decode() for session in sessions]
    for session, output in zip(sessions, outputs):
        assert session.returncode == 0, output
    servers = [_report(pytester, name) for name in ("one", "two")]
    assert servers[0]["pid"] != servers[1]["pid"]
    assert servers[0]["socket"] != servers[1]["socket"]
    for server in servers:
        _assert_gone(server)


def test_missing_binary_names_the_package(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(pytester.mkdir("empty-bin")))
    monkeypatch.delenv("PYTEST_SERVICES_REDIS_SERVER", raising=False)
    pytester.makepyfile(
        """
        def test_needs_server(redis):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*redis-server or valkey-server is not installed: not found in *empty-bin. "
            "Install the Debian package 'redis-server': apt-get install redis-server "
            "(or set PYTEST_SERVICES_REDIS_SERVER to the server's path)*"
        ]
    )


def _link(folder: Path, name: str) -> Path:
    assert REDIS_SERVER is not None
    link = folder / name
    link.symlink_to(REDIS_SERVER)
    return link


@needs_redis
def test_variable_names_the_binary(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = _link(pytester.mkdir("own-bin"), "my-redis")
    monkeypatch.setenv("PATH", str(pytester.mkdir("empty-bin")))  # nothing found by name
    monkeypatch.setenv("PYTEST_SERVICES_REDIS_SERVER", str(own))
    _conftest(pytester)
    pytester.makepyfile(
        """
        from conftest import report


        def test_server(redis):
            report("server", command=redis.command, name=redis.name)
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(passed=1)
    server = _report(pytester, "server")
    assert server["name"] == "my-redis"
    assert isinstance(server["command"], list)
    assert server["command"][0] == str(own)


def test_variable_naming_nothing_is_reported(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_SERVICES_REDIS_SERVER", "/nowhere/redis-server")
    pytester.makepyfile(
        """
        def test_server(redis):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*PYTEST_SERVICES_REDIS_SERVER='/nowhere/redis-server' names no server to run: "
            "Cannot start '/nowhere/redis-server': /nowhere/redis-server does not exist.*"
        ]
    )


@needs_redis
def test_valkey_server_when_it_is_the_one_installed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = pytester.mkdir("valkey-bin")
    _link(folder, "valkey-server")
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.delenv("PYTEST_SERVICES_REDIS_SERVER", raising=False)
    assert find_redis_server() == str(folder / "valkey-server")
    _conftest(pytester)
    pytester.makepyfile(
        """
        from conftest import report


        def test_server(redis):
            report("server", name=redis.name)
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(passed=1)
    assert _report(pytester, "server")["name"] == "valkey-server"


@needs_redis
@needs_redis_py
def test_server_that_dies_is_reported_at_the_next_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        import signal


        def test_kills(redis, redis_client):
            redis_client.set("a", 1)
            os.kill(redis.pid, signal.SIGKILL)
            redis.wait()


        def test_needs_it(redis_client, redis_clean):
            raise AssertionError("never reached")


        def test_does_not_need_it():
            pass
        """
    )
    result = pytester.runpytest_subprocess("--run-services", "-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_needs_it*",
            "service 'redis-server' (pid *) exited with code -9 (SIGKILL) by ??:??:??, *.* s "
            "ago, during test_*.py::test_kills; the fixture 'redis' that started it cannot be "
            "used any more.",
            "*command: *redis-server --port 0 --unixsocket */redis.sock *",
            "*output: */logs/redis-server.log",
            "*last lines of its output:",
            "*eady to accept connections*",
        ]
    )
    result.stdout.fnmatch_lines(["*= services that died before their teardown =*"])
    assert "never reached" not in result.stdout.str()


@needs_redis
def test_clean_of_a_server_that_hangs_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        import signal


        def test_stops_it(redis, redis_clean):
            os.kill(redis.pid, signal.SIGSTOP)


        def test_cleans(redis, redis_clean):
            pass


        def test_continues_it(redis):
            os.kill(redis.pid, signal.SIGCONT)
        """
    )
    result = pytester.runpytest_subprocess("--run-services", "-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_cleans*",
            "*ServiceError: The Redis server on */redis.sock did not empty itself: FLUSHALL "
            "got no answer within 1 s, twice (*",
        ]
    )


@needs_redis
@needs_redis_py
def test_failing_report_shows_the_server_log(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_fails(redis_client):
            redis_client.set("a", 1)
            redis_client.save()  # the server logs the save
            assert False
        """
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Captured stdout of service 'redis-server' (pid *)*",
            "*DB saved on disk*",
        ]
    )


def test_fixtures_are_none_without_services(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(pytester.mkdir("empty-bin")))
    pytester.makeconftest(
        """
        import sys

        sys.modules["redis"] = None  # not needed when services are off
        """
    )
    pytester.makepyfile(
        """
        def test_off(redis, redis_socket, redis_url, redis_client, do_redis_clean, redis_clean):
            assert redis is None
            assert redis_socket is None
            assert redis_url is None
            assert redis_client is None
            assert do_redis_clean is False
            assert redis_clean is None
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


@needs_redis
def test_client_without_redis_py_skips_with_hint(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import sys

        sys.modules["redis"] = None  # import redis now raises ImportError
        """
    )
    pytester.makepyfile(
        """
        def test_client(redis_client):
            pass


        def test_clean_needs_no_client(redis, redis_clean):
            assert redis.poll() is None
        """
    )
    result = pytester.runpytest_subprocess("--run-services", "-rs")
    result.assert_outcomes(skipped=1, passed=1)
    result.stdout.fnmatch_lines(["*redis-py is not installed: pip install*"])


@pytest.fixture
def foreign_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A redis-server started by hand, not through the engine, on a socket in ``tmp_path``."""
    socket = str(tmp_path / "foreign.sock")
    data = tmp_path / "data"
    data.mkdir()
    assert REDIS_SERVER is not None
    server = subprocess.Popen(
        [REDIS_SERVER, *redis_arguments(socket, str(data))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = RedisPing(socket)
    probe.attach(server)
    deadline = time.monotonic() + 20
    while True:
        try:
            if probe():
                break
        except OSError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, probe.answer
        time.sleep(0.005)
    yield server, socket
    server.kill()
    server.wait()


@needs_redis
def test_readiness_refuses_a_server_it_did_not_start(
    foreign_server: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    server, socket = foreign_server
    # The engine starts something that never listens; the foreign server answers PING.
    with pytest.raises(ServiceStartError) as error:
        start_service(
            "sleep",
            ["30"],
            checker=RedisPing(socket),
            timeout=0.5,
            log_dir=tmp_path / "logs",
            grace=0,
        )
    assert f"answered by pid {server.pid}, not by the server started here" in str(error.value)
    # all_of hands the process on too.
    with pytest.raises(ServiceStartError, match=f"answered by pid {server.pid}"):
        start_service(
            "sleep",
            ["30"],
            checker=checkers.all_of(RedisPing(socket)),
            timeout=0.5,
            log_dir=tmp_path / "logs",
            grace=0,
        )
    assert server.poll() is None


@needs_redis
def test_readiness_accepts_the_server_it_started(tmp_path: Path) -> None:
    socket = str(tmp_path / "own.sock")
    (tmp_path / "data").mkdir()
    assert REDIS_SERVER is not None
    process = start_service(
        REDIS_SERVER,
        redis_arguments(socket, str(tmp_path / "data")),
        checker=checkers.all_of(RedisPing(socket)),
        log_dir=tmp_path / "logs",
        grace=0,
    )
    try:
        unbound = RedisPing(socket)
        assert not unbound()  # proves nothing without the process to expect
        assert "attach was not called" in repr(unbound)
    finally:
        process.stop()
