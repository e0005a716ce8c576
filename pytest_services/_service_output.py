"""What a service wrote: the part of its log a failing test's report shows, and the end of
it that a dead service's error quotes.  Plain code, no pytest."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Optional

__all__ = ["DEFAULT_LINES", "READ_LIMIT", "output_lines", "read_since", "with_headers"]

#: How many lines of each service a failing report shows by default.
DEFAULT_LINES = 20
#: At most this many bytes of a service's output are read for one section.
READ_LIMIT = 64 * 1024


def read_since(fd: int, start: int, lines: int) -> str:
    """The last ``lines`` lines written to the log ``fd`` from byte ``start`` on."""
    end = os.fstat(fd).st_size
    if end < start:
        start = 0  # the log was truncated: all of it is new
    start = max(start, end - READ_LIMIT)
    text = os.pread(fd, end - start, start).decode(errors="replace").rstrip()
    return "\n".join(text.splitlines()[-lines:])


def output_lines(log_path: Optional[Path], lines: int) -> list[str]:
    """The lines of an error that name a log and quote its end."""
    if log_path is None:
        return []
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - READ_LIMIT))
            text = log.read().decode(errors="replace").rstrip()
    except OSError:
        text = ""
    tail = "\n".join(text.splitlines()[-(lines or DEFAULT_LINES) :])
    if not tail:
        return [f"  output: {log_path}", "  it printed nothing"]
    return [
        f"  output: {log_path}",
        f"  last lines of its output:\n{textwrap.indent(tail, '    ')}",
    ]


def with_headers(sections: list[tuple[str, str, Optional[Path]]]) -> list[tuple[str, str]]:
    """The sections, each opening with a line that names its service and log."""
    result = []
    for title, text, log_path in sections:
        service = title[len("Captured stdout of ") :]
        log = f", log {log_path}" if log_path is not None else ""
        result.append((title, f"--- {service}{log} ---\n{text}\n"))
    return result
