"""Running commands to completion, and finding the programs that services run.

Nothing here needs pytest.  :func:`check_output` runs a helper command (``xauth``,
``mariadb-install-db``...) in a process group of its own that the watchdog knows, so that
nothing it spawns outlives pytest either.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from pytest_services._engine import reaper as _reaper
from pytest_services._engine.groups import kill_group, signal_tagged
from pytest_services._engine.paths import StrPath
from pytest_services.exceptions import (
    CalledProcessWithOutputError,
    ServiceError,
)

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
        with _collectors_lock:  # by identity: two sets with the same groups are equal
            _collectors[:] = [other for other in _collectors if other is not found]


def _collected(pid: int) -> None:
    with _collectors_lock:
        for found in _collectors:
            found.add(pid)


def spawn_watched(popen: Callable[..., Process], command: Any, kwargs: dict[str, Any]) -> Process:
    """Start ``command`` in a session of its own that the watchdog watches from its start.

    Its environment carries a tag of its own (``process.services_tag``) that marks it and
    whatever it spawns, even what leaves its process group.  The watchdog learns the tag
    before the program starts and its group right after, so a pytest killed at any moment
    of the start leaves nothing running.
    """
    kwargs["start_new_session"] = True
    kwargs.pop("process_group", None)
    tag = uuid.uuid4().hex
    kwargs["env"] = _tagged_environment(kwargs.get("env"), tag)
    if isinstance(command, (str, bytes, os.PathLike)):
        command = [command]
    command = _switch_ids_after_exec(command, kwargs)
    _reaper.expect(tag)
    try:
        process = popen(command, **kwargs)
    except BaseException:
        _reaper.unexpect(tag)
        raise
    process.services_tag = tag  # type: ignore[attr-defined]
    _reaper.watch(process.pid, tag)
    _collected(process.pid)
    return process


_SETPRIV: list[Optional[str]] = []


def _switch_ids_after_exec(command: list[Any], kwargs: dict[str, Any]) -> list[Any]:
    """``command`` run through ``setpriv`` when ``kwargs`` change the user or group (the
    options then leave ``kwargs``): a child that changes its ids itself cannot be started
    with ``vfork``, and forking a pytest process of a few hundred MiB costs milliseconds
    (about 10 ms against 2 ms).  The program keeps the pid, group and environment it gets."""
    ids = {key: kwargs.get(key) for key in ("user", "group", "extra_groups")}
    if all(value is None for value in ids.values()) or kwargs.get("preexec_fn") is not None:
        return command
    if kwargs.get("shell") or kwargs.get("executable") is not None:
        return command
    if not all(isinstance(value, int) for value in (ids["user"], ids["group"])):
        return command  # names: left to Popen
    extra = ids["extra_groups"]
    if extra is not None and not all(isinstance(group, int) for group in extra):
        return command
    if not _SETPRIV:
        _SETPRIV.append(shutil.which("setpriv"))
    setpriv = _SETPRIV[0]
    if setpriv is None:
        return command
    groups = "--keep-groups" if extra is None else "--clear-groups"
    if extra:
        groups = "--groups=" + ",".join(map(str, extra))
    for key in ids:
        kwargs.pop(key, None)
    return [setpriv, f"--reuid={ids['user']}", f"--regid={ids['group']}", groups, "--", *command]


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
        signal_tagged(process.services_tag, signal.SIGKILL)  # type: ignore[attr-defined]
        _reaper.forget(process.pid)
    if process.returncode:
        raise CalledProcessWithOutputError(process.returncode, command, output, err)
    return output, err


def _tagged_environment(env: Any, tag: str) -> dict[Any, Any]:
    """A copy of ``env`` (by default this process's) with the tag of a new process."""
    result = dict(os.environ if env is None else env)
    if any(isinstance(key, bytes) for key in result):
        result[os.fsencode(_reaper.TAG_VARIABLE)] = tag.encode()
    else:
        result[_reaper.TAG_VARIABLE] = tag
    return result


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
