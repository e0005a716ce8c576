"""Folders for the services of one session: on disk, in memory, for sockets and for locks.

Every folder a session creates is private to the user (mode 0700) and removed at the end of
the session.  ``lock_dir`` is the exception: it is shared by all sessions of the user on the
host, so its place depends on nothing that may differ between two sessions.

A session that is killed cannot remove its folders, so two others do: its watchdog removes
them within seconds of its death, and each new session sweeps the folders of dead sessions
of the same user.  A session folder holds a lock file (``.owner.lock``) that its session
keeps locked; a folder whose lock can be taken belongs to nobody alive.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from logging import Logger
from pathlib import Path

import pytest

from pytest_services._engine import sessions as _sessions
from pytest_services._engine.paths import (
    KEEP_LOGS,
    LOGS,
    MAX_SOCKET_PATH,
    StrPath,
    private_dir,
    shared_user_dir,
    socket_path,
)
from pytest_services._engine.sessions import (  # noqa: F401 (this module's names too)
    OWNER_LOCK,
    PREFIX,
    sweep_dead_sessions,
)
from pytest_services.exceptions import (
    FolderError,
    FolderWarning,
)

__all__ = [
    "MAX_SOCKET_PATH",
    "FolderError",
    "FolderWarning",
    "StrPath",
    "base_dir",
    "default_lock_dir",
    "keep_logs",
    "lock_dir",
    "log_dir",
    "memory_base_dir",
    "memory_root",
    "memory_root_dir",
    "memory_temp_dir",
    "private_dir",
    "root_dir",
    "run_dir",
    "shared_user_dir",
    "socket_path",
    "temp_dir",
]

_session_dir = _sessions.session_dir
_release_session_dir = _sessions.release_session_dir
#: Below this much free space, ``memory_root_dir`` falls back to ``root_dir``.
MIN_MEMORY_FREE = 512 * 1024 * 1024
SHM = "/dev/shm"


def default_lock_dir() -> str:
    """The lock folder of the current user; the same for every session of that user.

    In ``/dev/shm`` where the user may write there (locks there cost a fraction of those on
    disk), else in ``/tmp``; unlike free space, that is the same for all the user's sessions.
    """
    usable = os.path.isdir(SHM) and os.access(SHM, os.W_OK | os.X_OK)
    parent = SHM if usable else "/tmp"
    return os.path.join(parent, f"pytest-services-locks-{os.getuid()}")


def memory_root(root_dir: StrPath) -> str:
    """``/dev/shm`` when it exists, is writable and has room; ``root_dir`` otherwise."""
    try:
        usage = shutil.disk_usage(SHM)
    except OSError:
        return os.fspath(root_dir)
    if usage.free >= MIN_MEMORY_FREE and os.access(SHM, os.W_OK | os.X_OK):
        return SHM
    return os.fspath(root_dir)


def absolute(config: pytest.Config, path: StrPath) -> str:
    """``path`` as an absolute path; a relative one is taken from where pytest was started."""
    return os.path.normpath(os.path.join(config.invocation_params.dir, os.fspath(path)))


@contextlib.contextmanager
def _owned_session_dir(
    request: pytest.FixtureRequest, parent: StrPath, worker_id: str, log: Logger, what: str
) -> Iterator[str]:
    """A new session folder in ``parent``, after sweeping those of dead sessions there; it
    is this process's own until the block ends (the caller removes it)."""
    parent = absolute(request.config, parent)
    sweep_dead_sessions(parent, log)
    path = _session_dir(parent, worker_id)
    log.debug("created %s %s", what, path)
    try:
        yield path
    finally:
        _release_session_dir(path)


def _sub_dir(parent: str, name: str, services_log: Logger) -> str:
    path = os.path.join(parent, name)
    os.makedirs(path, mode=0o700, exist_ok=True)
    services_log.debug("created %s", path)
    return path


@pytest.fixture(scope="session")
def root_dir() -> str:
    """Parent of ``base_dir``: the system's temporary folder; override to move it."""
    return tempfile.gettempdir()


@pytest.fixture(scope="session")
def base_dir(
    request: pytest.FixtureRequest, root_dir: StrPath, worker_id: str, services_log: Logger
) -> Iterator[str]:
    """Private folder of this session (and worker) on disk, removed when the session ends."""
    with _owned_session_dir(request, root_dir, worker_id, services_log, "base dir") as path:
        yield path
    logs = os.path.join(path, LOGS)
    if os.path.exists(os.path.join(logs, KEEP_LOGS)):
        # A service failed to start or died, and an error named its log: keep the logs only.
        for entry in os.listdir(path):
            if entry != LOGS:
                _remove(os.path.join(path, entry))
        services_log.warning("kept the logs of services that failed or died in %s", logs)
    else:
        shutil.rmtree(path, ignore_errors=True)
        services_log.debug("removed base dir %s", path)


@pytest.fixture(scope="session")
def temp_dir(base_dir: str, services_log: Logger) -> str:
    """Scratch folder inside ``base_dir``."""
    return _sub_dir(base_dir, "tmp", services_log)


@pytest.fixture(scope="session")
def memory_root_dir(request: pytest.FixtureRequest, root_dir: StrPath) -> str:
    """Parent of ``memory_base_dir``: ``/dev/shm`` when present and roomy, else ``root_dir``."""
    return memory_root(absolute(request.config, root_dir))


@pytest.fixture(scope="session")
def memory_base_dir(
    request: pytest.FixtureRequest, memory_root_dir: StrPath, worker_id: str, services_log: Logger
) -> Iterator[str]:
    """Private in-memory folder of this session (and worker), removed when the session ends."""
    with _owned_session_dir(
        request, memory_root_dir, worker_id, services_log, "memory base dir"
    ) as path:
        yield path
    shutil.rmtree(path, ignore_errors=True)
    services_log.debug("removed memory base dir %s", path)


@pytest.fixture(scope="session")
def memory_temp_dir(memory_base_dir: str, services_log: Logger) -> str:
    """Scratch folder inside ``memory_base_dir``: fast storage for service data."""
    return _sub_dir(memory_base_dir, "tmp", services_log)


@pytest.fixture(scope="session")
def run_dir(memory_base_dir: str, services_log: Logger) -> str:
    """Folder for the sockets and pid files of this session's services."""
    return _sub_dir(memory_base_dir, "run", services_log)


@pytest.fixture(scope="session")
def lock_dir(services_log: Logger) -> str:
    """Folder of the port and display locks, shared by all sessions of the user on the host."""
    path = shared_user_dir(default_lock_dir(), "locks")
    services_log.debug("lock dir %s", path)
    return path


def log_dir(base_dir: StrPath) -> Path:
    """Folder where services write their output."""
    return Path(private_dir(Path(base_dir, LOGS)))


def keep_logs(logs: StrPath) -> None:
    """Keep the log folder when the session ends (a service failed and its log was named)."""
    Path(logs, KEEP_LOGS).touch()


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)
