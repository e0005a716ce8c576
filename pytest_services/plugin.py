"""pytest entry point: options, the report header, and the fixtures of every module."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pytest

from pytest_services._db.mysql.fixtures import (  # noqa: F401
    _mysql_clean_when_asked,
    _mysql_cleaner,
    do_mysql_clean,
    mysql_clean,
    mysql_url,
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

#: Service sections in failing tests' reports, and services that died: hooks of their own.
pytest_plugins = ["pytest_services._report"]


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
    parser.addini(
        "services_django_db",
        "put pytest-django's test database on the session's MariaDB, migrated once "
        "(needs pytest-django; default false)",
        type="bool",
        default=False,
    )
    parser.addini(
        "xvfb_listen_tcp",
        "let Xvfb accept (authenticated) TCP clients on 127.0.0.1:6000+N (default true)",
        type="bool",
        default=True,
    )


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    xvfb_display_option(config)  # bad ini values are usage errors before any test runs
    port_range_option(config)
    if is_xdist_worker(config) and os.getppid() != 1:
        # The controller started this worker: if it dies, the worker may live on for the
        # length of a test, so the watchdog watches the controller too.
        _reaper.set_lifeline(os.getppid())
    if config.getini("services_django_db"):
        if not config.pluginmanager.hasplugin("django"):
            raise pytest.UsageError(
                "services_django_db = true needs pytest-django: "
                "pip install 'pytest-services[django]'"
            )
        # Registered after pytest-django, so that its fixtures take the place of pytest-django's.
        config.pluginmanager.import_plugin("pytest_services.django_db")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.import_plugin("pytest_services._xdist_compat")
        config.pluginmanager.register(RunKeeperPlugin(), "pytest_services.run_keeper")


def pytest_report_header(config: pytest.Config) -> list[str]:
    if verbosity(config) < 1:
        return []
    if is_xdist_worker(config):
        why = "as a pytest-xdist worker"
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
    lines = [
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
    _reaper.close()
