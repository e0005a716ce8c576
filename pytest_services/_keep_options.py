"""The value of ``--services-keep`` (or its ini twin, or CI), and this process's kept services.

Read by the ``shared_service`` fixture and by the hooks of
:mod:`pytest_services._keep_plugin`.
"""

from __future__ import annotations

import math
import os
import uuid
from typing import Optional

import pytest

from pytest_services._engine.paths import private_dir, shared_user_dir
from pytest_services._keep.leases import RUN_ID
from pytest_services._keep.lookup import KeptReport, KeptServices
from pytest_services._keep.store import KEEP_DIR_ENV
from pytest_services._options import port_range_option
from pytest_services.folders import default_lock_dir

__all__ = [
    "DEFAULT_MINUTES",
    "KeepState",
    "keep_minutes",
    "keep_root",
    "keep_state",
    "kept_services",
    "parse_minutes",
]

OPTION = "services_keep"
DEFAULT_MINUTES = 15.0
#: Keys of ``workerinput`` (the run id) and ``workeroutput`` (the reports of a worker).
RUN_INPUT = "pytest_services_keep_run"
REPORTS_OUTPUT = "pytest_services_kept"
_FALSE = ("", "0", "false", "no", "off")
_TRUE = ("true", "yes", "on")


class KeepState:
    """What ``--services-keep`` says, and what this process kept."""

    def __init__(self, minutes: Optional[float], source: str) -> None:
        self.minutes = minutes
        self.source = source
        self.kept: Optional[KeptServices] = None
        self.reports: list[KeptReport] = []


_STATE = pytest.StashKey[KeepState]()


def keep_state(config: pytest.Config) -> Optional[KeepState]:
    """The state of ``--services-keep`` in this process (None before configure)."""
    return config.stash.get(_STATE, None)


def configure(config: pytest.Config) -> KeepState:
    state = config.stash[_STATE] = KeepState(*keep_minutes(config))
    return state


def parse_minutes(value: str) -> float:
    """Minutes of ``--services-keep=MINUTES``: a positive number."""
    try:
        minutes = float(value)
    except ValueError:
        minutes = math.nan
    if not 0 < minutes < math.inf:
        raise pytest.UsageError(
            f"Invalid --services-keep value {value!r}: give the idle timeout in minutes, a "
            "positive number, e.g. --services-keep=15 (with '=' when test paths follow)."
        )
    return minutes


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in _FALSE


def keep_minutes(config: pytest.Config) -> tuple[Optional[float], str]:
    """The idle timeout in minutes (None: keeping is off), and where that came from."""
    option: Optional[float] = config.getoption(OPTION, None)
    if option is not None:
        return option, "--services-keep"
    value = str(config.getini(OPTION) or "").strip().lower()
    if value in _FALSE:
        return None, ""
    if in_ci():
        return None, "CI"
    if value in _TRUE:
        return DEFAULT_MINUTES, "the services_keep ini option"
    try:
        return parse_minutes(value), "the services_keep ini option"
    except pytest.UsageError:
        raise pytest.UsageError(
            f"Invalid services_keep ini value {value!r}: give true, false or the idle timeout "
            "in minutes, e.g. services_keep = 15."
        ) from None


def keep_root() -> str:
    """The user's private folder of kept services (``PYTEST_SERVICES_KEEP_DIR`` if set)."""
    configured = os.environ.get(KEEP_DIR_ENV)
    if configured:
        return private_dir(os.path.abspath(configured))
    parent = os.path.dirname(default_lock_dir())
    return shared_user_dir(os.path.join(parent, f"pytest-services-kept-{os.getuid()}"), "kept")


def _run_id(config: pytest.Config) -> str:
    given = str(getattr(config, "workerinput", {}).get(RUN_INPUT, ""))
    return given if RUN_ID.fullmatch(given) else uuid.uuid4().hex


def kept_services(config: pytest.Config) -> Optional[KeptServices]:
    """This process's kept services; None when ``--services-keep`` is off."""
    state = keep_state(config)
    if state is None or state.minutes is None:
        return None
    if state.kept is None:
        state.kept = KeptServices(
            root=keep_root(),
            run_id=_run_id(config),
            minutes=state.minutes,
            lock_dir=shared_user_dir(default_lock_dir(), "locks"),
            rootdir=str(config.rootpath),
            port_range=port_range_option(config),
        )
    return state.kept
