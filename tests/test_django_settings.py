"""Switching between the settings of two real Django projects in one process."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

PROJECTS = Path(__file__).parent / "django_projects"

# Helpers shared by the inner test files: each inner test file starts with it.
INNER_HELPERS = """
    import os
    import sys
    from pathlib import Path

    import pytest
    from django.conf import settings
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection
    from django.template.loader import render_to_string
    from django.urls import NoReverseMatch, reverse
    from django.utils.translation import gettext

    from pytest_services.django_settings import (
        clean_django_settings,
        reload_settings,
        setup_django_settings,
    )


    def switch_to(project):
        clean_django_settings()
        setup_django_settings(project + ".settings")


    def sqlite_file():
        '''The file the default connection really has open, as sqlite reports it.'''
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA database_list")
            files = {name: path for _, name, path in cursor.fetchall()}
        return Path(files["main"]).name


    def written_by():
        from shared.models import Entry

        return sorted(Entry.objects.values_list("written_by", flat=True))


    def entry_content_type_is_fresh():
        '''Whether the (cached) content type of Entry is the row in this database.'''
        from django.contrib.contenttypes.models import ContentType
        from shared.models import Entry

        row = ContentType.objects.get(app_label="shared", model="entry")
        return ContentType.objects.get_for_model(Entry).pk == row.pk
"""

SWITCH_TESTS = """
    def test_project_a(tmp_path):
        switch_to("project_a")
        assert settings.PROJECT_NAME == "A"
        assert os.environ["DJANGO_SETTINGS_MODULE"] == "project_a.settings"

        assert reverse("home") == "/alpha/"
        assert reverse("alpha-only") == "/alpha/only/"
        with pytest.raises(NoReverseMatch):
            reverse("beta-only")

        call_command("migrate", verbosity=0)
        assert Path(connection.settings_dict["NAME"]).name == "project_a.sqlite3"
        assert sqlite_file() == "project_a.sqlite3"
        tables = connection.introspection.table_names()
        assert "app_a_note" in tables
        assert "shared_entry" in tables
        assert "app_b_item" not in tables

        from app_a.models import Note
        from shared.models import Entry

        Note.objects.create(text="only in A")
        Entry.objects.create(written_by="A")
        assert written_by() == ["A"]
        assert entry_content_type_is_fresh()

        cache.set("owner", "A")
        assert render_to_string("which_project.txt").strip() == "project A"
        assert gettext("Yes") == "Yes"


    def test_project_b():
        switch_to("project_b")
        assert settings.PROJECT_NAME == "B"
        assert "project_a.settings" not in sys.modules

        assert reverse("home") == "/beta/"
        assert reverse("beta-only") == "/beta/only/"
        with pytest.raises(NoReverseMatch):
            reverse("alpha-only")

        call_command("migrate", verbosity=0)
        assert Path(connection.settings_dict["NAME"]).name == "project_b.sqlite3"
        assert sqlite_file() == "project_b.sqlite3"
        tables = connection.introspection.table_names()
        assert "app_b_item" in tables
        assert "shared_entry" in tables
        assert "app_a_note" not in tables

        from django.apps import apps
        from django.contrib.contenttypes.models import ContentType

        assert apps.is_installed("app_b")
        assert not apps.is_installed("app_a")
        assert ContentType.objects.filter(app_label="app_b").exists()
        assert not ContentType.objects.filter(app_label="app_a").exists()

        assert entry_content_type_is_fresh()
        assert written_by() == []
        from shared.models import Entry

        Entry.objects.create(written_by="B")
        assert written_by() == ["B"]

        assert cache.get("owner") is None
        cache.set("owner", "B")
        assert render_to_string("which_project.txt").strip() == "project B"
        assert gettext("Yes") == "Ja"


    def test_back_to_project_a():
        switch_to("project_a")
        assert settings.PROJECT_NAME == "A"
        assert reverse("home") == "/alpha/"
        with pytest.raises(NoReverseMatch):
            reverse("beta-only")

        assert sqlite_file() == "project_a.sqlite3"
        assert written_by() == ["A"]
        assert entry_content_type_is_fresh()
        from app_a.models import Note

        assert list(Note.objects.values_list("text", flat=True)) == ["only in A"]

        from django.apps import apps

        assert apps.is_installed("app_a")
        assert not apps.is_installed("app_b")
        assert cache.get("owner") == "A"
        assert render_to_string("which_project.txt").strip() == "project A"
        assert gettext("Yes") == "Yes"
"""


@pytest.fixture
def package_on_path(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """Return a pytester whose subprocesses import this ``pytest_services``, installed or not."""
    # pytester puts its own directory in front of this.
    paths = [_package_parent(), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path for path in paths if path))
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    return pytester


@pytest.fixture
def django_pytester(package_on_path: pytest.Pytester) -> pytest.Pytester:
    """Return a pytester whose directory holds both test projects."""
    pytest.importorskip("django")
    shutil.copytree(
        PROJECTS,
        package_on_path.path,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return package_on_path


def _package_parent() -> str:
    """Return the directory from which this process imports ``pytest_services``."""
    spec = importlib.util.find_spec("pytest_services")
    if spec is None or spec.origin is None:
        return str(Path(__file__).resolve().parent.parent)
    return str(Path(spec.origin).resolve().parent.parent)


def _inner_file(body: str) -> str:
    """Return the source of an inner test file: the shared helpers and ``body``."""
    return textwrap.dedent(INNER_HELPERS) + textwrap.dedent(body)


def _run(pytester: pytest.Pytester) -> pytest.RunResult:
    """Run the inner test files in one fresh process, turning warnings into errors."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", "-v")


def test_switch_between_projects_and_back(django_pytester: pytest.Pytester) -> None:
    django_pytester.makepyfile(test_switch=_inner_file(SWITCH_TESTS))
    result = _run(django_pytester)
    result.assert_outcomes(passed=3)
    assert (django_pytester.path / "project_a.sqlite3").is_file()
    assert (django_pytester.path / "project_b.sqlite3").is_file()


def test_switch_after_django_was_set_up_elsewhere(django_pytester: pytest.Pytester) -> None:
    # Another tool (pytest-django, a conftest) already called django.setup().
    django_pytester.makepyfile(
        test_preconfigured=_inner_file(
            """
            import django

            os.environ["DJANGO_SETTINGS_MODULE"] = "project_b.settings"
            django.setup()


            def test_preconfigured_project_b():
                assert settings.PROJECT_NAME == "B"
                assert reverse("home") == "/beta/"


            def test_switch_to_project_a():
                switch_to("project_a")
                assert settings.PROJECT_NAME == "A"
                assert reverse("home") == "/alpha/"
                call_command("migrate", verbosity=0)
                tables = connection.introspection.table_names()
                assert "app_a_note" in tables
                assert "app_b_item" not in tables
                assert sqlite_file() == "project_a.sqlite3"
            """
        )
    )
    _run(django_pytester).assert_outcomes(passed=2)


def test_clean_forgets_settings_module(django_pytester: pytest.Pytester) -> None:
    django_pytester.makepyfile(
        test_clean=_inner_file(
            """
            from django.core.exceptions import ImproperlyConfigured
            from django.urls import get_resolver


            def test_clean():
                switch_to("project_a")
                assert reverse("home") == "/alpha/"
                sys.modules["project_a.settings"].PROJECT_NAME = "changed in memory"
                assert "project_a.urls" in sys.modules

                clean_django_settings()
                assert not settings.configured
                assert "DJANGO_SETTINGS_MODULE" not in os.environ
                assert "project_a.settings" not in sys.modules
                assert "project_a.urls" not in sys.modules
                with pytest.raises(ImproperlyConfigured):
                    settings.PROJECT_NAME

                setup_django_settings("project_a.settings")
                assert settings.PROJECT_NAME == "A"
                assert reverse("home") == "/alpha/"
                # URLs resolve through the freshly imported URLconf module.
                assert get_resolver().urlconf_module is sys.modules["project_a.urls"]


            def test_clean_when_nothing_is_configured():
                clean_django_settings()
                clean_django_settings()
                assert not settings.configured
            """
        )
    )
    _run(django_pytester).assert_outcomes(passed=2)


def test_reload_settings_merges_databases(django_pytester: pytest.Pytester) -> None:
    django_pytester.makepyfile(
        test_reload=_inner_file(
            """
            from django.db import connections


            def test_add_a_database():
                switch_to("project_a")
                other = str(Path.cwd() / "other.sqlite3")
                reload_settings(
                    settings,
                    databases={
                        "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": other}
                    },
                )
                assert sorted(settings.DATABASES) == ["default", "other"]
                assert connections["other"].settings_dict["NAME"] == other
                assert Path(connection.settings_dict["NAME"]).name == "project_a.sqlite3"
                call_command("migrate", database="other", verbosity=0)
                assert "app_a_note" in connections["other"].introspection.table_names()
                assert Path(other).is_file()


            def test_replace_the_default_database():
                switch_to("project_a")
                call_command("migrate", verbosity=0)
                assert sqlite_file() == "project_a.sqlite3"
                replaced = str(Path.cwd() / "replaced.sqlite3")
                reload_settings(
                    settings,
                    databases={
                        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": replaced}
                    },
                )
                assert settings.DATABASES["default"]["NAME"] == replaced
                # The connection opened above is gone: queries use the new file.
                assert sqlite_file() == "replaced.sqlite3"
                assert connection.introspection.table_names() == []


            def test_reload_without_databases_keeps_them():
                switch_to("project_b")
                reload_settings(settings)
                assert list(settings.DATABASES) == ["default"]
                assert sqlite_file() == "project_b.sqlite3"
            """
        )
    )
    _run(django_pytester).assert_outcomes(passed=3)


def test_import_without_django_names_the_extra(package_on_path: pytest.Pytester) -> None:
    script = textwrap.dedent(
        """
        import sys

        sys.modules["django"] = None  # makes "import django" fail
        try:
            import pytest_services.django_settings
        except ImportError as exc:
            print("ImportError:", exc)
        else:
            print("imported without Django")
        """
    )
    result = package_on_path.run(sys.executable, "-c", script)
    assert result.ret == 0, result.stderr.str()
    lines = result.stdout.lines
    assert any(
        line.startswith("ImportError:") and "pip install 'pytest-services[django]'" in line
        for line in lines
    ), lines
