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
from django_scenarios import create_db_rebuilds_once, migrate_calls
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


#: The project's app without what only PostgreSQL has, for a second alias on SQLite.
PORTABLE_MODELS = """
from django.db import models


class Thing(models.Model):
    name = models.CharField(max_length=50, unique=True)
"""


def _portable_things(project: pytest.Pytester) -> None:
    migrations = project.path / "things" / "migrations"
    (project.path / "things" / "models.py").write_text(PORTABLE_MODELS)
    (migrations / "0001_initial.py").write_text(
        "from django.db import migrations, models\n\n"
        "class Migration(migrations.Migration):\n"
        "    initial = True\n"
        "    operations = [migrations.CreateModel(name='Thing', fields=[\n"
        "        ('id', models.BigAutoField(auto_created=True, primary_key=True)),\n"
        "        ('name', models.CharField(max_length=50, unique=True))])]\n"
    )
    seed = project_files.SEED.replace(
        """, email="Seeded@Example.com", tags=["red", "blue"],
                  data={"colour": {"name": "red"}})""",
        ")",
    )
    assert seed != project_files.SEED
    (migrations / "0002_seed.py").write_text(seed)


def _settings(project: pytest.Pytester, old: str, new: str) -> None:
    path = project.path / "settings.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.slow
def test_nomigrations_builds_the_tables_from_the_models(project: pytest.Pytester) -> None:
    _portable_things(project)
    (project.path / "things" / "models.py").write_text(
        PORTABLE_MODELS + "    size = models.IntegerField(default=0)  # no migration adds it\n"
    )
    project.makepyfile(
        test_things="""
        from django.db import connection
        from things.models import Thing

        def test_the_models_tables(db):
            assert connection.vendor == "postgresql"
            Thing.objects.create(name="big", size=3)
            assert list(Thing.objects.values_list("name", flat=True)) == ["big"]
        """
    )
    run = project.runpytest_subprocess
    run("-p", "no:cacheprovider", "--nomigrations").assert_outcomes(passed=1)
    assert migrate_calls(project) == 0  # no data migration ran
    migrated = run("-p", "no:cacheprovider")  # the migrations know no column "size"
    migrated.assert_outcomes(failed=1)
    migrated.stdout.fnmatch_lines(['*column "size" of relation "things_thing" does not exist*'])
    assert migrate_calls(project) == 1
    run("-p", "no:cacheprovider", "-n", "2", "--nomigrations").assert_outcomes(passed=1)
    assert migrate_calls(project) == 1


#: A data migration whose rows depend on what the key cannot see: an environment variable.
FROM_ENV_MIGRATION = """
import os
from django.db import migrations

def add(apps, schema_editor):
    things = apps.get_model("things", "Thing").objects.using(schema_editor.connection.alias)
    things.create(name=os.environ["THING_FROM_ENV"])

class Migration(migrations.Migration):
    dependencies = [("things", "0002_seed")]
    operations = [migrations.RunPython(add, migrations.RunPython.noop)]
"""

@pytest.mark.slow
def test_create_db_rebuilds_the_state_once_and_later_runs_use_it(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project.path / "things" / "migrations" / "0003_from_env.py").write_text(FROM_ENV_MIGRATION)
    create_db_rebuilds_once(project, monkeypatch)


def test_a_second_database_alias_is_set_up_beside_the_default(project: pytest.Pytester) -> None:
    _settings(
        project,
        '"OPTIONS": {"options": "-c statement_timeout=12345", "sslmode": "require"},\n    }\n',
        '"OPTIONS": {"options": "-c statement_timeout=12345", "sslmode": "require"},\n    },\n'
        '    "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": "other.sqlite3",\n'
        '              "TEST": {"NAME": "test_other.sqlite3"}},\n',
    )
    project.makepyfile(
        test_things="""
        import os
        import pytest
        from django.db import connections
        from things.models import Thing

        @pytest.mark.django_db(databases=["default", "other"])
        def test_both():
            assert connections["default"].vendor == "postgresql"
            assert connections["other"].vendor == "sqlite"
            assert connections["other"].settings_dict["NAME"] == "test_other.sqlite3"
            assert os.path.exists("test_other.sqlite3")  # Django's own test database
            Thing.objects.using("other").create(name="elsewhere")
            assert list(Thing.objects.values_list("name", flat=True)) == ["seeded"]
            # Django migrated it as well: its data migration ran there too.
            other = Thing.objects.using("other").order_by("id").values_list("name", flat=True)
            assert list(other) == ["seeded", "elsewhere"]

        def test_only_the_default(db):
            assert list(Thing.objects.values_list("name", flat=True)) == ["seeded"]
        """
    )
    _portable_things(project)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert not (project.path / "test_other.sqlite3").exists()  # torn down as Django does
    assert not (project.path / "other.sqlite3").exists()  # the project's own never touched


@pytest.mark.slow
def test_services_prepare_migrates_once_for_the_runs_after_it(project: pytest.Pytester) -> None:
    run = project.runpytest_subprocess
    result = run("-p", "no:cacheprovider", "--services-prepare", "-n", "2")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["PostgreSQL state pg*-state-*: built (*s)", "*no tests ran*"])
    assert migrate_calls(project) == 1
    run("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=PASSED)
    assert migrate_calls(project) == 1
    again = run("-p", "no:cacheprovider", "--services-prepare")
    again.stdout.fnmatch_lines(["PostgreSQL state pg*-state-*: already in the cache (*s)"])
    assert migrate_calls(project) == 1


CHARSET_TESTS = """
from django.db import connection
from things.models import Thing

def encoding():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_encoding_to_char(encoding) FROM pg_database "
            "WHERE datname = current_database()"
        )
        return cursor.fetchone()[0]

def test_the_test_database_has_the_test_charset(db):
    assert encoding() == "LATIN1"
    Thing.objects.create(name="caf\\u00e9")  # in LATIN1
    assert Thing.objects.get(name="caf\\u00e9")

def test_a_character_latin1_lacks_is_refused(db):
    import django.db
    try:
        Thing.objects.create(name="\\u20ac")
    except django.db.DataError as exc:
        assert "has no equivalent in encoding" in str(exc)
    else:
        raise AssertionError("LATIN1 has no euro sign")

def test_the_reset_keeps_the_charset(postgresql_clean, transactional_db):
    assert encoding() == "LATIN1"
    assert list(Thing.objects.values_list("name", flat=True)) == ["seeded"]
"""


@pytest.mark.slow
def test_the_test_charset_is_the_test_databases_encoding(project: pytest.Pytester) -> None:
    _portable_things(project)
    _settings(
        project,
        '"OPTIONS": {"options": "-c statement_timeout=12345", "sslmode": "require"},\n',
        '"OPTIONS": {"options": "-c statement_timeout=12345", "sslmode": "require"},\n'
        '        "TEST": {"CHARSET": "LATIN1"},\n',
    )
    project.makepyfile(test_things=CHARSET_TESTS)
    run = project.runpytest_subprocess
    run("-p", "no:cacheprovider").assert_outcomes(passed=3)
    run("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=3)
    assert migrate_calls(project) == 1
    # Another charset is another state; the default one (UTF8) too.
    _settings(project, '"CHARSET": "LATIN1"', '"CHARSET": "UTF8"')
    project.makepyfile(
        test_things="""
        from django.db import connection

        def test_utf8(db):
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_encoding")
                assert cursor.fetchone() == ("UTF8",)
        """
    )
    run("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert migrate_calls(project) == 2


def test_an_unknown_test_charset_is_named(project: pytest.Pytester) -> None:
    _settings(
        project,
        '"OPTIONS": {"options": "-c statement_timeout=12345", "sslmode": "require"},\n',
        '"OPTIONS": {"options": "-c statement_timeout=12345", "sslmode": "require"},\n'
        '        "TEST": {"CHARSET": "KLINGON"},\n',
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=PASSED - 1)  # test_the_blocker needs no database
    result.stdout.fnmatch_lines(
        ["E * Django's migrate failed: ImproperlyConfigured: "
         'DATABASES[[]"default"[]][[]"TEST"[]][[]"CHARSET"[]] = \'KLINGON\' cannot be the '
         "encoding of the test database: KLINGON is not a valid encoding name"]
    )  # fmt: skip


#: Records, in early-<worker>, each early copy begun and whether the server fixture took it.
EARLY_RECORDER = """
import os

from pytest_services._db import early_copy

_start, _take = early_copy.start, early_copy.EarlyCopy.take


def _record(what):
    with open(f"early-{os.environ.get('PYTEST_XDIST_WORKER', 'local')}", "a") as out:
        out.write(what + "\\n")


def start(find, scratch, *args):
    _record("start")
    with open("scratch-folders", "a") as out:
        out.write(scratch + "\\n")
    _start(find, scratch, *args)


def take(self, source, data_dir):
    taken = _take(self, source, data_dir)
    _record(f"taken {taken}")
    return taken


early_copy.start = start
early_copy.EarlyCopy.take = take
"""


def early(project: pytest.Pytester) -> dict[str, list[str]]:
    """What each worker's early copy did in the last run (and forget it)."""
    found = {}
    for path in project.path.glob("early-*"):
        found[path.name.split("-", 1)[1]] = path.read_text().split()
        path.unlink()
    return found


@pytest.mark.slow
def test_a_worker_takes_the_migrated_state_copied_while_it_waited(
    project: pytest.Pytester,
) -> None:
    project.makeconftest(EARLY_RECORDER)
    run = project.runpytest_subprocess
    run("-p", "no:cacheprovider").assert_outcomes(passed=PASSED)
    assert early(project) == {"local": ["start", "taken", "False"]}  # nothing cached yet
    run("-p", "no:cacheprovider", "-n", "2", "--dist", "each").assert_outcomes(passed=2 * PASSED)
    assert early(project) == {"gw0": ["start", "taken", "True"], "gw1": ["start", "taken", "True"]}
    run("-p", "no:cacheprovider").assert_outcomes(passed=PASSED)
    assert early(project) == {"local": ["start", "taken", "True"]}
    # No test of the database selected: nothing is copied, and no server starts.
    blocker = run("-p", "no:cacheprovider", "-k", "test_the_blocker")
    blocker.assert_outcomes(passed=1, deselected=PASSED - 1)
    assert "postgres started" not in blocker.stdout.str()
    # --create-db builds the state again: a copy of the old one would be of no use.
    run("-p", "no:cacheprovider", "--create-db").assert_outcomes(passed=PASSED)
    assert early(project) == {}
    assert migrate_calls(project) == 2
    scratch = (project.path / "scratch-folders").read_text().split()
    assert len(scratch) == 4
    assert [path for path in scratch if os.path.exists(path)] == []  # all removed


@pytest.mark.slow
def test_a_wrong_guess_is_copied_again_from_the_right_state(project: pytest.Pytester) -> None:
    project.makeconftest(EARLY_RECORDER)
    run = project.runpytest_subprocess
    run("-p", "no:cacheprovider").assert_outcomes(passed=PASSED)
    early(project)
    # A key of the project's own: the early copy (of the state the settings name) is wrong.
    project.makeconftest(
        EARLY_RECORDER + "\nimport pytest\n\n@pytest.fixture(scope='session')\n"
        "def django_migrations_key(django_migrations_key):\n"
        "    return django_migrations_key + '-tenant'\n"
    )
    run("-p", "no:cacheprovider").assert_outcomes(passed=PASSED)
    assert early(project) == {"local": ["start", "taken", "False"]}
    assert migrate_calls(project) == 2  # the tenant's own state, built and used
    run("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=PASSED)
    assert migrate_calls(project) == 2
