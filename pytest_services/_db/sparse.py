"""Copying data directories that are mostly zeros, as holes rather than bytes.

A MariaDB data directory is largely zero-filled: preallocated redo log, system tablespace
grown by undo logs and freed again.  Cache entries are made sparse once
(:func:`sparsify`), and every copy made from them (:func:`copy_tree`) copies only the
ranges that hold data, so a session's copy costs what the data weighs, not what the files
measure.  Where the file system has no holes, both degrade to plain copies.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from typing import Optional

#: A user and group id.
Owner = tuple[int, int]

#: Zero runs shorter than this are not worth a hole; files smaller than it are copied whole.
BLOCK = 64 * 1024


def sparsify(path: str) -> None:
    """Rewrite ``path`` in place with its zero blocks as holes (same size and contents)."""
    size = os.path.getsize(path)
    if size < 4 * BLOCK:
        return
    zero = bytes(BLOCK)
    temporary = f"{path}.sparse"
    with open(path, "rb") as source:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            offset = 0
            while True:
                block = source.read(BLOCK)
                if not block:
                    break
                if block != zero[: len(block)]:
                    os.pwrite(fd, block, offset)
                offset += len(block)
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
    shutil.copymode(path, temporary)
    os.replace(temporary, path)


def sparsify_tree(folder: str) -> str:
    """:func:`sparsify` every file below ``folder``; return ``folder``."""
    for parent, _dirs, files in os.walk(folder):
        for name in files:
            sparsify(os.path.join(parent, name))
    return folder


def copy_file(source: str, target: str, owner: Optional[Owner] = None) -> None:
    """Copy ``source`` to ``target``, keeping its holes as holes; the copy belongs to
    ``owner`` when given (which takes root)."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = os.fstat(src)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        dst = os.open(target, flags, stat.S_IMODE(info.st_mode))
        try:
            if owner is not None:
                os.fchown(dst, *owner)
            _copy_open(src, dst, info.st_size)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_open(source: int, target: int, size: int) -> None:
    if size < 4 * BLOCK:
        _copy_range(source, target, 0, size)
        return
    position = 0
    while position < size:
        try:
            start = os.lseek(source, position, os.SEEK_DATA)
        except OSError:  # no data past ``position``: the rest is a hole
            break
        end = os.lseek(source, start, os.SEEK_HOLE)
        _copy_range(source, target, start, end - start)
        position = end
    os.ftruncate(target, size)


def _copy_range(source: int, target: int, offset: int, count: int) -> None:
    while count > 0:
        try:
            done = os.copy_file_range(source, target, count, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            done = os.pwrite(target, os.pread(source, min(count, 1 << 20), offset), offset)
        if done == 0:
            raise OSError(f"nothing could be copied at offset {offset}")
        offset += done
        count -= done


def copy_tree(source: str, target: str, owner: Optional[Owner] = None) -> None:
    """Copy the folder ``source`` to ``target`` (which may exist), keeping holes and modes.

    A loop of plain system calls: a data directory holds a thousand or more small files,
    and per file this costs half of what :func:`shutil.copytree` does.  With ``owner``
    (which takes root) every copy belongs to that user and group as it is made, and
    ``target`` itself last: a folder of ``owner``'s was copied whole."""
    os.makedirs(target, exist_ok=True)
    with os.scandir(source) as entries:
        for entry in entries:
            path = os.path.join(target, entry.name)
            if entry.is_symlink():
                if os.path.lexists(path):
                    os.unlink(path)
                os.symlink(os.readlink(entry.path), path)
                if owner is not None:
                    os.lchown(path, *owner)
            elif entry.is_dir(follow_symlinks=False):
                copy_tree(entry.path, path, owner)
            else:
                copy_file(entry.path, path, owner)
    os.chmod(target, stat.S_IMODE(os.stat(source).st_mode))
    if owner is not None:
        os.chown(target, *owner)
