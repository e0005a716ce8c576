from __future__ import annotations

import os
from collections.abc import Generator

import pytest

pytest_plugins = "pytester"

#: A Django project whose own test suite the tests run in inner sessions, with its settings.
collect_ignore = ["django_shop"]


@pytest.fixture(autouse=True)
def _inner_sessions_use_private_tmpdir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inner pytest sessions put their folders (and logs kept after failures) in our tmp, and
    do not take themselves for a pytest-xdist worker when this suite runs under ``-n``."""
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("tmpdir")))
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """With ``PYTEST_SERVICES_NO_SKIP`` set (CI), a skipped test fails: CI installs everything."""
    report = yield
    if report.skipped and os.environ.get("PYTEST_SERVICES_NO_SKIP"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped although PYTEST_SERVICES_NO_SKIP is set: {reason}"
    return report
