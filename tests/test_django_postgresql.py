"""pytest-django's test database on the session's PostgreSQL, migrated once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import django_pg_support as project_files
import pytest
from postgresql_support import in_memory, needs_server, use_cache

pytest.importorskip("django", reason="Django is not installed")
pytest.importorskip("pytest_django", reason="pytest-django is not installed")
pytest.importorskip("psycopg", reason="psycopg is not installed")

pytestmark = needs_server

SHOP = Path(__file__).parent / "django_shop"
INI = "[pytest]\nDJANGO_SETTINGS_MODULE = settings\npythonpath = .\nrun_services = true\n"


@pytest.fixture(scope="module")
def base_cache() -> Iterator[Path]:
    """A cache folder with the initialised cluster, built once for this file."""
    for cache in in_memory("test-django-pg-"):
        folder = cache / "project"
        folder.mkdir()
        (folder / "test_it.py").write_text("def test_it(postgresql):\n    pass\n")
        env = dict(os.environ, PYTEST_SERVICES_CACHE_DIR=str(cache / "cache"))
        subprocess.run(
            [sys.executable, "-m", "pytest", "--run-services", "-p", "no:cacheprovider",
             "-p", "no:django", "-q", str(folder)],
            cwd=folder, env=env, check=True, capture_output=True,
        )  # fmt: skip
        yield cache / "cache"


@pytest.fixture
def project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, base_cache: Path
) -> pytest.Pytester:
    """A small PostgreSQL Django project with a data migration that counts its runs."""
    shutil.copytree(base_cache, pytester.path / "cache", symlinks=True)
    use_cache(monkeypatch, pytester.path / "cache")
    monkeypatch.setenv("MIGRATE_CALLS", str(pytester.path / "migrate-calls"))
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    migrations = pytester.path / "things" / "migrations"
    migrations.mkdir(parents=True)
    (pytester.path / "things" / "__init__.py").write_text("")
    (pytester.path / "things" / "models.py").write_text(project_files.MODELS)
    (migrations / "__init__.py").write_text("")
    (migrations / "0001_initial.py").write_text(project_files.INITIAL)
    (migrations / "0002_seed.py").write_text(project_files.SEED)
    (pytester.path / "settings.py").write_text(project_files.SETTINGS)
    pytester.makeini(INI + "services_django_db = true\n")
    pytester.makepyfile(test_things=project_files.TESTS)
    return pytester


def migrate_calls(pytester: pytest.Pytester) -> int:
    calls = pytester.path / "migrate-calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


PASSED = 8


@pytest.mark.slow
def test_migrations_run_once_for_every_worker_and_run(project: pytest.Pytester) -> None:
    run = project.runpytest_subprocess
    run("-p", "no:cacheprovider").assert_outcomes(passed=PASSED)
    assert migrate_calls(project) == 1
    run("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=PASSED)
    run("-p", "no:cacheprovider", "-n", "2", "--dist", "each").assert_outcomes(passed=2 * PASSED)
    assert migrate_calls(project) == 1
    # A new migration: one rebuild, then the new state is reused.
    (project.path / "things" / "migrations" / "0003_more.py").write_text(
        project_files.SEED.replace("0001_initial", "0002_seed")
        .replace('name="seeded"', 'name="more"')
        .replace('email="Seeded@Example.com"', 'email="more@example.com"')
        .replace('tags=["red", "blue"]', 'tags=["green"]')
        .replace('{"name": "red"}', '{"name": "green"}')
    )
    project.makepyfile(
        test_things=project_files.TESTS.replace('["seeded"]', '["seeded", "more"]')
    )
    run("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=PASSED)
    run("-p", "no:cacheprovider").assert_outcomes(passed=PASSED)
    assert migrate_calls(project) == 3  # the state was built again: both data migrations ran


def test_the_header_names_postgresql(project: pytest.Pytester) -> None:
    first = project.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    first.assert_outcomes(passed=PASSED)
    first.stdout.fnmatch_lines(
        [
            "services django: DATABASES?'default'? is redirected to the session's (each "
            "pytest-xdist worker's) own PostgreSQL 1* (*postgres), over a unix socket",
            "services django: migrated state * (not cached: built on first use)",
        ]
    )
    second = project.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    second.stdout.fnmatch_lines(["services django: migrated state * (cached: reused)"])


def test_services_off_names_postgresql(project: pytest.Pytester) -> None:
    project.makeini(INI.replace("run_services = true\n", "") + "services_django_db = true\n")
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        ["*services_django_db puts Django's test database on pytest-services' PostgreSQL, "
         "but services are off*"]
    )  # fmt: skip


def test_a_bad_services_django_db_value_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makeini(INI + "services_django_db = maybe\n")
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*services_django_db = maybe is not one of: true (follow the default database's "
         "ENGINE), postgresql, mariadb, false (also yes/no, 1/0)"]
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not SHOP.is_dir(), reason="the shop project is missing")
def test_the_shop_project_passes_on_postgresql_plain_and_under_xdist(
    pytester: pytest.Pytester, base_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = pytester.path / "shop"
    shutil.copytree(SHOP, shop, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    ini = shop / "pytest.ini"
    # The shop's own database is sqlite: the ini option chooses PostgreSQL.
    ini.write_text(ini.read_text() + "run_services = true\nservices_django_db = postgresql\n")
    shutil.copytree(base_cache, pytester.path / "cache", symlinks=True)
    use_cache(monkeypatch, pytester.path / "cache")
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    monkeypatch.chdir(shop)
    pytest_command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(shop)]
    plain = pytester.run(*pytest_command, "-v")
    assert plain.ret == 0, plain.stdout.str()
    plain.stdout.fnmatch_lines(["services django: * own PostgreSQL 1*"])
    sync = pytester.path / "sync"
    sync.mkdir()
    monkeypatch.setenv("SHOP_SYNC_DIR", str(sync))
    both = pytester.run(*pytest_command, "-q", "-n", "2", "--dist", "each")
    assert both.ret == 0, both.stdout.str()
    assert sorted(p.name for p in sync.iterdir()) == ["gw0", "gw0.checked", "gw1", "gw1.checked"]
    before = {p.name for p in (base_cache / "postgresql").glob("*-state-*")}
    states = [
        p
        for p in (pytester.path / "cache" / "postgresql").glob("*-state-*")
        if p.is_dir() and p.name not in before
    ]
    assert len(states) == 1  # the shop's migrated state, built once
    assert not (pytester.path / "cache" / "mysql").exists()
