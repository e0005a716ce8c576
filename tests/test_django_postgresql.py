"""pytest-django's test database on the session's PostgreSQL, migrated once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import django_pg_support as project_files
import pytest
from django_scenarios import create_db_rebuilds_once, migrate_calls
from postgresql_support import in_memory, needs_server, use_cache

from pytest_services._db.cache import CACHE_DIR_ENV

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
    project.makepyfile(test_things=project_files.TESTS.replace('["seeded"]', '["seeded", "more"]'))
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
import re
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


#: Records, in early-<worker>, each server started early, whether the fixtures claimed it,
#: and whether one they did not claim is gone once stopped; in early-folders, its folders.
EARLY_RECORDER = """
import os
import re

from pytest_services._db.postgresql import early

_init, _claim, _stop, _finish = (
    early.EarlyServer.__init__, early.EarlyServer.claim, early.EarlyServer.stop,
    early.EarlyServer.finish,
)


def _record(what):
    with open(f"early-{os.environ.get('PYTEST_XDIST_WORKER', 'local')}", "a") as out:
        out.write(what + "\\n")


def __init__(self, *args):
    _record("start")
    _init(self, *args)


def claim(self, *args):
    claimed = _claim(self, *args)
    _record(f"claimed {claimed}")
    return claimed


def stop(self):
    process = self.process
    _stop(self)
    if process is not None:
        _record(f"stopped {not os.path.exists(f'/proc/{process.pid}')}")


def finish(self):
    _finish(self)
    if self.session is not None:
        with open("early-folders", "a") as out:
            out.write(self.session + "\\n")


early.EarlyServer.__init__ = __init__
early.EarlyServer.claim = claim
early.EarlyServer.stop = stop
early.EarlyServer.finish = finish
"""


def early(project: pytest.Pytester) -> dict[str, list[str]]:
    """What each worker's early server did in the last run (and forget it)."""
    found = {}
    for path in project.path.glob("early-gw*"):
        found[path.name.split("-", 1)[1]] = path.read_text().split()
        path.unlink()
    local = project.path / "early-local"
    if local.exists():
        found["local"] = local.read_text().split()
        local.unlink()
    return found


def spare_copies(project: pytest.Pytester) -> int:
    """How many spare copies of prepared states the project's cache holds."""
    return len(list(Path(os.environ[CACHE_DIR_ENV]).glob("**/.spare-*")))


def early_folders_left(project: pytest.Pytester) -> list[str]:
    """The early servers' session folders of all runs so far that still exist."""
    folders = (project.path / "early-folders").read_text().split()
    assert folders
    return [path for path in folders if os.path.exists(path)]


@pytest.fixture
def cache_in_memory(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The project's cache moved to memory, where the sessions' copies are: spare copies
    are made only on the same filesystem."""
    for memory in in_memory("test-django-pg-early-"):
        shutil.copytree(project.path / "cache", memory / "cache", symlinks=True)
        use_cache(monkeypatch, memory / "cache")
        yield


@pytest.mark.slow
def test_a_worker_uses_the_server_started_while_it_collected(
    project: pytest.Pytester, cache_in_memory: None
) -> None:
    project.makeconftest(EARLY_RECORDER)
    run = project.runpytest_subprocess
    run("-p", "no:cacheprovider").assert_outcomes(passed=PASSED)
    assert early(project) == {"local": ["start", "claimed", "False"]}  # nothing cached yet
    run("-p", "no:cacheprovider", "-n", "2", "--dist", "each").assert_outcomes(passed=2 * PASSED)
    assert early(project) == {
        "gw0": ["start", "claimed", "True"],
        "gw1": ["start", "claimed", "True"],
    }
    result = run("-p", "no:cacheprovider")
    result.assert_outcomes(passed=PASSED)
    assert early(project) == {"local": ["start", "claimed", "True"]}
    result.stdout.fnmatch_lines(["- services: PostgreSQL 1 reused in *; postgres started 1x in *"])
    # No test of the database selected: the server stops once the tests are collected,
    # the bill says nothing of it, and it took a spare copy but leaves none.
    spares = spare_copies(project)
    assert spares
    blocker = run("-p", "no:cacheprovider", "-k", "test_the_blocker")
    blocker.assert_outcomes(passed=1, deselected=PASSED - 1)
    assert early(project) == {"local": ["start", "stopped", "True"]}
    assert "postgres" not in blocker.stdout.str()
    assert spare_copies(project) == spares - 1
    # A server that is used leaves one, for the next session.
    run("-p", "no:cacheprovider").assert_outcomes(passed=PASSED)
    assert early(project) == {"local": ["start", "claimed", "True"]}
    assert spare_copies(project) == spares - 1
    # --create-db builds the state again, and --collect-only starts no server.
    run("-p", "no:cacheprovider", "--create-db").assert_outcomes(passed=PASSED)
    run("-p", "no:cacheprovider", "--collect-only").assert_outcomes()
    assert early(project) == {}
    assert migrate_calls(project) == 2
    assert early_folders_left(project) == []


@pytest.mark.slow
def test_a_wrong_guess_is_stopped_and_the_right_server_started(project: pytest.Pytester) -> None:
    project.makeconftest(EARLY_RECORDER)
    run = project.runpytest_subprocess
    run("-p", "no:cacheprovider").assert_outcomes(passed=PASSED)
    early(project)
    # A key of the project's own: the early server (of the state the settings name) is wrong.
    project.makeconftest(
        EARLY_RECORDER + "\nimport pytest\n\n@pytest.fixture(scope='session')\n"
        "def django_migrations_key(django_migrations_key):\n"
        "    return django_migrations_key + '-tenant'\n"
    )
    run("-p", "no:cacheprovider").assert_outcomes(passed=PASSED)
    assert early(project) == {"local": ["start", "stopped", "True", "claimed", "False"]}
    assert migrate_calls(project) == 2  # the tenant's own state, built and used
    run("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=PASSED)
    assert migrate_calls(project) == 2
    assert early_folders_left(project) == []


@pytest.mark.slow
def test_a_server_started_early_that_dies_is_noticed_and_its_log_kept(
    project: pytest.Pytester,
) -> None:
    project.makeconftest(EARLY_RECORDER)
    project.makepyfile(
        test_kill="""
        import os, signal

        def test_first(db):  # a test of the database: the server starts early
            pass

        def test_kill(postgresql):
            os.kill(postgresql.pid, signal.SIGKILL)
            while os.waitpid(postgresql.pid, os.WNOHANG) == (0, 0):
                pass
            postgresql.returncode = -9

        # Not a test of the django_db kind, which pytest-django would run first.
        def test_next(django_db_setup):
            pass
        """
    )
    run = project.runpytest_subprocess
    run("-p", "no:cacheprovider", "test_kill.py").assert_outcomes(passed=2, errors=1)
    early(project)
    result = run("-p", "no:cacheprovider", "test_kill.py")
    result.assert_outcomes(passed=2, errors=1)
    assert early(project) == {"local": ["start", "claimed", "True"]}
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_next*",
            "service 'postgres' (pid *) exited with code -9 (SIGKILL)*during*test_kill*",
            "*database system is ready to accept connections",
        ]
    )
    # The log the summary names is kept.
    named = re.search(r"during test_kill.py::test_kill; log: (\S+)", result.stdout.str())
    assert named is not None
    log = Path(named.group(1))
    assert "ready to accept connections" in log.read_text()
    shutil.rmtree(log.parent.parent)
    assert early_folders_left(project) == []


def test_a_server_missing_is_named_by_the_fixtures(
    project: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makeconftest(EARLY_RECORDER)
    monkeypatch.setenv("PYTEST_SERVICES_PG_BINDIR", str(tmp_path))
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-k", "not blocker")
    result.assert_outcomes(errors=PASSED - 1, deselected=1)
    result.stdout.fnmatch_lines([f"E * There is no PostgreSQL server program in {tmp_path} *"])
    assert early(project) == {"local": ["start"]}
    assert early_folders_left(project) == []
