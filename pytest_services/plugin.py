"""pytest entry point: options, the report header, and the fixtures of every module."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pytest

from pytest_services import _screenshot
from pytest_services._db.django_engines import parse_choice
from pytest_services._db.mysql.fixtures import (  # noqa: F401
    _mysql_clean_when_asked,
    _mysql_cleaner,
    do_mysql_clean,
    mysql_clean,
    mysql_url,
)
from pytest_services._db.postgresql.fixtures import (  # noqa: F401
    _postgresql_clean_when_asked,
    _postgresql_cleaner,
    do_postgresql_clean,
    postgresql_clean,
)
from pytest_services._engine import reaper as _reaper
from pytest_services._options import (  # noqa: F401
    parse_display,
    parse_port_range,
    port_range_option,
    run_services_option,
    verbosity,
    xvfb_display_option,
)
from pytest_services._prepare_run import PrepareRun, prepare_requested, single_process
from pytest_services._reserve.registry import host_lock_dir
from pytest_services.folders import (  # noqa: F401
    base_dir,
    default_lock_dir,
    lock_dir,
    memory_base_dir,
    memory_root,
    memory_root_dir,
    memory_temp_dir,
    root_dir,
    run_dir,
    temp_dir,
)
from pytest_services.locks import (  # noqa: F401
    display_getter,
    lock_resource_timeout,
    port_getter,
)
from pytest_services.log import services_log  # noqa: F401
from pytest_services.memcached import (  # noqa: F401
    do_memcached_clean,
    memcached,
    memcached_clean,
    memcached_client,
    memcached_connection,
    memcached_socket,
)
from pytest_services.mysql import (  # noqa: F401
    _mysql_kept_databases,
    _mysql_state,
    mysql,
    mysql_base_dir,
    mysql_connection,
    mysql_data_dir,
    mysql_database,
    mysql_database_getter,
    mysql_database_name,
    mysql_defaults_file,
    mysql_init,
    mysql_pid,
    mysql_socket,
    mysql_system_database,
    mysql_watcher,
)
from pytest_services.postgresql import (  # noqa: F401
    _postgresql_address,
    _postgresql_state,
    postgresql,
    postgresql_base_dir,
    postgresql_data_dir,
    postgresql_database,
    postgresql_database_getter,
    postgresql_database_name,
    postgresql_dsn,
    postgresql_host,
    postgresql_init,
    postgresql_listen_tcp,
    postgresql_port,
    postgresql_url,
    postgresql_watcher,
)
from pytest_services.redis import (  # noqa: F401
    _redis_cleaner,
    do_redis_clean,
    redis,
    redis_args,
    redis_clean,
    redis_client,
    redis_socket,
    redis_url,
)
from pytest_services.service import (  # noqa: F401
    is_xdist_worker,
    run_services,
    services_enabled,
    session_id,
    slave_id,
    watcher_getter,
    worker_id,
)
from pytest_services.shared import RunKeeperPlugin, shared_service  # noqa: F401
from pytest_services.xvfb import _xvfb_servers, xvfb, xvfb_display, xvfb_resolution  # noqa: F401

#: What the header says of a --services-prepare run that was given -n.
_PREPARE_NOTE = pytest.StashKey[str]()

#: Service sections in failing tests' reports, services that died, the per-test database
#: reset when asked, the bill of what services cost, and kept services (--services-keep):
#: hooks of their own.
pytest_plugins = [
    "pytest_services._report",
    "pytest_services._db.fixtures",
    "pytest_services._bill",
    "pytest_services._keep_plugin",
]


def _option_with_ini(
    group: Any, parser: pytest.Parser, flag: str, ini: str, help: str, ini_help: str, **kwargs: Any
) -> None:
    """A command-line option and its ini twin: the command line wins, then the ini file."""
    group.addoption(flag, default=None, help=f"{help} (ini: {ini}).", **kwargs)
    if kwargs.get("action") == "store_true":
        parser.addini(ini, ini_help, type="bool")
    else:
        parser.addini(ini, ini_help)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("services", "real service processes (pytest-services)")
    _option_with_ini(
        group,
        parser,
        "--run-services",
        "run_services",
        "start services even outside pytest-xdist workers",
        "start services outside pytest-xdist workers",
        action="store_true",
    )
    _option_with_ini(
        group,
        parser,
        "--xvfb-display",
        "xvfb_display",
        "use this running X display (':N' or 'N') instead of starting Xvfb",
        "running X display to use instead of starting Xvfb",
        type=parse_display,
        metavar="DISPLAY",
    )
    _option_with_ini(
        group,
        parser,
        "--services-port-range",
        "services_port_range",
        "hand out TCP ports from this range, e.g. 20000-30000; default: every port from "
        "10000 up outside the kernel's ephemeral range",
        "TCP ports to hand out, LOW-HIGH",
        type=parse_port_range,
        metavar="LOW-HIGH",
    )
    group.addoption(
        "--services-prepare",
        action="store_true",
        default=False,
        help="build the prepared database states the collected tests use (mysql_init, "
        "the Django migrations...), run no test, and exit; for a CI job that fills the cache "
        "for the others.",
    )
    parser.addini(
        "services_django_db",
        "put pytest-django's test database on the session's own server, migrated once: "
        "true follows the default database's ENGINE (PostgreSQL for a PostgreSQL one, "
        "else MariaDB), postgresql or mariadb chooses (needs pytest-django; default false)",
        default="false",
    )
    parser.addini(
        "services_django_key_ignore",
        "settings left out of the key of services_django_db's migrated state, one a line "
        "(for settings that differ between runs or workers and decide no migrated row)",
        type="linelist",
        default=[],
    )
    parser.addini(
        "xvfb_listen_tcp",
        "let Xvfb accept (authenticated) TCP clients on 127.0.0.1:6000+N (default true)",
        type="bool",
        default=True,
    )
    _screenshot.add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    if prepare_requested(config):
        note = single_process(config)  # before pytest-xdist reads -n
        if note:
            config.stash[_PREPARE_NOTE] = note


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    xvfb_display_option(config)  # bad ini values are usage errors before any test runs
    port_range_option(config)
    _screenshot.configure(config)
    if is_xdist_worker(config) and os.getppid() != 1:
        # The controller started this worker: if it dies, the worker may live on for the
        # length of a test, so the watchdog watches the controller too.
        _reaper.set_lifeline(os.getppid())
    try:
        django_db = parse_choice(config.getini("services_django_db"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if django_db:
        if not config.pluginmanager.hasplugin("django"):
            raise pytest.UsageError(
                f"services_django_db = {config.getini('services_django_db')} needs pytest-django: "
                "pip install 'pytest-services[django]'"
            )
        # Registered after pytest-django, so that its fixtures take the place of pytest-django's.
        config.pluginmanager.import_plugin("pytest_services.django_db")
    if prepare_requested(config):
        config.pluginmanager.register(PrepareRun(), "pytest_services.prepare_run")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.import_plugin("pytest_services._xdist_compat")
        config.pluginmanager.register(RunKeeperPlugin(), "pytest_services.run_keeper")


def pytest_report_header(config: pytest.Config) -> list[str]:
    if verbosity(config) < 1:
        return []
    if is_xdist_worker(config):
        why = "as a pytest-xdist worker"
    elif prepare_requested(config):
        why = "to prepare database states (--services-prepare)"
    elif config.getoption("run_services"):
        why = "by --run-services"
    elif config.getini("run_services"):
        why = "by the run_services ini option"
    else:
        why = ""
    state = (
        f"services: started {why}"
        if why
        else ("services: not started (use --run-services or pytest-xdist)")
    )
    display = xvfb_display_option(config)
    note = config.stash.get(_PREPARE_NOTE, None)
    lines = [
        *([note] if note else []),
        state,
        f"services folders: disk {tempfile.gettempdir()}, "
        f"memory {memory_root(tempfile.gettempdir())}, locks {default_lock_dir()}, "
        f"host-wide locks {host_lock_dir()} "
        "(unless root_dir is overridden)",
    ]
    if display is not None:
        lines.append(f"services X display: :{display} (no Xvfb started)")
    port_range = port_range_option(config)
    if port_range is not None:
        lines.append(f"services ports: {port_range[0]}-{port_range[1]}")
    return lines


def pytest_unconfigure(config: pytest.Config) -> None:
    _screenshot.unconfigure(config)
    _reaper.close()
