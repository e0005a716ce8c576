"""The screen of a failing test that used the X display: a PNG saved when it fails.

The session's Xvfb runs with ``-fbdir``, so its screen is an XWD file in the session's run
folder that :mod:`pytest_services._xwd` reads and encodes as a PNG: no X client, no imaging
library.  A display given with ``--xvfb-display`` is dumped with ``xwd -root`` instead.  The
PNG goes to ``xvfb_screenshots_dir`` (default: ``xvfb-screenshots`` in pytest's base
temporary folder, which pytest keeps for its last three runs), and its path to the failing
report: a section, which JUnit XML carries with ``junit_logging``, and the ``xvfb_screenshot``
property.  The hook is registered when a display is first shown: until then a test pays
nothing for it; after, a passing test costs one attribute read.  A capture that fails only
says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, Optional, Union

import pytest

from pytest_services._xwd import capture_png, read_xwd

#: The ini options: screenshots on or off, and where they go.
ENABLED_OPTION = "xvfb_screenshots"
DIR_OPTION = "xvfb_screenshots_dir"
#: Folder for the screenshots in pytest's base temporary folder, unless the ini names one.
DEFAULT_DIR = "xvfb-screenshots"
#: The name under which the hook is registered.
PLUGIN_NAME = "services-screenshots"
#: The fixtures whose tests get a screenshot when they fail.
FIXTURES = frozenset(("xvfb", "xvfb_display"))
#: The file in which Xvfb keeps screen 0 in its ``-fbdir`` folder.
SCREEN_FILE = "Xvfb_screen0"
_UNSAFE = re.compile(r"[^\w.=-]+")

#: The displays served, each with the ``-fbdir`` folder of its Xvfb (None: use xwd), or the
#: screen as its Xvfb stopped, for the teardown of the session's last test.
SCREENS: dict[int, Union[str, bytes, None]] = {}
#: The hook to register when a display is first shown, with the plugin manager to do it.
_PENDING: list[tuple[pytest.PytestPluginManager, Screenshots]] = []


def enabled(config: pytest.Config) -> bool:
    """The value of the ``xvfb_screenshots`` ini option."""
    return bool(config.getini(ENABLED_OPTION))


@contextlib.contextmanager
def showing(display: int, framebuffer_dir: Optional[str]) -> Iterator[None]:
    """Make ``display`` the one that failing tests' screenshots show, while in use.

    When it ends, before its Xvfb stops, the screen is kept in memory: the last test's
    teardown, which stops the session's fixtures, can fail after that.
    """
    showing_started()
    SCREENS[display] = framebuffer_dir
    try:
        yield
    finally:
        try:
            if framebuffer_dir is not None:
                with open(os.path.join(framebuffer_dir, SCREEN_FILE), "rb") as screen:
                    SCREENS[display] = screen.read()
        except OSError:
            SCREENS.pop(display, None)


class Screenshots:
    """The hook that saves the screen of a failing test, and remembers its report section."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.folder: Optional[Path] = None
        self._sections: list[tuple[str, str]] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        if report.failed and SCREENS and not FIXTURES.isdisjoint(_fixtures(item)):
            self._sections.append(self._capture(item, report))
            report.sections.append(self._sections[-1])
        elif call.when == "teardown" and self._sections:
            # JUnit XML takes a test's captured output from its teardown report.
            report.sections.extend(self._sections)
        if call.when == "teardown":
            self._sections = []

    def pytest_sessionfinish(self) -> None:
        SCREENS.clear()  # the screens kept for the last teardown

    def _capture(self, item: pytest.Item, report: pytest.TestReport) -> tuple[str, str]:
        when = report.when
        funcargs = getattr(item, "funcargs", None) or {}
        display = funcargs.get("xvfb_display")
        if display not in SCREENS:
            display = next(reversed(SCREENS))
        title = f"Captured stdout of the screen of display :{display}"
        started = time.perf_counter()
        try:
            source = SCREENS[display]
            if isinstance(source, bytes):
                png = read_xwd(source).png()
            else:
                png = capture_png(display, source and os.path.join(source, SCREEN_FILE))
            path = self._folder() / f"{_UNSAFE.sub('_', item.nodeid)[-150:]}-{when}.png"
            path.write_bytes(png)
        except Exception as exc:
            return title, f"no screenshot: {type(exc).__name__}: {exc}"
        took = time.perf_counter() - started
        # JUnit XML takes the properties from the teardown report, made from the item's.
        where = report if when == "teardown" else item
        where.user_properties.append(("xvfb_screenshot", str(path)))
        return (
            title,
            f"screenshot at the failure ({when}): {path} ({len(png)} bytes, {took * 1e3:.0f} ms)",
        )

    def _folder(self) -> Path:
        if self.folder is None:
            self.folder = screenshots_dir(self.config)
            self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder


def screenshots_dir(config: pytest.Config) -> Path:
    """``xvfb_screenshots_dir`` (relative to the rootdir), else the default in basetemp."""
    value = str(config.getini(DIR_OPTION) or "").strip()
    if value:
        return Path(config.rootpath, os.path.expanduser(value))
    factory = getattr(config, "_tmp_path_factory", None)  # pytest's own, as tmp_path uses
    base = Path(factory.getbasetemp()) if factory is not None else Path(tempfile.gettempdir())
    return base / DEFAULT_DIR


def _fixtures(item: pytest.Item) -> list[str]:
    names: list[str] = getattr(item, "fixturenames", [])
    return names


def add_options(parser: pytest.Parser) -> None:
    """Declare the ini options (``plugin.py`` calls this from its ``pytest_addoption``)."""
    parser.addini(
        ENABLED_OPTION,
        "save a PNG of the X screen when a test that uses xvfb or xvfb_display fails "
        "(default true)",
        type="bool",
        default=True,
    )
    parser.addini(
        DIR_OPTION,
        f"folder for the screenshots of failing tests (default: {DEFAULT_DIR} in pytest's "
        "base temporary folder)",
        default="",
    )


def configure(config: pytest.Config) -> None:
    """Have the hook registered at the first display shown, when screenshots are on (from
    ``plugin.py``'s ``pytest_configure``)."""
    if enabled(config):
        _PENDING.append((config.pluginmanager, Screenshots(config)))
        if SCREENS:  # a display shown already, by an enclosing session
            showing_started()


def unconfigure(config: pytest.Config) -> None:
    """The session ends: a display shown later is no business of its hook."""
    _PENDING[:] = [pending for pending in _PENDING if pending[0] is not config.pluginmanager]


def showing_started() -> None:
    """Register the hook now, if it waits for a display."""
    while _PENDING:
        manager, hook = _PENDING.pop()
        if manager.get_plugin(PLUGIN_NAME) is None:
            manager.register(hook, PLUGIN_NAME)
