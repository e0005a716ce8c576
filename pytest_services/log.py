"""The plugin's logger and small helpers around pytest's output capturing."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest

__all__ = [
    "LOGGER_NAME",
    "dont_capture",
    "get_logger",
    "remove_handlers",
    "services_log",
]

LOGGER_NAME = "pytest_services"


def get_logger(worker_id: str | None = None) -> logging.Logger:
    """Return the plugin's logger, or its child for one xdist worker."""
    logger = logging.getLogger(LOGGER_NAME)
    return logger.getChild(worker_id) if worker_id else logger


@pytest.fixture(scope="session")
def services_log(worker_id: str) -> logging.Logger:
    """The ``pytest_services`` logger (a child per worker); shown by ``--log-cli-level``."""
    return get_logger(worker_id)


@contextlib.contextmanager
def dont_capture(request: pytest.FixtureRequest) -> Iterator[None]:
    """Suspend pytest's output capturing inside the ``with`` block."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        yield
        return
    capman.suspend_global_capture(in_=True)
    try:
        yield
    finally:
        capman.resume_global_capture()


def _is_console_handler(handler: logging.Handler) -> bool:
    if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
        return False
    # pytest's own capture handlers (caplog, live logging) must stay, or pytest breaks.
    return not type(handler).__module__.startswith("_pytest")


def remove_handlers() -> None:
    """Remove console handlers from the root logger; file and pytest's own handlers stay."""
    logging.root.handlers = [h for h in logging.root.handlers if not _is_console_handler(h)]
