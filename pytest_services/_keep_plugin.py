"""``--services-keep``, ``--services-list`` and ``--services-stop``: the hooks.

The options and their ini twin, the header line, the summary of what became of each kept
service, the commands that list and stop kept services without running tests, and the
pytest-xdist wiring: the controller holds the run's lease for the whole run, names the run
to its workers, and collects what they report.  The engine is :mod:`pytest_services._keep`;
the option's value is read in :mod:`pytest_services._keep_options`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional

import pytest

from pytest_services._keep.commands import list_kept, stop_kept
from pytest_services._keep.lookup import KeptReport
from pytest_services._keep_options import (
    DEFAULT_MINUTES,
    OPTION,
    REPORTS_OUTPUT,
    RUN_INPUT,
    configure,
    keep_root,
    keep_state,
    kept_services,
    parse_minutes,
)
from pytest_services._options import verbosity


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("services")
    group.addoption(
        "--services-keep",
        nargs="?",
        const=DEFAULT_MINUTES,
        default=None,
        type=parse_minutes,
        metavar="MINUTES",
        help="keep every shared_service running after the run, for the next run, until "
        f"MINUTES (default {DEFAULT_MINUTES:g}) pass in which no run uses it; off in CI "
        "unless given here (ini: services_keep).",
    )
    parser.addini(OPTION, "keep shared services between runs: true, false or idle minutes")
    group.addoption(
        "--services-list",
        action="store_true",
        default=False,
        help="list the services kept by --services-keep, run no test, and exit.",
    )
    group.addoption(
        "--services-stop",
        nargs="?",
        const="all",
        default=None,
        metavar="NAME",
        help="stop the kept services named NAME (or whose key starts with it), or all of "
        "them (the default), run no test, and exit.",
    )


def pytest_cmdline_main(config: pytest.Config) -> Optional[int]:
    if config.getoption("services_list", False):
        for line in list_kept(keep_root()):
            print(line)
        return 0
    which: Optional[str] = config.getoption("services_stop", None)
    if which is not None:
        lines, matched = stop_kept(keep_root(), which)
        for line in lines:
            print(line)
        return 0 if matched else int(pytest.ExitCode.USAGE_ERROR)
    return None


def pytest_configure(config: pytest.Config) -> None:
    configure(config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = keep_state(config)
    if verbosity(config) < 1 or state is None:
        return []
    if state.minutes is not None:
        return [
            f"services keep: shared services kept {state.minutes:g} min after their last use "
            f"({state.source}), in {keep_root()}"
        ]
    if state.source == "CI":
        return ["services keep: off, CI is set (pass --services-keep to keep services in CI)"]
    return []


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Name the run to each worker; the controller's lease lasts the whole run."""
    kept = kept_services(node.config)
    if kept is not None:
        kept.lease.hold()
        node.workerinput[RUN_INPUT] = kept.run_id


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    state = keep_state(node.config)
    reports = getattr(node, "workeroutput", {}).get(REPORTS_OUTPUT, ())
    if state is not None:
        state.reports.extend(KeptReport(**report) for report in reports)


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = keep_state(session.config)
    output = getattr(session.config, "workeroutput", None)
    if state is not None and state.kept is not None and output is not None:
        output[REPORTS_OUTPUT] = [asdict(report) for report in state.kept.reports]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = keep_state(config)
    if state is None or verbosity(config) < 0:
        return
    reports = state.reports + (state.kept.reports if state.kept is not None else [])
    if reports:
        terminalreporter.write_sep("=", "kept services (--services-keep)")
        for report in reports:
            terminalreporter.write_line(report.describe())


def pytest_unconfigure(config: pytest.Config) -> None:
    state = keep_state(config)
    if state is not None and state.kept is not None:
        state.kept.close()  # the run is over: the keepers' idle timers start
