"""What the Django tests check the same way on each engine: the inner projects differ."""

from __future__ import annotations

import pytest

#: Tests of the rows a data migration made from the environment, which no key can see.
FROM_ENV_TESTS = """
import os
import pytest
from things.models import Thing

@pytest.mark.parametrize("n", [1, 2])
def test_the_rows_of_the_environment(db, n):
    names = set(Thing.objects.values_list("name", flat=True))
    assert names == {"seeded", os.environ["THING_FROM_ENV"]}
"""


def migrate_calls(pytester: pytest.Pytester) -> int:
    """How many times the inner project's migrations ran (its app counts them in a file)."""
    calls = pytester.path / "migrate-calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def create_db_rebuilds_once(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state made stale by what its key cannot see is rebuilt once by ``--create-db``,
    for all workers, and later runs use the rebuilt state.  ``project`` migrates rows from
    ``THING_FROM_ENV``."""
    run = project.runpytest_subprocess
    project.makepyfile(test_things=FROM_ENV_TESTS)
    monkeypatch.setenv("THING_FROM_ENV", "first")
    run("-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert migrate_calls(project) == 1
    monkeypatch.setenv("THING_FROM_ENV", "second")  # not in the key: the state is stale
    run("-p", "no:cacheprovider").assert_outcomes(failed=2)
    both = run("-p", "no:cacheprovider", "-n", "2", "--dist", "each", "--create-db", "-v")
    both.assert_outcomes(passed=4)
    both.stdout.fnmatch_lines(
        ["services django: migrated state * (--create-db: rebuilt once in this run)"]
    )
    assert migrate_calls(project) == 2  # one rebuild for both workers
    run("-p", "no:cacheprovider").assert_outcomes(passed=2)
    run("-p", "no:cacheprovider", "-n", "2", "--reuse-db").assert_outcomes(passed=2)
    assert migrate_calls(project) == 2  # later runs use the rebuilt state
