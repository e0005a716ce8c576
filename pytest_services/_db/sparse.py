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


def copy_file(source: str, target: str) -> None:
    """Copy ``source`` to ``target``, keeping its holes as holes."""
    size = os.path.getsize(source)
    if size < 4 * BLOCK:
        shutil.copyfile(source, target)
        return
    with open(source, "rb") as src, open(target, "wb") as dst:
        position = 0
        while position < size:
            try:
                start = os.lseek(src.fileno(), position, os.SEEK_DATA)
            except OSError:  # no data past ``position``: the rest is a hole
                break
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            _copy_range(src.fileno(), dst.fileno(), start, end - start)
            position = end
        os.ftruncate(dst.fileno(), size)


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


def copy_tree(source: str, target: str) -> None:
    """Copy the folder ``source`` to ``target`` (which may exist), keeping holes."""
    shutil.copytree(source, target, copy_function=copy_file, dirs_exist_ok=True)
