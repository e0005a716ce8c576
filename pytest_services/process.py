"""Start a service process, wait until it is ready, and stop it with everything it spawned.

Nothing here needs pytest: :func:`start_service` returns a :class:`ServiceProcess` (a
``subprocess.Popen``) running in its own process group, and :meth:`ServiceProcess.stop` ends
that whole group.  The ``watcher_getter`` fixture in :mod:`pytest_services.service` wires
these to pytest's finalizers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Union

from pytest_services import _reaper

StrPath = Union[str, "os.PathLike[str]"]

#: Shortest and longest pause between two readiness checks.
FIRST_DELAY = 0.001
MAX_DELAY = 0.05
#: Seconds between SIGTERM and SIGKILL when stopping a service.
DEFAULT_GRACE = 5.0
#: How many lines of a service's output an error message quotes.
TAIL_LINES = 20


class ServiceError(Exception):
    """A service could not be started or was not ready in time."""


class ServiceStartError(ServiceError):
    """A service exited while starting, or never became ready."""

    def __init__(
        self,
        message: str,
        *,
        name: str,
        command: Sequence[str],
        returncode: int | None = None,
        log_path: Path | None = None,
        tail: str = "",
    ) -> None:
        self.name = name
        self.command = list(command)
        self.returncode = returncode
        self.log_path = log_path
        self.tail = tail
        lines = [message, f"  command: {shlex.join(self.command)}"]
        if log_path is not None:
            lines.append(f"  output: {log_path}")
        if tail:
            lines.append(f"  last lines of its output:\n{_indent(tail)}")
        elif returncode is not None or log_path is not None:
            lines.append("  it printed nothing")
        super().__init__("\n".join(lines))


class CalledProcessWithOutputError(subprocess.CalledProcessError):
    """A command exited with a non-zero code; carries its ``output`` and ``err``."""

    def __init__(self, returncode: int, cmd: Any, output: bytes, err: bytes) -> None:
        super().__init__(returncode, cmd, output, err)
        self.err = err

    def __str__(self) -> str:
        lines = [f"Command {_describe_exit(self.returncode)}.", f"  command: {_join(self.cmd)}"]
        for label, data in (("stdout", self.output), ("stderr", self.err)):
            if data:
                text = _last_lines(data.decode(errors="replace"))
                lines.append(f"  last lines of its {label}:\n{_indent(text)}")
        return "\n".join(lines)


def check_output(*popenargs: Any, **kwargs: Any) -> tuple[bytes, bytes]:
    """Run a command and return its ``(stdout, stderr)``; raise on a non-zero exit code."""
    for stream in ("stdout", "stderr"):
        if stream in kwargs:
            raise ValueError(f"{stream} argument not allowed, it will be overridden.")
    process = subprocess.Popen(  # type: ignore[call-overload]
        *popenargs, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
    )
    output, err = process.communicate()
    if process.returncode:
        cmd = kwargs.get("args", popenargs[0] if popenargs else None)
        raise CalledProcessWithOutputError(process.returncode, cmd, output, err)
    return output, err


class ServiceProcess(subprocess.Popen):  # type: ignore[type-arg]
    """A running service: a ``Popen`` that leads its own process group."""

    name: str
    command: list[str]
    log_path: Path | None
    grace: float
    #: Wall-clock time (``time.time()``) at which the service was started.
    started_at: float

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
        return _last_lines(data.decode(errors="replace"), lines)

    def stop(self, grace: float | None = None) -> None:
        """End the service's whole process group: SIGTERM, then SIGKILL after ``grace`` s."""
        grace = self.grace if grace is None else grace
        try:
            if grace > 0:
                deadline = time.monotonic() + grace
                _signal_group(self.pgid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.wait(timeout=grace)  # the leader first: no polling in the usual case
                _wait_for_group(self, deadline)
            if grace <= 0 or _group_alive(self.pgid):
                _signal_group(self.pgid, signal.SIGKILL)
                self.wait()
                if _group_alive(self.pgid):
                    _wait_for_group(self, time.monotonic() + 10.0)
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


def find_program(
    names: str | Sequence[str],
    package: str,
    *,
    first: Sequence[str] = (),
    then: Sequence[str] = (),
) -> str:
    """Path of the first of ``names`` found in ``first``, on PATH, then in ``then``.

    Raises an error naming the Debian ``package`` that provides the program when none is
    found.
    """
    candidates = (names,) if isinstance(names, str) else tuple(names)
    search = os.pathsep.join([*first, os.environ.get("PATH", os.defpath), *then])
    for name in candidates:
        found = shutil.which(name, path=search)
        if found is not None:
            return found
    raise ServiceError(
        f"{' or '.join(candidates)} is not installed: not found in {search}. "
        f"Install the Debian package {package!r}: apt-get install {package}"
    )


def find_executable(name: StrPath, cwd: StrPath | None = None) -> str:
    """Resolve a command name the way ``execvp`` would, or raise a clear error."""
    text = os.fspath(name)
    if os.sep in text:
        path = Path(cwd or ".", text) if not os.path.isabs(text) else Path(text)
        if not path.exists():
            raise ServiceError(f"Cannot start {text!r}: {path.absolute()} does not exist.")
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ServiceError(
                f"Cannot start {text!r}: {path.absolute()} is not an executable file."
            )
        return text
    found = shutil.which(text)
    if found is None:
        raise ServiceError(
            f"Cannot start {text!r}: no such executable on PATH ({os.environ.get('PATH', '')})."
        )
    return found


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
    ``log_dir``.  On any failure the process group is stopped before the error is raised.
    """
    kwargs = dict(popen_kwargs or {})
    executable = find_executable(name, kwargs.get("cwd"))
    command = [executable, *(os.fspath(arg) for arg in arguments or ())]
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
    kwargs["start_new_session"] = True
    kwargs.pop("process_group", None)
    try:
        process = ServiceProcess(command, **kwargs)
    except OSError as exc:
        raise ServiceError(
            f"Cannot start {label!r}: {exc} (command: {shlex.join(command)})"
        ) from exc
    finally:
        if log_file is not None:
            log_file.close()
    process.name, process.command, process.log_path, process.grace = label, command, log_path, grace
    process.started_at = time.time()
    _reaper.watch(process.pgid)
    _running[process.pid] = process
    try:
        _wait_until_ready(process, checker, timeout)
    except BaseException:
        process.stop(grace=min(grace, 1.0))
        raise
    return process


def _open_log(
    label: str, log_dir: StrPath | None, kwargs: dict[str, Any]
) -> tuple[Path | None, IO[bytes] | None]:
    if log_dir is None or ("stdout" in kwargs and "stderr" in kwargs):
        return None, None
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    for number in range(1000):
        path = Path(log_dir, f"{label}.log" if number == 0 else f"{label}-{number}.log")
        try:
            log_file = open(path, "xb")  # noqa: SIM115 - handed to the child, closed by caller
        except FileExistsError:
            continue
        kwargs.setdefault("stdout", log_file)
        kwargs.setdefault("stderr", subprocess.STDOUT if kwargs["stdout"] is log_file else log_file)
        return path, log_file
    raise ServiceError(f"Too many logs named {label!r} in {log_dir}.")


def _wait_until_ready(
    process: ServiceProcess, checker: Callable[[], object] | None, timeout: float
) -> None:
    started = time.monotonic()
    deadline = started + timeout
    while True:
        returncode = process.poll()
        if returncode is not None:
            raise _start_error(
                process,
                f"Service {process.name!r} {_describe_exit(returncode)} before it was ready "
                f"({time.monotonic() - started:.2f} s after start).",
            )
        if checker is None or _checked(checker):
            return
        now = time.monotonic()
        if now >= deadline:
            raise _start_error(
                process,
                f"Service {process.name!r} was not ready after {timeout:g} s: "
                f"its checker {_checker_name(checker)} never returned a true value.",
            )
        time.sleep(min(_next_delay(now - started), deadline - now))


def _next_delay(elapsed: float) -> float:
    """Pause before the next check: a tenth of the time waited so far, within bounds.

    A service that needs 50 ms is noticed within about 5 ms of being ready, one that needs
    a second within 50 ms: the delay in noticing stays near 10 % whatever the start-up time.
    """
    return min(MAX_DELAY, max(FIRST_DELAY, elapsed / 10))


def _checked(checker: Callable[[], object]) -> bool:
    try:
        return bool(checker())
    except OSError:
        # Connection refused, socket not there yet: the usual "not ready" answers.
        return False


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
    return _last_lines(text)


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _checker_name(checker: Callable[[], object]) -> str:
    """``name()`` for a function, the ``repr`` of other checkers (``tcp(127.0.0.1:80)``)."""
    name = getattr(checker, "__qualname__", None)
    return f"{name}()" if name else repr(checker)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        # A member changed its user and we may not signal it; signal what we can.
        for pid in _group_members(pgid):
            with contextlib.suppress(OSError):
                os.kill(pid, signum)


def _wait_for_group(process: ServiceProcess, deadline: float) -> None:
    delay = FIRST_DELAY
    while time.monotonic() < deadline:
        process.poll()  # reap the leader so that it does not count as alive
        if not _group_alive(process.pgid):
            return
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_DELAY)


def _group_members(pgid: int) -> list[int]:
    """Return the pids in process group ``pgid`` that are not zombies (Linux ``/proc``)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except OSError as exc:
        if exc.errno != errno.EPERM:
            return False
    # Some process is in the group; zombies count too, so ask /proc where it exists.
    if os.path.isdir("/proc/self"):
        return bool(_group_members(pgid))
    return True


def _join(command: Any) -> str:
    if isinstance(command, (str, bytes, os.PathLike)):
        return os.fsdecode(command)
    return shlex.join(os.fsdecode(part) for part in command)


def _last_lines(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
