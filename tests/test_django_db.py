"""pytest-django's test database on the session's MariaDB, migrated once."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import mysql_support
import pytest
from django_scenarios import create_db_rebuilds_once, migrate_calls
from mysql_support import needs_server

from pytest_services._db.mysql import server as mysql_module

pytest.importorskip("django", reason="Django is not installed")
pytest.importorskip("pytest_django", reason="pytest-django is not installed")
pytest.importorskip("MySQLdb", reason="mysqlclient is not installed")

pytestmark = needs_server

SHOP = Path(__file__).parent / "django_shop"

SETTINGS = """
SECRET_KEY = "not secret"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "things"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""

INITIAL = """
from django.db import migrations, models

class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Thing",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=50, unique=True)),
            ],
        ),
    ]
"""

SEED = """
import os
from django.db import migrations

def seed(apps, schema_editor):
    with open(os.environ["MIGRATE_CALLS"], "a") as calls:
        calls.write("seed\\n")
    things = apps.get_model("things", "Thing").objects.using(schema_editor.connection.alias)
    things.create(name="seeded")

class Migration(migrations.Migration):
    dependencies = [("things", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
"""

#: A post_migrate handler like django-guardian's: the rows it creates depend on a setting and
#: on an environment variable.
APPS = """
import os
from django.apps import AppConfig
from django.db.models.signals import post_migrate


def create_named(sender, using, **kwargs):
    from django.conf import settings
    from things.models import Thing
    for name in (getattr(settings, "THING_NAME", ""), os.environ.get("THING_FROM_ENV", "")):
        if name:
            Thing.objects.using(using).get_or_create(name=name)


class ThingsConfig(AppConfig):
    name = "things"

    def ready(self):
        post_migrate.connect(create_named, sender=self)
"""

TESTS = """
import pytest
from django.db import connection
from things.models import Thing

def test_on_mariadb_with_migrated_rows(db):
    assert connection.vendor == "mysql"
    assert connection.settings_dict["HOST"].endswith("mysql.sock")
    assert list(Thing.objects.order_by("id").values_list("name", flat=True)) == ["seeded"]
    Thing.objects.create(name="rolled back")

@pytest.mark.django_db(transaction=True)
def test_transactional():
    Thing.objects.create(name="committed")
    assert Thing.objects.filter(name="committed").exists()

def test_rolled_back(db):
    assert not Thing.objects.filter(name="rolled back").exists()

def test_migrated_rows_back_after_a_flush(mysql_clean, transactional_db):
    assert list(Thing.objects.order_by("id").values_list("name", flat=True)) == ["seeded"]
"""


@pytest.fixture(scope="session")
def base_cache() -> Iterator[Path]:
    """A cache folder with the server's base entry, built once for this file."""
    yield from mysql_support.base_cache("test-django-")


@pytest.fixture
def project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, base_cache: Path
) -> pytest.Pytester:
    """A small Django project with a data migration that counts its runs."""
    shutil.copytree(base_cache, pytester.path / "cache", symlinks=True)
    monkeypatch.setenv(mysql_module.CACHE_DIR_ENV, str(pytester.path / "cache"))
    monkeypatch.setenv("MIGRATE_CALLS", str(pytester.path / "migrate-calls"))
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    monkeypatch.delenv("THING_FROM_ENV", raising=False)
    migrations = pytester.path / "things" / "migrations"
    migrations.mkdir(parents=True)
    (pytester.path / "things" / "__init__.py").write_text("")
    (pytester.path / "things" / "apps.py").write_text(APPS)
    (migrations / "__init__.py").write_text("")
    (migrations / "0001_initial.py").write_text(INITIAL)
    (migrations / "0002_seed.py").write_text(SEED)
    (pytester.path / "things" / "models.py").write_text(
        "from django.db import models\n\n\nclass Thing(models.Model):\n"
        "    name = models.CharField(max_length=50, unique=True)\n"
    )
    (pytester.path / "settings.py").write_text(SETTINGS)
    pytester.makeini(
        "[pytest]\nDJANGO_SETTINGS_MODULE = settings\npythonpath = .\n"
        "run_services = true\nservices_django_db = true\n"
    )
    pytester.makepyfile(test_things=TESTS)
    return pytester


@pytest.mark.slow
def test_migrations_run_once_for_every_worker_and_run(project: pytest.Pytester) -> None:
    run = project.runpytest_subprocess
    run("-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert migrate_calls(project) == 1
    run("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=4)
    run("-p", "no:cacheprovider", "-n", "2", "--dist", "each").assert_outcomes(passed=8)
    assert migrate_calls(project) == 1
    # A new migration: one rebuild, then the new state is reused.
    (project.path / "things" / "migrations" / "0003_more.py").write_text(
        SEED.replace("0001_initial", "0002_seed").replace('name="seeded"', 'name="more"')
    )
    project.makepyfile(test_things=TESTS.replace('["seeded"]', '["seeded", "more"]'))
    run("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=4)
    run("-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert migrate_calls(project) == 3  # the state was built again: both data migrations ran


@pytest.mark.slow
def test_services_prepare_migrates_once_for_the_runs_after_it(project: pytest.Pytester) -> None:
    run = project.runpytest_subprocess
    result = run("-p", "no:cacheprovider", "--services-prepare", "-n", "2")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["MySQL state mariadb-*-state-*: built (*s)", "*no tests ran*"])
    assert migrate_calls(project) == 1
    run("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=4)
    assert migrate_calls(project) == 1


def test_services_off_is_a_clear_failure(project: pytest.Pytester) -> None:
    project.makeini(
        "[pytest]\nDJANGO_SETTINGS_MODULE = settings\npythonpath = .\nservices_django_db = true\n"
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(
        ["*services_django_db puts Django's test database on pytest-services' MariaDB, but "
         "services are off: run under pytest-xdist, with --run-services, or set "
         "run_services = true in the ini file."]
    )  # fmt: skip


def test_without_pytest_django_it_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("-p", "no:django", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*services_django_db = true needs pytest-django: pip install 'pytest-services?django?'"]
    )


def _shop(pytester: pytest.Pytester, base_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shop = pytester.path / "shop"
    shutil.copytree(SHOP, shop, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    ini = shop / "pytest.ini"
    ini.write_text(ini.read_text() + "run_services = true\nservices_django_db = true\n")
    shutil.copytree(base_cache, pytester.path / "cache", symlinks=True)
    monkeypatch.setenv(mysql_module.CACHE_DIR_ENV, str(pytester.path / "cache"))
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    monkeypatch.chdir(shop)
    return shop


@pytest.mark.slow
@pytest.mark.skipif(not SHOP.is_dir(), reason="the shop project is missing")
def test_the_shop_project_passes_plain_and_under_xdist(
    pytester: pytest.Pytester, base_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = _shop(pytester, base_cache, monkeypatch)
    plain = pytester.run(
        os.sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(shop)
    )
    assert plain.ret == 0, plain.stdout.str()
    sync = pytester.path / "sync"
    sync.mkdir()
    monkeypatch.setenv("SHOP_SYNC_DIR", str(sync))
    both = pytester.run(
        os.sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2",
        "--dist", "each", str(shop)
    )  # fmt: skip
    assert both.ret == 0, both.stdout.str()
    assert sorted(p.name for p in sync.iterdir()) == ["gw0", "gw0.checked", "gw1", "gw1.checked"]
    # The suite ran on MariaDB: its migrated state is in the cache, built once.
    states = [p for p in (pytester.path / "cache" / "mysql").glob("*-state-*") if p.is_dir()]
    assert len(states) == 1


def _settings(project: pytest.Pytester, databases: str, extra: str = "") -> None:
    """Replace the project's ``DATABASES`` (a Python expression) and add ``extra`` lines."""
    text = SETTINGS.replace(
        'DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}',
        f"DATABASES = {databases}",
    )
    (project.path / "settings.py").write_text(text + extra)


SQLITE = '{"ENGINE": "django.db.backends.sqlite3", "NAME": "%s"}'


def test_a_second_database_alias_is_set_up_beside_the_default(project: pytest.Pytester) -> None:
    other = SQLITE % "other.sqlite3"
    _settings(project, f'{{"default": {SQLITE % "db.sqlite3"}, "other": {other}}}')
    project.makepyfile(
        test_things="""
        import pytest
        from django.db import connections
        from things.models import Thing

        @pytest.mark.django_db(databases=["default", "other"])
        def test_both():
            assert connections["default"].vendor == "mysql"
            assert connections["other"].vendor == "sqlite"
            Thing.objects.using("other").create(name="elsewhere")
            assert list(Thing.objects.values_list("name", flat=True)) == ["seeded"]
            assert Thing.objects.using("other").filter(name="elsewhere").exists()
        """
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_mirrors_of_the_default_database_reach_the_test_database(
    project: pytest.Pytester,
) -> None:
    mysql_replica = (
        '{"ENGINE": "django.db.backends.mysql", "HOST": "127.0.0.1", "PORT": "3306", '
        '"NAME": "shop", "USER": "shop", "PASSWORD": "secret", '
        '"OPTIONS": {"init_command": "SET @replica = 7"}, "TEST": {"MIRROR": "default"}}'
    )
    _settings(
        project,
        f'{{"default": {SQLITE % "db.sqlite3"}, '
        f'"replica": {{"ENGINE": "django.db.backends.sqlite3", "NAME": "replica.sqlite3", '
        f'"TEST": {{"MIRROR": "default"}}}}, "mysql_replica": {mysql_replica}}}',
    )
    project.makepyfile(
        test_things="""
        import pytest
        from django.db import connections
        from things.models import Thing

        @pytest.mark.django_db(transaction=True, databases="__all__")
        def test_mirrors():
            Thing.objects.create(name="written")
            for alias in ("replica", "mysql_replica"):
                assert connections[alias].vendor == "mysql", alias
                assert Thing.objects.using(alias).filter(name="written").exists(), alias
            with connections["mysql_replica"].cursor() as cursor:  # its own OPTIONS stay
                cursor.execute("SELECT @replica")
                assert cursor.fetchone()[0] == 7
        """
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert sorted(p.name for p in project.path.glob("pytest_services_test*")) == []


def test_the_projects_own_database_options_stay(project: pytest.Pytester) -> None:
    _settings(
        project,
        '{"default": {"ENGINE": "django.db.backends.mysql", "HOST": "127.0.0.1", '
        '"PORT": "3306", "NAME": "shop", "USER": "shop", "PASSWORD": "secret", '
        '"OPTIONS": {"init_command": "SET @project_init = 42", '
        '"isolation_level": "read committed", "sql_mode": "STRICT_ALL_TABLES,NO_ZERO_DATE"}, '
        '"TEST": {"CHARSET": "latin1", "COLLATION": "latin1_german1_ci"}}}',
    )
    project.makepyfile(
        test_things="""
        from django.db import connection

        def fetch(sql):
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchone()

        def test_options(db):
            assert connection.settings_dict["HOST"].endswith("mysql.sock")
            assert fetch("SELECT @project_init") == (42,)
            assert fetch("SELECT @@SESSION.tx_isolation") == ("READ-COMMITTED",)
            assert fetch("SELECT @@SESSION.sql_mode") == ("STRICT_ALL_TABLES,NO_ZERO_DATE",)
            assert fetch(
                "SELECT default_character_set_name, default_collation_name "
                "FROM information_schema.schemata WHERE schema_name = DATABASE()"
            ) == ("latin1", "latin1_german1_ci")
            assert fetch(
                "SELECT table_collation FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = 'things_thing'"
            ) == ("latin1_german1_ci",)
        """
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


NAMED = """
import os
from django.conf import settings
from things.models import Thing

def test_the_handlers_row(db):
    Thing.objects.get(name=settings.THING_NAME)
"""


@pytest.mark.slow
def test_a_setting_that_decides_the_migrated_rows_is_in_the_key(
    project: pytest.Pytester,
) -> None:
    _settings(project, f'{{"default": {SQLITE % "db.sqlite3"}}}', 'THING_NAME = "anonymous"\n')
    project.makepyfile(test_things=NAMED)
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    _settings(project, f'{{"default": {SQLITE % "db.sqlite3"}}}', 'THING_NAME = "guest"\n')
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--reuse-db")
    result.assert_outcomes(passed=1)
    assert migrate_calls(project) == 2


@pytest.mark.slow
def test_create_db_rebuilds_the_state_once_and_later_runs_use_it(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_db_rebuilds_once(project, monkeypatch)


@pytest.mark.slow
def test_nomigrations_builds_the_tables_from_the_models(project: pytest.Pytester) -> None:
    (project.path / "things" / "models.py").write_text(
        "from django.db import models\n\n\nclass Thing(models.Model):\n"
        "    name = models.CharField(max_length=50, unique=True)\n"
        "    size = models.IntegerField(default=0)  # no migration adds it\n"
    )
    project.makepyfile(
        test_things="""
        from things.models import Thing

        def test_the_models_tables(db):
            Thing.objects.create(name="big", size=3)
            assert list(Thing.objects.values_list("name", flat=True)) == ["big"]
        """
    )
    run = project.runpytest_subprocess
    run("-p", "no:cacheprovider", "--nomigrations").assert_outcomes(passed=1)
    assert migrate_calls(project) == 0  # no data migration ran
    migrated = run("-p", "no:cacheprovider")
    migrated.assert_outcomes(failed=1)
    migrated.stdout.fnmatch_lines(["*Unknown column*size*"])
    run("-p", "no:cacheprovider", "--nomigrations").assert_outcomes(passed=1)


@pytest.mark.slow
def test_the_header_says_where_the_default_database_went(project: pytest.Pytester) -> None:
    run = project.runpytest_subprocess
    first = run("-p", "no:cacheprovider", "-v")
    first.assert_outcomes(passed=4)
    first.stdout.fnmatch_lines(
        [
            "services django: DATABASES?'default'? is redirected to the session's (each "
            "pytest-xdist worker's) own MariaDB 1*, over a unix socket",
            "services django: migrated state ???????????????? (not cached: built on first use)",
        ]
    )
    key = first.stdout.str().split("migrated state ")[1].split()[0]
    second = run("-p", "no:cacheprovider", "-v")
    second.stdout.fnmatch_lines([f"services django: migrated state {key} (cached: reused)"])
    third = run("-p", "no:cacheprovider", "-v", "--create-db")
    third.stdout.fnmatch_lines(
        ["services django: migrated state * (--create-db: rebuilt once in this run)"]
    )


BROKEN = """
from django.db import migrations

def fail(apps, schema_editor):
    raise RuntimeError("this migration cannot work")

class Migration(migrations.Migration):
    dependencies = [("things", "0002_seed")]
    operations = [migrations.RunPython(fail)]
"""


def test_a_failing_migration_is_named(project: pytest.Pytester) -> None:
    (project.path / "things" / "migrations" / "0003_broken.py").write_text(BROKEN)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(
        ["E   *Django's migration things.0003_broken failed in fail "
         "(*things?migrations?0003_broken.py:5): RuntimeError: this migration cannot work"]
    )  # fmt: skip


@pytest.mark.slow
def test_the_key_can_leave_out_settings_and_take_more(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = project.runpytest_subprocess
    _settings(
        project,
        f'{{"default": {SQLITE % "db.sqlite3"}}}',
        "import uuid\nSTAMP = uuid.uuid4().hex\n",
    )
    run("-p", "no:cacheprovider").assert_outcomes(passed=4)
    run("-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert migrate_calls(project) == 2  # a setting that differs between runs: no reuse
    project.makeini(
        "[pytest]\nDJANGO_SETTINGS_MODULE = settings\npythonpath = .\nrun_services = true\n"
        "services_django_db = true\nservices_django_key_ignore =\n    STAMP\n"
    )
    run("-p", "no:cacheprovider").assert_outcomes(passed=4)
    run("-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert migrate_calls(project) == 3
    project.makeconftest(
        """
        import os
        import pytest

        @pytest.fixture(scope="session")
        def django_migrations_key(django_migrations_key):
            return django_migrations_key + os.environ["SEED_VARIANT"]
        """
    )
    monkeypatch.setenv("SEED_VARIANT", "a")
    run("-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert migrate_calls(project) == 4
    monkeypatch.setenv("SEED_VARIANT", "b")
    run("-p", "no:cacheprovider").assert_outcomes(passed=4)
    run("-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert migrate_calls(project) == 5


def test_a_defaults_file_keeps_its_options_but_not_its_server(project: pytest.Pytester) -> None:
    (project.path / "client.cnf").write_text(
        "[client]\nhost = 127.0.0.1\nport = 3306\nuser = shop\npassword = secret\n"
        "init-command = SET @from_file = 5\n"
    )
    _settings(
        project,
        '{"default": {"ENGINE": "django.db.backends.mysql", "NAME": "shop", '
        '"OPTIONS": {"read_default_file": str(Path(__file__).parent / "client.cnf")}}}',
        "",
    )
    settings = project.path / "settings.py"
    settings.write_text("from pathlib import Path\n" + settings.read_text())
    project.makepyfile(
        test_things="""
        from django.db import connection

        def test_the_files_init_command(db):
            with connection.cursor() as cursor:
                cursor.execute("SELECT @from_file, CURRENT_USER()")
                assert cursor.fetchone() == (5, "root@localhost")
        """
    )
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
