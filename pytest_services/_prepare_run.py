"""``--services-prepare``: build the prepared database states the collected tests use, run none.

A CI pipeline that spreads one suite over many jobs runs this once, with the suite's usual
arguments, and hands the cache folder (``PYTEST_SERVICES_CACHE_DIR``) to the jobs: none of
them builds a state again.  For each prepared state the collected tests would use -- one per
server fixture and definition of its init fixture (a ``conftest.py`` of a subfolder may
define another) -- the setup of one test that uses it runs, which builds the state as a
test run would, and its teardown; no test body runs.  The session runs in this process
alone, even with ``-n``: the workers of a later run find the states in the cache.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest

from pytest_services._db.prepare import PREPARED

__all__ = ["OPTION", "SERVERS", "PrepareRun", "prepare_requested"]

OPTION = "services_prepare"
#: The fixture that starts each database server, and the fixture that says how to fill it.
SERVERS = {"mysql_watcher": "mysql_init", "postgresql_watcher": "postgresql_init"}


def prepare_requested(config: pytest.Config) -> bool:
    """Tell whether this run only prepares states (``--services-prepare``)."""
    return bool(config.getoption(OPTION, False))


def _definition(item: pytest.Item, fixture: str) -> object:
    """Which definition of ``fixture`` the item gets (the last one wins), as a key."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = getattr(info, "name2fixturedefs", {}).get(fixture, ())
    return id(definitions[-1]) if definitions else None


def representatives(items: list[pytest.Item]) -> list[pytest.Item]:
    """One test for each server fixture and definition of its init fixture that ``items``
    use, in the order of the items."""
    chosen: dict[tuple[str, object], pytest.Item] = {}
    for item in items:
        names = getattr(item, "fixturenames", ())
        for server, init in SERVERS.items():
            if server in names:
                chosen.setdefault((server, _definition(item, init)), item)
    return list(dict.fromkeys(chosen.values()))


def _run(item: pytest.Item, when: str, step: Any) -> bool:
    """Run one step of ``item`` as pytest does, report it only when it fails."""
    call = pytest.CallInfo.from_call(step, when=when)  # type: ignore[arg-type]
    if call.excinfo is None:
        return True
    report = item.ihook.pytest_runtest_makereport(item=item, call=call)
    item.ihook.pytest_runtest_logreport(report=report)
    return False


class PrepareRun:
    """Replaces the test loop of a ``--services-prepare`` run."""

    def __init__(self) -> None:
        self.prepared_by: list[str] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if session.config.option.collectonly:
            return False
        for item in representatives(session.items):
            self.prepared_by.append(item.nodeid)
            ok = _run(item, "setup", lambda item=item: item.ihook.pytest_runtest_setup(item=item))
            _run(
                item,
                "teardown",
                lambda item=item: item.ihook.pytest_runtest_teardown(item=item, nextitem=None),
            )
            if not ok and session.config.option.maxfail:
                break
        return True

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_sep("=", "prepared states (--services-prepare)")
        if not self.prepared_by:
            terminalreporter.write_line("no collected test uses a prepared database state")
        for found in PREPARED:
            how = "built" if found.built else "already in the cache"
            terminalreporter.write_line(
                f"{found.engine} state {found.key}: {how} ({found.seconds:.2f} s)"
            )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and not session.testsfailed:
            session.exitstatus = pytest.ExitCode.OK


def single_process(config: pytest.Config) -> Optional[str]:
    """Keep a ``--services-prepare`` run in this process, even with ``-n``; say so."""
    numprocesses = getattr(config.option, "numprocesses", None)
    if not numprocesses:
        return None
    config.option.numprocesses = 0
    config.option.dist = "no"
    config.option.tx = []
    return f"--services-prepare runs in this process alone (-n {numprocesses} ignored)"
