"""Start a service process, wait until it is ready, and stop it with everything it spawned.

Nothing here needs pytest: :func:`start_service` returns a :class:`ServiceProcess` (a
``subprocess.Popen``) running in its own process group, and :meth:`ServiceProcess.stop` ends
that whole group.  The ``watcher_getter`` fixture in :mod:`pytest_services.service` wires
these to pytest's finalizers.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from pytest_services._engine import ledger
from pytest_services._engine import reaper as _reaper
from pytest_services._engine.commands import (
    check_output,
    find_executable,
    find_program,
    spawn_watched,
)
from pytest_services._engine.groups import (
    group_alive,
    signal_group,
    signal_tagged,
    tagged_alive,
    wait_for_group,
)
from pytest_services._engine.paths import StrPath
from pytest_services._engine.readiness import (
    FIRST_DELAY,
    MAX_DELAY,
    CheckerCalls,
    bounded,
    checker_name,
    next_delay,
)
from pytest_services._engine.text import TAIL_LINES, describe_exit, last_lines
from pytest_services.exceptions import (
    CalledProcessWithOutputError,
    ServiceError,
    ServiceStartError,
)

__all__ = [
    "DEFAULT_GRACE",
    "FIRST_DELAY",
    "MAX_DELAY",
    "CalledProcessWithOutputError",
    "ServiceError",
    "ServiceProcess",
    "ServiceStartError",
    "StrPath",
    "bounded",
    "check_output",
    "find_executable",
    "find_program",
    "running_services",
    "start_service",
]

#: Seconds between SIGTERM and SIGKILL when stopping a service.
DEFAULT_GRACE = 5.0


class ServiceProcess(subprocess.Popen):  # type: ignore[type-arg]
    """A running service: a ``Popen`` that leads its own process group."""

    name: str
    command: list[str]
    log_path: Path | None
    grace: float
    #: Wall-clock time (``time.time()``) at which the service was started.
    started_at: float
    #: The tag in the environment of the service and of all it spawns (``PYTEST_SERVICES_TAG``).
    services_tag: str

    @property
    def pgid(self) -> int:
        """The id of the service's process group (its own pid)."""
        return self.pid

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """Return the last lines the service wrote to its log file."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 16384))
                data = log.read()
        except OSError:
            return ""
        return last_lines(data.decode(errors="replace"), lines)

    def stop(self, grace: float | None = None) -> None:
        """End the service's whole process group, and what it spawned that left the group:
        SIGTERM, then SIGKILL after ``grace`` s."""
        grace = self.grace if grace is None else grace
        tag = self.services_tag
        try:
            if grace > 0:
                deadline = time.monotonic() + grace
                signal_group(self.pgid, signal.SIGTERM)
                escaped = signal_tagged(tag, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.wait(timeout=grace)  # the leader first: no polling in the usual case
                wait_for_group(self, deadline)
                while escaped and time.monotonic() < deadline and tagged_alive(tag):
                    time.sleep(0.02)
            if grace <= 0 or group_alive(self.pgid) or tagged_alive(tag):
                signal_group(self.pgid, signal.SIGKILL)
                signal_tagged(tag, signal.SIGKILL)
                self.wait()
                if group_alive(self.pgid):
                    wait_for_group(self, time.monotonic() + 10.0)
            self.wait()
        finally:
            _reaper.forget(self.pgid)
            _running.pop(self.pid, None)
            for stream in (self.stdin, self.stdout, self.stderr):
                if stream is not None:
                    stream.close()


#: Services started by this process and not stopped yet, by pid.
_running: dict[int, ServiceProcess] = {}


def running_services() -> list[ServiceProcess]:
    """The services this process started and has not stopped yet, oldest first."""
    return list(_running.values())


def start_service(
    name: StrPath,
    arguments: Sequence[StrPath] | None = None,
    popen_kwargs: Mapping[str, Any] | None = None,
    *,
    timeout: float = 20,
    checker: Callable[[], object] | None = None,
    log_dir: StrPath | None = None,
    grace: float = DEFAULT_GRACE,
) -> ServiceProcess:
    """Start ``[name] + arguments`` in its own process group and wait until it is ready.

    ``checker`` is called with a short backoff until it returns a true value; the process
    is checked on every round, so a service that dies while starting is reported at once.
    Unless ``popen_kwargs`` gives ``stdout``/``stderr``, output goes to a log file in
    ``log_dir``.  A checker with an ``attach`` method gets the process before the
    first check.  On any failure the process group is stopped before the error is raised.
    """
    begun = time.perf_counter()
    kwargs = dict(popen_kwargs or {})
    executable = find_executable(name, kwargs.get("cwd"))
    command = [executable, *_arguments(arguments)]
    label = Path(os.fspath(name)).name
    log_path, log_file = _open_log(label, log_dir, kwargs)
    bind = getattr(checker, "bind", None)
    if callable(bind):
        # A checker that reads what the service prints learns where that goes, or refuses.
        try:
            bind(log_path)
        except BaseException:
            if log_file is not None:
                log_file.close()
            raise
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    try:
        process = spawn_watched(ServiceProcess, command, kwargs)
    except OSError as exc:
        raise ServiceError(
            f"Cannot start {label!r}: {exc} (command: {shlex.join(command)})"
        ) from exc
    finally:
        if log_file is not None:
            log_file.close()
    process.name, process.command, process.log_path, process.grace = label, command, log_path, grace
    process.args = command  # what was asked for: repr() shows this too
    process.started_at = time.time()
    _running[process.pid] = process
    try:
        attach = getattr(checker, "attach", None)
        if callable(attach):
            attach(process)  # a checker that proves who answers learns whom to expect
        _wait_until_ready(process, checker, timeout)
    except BaseException:
        process.stop(grace=min(grace, 1.0))
        raise
    ledger.started(label, time.perf_counter() - begun)
    return process


#: The next log number to try, by log folder and service name.
_log_numbers: dict[tuple[str, str], int] = {}


def _arguments(arguments: Sequence[StrPath] | None) -> list[str]:
    """The arguments as strings; anything but a list of ``str`` and paths is refused."""
    if arguments is None:
        return []
    if isinstance(arguments, (str, bytes, os.PathLike)):
        raise TypeError(
            f"arguments must be a list of strings, not the {type(arguments).__name__} "
            f"{arguments!r}: write [{arguments!r}] for one argument."
        )
    result = []
    for index, argument in enumerate(arguments):
        if not isinstance(argument, (str, os.PathLike)):
            raise TypeError(
                f"arguments[{index}] is the {type(argument).__name__} {argument!r}; arguments "
                f"must be str or pathlib.Path: write {str(argument)!r}."
            )
        result.append(os.fspath(argument))
    return result


def _open_log(
    label: str, log_dir: StrPath | None, kwargs: dict[str, Any]
) -> tuple[Path | None, IO[bytes] | None]:
    if log_dir is None or ("stdout" in kwargs and "stderr" in kwargs):
        return None, None
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    key = (os.fspath(log_dir), label)
    number = _log_numbers.get(key, 0)  # the next free number, so each start costs the same
    while True:
        path = Path(log_dir, f"{label}.log" if number == 0 else f"{label}-{number}.log")
        try:
            log_file = open(path, "xb")  # noqa: SIM115 - handed to the child, closed by caller
        except FileExistsError:
            number += 1
            continue
        _log_numbers[key] = number + 1
        kwargs.setdefault("stdout", log_file)
        kwargs.setdefault("stderr", subprocess.STDOUT if kwargs["stdout"] is log_file else log_file)
        return path, log_file


def _wait_until_ready(
    process: ServiceProcess, checker: Callable[[], object] | None, timeout: float
) -> None:
    started = time.monotonic()
    deadline = started + timeout
    calls = CheckerCalls(checker)
    while True:
        returncode = process.poll()
        if returncode is not None:
            raise _start_error(
                process,
                f"Service {process.name!r} {describe_exit(returncode)} before it was ready "
                f"({time.monotonic() - started:.2f} s after start).",
            )
        try:
            if checker is None or calls.check(deadline):
                return
        except Exception as exc:
            assert checker is not None
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            raise _start_error(
                process,
                f"Service {process.name!r} was not ready: its checker {checker_name(checker)} "
                f"raised {error}",
            ) from exc
        now = time.monotonic()
        if calls.hung:
            raise _start_error(
                process,
                f"Service {process.name!r} was not ready after {timeout:g} s: its checker "
                f"{checker_name(checker)} was called and had not returned by then.",
            )
        if now >= deadline:
            reason = getattr(checker, "reason", None)
            said = f"; the last check said: {reason}" if reason else ""
            raise _start_error(
                process,
                f"Service {process.name!r} was not ready after {timeout:g} s: "
                f"its checker {checker_name(checker)} never returned a true value{said}.",
            )
        if not calls.pending:  # else its answer is awaited in the next round, without a pause
            time.sleep(min(next_delay(now - started), deadline - now))


def _start_error(process: ServiceProcess, message: str) -> ServiceStartError:
    tail = process.log_tail()
    if not tail and process.stdout is not None and process.poll() is not None:
        tail = _read_pipes(process)
    return ServiceStartError(
        message,
        name=process.name,
        command=process.command,
        returncode=process.returncode,
        log_path=process.log_path,
        tail=tail,
    )


def _read_pipes(process: ServiceProcess) -> str:
    try:
        out, err = process.communicate(timeout=1)
    except subprocess.TimeoutExpired:
        return ""
    data = (out or b"") + (err or b"")
    text = data if isinstance(data, str) else data.decode(errors="replace")
    return last_lines(text)
