"""Services that died before their teardown: what is known of each, and the summary.

Plain code: the hooks of :mod:`pytest_services._report` record a :class:`Death` when they
notice one, and :class:`DeathSummary` (a plugin of its own, cheap at every test) lists them
once at the end of the session, from the reports of every worker.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import pytest

__all__ = ["Death", "DeathSummary", "summary_line"]


@dataclass
class Death:
    """A service seen dead before its teardown."""

    name: str
    pid: int
    #: None for another worker's process that was reaped before it was seen dead.
    returncode: Optional[int]
    noticed_at: float
    during: Optional[str]
    log_path: Optional[Path]
    #: The shared service it belongs to, when another worker started it.
    shared: Optional[str] = None

    def describe(self, now: Optional[float] = None) -> str:
        """``service 'memcached' (pid 12) exited with code -9 (SIGKILL) by 12:03:04, ...``."""
        clock = time.strftime("%H:%M:%S", time.localtime(self.noticed_at))
        if self.returncode is None:
            ended = "ended"
        else:
            ended = f"exited with code {self.returncode}"
            if self.returncode < 0:
                ended += f" ({_signal_name(-self.returncode)})"
        text = f"service {self.name!r} (pid {self.pid}) {ended} by {clock}"
        if self.shared is not None:
            text = f"{text} (shared service {self.shared!r}, started by another worker)"
        if now is not None:
            text += f", {max(0.0, now - self.noticed_at):.1f} s ago"
        return f"{text}, during {self.during}" if self.during else text


class DeathSummary:
    """The services that died, from the reports that carry them (from xdist workers too)."""

    def __init__(self) -> None:
        self.summary: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for line in getattr(report, "services_died", ()):
            # Every worker notices a shared service's death: the summary names it once.
            key = line.split(")", 1)[0]
            if not any(known.split(")", 1)[0] == key for known in self.summary):
                self.summary.append(line)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.summary:
            terminalreporter.section("services that died before their teardown", red=True)
            for line in self.summary:
                terminalreporter.line(line)


def summary_line(death: Death) -> str:
    where = f"; log: {death.log_path}" if death.log_path is not None else ""
    return f"{death.describe()}{where}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
