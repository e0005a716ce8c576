"""Private folders and socket paths: created for the user alone, never trusted otherwise.

Plain functions, no pytest; the folder fixtures in :mod:`pytest_services.folders` are built
on them, and so is every lower layer that needs a folder of its own.
"""

from __future__ import annotations

import os
import stat
import tempfile
import warnings
from typing import Union

from pytest_services._engine import reaper as _reaper
from pytest_services.exceptions import FolderError, FolderWarning

StrPath = Union[str, "os.PathLike[str]"]

#: Folder of service logs inside ``base_dir``, and the mark that keeps it after the session.
LOGS = "logs"
KEEP_LOGS = ".keep"
#: Longest unix socket path the kernel accepts (``sun_path`` holds 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


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


def socket_path(folder: StrPath, name: str) -> str:
    """Path of socket ``name`` in ``folder``; refuse one too long for a unix socket."""
    path = os.path.join(os.fspath(folder), name)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise FolderError(
            f"The socket path {path} is longer than {MAX_SOCKET_PATH} bytes, the limit of unix "
            "sockets; override memory_root_dir (or root_dir) with a shorter folder."
        )
    return path
