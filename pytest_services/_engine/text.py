"""How error messages describe commands, exits and output.  Plain code, no pytest."""

from __future__ import annotations

import os
import shlex
import signal
from typing import Any

#: How many lines of a service's or command's output an error message shows.
TAIL_LINES = 20


def describe_exit(returncode: int) -> str:
    """``exited with code N`` or ``was killed by SIGNAME``."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def join(command: Any) -> str:
    """A command (a string or a sequence of arguments) as a shell would read it."""
    if isinstance(command, (str, bytes, os.PathLike)):
        return os.fsdecode(command)
    return shlex.join(os.fsdecode(part) for part in command)


def last_lines(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def indent(text: str) -> str:
    """``text`` indented under the line that introduces it."""
    return "\n".join(f"    {line}" for line in text.splitlines())
