"""Switch one test process between the settings modules of several Django projects.

Django keeps a lot of process-wide state derived from its settings: the lazy
``django.conf.settings`` object itself, the database and cache connection
handlers, the app registry, the URL resolvers, template engines, translation
catalogs and a number of ``functools`` caches.  The helpers below drop that
state and rebuild it for another settings module, so that tests of several
projects can run in the same process::

    clean_django_settings()
    setup_django_settings("project_b.settings")

Wherever Django offers a way to do so, the refresh goes through public APIs
and through the ``setting_changed`` signal that Django's own
``override_settings`` sends, so Django's own receivers reset their caches.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

try:
    import django
except ImportError as exc:
    raise ImportError(
        "pytest_services.django_settings requires Django; install it with: "
        "pip install 'pytest-services[django]'"
    ) from exc

# Importing django.test.signals connects Django's own setting_changed receivers
# (cache handlers, template engines, translations, storages, ...).
import django.test.signals
from django.apps import apps
from django.conf import ENVIRONMENT_VARIABLE
from django.conf import settings as django_settings
from django.core.cache import close_caches
from django.core.signals import setting_changed
from django.db import connections
from django.urls import (
    clear_url_caches,
    set_script_prefix,
    set_urlconf,
)
from django.utils import translation
from django.utils.formats import reset_format_cache
from django.utils.functional import empty
from django.utils.log import configure_logging

__all__ = ["clean_django_settings", "reload_settings", "setup_django_settings"]

# Settings announced through ``setting_changed`` on every refresh, because Django
# caches objects built from them (even when two projects use the same value,
# those objects can belong to the previous project's apps or files).
_ALWAYS_ANNOUNCED = frozenset(
    {
        "CACHES",
        "DATABASE_ROUTERS",
        "INSTALLED_APPS",
        "LANGUAGE_CODE",
        "LANGUAGES",
        "LOCALE_PATHS",
        "ROOT_URLCONF",
        "STATICFILES_DIRS",
        "STATIC_ROOT",
        "STATIC_URL",
        "STORAGES",
        "TEMPLATES",
        "TIME_ZONE",
    }
)

# Settings never announced: the refresh handles them directly.  Announcing
# DATABASES would only make Django warn that overriding it is unsafe.
_HANDLED_DIRECTLY = frozenset({"DATABASES", "LOGGING", "LOGGING_CONFIG"})

# Names of the settings the previously configured project set explicitly, so
# that receivers also hear about settings that fall back to their defaults.
_previous_setting_names: set[str] = set()

# Whether the app registry currently holds an ``apps.set_installed_apps()``
# layer pushed by this module.
_installed_apps_overridden = False


def setup_django_settings(test_settings: str) -> None:
    """Point Django at the settings module ``test_settings`` and refresh its state."""
    _forget_configured_settings()
    os.environ[ENVIRONMENT_VARIABLE] = test_settings
    reload_settings(django_settings)


def clean_django_settings() -> None:
    """Forget the current settings module so the next one is imported afresh."""
    stale_modules = {os.environ.pop(ENVIRONMENT_VARIABLE, None)}
    if django_settings.configured:
        stale_modules.add(getattr(django_settings, "SETTINGS_MODULE", None))
        stale_modules.add(getattr(django_settings, "ROOT_URLCONF", None))
    _forget_configured_settings()
    clear_url_caches()
    set_urlconf(None)
    for name in stale_modules:
        if isinstance(name, str):
            sys.modules.pop(name, None)


def reload_settings(settings: Any, databases: dict[str, Any] | None = None) -> None:
    """Merge ``databases`` into ``settings.DATABASES`` and make Django reflect the settings."""
    if databases:
        settings.DATABASES.update(databases)
    # Accessing a setting configures the lazy settings object if needed.
    installed_apps = list(django_settings.INSTALLED_APPS)

    _reset_database_connections()
    _setup_django(installed_apps)

    clear_url_caches()
    set_urlconf(None)
    reset_format_cache()
    # Translation functions are picked once, depending on USE_I18N; the
    # docstring of Django's ``Trans`` helper says to empty its ``__dict__`` when
    # USE_I18N changes.
    translation._trans.__dict__.clear()

    names = (
        _ALWAYS_ANNOUNCED
        | _explicit_setting_names(django_settings)
        | _explicit_setting_names(settings)
        | _previous_setting_names
    ) - _HANDLED_DIRECTLY
    _previous_setting_names.clear()
    for name in sorted(names):
        setting_changed.send(
            sender=django_settings.__class__,
            setting=name,
            value=_setting_value(name),
            enter=True,
        )

    _clear_model_caches()


def _forget_configured_settings() -> None:
    """Close connections and drop the configured lazy settings, if any."""
    if not django_settings.configured:
        return
    _previous_setting_names.update(_explicit_setting_names(django_settings))
    _reset_database_connections()
    close_caches()
    # There is no public way to "unconfigure" settings; Django's own test
    # utilities assign ``_wrapped`` as well, which also empties the values that
    # LazySettings caches on itself.
    django_settings._wrapped = empty


def _reset_database_connections() -> None:
    """Close database connections and make the handler re-read ``DATABASES``."""
    connections.close_all()
    for connection in connections.all(initialized_only=True):
        del connections[connection.alias]
    # Unavoidable internal reset: the handler keeps the DATABASES dict it first
    # read (``settings`` is a cached_property seeded from ``_settings``) and no
    # setting_changed receiver refreshes it.  Dropping both makes the next
    # access read the current ``settings.DATABASES``.
    connections._settings = None
    connections.__dict__.pop("settings", None)


def _setup_django(installed_apps: list[Any]) -> None:
    """Do what ``django.setup()`` does, also when the app registry is already full."""
    global _installed_apps_overridden
    if not apps.ready:
        django.setup()
        return
    configure_logging(django_settings.LOGGING_CONFIG, django_settings.LOGGING)
    script_name = django_settings.FORCE_SCRIPT_NAME
    set_script_prefix("/" if script_name is None else script_name)
    # The registry is already populated (by Django or by an earlier switch):
    # use the layering that override_settings(INSTALLED_APPS=...) relies on,
    # keeping at most one layer of our own on top of the original registry.
    if _installed_apps_overridden:
        apps.unset_installed_apps()
        _installed_apps_overridden = False
    try:
        apps.set_installed_apps(installed_apps)
    except Exception:
        apps.unset_installed_apps()
        raise
    _installed_apps_overridden = True


def _explicit_setting_names(settings: Any) -> set[str]:
    """Return the names of the settings that ``settings`` sets explicitly."""
    names = {name for name in dir(settings) if name.isupper()}
    is_overridden = getattr(settings, "is_overridden", None)
    if callable(is_overridden):
        names = {name for name in names if is_overridden(name)}
    return names


def _setting_value(name: str) -> Any:
    """Return the current value of setting ``name``, or None when it is unset."""
    with warnings.catch_warnings():
        # Reading a deprecated setting warns; the project is told at setup.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return getattr(django_settings, name, None)


def _clear_model_caches() -> None:
    """Empty the per-database caches of contrib models, whose rows differ per project."""
    if apps.is_installed("django.contrib.contenttypes"):
        from django.contrib.contenttypes.models import (
            ContentType,
        )

        ContentType.objects.clear_cache()
    if apps.is_installed("django.contrib.sites"):
        from django.contrib.sites.models import Site

        Site.objects.clear_cache()
