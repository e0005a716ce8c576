"""Environment variables that a fixture sets for as long as it is in use.  Plain code."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def exported(name: str, value: str) -> Iterator[None]:
    """Set an environment variable, and restore what it was (or unset it) afterwards."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
