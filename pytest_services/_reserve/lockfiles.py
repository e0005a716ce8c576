"""Kernel locks on files: one lock per file (``flock``), or one per byte of a lock table.

Both kinds are dropped by the kernel when their holder dies, so they never go stale.  A
:class:`LockTable` lets one open file stand for many numbered resources -- byte N locked
means resource N is held -- so a process holds one descriptor however many ports it
reserves.  It uses open-file-description locks (``F_OFD_SETLK``), which belong to the open
file rather than to the process, and falls back to classic POSIX record locks where the
kernel lacks them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
import time
from collections.abc import Iterator
from typing import IO, Any

from pytest_services._engine.paths import StrPath
from pytest_services.exceptions import LockError

#: ``struct flock`` on Linux: l_type, l_whence, l_start, l_len, l_pid (padded to 32 bytes).
_FLOCK = struct.Struct("hhqqi4x")
_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
#: Bytes of a lock table that stand for resources (ports and displays are far below).
TABLE_END = 2**31
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def _portalocker() -> Any:
    """portalocker, imported on the first lock: with its optional parts it takes tens of
    milliseconds to import, which a session that locks nothing should not pay."""
    import portalocker

    return portalocker


# -- one lock per file -------------------------------------------------------------------------


def open_lock_file(path: str) -> int:
    """Open (creating if needed) the lock file ``path``; refuse links and non-files."""
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o600)
    except OSError as exc:
        raise LockError(
            f"Cannot open the lock file {path}: {exc.strerror}. "
            "Check that it is a regular file you may write, or remove it."
        ) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LockError(f"The lock file {path} is not a regular file; remove it.")
    return fd


def still_linked(fd: int, path: str) -> bool:
    """Tell whether ``path`` is still the file ``fd`` has open (not removed or replaced)."""
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


class _Descriptor:
    """A raw descriptor as the file object that every portalocker release accepts."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def try_lock(path: str) -> int | None:
    """Take the exclusive lock on ``path`` if nobody holds it; never waits.

    Returns the open file descriptor that holds the lock, or None when it is taken.
    """
    portalocker = _portalocker()
    while True:
        fd = open_lock_file(path)
        try:
            portalocker.lock(_Descriptor(fd), portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.LockException as exc:
            os.close(fd)
            if isinstance(exc, portalocker.AlreadyLocked) or _would_block(exc):
                return None
            raise LockError(f"Cannot lock {path}: {exc}") from exc
        if still_linked(fd, path):
            return fd
        os.close(fd)  # its holder removed it as we opened it: lock the new file


def _would_block(exc: BaseException) -> bool:
    """Tell whether a lock failed only because another holder has it (older portalocker
    releases say so with a plain ``LockException`` around the ``OSError``)."""
    causes = [*exc.args, exc.__cause__, exc.__context__]
    return any(
        isinstance(cause, OSError) and cause.errno in (errno.EAGAIN, errno.EACCES)
        for cause in causes
    )


def release(fd: int, path: str, remove: bool) -> None:
    """Drop the lock held through ``fd``; with ``remove``, delete the file first."""
    if remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked, so nobody can lock the removed file
    os.close(fd)


def wait_for_lock(path: str, timeout: float) -> int:
    """Take the lock on ``path``, waiting up to ``timeout`` seconds; return its descriptor."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        fd = try_lock(path)
        if fd is not None:
            return fd
        if time.monotonic() >= deadline:
            raise LockError(
                f"Timed out after {timeout:g} s waiting for the lock file {path}: another "
                f"process holds it{_holder_hint(path)}."
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _holder_hint(path: str) -> str:
    try:
        with open(path) as lock_file:
            owner = lock_file.read(200).strip()
    except OSError:
        return ""
    return f" ({owner})" if owner else ""


# -- lock tables: one byte per resource --------------------------------------------------------


def open_table(path: StrPath, *, shared: bool) -> int:
    """Open the lock table ``path``, creating it if missing.

    A ``shared`` table serves every user of the host: it is created readable and writable by
    all (its contents are never read; only locks on it count), and an existing one is opened
    without ``O_CREAT`` so that the kernel's protection of files in sticky folders lets other
    users open it.  Links and non-files are refused.
    """
    text = os.fspath(path)
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    mode = 0o666 if shared else 0o600
    for attempt in range(20):
        try:
            fd = os.open(text, flags)
        except FileNotFoundError:
            try:
                fd = os.open(text, flags | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                continue
            except OSError as exc:
                raise LockError(f"Cannot create the lock table {text}: {exc.strerror}.") from exc
            os.fchmod(fd, mode)  # past the umask
        except PermissionError as exc:
            if attempt < 19:  # its creator may not have opened it to others yet
                time.sleep(0.005)
                continue
            raise LockError(f"Cannot open the lock table {text}: {exc.strerror}.") from exc
        except OSError as exc:
            reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise LockError(f"Cannot open the lock table {text}: {reason}.") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LockError(f"The lock table {text} is not a regular file.")
        return fd
    raise LockError(f"Cannot open the lock table {text}: it keeps disappearing.")


class LockTable:
    """Byte-range locks on one open file: ``lock(n)`` holds resource ``n`` for this table."""

    _commands: tuple[int, int] = (_OFD_GETLK, _OFD_SETLK)

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    def _fcntl(self, which: int, kind: int, start: int, length: int) -> bytes:
        request = _FLOCK.pack(kind, os.SEEK_SET, start, length, 0)
        try:
            return fcntl.fcntl(self.fd, self._commands[which], request)
        except OSError as exc:
            if exc.errno != errno.EINVAL or self._commands[0] == fcntl.F_GETLK:
                raise
        # No open-file-description locks in this kernel: POSIX locks, held per process.
        LockTable._commands = (fcntl.F_GETLK, fcntl.F_SETLK)
        return fcntl.fcntl(self.fd, self._commands[which], request)

    def lock(self, number: int) -> bool:
        """Take resource ``number`` if no other holder has it; never waits."""
        try:
            self._fcntl(1, fcntl.F_WRLCK, number, 1)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise LockError(f"Cannot lock byte {number} of {self.path}: {exc}") from exc
        return True

    def unlock(self, number: int) -> None:
        """Release resource ``number``."""
        self._fcntl(1, fcntl.F_UNLCK, number, 1)

    def held_elsewhere(self, start: int = 0, stop: int = TABLE_END) -> list[int]:
        """The resources in ``[start, stop)`` that other holders have, in increasing order.

        ``F_GETLK`` answers with *a* conflicting lock, not the lowest one, so the range is
        split around each answer and both sides are asked again.
        """
        found: set[int] = set()
        ranges = [(start, stop)]
        while ranges:
            low, high = ranges.pop()
            if low >= high:
                continue
            answer = self._fcntl(0, fcntl.F_WRLCK, low, high - low)
            kind, _whence, first, length, _pid = _FLOCK.unpack(answer)
            if kind == fcntl.F_UNLCK:
                continue
            end = high if not length else min(high, first + length)
            first = max(first, low)
            found.update(range(first, end))
            ranges += [(low, first), (end, high)]
        return sorted(found)

    def close(self) -> None:
        """Close the table, which drops every lock held through it (only once)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def file_lock(filename: StrPath, remove: bool = True, timeout: float = 20) -> Iterator[IO[str]]:
    """Hold an exclusive lock on ``filename``, waiting up to ``timeout`` s; yields the open file.

    The file is opened for reading and writing at its start; with ``remove`` it is deleted
    when the lock is released.
    """
    path = os.fspath(filename)
    fd = wait_for_lock(path, timeout)
    handle = os.fdopen(fd, "r+", closefd=False)
    try:
        yield handle
    finally:
        with contextlib.suppress(OSError, ValueError):
            handle.close()  # flushes what the caller wrote
        release(fd, path, remove)
