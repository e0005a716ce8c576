"""Running commands to completion, and finding the programs that services run.

Nothing here needs pytest.  :func:`check_output` runs a helper command (``xauth``,
``mariadb-install-db``...) in a process group of its own that the watchdog knows, so that
nothing it spawns outlives pytest either.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, TypeVar

from pytest_services._engine import reaper as _reaper
from pytest_services._engine.groups import kill_group
from pytest_services._engine.paths import StrPath
from pytest_services.exceptions import (
    CalledProcessWithOutputError,
    ServiceError,
)

#: A shell that waits at a gate (a pipe) until the watchdog knows its group, then becomes
#: the program: ``$0`` and ``$@`` are the command.
_GATE = 'read _ </proc/self/fd/{fd} && exec "$0" "$@"'
_SHELL = "/bin/sh"

Process = TypeVar("Process", bound="subprocess.Popen[Any]")

#: Sets that record the process groups started while :func:`collect_groups` is active.
_collectors: list[set[int]] = []
_collectors_lock = threading.Lock()


@contextlib.contextmanager
def collect_groups() -> Iterator[set[int]]:
    """Yield a set that gathers the process groups started (in any thread) until the block
    ends: a caller that must abort a piece of work can stop everything it started."""
    found: set[int] = set()
    with _collectors_lock:
        _collectors.append(found)
    try:
        yield found
    finally:
        with _collectors_lock:
            # By identity: a nested collector may hold the same groups, and so compare equal.
            _collectors[:] = [other for other in _collectors if other is not found]


def _collected(pid: int) -> None:
    with _collectors_lock:
        for found in _collectors:
            found.add(pid)


def spawn_watched(popen: Callable[..., Process], command: Any, kwargs: dict[str, Any]) -> Process:
    """Start ``command`` in a session of its own that the watchdog watches before it runs.

    The program is held at a gate until the watchdog has its process group, so a pytest
    killed while starting it leaves nothing running (the gate sees end-of-file and nothing
    is run).  Commands given to a shell, or with their own ``executable``, start ungated.
    """
    kwargs["start_new_session"] = True
    kwargs.pop("process_group", None)
    if isinstance(command, (str, bytes, os.PathLike)):
        command = [command]
    gated = (
        not kwargs.get("shell")
        and "executable" not in kwargs
        and os.path.exists(_SHELL)
        and os.path.isdir("/proc/self/fd")
    )
    if not gated:
        process = popen(command, **kwargs)
        _reaper.watch(process.pid)
        _collected(process.pid)
        return process
    gate, opener = os.pipe()
    closing = f" {gate}<&-" if gate <= 9 else ""  # a POSIX shell names descriptors 0 to 9
    kwargs["pass_fds"] = (*kwargs.get("pass_fds", ()), gate)
    try:
        process = popen(
            [_SHELL, "-c", _GATE.format(fd=gate) + closing, *map(os.fspath, command)], **kwargs
        )
    except BaseException:
        os.close(opener)
        raise
    finally:
        os.close(gate)
    try:
        _reaper.watch(process.pid)
        _collected(process.pid)
        os.write(opener, b"go\n")
    finally:
        os.close(opener)
    return process


def check_output(*popenargs: Any, **kwargs: Any) -> tuple[bytes, bytes]:
    """Run a command and return its ``(stdout, stderr)``; raise on a non-zero exit code."""
    for stream in ("stdout", "stderr"):
        if stream in kwargs:
            raise ValueError(f"{stream} argument not allowed, it will be overridden.")
    command = kwargs.pop("args") if "args" in kwargs else popenargs[0]
    options = dict(zip(("bufsize", "executable", "stdin"), popenargs[1:]), **kwargs)
    options.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process: subprocess.Popen[bytes] = spawn_watched(subprocess.Popen, command, options)
    try:
        output, err = process.communicate()
    finally:
        kill_group(process)  # whatever it left running, or all of it when we were interrupted
        _reaper.forget(process.pid)
    if process.returncode:
        raise CalledProcessWithOutputError(process.returncode, command, output, err)
    return output, err


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
