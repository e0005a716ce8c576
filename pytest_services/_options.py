"""The values of the plugin's options, wherever they were given (command line or ini file).

``plugin.py`` declares the options; the fixture modules read them through these functions.
"""

from __future__ import annotations

import re
from typing import Optional

import pytest

_DISPLAY = re.compile(r":?(\d+)(?:\.\d+)?")
_PORT_RANGE = re.compile(r"(\d+)\s*[-:]\s*(\d+)")


def parse_display(value: str) -> int:
    """Parse an X display given as ``:N``, ``:N.S`` (with a screen) or ``N``."""
    match = _DISPLAY.fullmatch(value.strip())
    if match is None:
        raise pytest.UsageError(
            f"Invalid X display {value!r}: give a display number as ':N', ':N.S' or 'N', "
            "e.g. ':99' or ':99.0'."
        )
    return int(match.group(1))


def parse_port_range(value: str) -> tuple[int, int]:
    """Parse a port range given as ``LOW-HIGH`` (both included, 1 to 65535)."""
    match = _PORT_RANGE.fullmatch(value.strip())
    low, high = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not 1 <= low <= high <= 65535:
        raise pytest.UsageError(
            f"Invalid port range {value!r}: give LOW-HIGH with 1 <= LOW <= HIGH <= 65535, "
            "e.g. 20000-30000."
        )
    return low, high


def run_services_option(config: pytest.Config) -> bool:
    """``--run-services`` if given, else the ``run_services`` ini value."""
    option: Optional[bool] = config.getoption("run_services")
    if option is not None:
        return option
    return bool(config.getini("run_services"))


def xvfb_display_option(config: pytest.Config) -> Optional[int]:
    """``--xvfb-display`` if given, else the ``xvfb_display`` ini value, else None."""
    option: Optional[int] = config.getoption("xvfb_display")
    if option is not None:
        return option
    value = config.getini("xvfb_display")
    return parse_display(value) if value else None


def port_range_option(config: pytest.Config) -> Optional[tuple[int, int]]:
    """``--services-port-range`` if given, else the ``services_port_range`` ini, else None."""
    option: Optional[tuple[int, int]] = config.getoption("services_port_range", None)
    if option is not None:
        return option
    value = config.getini("services_port_range")
    return parse_port_range(value) if value else None


def verbosity(config: pytest.Config) -> int:
    """pytest's verbosity level (``-v`` counts up, ``-q`` down), on every pytest version."""
    return int(config.getoption("verbose", 0) or 0)
