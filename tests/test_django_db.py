"""pytest-django's test database on the session's MariaDB, migrated once."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import mysql_support
import pytest
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
    apps.get_model("things", "Thing").objects.create(name="seeded")

class Migration(migrations.Migration):
    dependencies = [("things", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
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
    migrations = pytester.path / "things" / "migrations"
    migrations.mkdir(parents=True)
    (pytester.path / "things" / "__init__.py").write_text("")
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


def migrate_calls(pytester: pytest.Pytester) -> int:
    calls = pytester.path / "migrate-calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


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
