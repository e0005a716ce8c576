"""The values of the plugin's options, wherever they were given (command line or ini file).

``plugin.py`` declares the options; the fixture modules read them through these functions.
"""

from __future__ import annotations

import re
from typing import Optional

import pytest

_DISPLAY = re.compile(r":?(\d+)")


def parse_display(value: str) -> int:
    """Parse an X display given as ``:N`` or ``N``."""
    match = _DISPLAY.fullmatch(value.strip())
    if match is None:
        raise pytest.UsageError(
            f"Invalid X display {value!r}: give a display number as ':N' or 'N', e.g. ':99'."
        )
    return int(match.group(1))


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
