"""Service trouble where the user looks: in failing tests' reports and in the session summary.

A failing report gets one section per service of the session, with what the service wrote
while that test ran.  A service that exits on its own before its teardown is noticed at the
next test boundary: a test that requests the fixture holding it errors at setup with its
exit status and last output, its log is kept, and the summary names it.  When nothing fails
the cost per test is an ``fstat`` of each service's log and a ``poll()`` of each process.
The hooks that run at each test are registered only once the session starts a service:
until then a test pays nothing for them.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, Optional

import pytest

from pytest_services import folders
from pytest_services._deaths import Death, DeathSummary, summary_line
from pytest_services._engine import ledger
from pytest_services._remote_services import RemoteService, remote_services
from pytest_services._service_output import DEFAULT_LINES, output_lines, read_since, with_headers
from pytest_services.process import ServiceProcess, running_services
from pytest_services.service import fixtures_reaching, service_owner

#: The ini option of how many lines of each service a failing report shows.
LINES_OPTION = "services_report_lines"
#: The names under which the hooks are registered.
REPORTER_NAME = "services-report"
SUMMARY_NAME = "services-report-summary"


class ServiceReporter:
    """The hooks, with what they remember between two test boundaries."""

    def __init__(self, lines: int, current: Optional[str] = None) -> None:
        self.lines = lines
        #: Services running when the current test started, with the size of their log then.
        self._marks: dict[ServiceProcess, int] = {}
        #: Each service's log, kept open: the last teardown may remove it before the report.
        self._logs: dict[ServiceProcess, int] = {}
        #: Services seen dead, and the deaths that no report has carried yet.
        self._deaths: dict[ServiceProcess, Death] = {}
        self._remote_deaths: dict[RemoteService, Death] = {}
        self._unreported: list[Death] = []
        self._current = current
        #: The sections of the current test, once one of its phases failed.
        self._sections: list[tuple[str, str, Optional[Path]]] = []
        #: Set when the current test errs for a dead service: its message quotes the output.
        self._refused = False

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        services = running_services()
        self._notice_deaths(services, include_function_scope=True)
        self._notice_remote_deaths()
        self._current, self._refused = item.nodeid, False
        if self.lines:
            if self._logs.keys() != set(services):
                self._follow(services)
            self._marks = {p: os.fstat(fd).st_size for p, fd in self._logs.items()}
        if self._deaths:
            self._refuse_dead(item, services)
        if self._remote_deaths and "shared_service" in getattr(item, "fixturenames", ()):
            remote, death = next(iter(self._remote_deaths.items()))
            self._refused = True
            message = [
                f"{death.describe(time.time())}; the shared services of this run cannot be "
                "used any more.",
                f"  command: {' '.join(remote.command)}",
                *output_lines(death.log_path, self.lines),
            ]
            pytest.fail("\n".join(message), pytrace=False)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        # Before the finalizers stop anything; a test may end its own function-scoped service.
        self._notice_deaths(running_services(), include_function_scope=False)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        if self._unreported:
            report.services_died = [  # type: ignore[attr-defined]
                summary_line(death) for death in self._unreported
            ]
            self._unreported = []
        if report.failed and self.lines and not self._refused:
            self._sections = self._read_sections()
            if call.when != "teardown":
                report.sections.extend((title, text) for title, text, _ in self._sections)
        if call.when == "teardown":
            # JUnit XML takes a test's captured output from its teardown report, and joins
            # the sections without their titles: each starts with a line naming its service.
            report.sections.extend(with_headers(self._sections))
            self._sections = []

    def _notice_deaths(self, services: list[ServiceProcess], include_function_scope: bool) -> None:
        for process in services:
            if process in self._deaths or process.poll() is None:
                continue
            if not include_function_scope and service_owner(process)[1] == "function":
                continue
            death = Death(
                process.name,
                process.pid,
                process.returncode,
                time.time(),
                self._current,
                process.log_path,
            )
            self._deaths[process] = death
            self._unreported.append(death)
            if process.log_path is not None:
                folders.keep_logs(process.log_path.parent)

    def _notice_remote_deaths(self) -> None:
        for remote in remote_services():
            if remote in self._remote_deaths:
                continue
            running, returncode = remote.exit_status()
            if running:
                continue
            death = Death(
                remote.name,
                remote.pid,
                returncode,
                time.time(),
                self._current,
                remote.log_path,
                remote.shared,
            )
            self._remote_deaths[remote] = death
            self._unreported.append(death)
            if remote.log_path is not None:
                folders.keep_logs(remote.log_path.parent)

    def _refuse_dead(self, item: pytest.Item, services: list[ServiceProcess]) -> None:
        needed = set(getattr(item, "fixturenames", ()))
        for process in services:
            death = self._deaths.get(process)
            fixture = service_owner(process)[0]
            if death is None or not fixtures_reaching(fixture) & needed:
                continue
            lines = [
                f"{death.describe(time.time())}; the fixture {fixture!r} that started it "
                "cannot be used any more.",
                f"  command: {' '.join(process.command)}",
            ]
            if death.log_path is not None:
                lines.append(f"  output: {death.log_path}")
            tail = process.log_tail(self.lines or DEFAULT_LINES)
            if tail:
                lines.append(f"  last lines of its output:\n{textwrap.indent(tail, '    ')}")
            else:
                lines.append("  it printed nothing")
            self._refused = True
            pytest.fail("\n".join(lines), pytrace=False)

    def _read_sections(self) -> list[tuple[str, str, Optional[Path]]]:
        """One report section per service: what it wrote since the test started."""
        self._follow(running_services(), close=False)
        return [
            (
                f"Captured stdout of service {process.name!r} (pid {process.pid})",
                read_since(fd, self._marks.get(process, 0), self.lines)
                or "no output during this test",
                process.log_path,
            )
            for process, fd in self._logs.items()
        ]

    def _follow(self, services: list[ServiceProcess], close: bool = True) -> None:
        """Open the logs of new services; with ``close``, close those of stopped ones."""
        for process in services:
            if process not in self._logs and process.log_path is not None:
                with contextlib.suppress(OSError):  # removed already: nothing to show
                    self._logs[process] = os.open(process.log_path, os.O_RDONLY | os.O_CLOEXEC)
        if close:
            running = set(services)
            for process in [p for p in self._logs if p not in running]:
                os.close(self._logs.pop(process))

    def pytest_unconfigure(self) -> None:
        for fd in self._logs.values():
            os.close(fd)
        self._logs.clear()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        LINES_OPTION,
        f"lines of each service's output in a failing test's report (default {DEFAULT_LINES}; "
        "0 turns the sections off)",
        default=str(DEFAULT_LINES),
    )


def pytest_configure(config: pytest.Config) -> None:
    lines = report_lines(config)
    if is_controller(config):
        # The workers run the services; their reports bring the deaths to the summary.
        config.pluginmanager.register(DeathSummary(), SUMMARY_NAME)
    if running_services():
        _register(config, lines)
        return

    def first_start() -> None:
        _register(config, lines)

    config.stash[_FIRST_START] = first_start
    ledger.on_first_start(first_start)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    callback = config.stash.get(_FIRST_START, None)
    if callback is not None:
        ledger.cancel(callback)


_FIRST_START = pytest.StashKey[Callable[[], None]]()


def _register(config: pytest.Config, lines: int) -> None:
    """Register the per-test hooks: a service runs now."""
    manager = config.pluginmanager
    if manager.get_plugin(REPORTER_NAME) is not None:
        return
    # Registered in the middle of a test (the service's fixture starts it): that test is
    # the one during which a death would be noticed.
    current = os.environ.get("PYTEST_CURRENT_TEST", "").rpartition(" (")[0] or None
    manager.register(ServiceReporter(lines, current), REPORTER_NAME)
    if manager.get_plugin(SUMMARY_NAME) is None:
        manager.register(DeathSummary(), SUMMARY_NAME)


def is_controller(config: pytest.Config) -> bool:
    """Whether this session is a pytest-xdist controller, which runs no tests itself."""
    return not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no"


def report_lines(config: pytest.Config) -> int:
    """The value of the ``services_report_lines`` ini option; a usage error if malformed."""
    value = str(config.getini(LINES_OPTION)).strip()
    if not value or value.strip("0123456789"):  # str.isdigit() takes '²' and '٣' too
        raise pytest.UsageError(
            f"{LINES_OPTION} must be a whole number of lines written with the digits 0-9, "
            f"such as {DEFAULT_LINES} (0 turns the service sections off), not {value!r}."
        )
    return int(value)
