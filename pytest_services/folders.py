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
import fcntl
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterator
from logging import Logger
from pathlib import Path
from typing import Union

import pytest

from pytest_services import _reaper

StrPath = Union[str, "os.PathLike[str]"]

#: Below this much free space, ``memory_root_dir`` falls back to ``root_dir``.
MIN_MEMORY_FREE = 512 * 1024 * 1024
SHM = "/dev/shm"
#: Folder of service logs inside ``base_dir``, and the mark that keeps it after the session.
LOGS = "logs"
KEEP_LOGS = ".keep"
#: Session folders are named ``PREFIX{worker_id}-XXXXXXXX``, and hold the owner's lock file.
PREFIX = "pytest-services-"
OWNER_LOCK = ".owner.lock"

#: Lock descriptors of the session folders this process owns, by folder.
_owned: dict[str, int] = {}


class FolderError(Exception):
    """A folder the plugin needs cannot be created or is not safe to use."""


class FolderWarning(UserWarning):
    """A shared folder of the user's was taken by someone else; another one serves."""


def shared_user_dir(preferred: str, name: str) -> str:
    """``preferred`` created private, or, where something not the user's already stands
    there (planted by another user of the host), ``~/.cache/pytest-services/NAME``.

    Every session of the user finds the same thing at ``preferred``, so all of them agree
    on the folder either way; another user can only move it, never make a session fail.
    Where the home folder cannot hold it either (a service account without a writable
    ``HOME``), a fresh private folder serves this process alone, and goes with it: the
    session works, but no longer shares these locks or this cache with the user's others.
    """
    try:
        return private_dir(preferred)
    except FolderError as exc:
        try:
            info = os.lstat(preferred)
        except OSError:
            raise exc from None
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
            raise
        fallback = os.path.join(os.path.expanduser("~"), ".cache", "pytest-services", name)
        try:
            path = private_dir(fallback)
        except FolderError as home_error:
            path = _process_dir(preferred, name)
            warnings.warn(
                f"{exc} {home_error} Using {path} instead, for this process only: other "
                "sessions of yours lock elsewhere and build their own caches (ports and X "
                "displays are still reserved host-wide). Remove the folder, or give HOME a "
                "writable folder, to share them again.",
                FolderWarning,
                stacklevel=2,
            )
            return path
        warnings.warn(
            f"{exc} Using {fallback} instead, for every session of yours while it stays.",
            FolderWarning,
            stacklevel=2,
        )
        return path


#: The last-resort folders of this process, by the place they stand in for.
_process_dirs: dict[tuple[int, str], str] = {}


def _process_dir(preferred: str, name: str) -> str:
    """A private folder for this process alone, which its watchdog removes when it ends."""
    key = (os.getpid(), preferred)
    if key not in _process_dirs:
        _process_dirs[key] = tempfile.mkdtemp(prefix=f"pytest-services-{name}-")
        _reaper.watch_folder(_process_dirs[key])
    return _process_dirs[key]


def private_dir(path: StrPath) -> str:
    """Create ``path`` (and parents) if missing; insist it is ours and closed to others."""
    text = os.fspath(path)
    try:
        os.makedirs(text, mode=0o700, exist_ok=True)
    except FileExistsError:
        pass  # not a folder: reported below
    except OSError as exc:
        raise FolderError(f"Cannot create the folder {text}: {exc.strerror}.") from exc
    info = os.lstat(text)
    if not stat.S_ISDIR(info.st_mode):
        raise FolderError(f"{text} must be a folder, but it is not; remove it.")
    if info.st_uid != os.getuid():
        raise FolderError(
            f"The folder {text} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); "
            "remove it or use another location."
        )
    if info.st_mode & 0o077:
        os.chmod(text, 0o700)
    return text


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


def _session_dir(parent: StrPath, worker_id: str) -> str:
    """Create a private session folder in ``parent``, locked as this process's own."""
    try:
        os.makedirs(parent, exist_ok=True)
        path = tempfile.mkdtemp(prefix=f"{PREFIX}{worker_id}-", dir=parent)
        # Locked under another name, then renamed: a sweeper never finds it unlocked.
        temporary = os.path.join(path, ".owner.tmp")
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(temporary, os.path.join(path, OWNER_LOCK))
    except OSError as exc:
        raise FolderError(
            f"Cannot create a folder in {os.fspath(parent)}: {exc.strerror}."
        ) from exc
    _owned[path] = fd
    _reaper.watch_folder(path)
    return path


def _release_session_dir(path: str) -> None:
    """Give up ownership of a session folder (before removing it or keeping part of it)."""
    _reaper.forget_folder(path)
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(path, OWNER_LOCK))
    fd = _owned.pop(path, None)
    if fd is not None:
        os.close(fd)


def sweep_dead_sessions(parent: StrPath, services_log: Logger) -> list[str]:
    """Remove the session folders in ``parent`` of this user's sessions that died; list them."""
    removed: list[str] = []
    try:
        entries = [entry for entry in os.listdir(parent) if entry.startswith(PREFIX)]
    except OSError:
        return removed
    for entry in entries:
        path = os.path.join(os.fspath(parent), entry)
        if path in _owned:
            continue
        try:
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            fd = os.open(os.path.join(path, OWNER_LOCK), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # not a session folder, or one that is being created or removed
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # its session is alive
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
        services_log.info("removed %s, left behind by a session that died", path)
        removed.append(path)
    return removed


def absolute(config: pytest.Config, path: StrPath) -> str:
    """``path`` as an absolute path; a relative one is taken from where pytest was started."""
    return os.path.normpath(os.path.join(config.invocation_params.dir, os.fspath(path)))


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
    parent = absolute(request.config, root_dir)
    sweep_dead_sessions(parent, services_log)
    path = _session_dir(parent, worker_id)
    services_log.debug("created base dir %s", path)
    yield path
    _release_session_dir(path)
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
    parent = absolute(request.config, memory_root_dir)
    sweep_dead_sessions(parent, services_log)
    path = _session_dir(parent, worker_id)
    services_log.debug("created memory base dir %s", path)
    yield path
    _release_session_dir(path)
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


#: Longest unix socket path the kernel accepts (``sun_path`` holds 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


def socket_path(folder: StrPath, name: str) -> str:
    """Path of socket ``name`` in ``folder``; refuse one too long for a unix socket."""
    path = os.path.join(os.fspath(folder), name)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise FolderError(
            f"The socket path {path} is longer than {MAX_SOCKET_PATH} bytes, the limit of unix "
            "sockets; override memory_root_dir (or root_dir) with a shorter folder."
        )
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
