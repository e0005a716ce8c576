"""Session folders: private, owned by a live session, removed when their session died.

Plain code, no pytest.  A session folder holds a lock file (``.owner.lock``) that its
session keeps locked; a folder whose lock can be taken belongs to nobody alive, and
:func:`sweep_dead_sessions` removes it.  The watchdog removes a killed session's folders.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from logging import Logger

from pytest_services._engine import reaper as _reaper
from pytest_services._engine.paths import StrPath
from pytest_services.exceptions import FolderError

__all__ = ["OWNER_LOCK", "PREFIX", "release_session_dir", "session_dir", "sweep_dead_sessions"]

#: Session folders are named ``PREFIX{worker_id}-XXXXXXXX``, and hold the owner's lock file.
PREFIX = "pytest-services-"
OWNER_LOCK = ".owner.lock"

#: Lock descriptors of the session folders this process owns, by folder.
_owned: dict[str, int] = {}


def session_dir(parent: StrPath, worker_id: str) -> str:
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


def release_session_dir(path: str) -> None:
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
