"""Session and worker ids, and the deprecated ``slave_id``."""

from __future__ import annotations

import pytest


def test_ids_outside_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import re

        def test_ids(worker_id, session_id):
            assert worker_id == "local"
            assert re.fullmatch(r"[0-9a-f]{32}-local", session_id), session_id
        """
    )
    # pytest-xdist is installed and defines a worker_id fixture of its own ("master").
    pytester.runpytest_subprocess("-p", "xdist").assert_outcomes(passed=1)
    pytester.runpytest_subprocess("-p", "no:xdist").assert_outcomes(passed=1)


def test_ids_in_xdist_workers_are_distinct(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pathlib, pytest

        def test_ids(worker_id, session_id, tmp_path_factory):
            out = tmp_path_factory.getbasetemp().parent.parent / f"ids-{worker_id}"
            out.write_text(f"{worker_id} {session_id}")
            assert session_id.endswith("-" + worker_id)
        """
    )
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist", "each", "--basetemp", str(pytester.path / "bt")
    )
    result.assert_outcomes(passed=2)
    files = sorted(pytester.path.glob("ids-gw*"))
    values = [f.read_text().split() for f in files]
    assert [v[0] for v in values] == ["gw0", "gw1"]
    assert len({v[1] for v in values}) == 2


def test_slave_id_is_deprecated_alias(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_old(slave_id, worker_id):
            assert slave_id == worker_id == "local"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-W", "default")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        ["*PytestDeprecationWarning: The 'slave_id' fixture is deprecated; use 'worker_id'*"]
    )
