"""The shape of the package: which layers may import what, and what users may import.

The engine (everything below the fixture modules) must work without pytest, and the public
import surface is frozen here: a change to it is a decision, made by editing this file.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import subprocess
import sys

import pytest

import pytest_services

#: Modules that define fixtures or hooks, and so may import pytest (and the Django ones,
#: Django).  Every other module of the package is engine code: it must import without pytest
#: and never import one of these.
FIXTURE_MODULES = {
    "pytest_services._bill",
    "pytest_services._db.django_early",
    "pytest_services._db.fixtures",
    "pytest_services._db.mysql.fixtures",
    "pytest_services._db.postgresql.fixtures",
    "pytest_services._db.session",
    "pytest_services._keep_options",
    "pytest_services._keep_plugin",
    "pytest_services._options",
    "pytest_services._prepare_run",
    "pytest_services._report",
    "pytest_services._screenshot",
    "pytest_services._shared_call",
    "pytest_services._xdist_compat",
    "pytest_services.django_db",
    "pytest_services.django_settings",
    "pytest_services.folders",
    "pytest_services.locks",
    "pytest_services.log",
    "pytest_services.memcached",
    "pytest_services.mysql",
    "pytest_services.plugin",
    "pytest_services.redis",
    "pytest_services.postgresql",
    "pytest_services.service",
    "pytest_services.shared",
    "pytest_services.xvfb",
}


def _all_modules() -> list[str]:
    return sorted(
        info.name for info in pkgutil.walk_packages(pytest_services.__path__, "pytest_services.")
    )


ENGINE_MODULES = [name for name in _all_modules() if name not in FIXTURE_MODULES]

#: The Django modules import Django, which the oldest-releases leg does not install; the
#: other legs check them.
_DJANGO_MODULES = {"django_settings", "django_db", "django_early"}


def _importable(module: str) -> bool:
    short = module.rsplit(".", 1)[-1]
    return short not in _DJANGO_MODULES or importlib.util.find_spec("django") is not None


_IMPORT_WITHOUT_PYTEST = """
import importlib.abc, json, sys

class NoPytest(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytest", "_pytest", "pluggy"):
            raise ImportError(f"{name} is not importable here")
        return None

sys.meta_path.insert(0, NoPytest())
failures = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures[name] = f"{type(exc).__name__}: {exc}"
fixture_modules = sorted(set(json.loads(sys.argv[2])) & set(sys.modules))
print(json.dumps({"failures": failures, "fixture_modules": fixture_modules}))
"""


def test_engine_modules_import_without_pytest() -> None:
    assert "pytest_services._engine.process" not in FIXTURE_MODULES
    assert len(ENGINE_MODULES) > 20, ENGINE_MODULES
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _IMPORT_WITHOUT_PYTEST,
            json.dumps(ENGINE_MODULES),
            json.dumps(sorted(FIXTURE_MODULES)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(result.stdout)
    assert found["failures"] == {}, "engine modules that need pytest"
    assert found["fixture_modules"] == [], "engine modules that import fixture modules"


def test_every_module_is_either_engine_or_fixture_module() -> None:
    assert set(_all_modules()) >= FIXTURE_MODULES, "a fixture module was renamed: update"


#: What each public module offers: its ``__all__``, sorted.
PUBLIC = {
    "checkers": """
        CALL_TIMEOUT Checker CheckerError all_of http output path_exists tcp unix_socket
    """,
    "django_db": """
        django_db_modify_db_settings django_db_setup django_migrations_key django_mysql_init
        django_postgresql_init migrate_loader mysql_init postgresql_clean postgresql_init
    """,
    "django_settings": """
        clean_django_settings reload_settings setup_django_settings
    """,
    "exceptions": """
        CalledProcessWithOutputError CheckerError DatabaseError DatabaseInitError
        DjangoMigrationError FolderError FolderWarning KeeperError LockError LockWarning
        MySQLError MySQLInitError PostgreSQLError PostgreSQLInitError ProtocolError
        PytestServicesError PytestServicesWarning ReplyError ServiceError ServiceStartError
        ServicesWarning SharedServiceError StartTimedOut XvfbError XwdError
    """,
    "folders": """
        FolderError FolderWarning MAX_SOCKET_PATH StrPath base_dir default_lock_dir
        keep_logs lock_dir log_dir memory_base_dir memory_root memory_root_dir
        memory_temp_dir private_dir root_dir run_dir shared_user_dir socket_path temp_dir
    """,
    "locks": """
        DISPLAY_COUNT FIRST_DISPLAY LOWEST_PORT LockError PORT_RANGE_FILE X_LOCK X_SOCKET
        candidate_ports display_getter display_in_use ephemeral_port_range file_lock
        get_free_display get_free_port lock_resource lock_resource_timeout locked_resources
        port_binds port_getter unlock_display unlock_port unlock_resource x_lock_holder
    """,
    "log": """
        LOGGER_NAME dont_capture get_logger remove_handlers services_log
    """,
    "memcached": """
        do_memcached_clean find_memcached flush_all memcached memcached_arguments
        memcached_checker memcached_clean memcached_client memcached_connection
        memcached_socket memcached_socket_path memcached_version
    """,
    "mysql": """
        MySQLError MySQLInit MySQLInitError hash_files mysql mysql_base_dir mysql_connection
        mysql_data_dir mysql_database mysql_database_getter mysql_database_name
        mysql_defaults_file mysql_init mysql_pid mysql_socket mysql_system_database
        mysql_watcher quote_identifier
    """,
    "postgresql": """
        PostgreSQLError PostgreSQLInit PostgreSQLInitError hash_files postgresql
        postgresql_base_dir postgresql_data_dir postgresql_database
        postgresql_database_getter postgresql_database_name postgresql_dsn postgresql_host
        postgresql_init postgresql_listen_tcp postgresql_port postgresql_url
        postgresql_watcher
    """,
    "process": """
        CalledProcessWithOutputError DEFAULT_GRACE FIRST_DELAY MAX_DELAY ServiceError
        ServiceProcess ServiceStartError StrPath bounded check_output find_executable
        find_program running_services start_service
    """,
    "redis": """
        PACKAGE RedisCleaner RedisPing SERVERS SERVER_VARIABLE do_redis_clean
        find_redis_server redis redis_args redis_arguments redis_clean redis_client
        redis_socket redis_socket_path redis_url
    """,
    "service": """
        ServicesWarning WatcherGetter get_worker_id is_xdist_worker run_services session_id
        slave_id watcher_getter worker_id
    """,
    "shared": """
        SharedServiceError shared_service
    """,
    "xvfb": """
        DEFAULT_RESOLUTION DEPTHS XvfbError start_xvfb write_xauthority xvfb xvfb_arguments
        xvfb_display xvfb_resolution
    """,
}

#: Every name that was importable from a module of 3.0 (the 2.2 surface included) just before
#: the modules were grouped by layer; each must stay importable from the same place.  The
#: modules new in 3.1 are pinned by ``PUBLIC`` alone.
COMPATIBLE = {
    "django_settings": """
        ENVIRONMENT_VARIABLE clean_django_settings empty reload_settings
        setup_django_settings
    """,
    "folders": """
        FolderError FolderWarning KEEP_LOGS LOGS MAX_SOCKET_PATH MIN_MEMORY_FREE OWNER_LOCK
        PREFIX SHM StrPath absolute base_dir default_lock_dir keep_logs lock_dir log_dir
        memory_base_dir memory_root memory_root_dir memory_temp_dir private_dir root_dir
        run_dir shared_user_dir socket_path sweep_dead_sessions temp_dir
    """,
    "locks": """
        DISPLAY_COUNT FIRST_DISPLAY LOWEST_PORT LockError MAX_CANDIDATES PORT_RANGE_FILE
        StrPath X_LOCK X_SOCKET candidate_ports display_getter display_in_use
        ephemeral_port_range file_lock get_free_display get_free_port lock_resource
        lock_resource_timeout locked_resources port_binds port_getter port_range_option
        unlock_display unlock_port unlock_resource x_lock_holder
    """,
    "log": """
        LOGGER_NAME dont_capture get_logger remove_handlers services_log
    """,
    "memcached": """
        MEMCACHED PACKAGE REQUEST_TIMEOUT SOCKET_NAME ServiceError ServiceProcess
        WatcherGetter bounded do_memcached_clean find_memcached find_program flush_all
        memcached memcached_arguments memcached_checker memcached_clean memcached_client
        memcached_connection memcached_socket memcached_socket_path memcached_version
        socket_path
    """,
    "mysql": """
        MySQLInit MySQLInitError START_TIMEOUT ServiceProcess State WatcherGetter bounded
        defaults_file_text get_server hash_files mysql mysql_base_dir mysql_cache_dir
        mysql_connection mysql_data_dir mysql_database mysql_database_getter
        mysql_database_name mysql_defaults_file mysql_init mysql_pid mysql_socket
        mysql_system_database mysql_watcher prepare_data_dir prepare_state_data_dir
        private_dir quote_identifier socket_path
    """,
    "plugin": """
        RunKeeperPlugin base_dir default_lock_dir display_getter do_memcached_clean
        do_mysql_clean host_lock_dir is_xdist_worker lock_dir lock_resource_timeout
        memcached memcached_clean memcached_client memcached_connection memcached_socket
        memory_base_dir memory_root memory_root_dir memory_temp_dir mysql mysql_base_dir
        mysql_clean mysql_connection mysql_data_dir mysql_database mysql_database_getter
        mysql_database_name mysql_defaults_file mysql_init mysql_pid mysql_socket
        mysql_system_database mysql_url mysql_watcher parse_display parse_port_range
        port_getter port_range_option pytest_addoption pytest_configure pytest_plugins
        pytest_report_header pytest_unconfigure root_dir run_dir run_services
        run_services_option services_enabled services_log session_id shared_service slave_id
        temp_dir verbosity watcher_getter worker_id xvfb xvfb_display xvfb_display_option
        xvfb_resolution
    """,
    "process": """
        CalledProcessWithOutputError CheckerCalls DEFAULT_GRACE FIRST_DELAY MAX_DELAY
        ServiceError ServiceProcess ServiceStartError StrPath TAIL_LINES bounded
        check_output checker_name find_executable find_program group_alive next_delay
        running_services signal_group spawn_watched start_service wait_for_group
    """,
    "service": """
        DEFAULT_GRACE ServiceProcess ServiceStartError ServicesWarning StrPath WatcherGetter
        get_worker_id is_xdist_worker run_services run_services_option service_owner
        services_enabled session_id slave_id start_keeping_logs start_service watcher_getter
        worker_id
    """,
    "xvfb": """
        CalledProcessWithOutputError DEFAULT_RESOLUTION DEPTHS DISPLAY_TRIES ServiceError
        ServiceProcess ServiceStartError Starter StrPath WatcherGetter X11Handshake
        XVFB_GRACE X_LOCK X_SOCKET XvfbError check_output find_program start_xvfb
        start_xvfb_anywhere write_xauthority x_lock_holder xvfb xvfb_arguments xvfb_display
        xvfb_display_option xvfb_options xvfb_resolution
    """,
}


@pytest.mark.parametrize("module", sorted(filter(_importable, PUBLIC)))
def test_public_surface_is_frozen(module: str) -> None:
    imported = importlib.import_module(f"pytest_services.{module}")
    assert sorted(imported.__all__) == PUBLIC[module].split()
    assert [name for name in imported.__all__ if not hasattr(imported, name)] == []


@pytest.mark.parametrize("module", sorted(filter(_importable, COMPATIBLE)))
def test_earlier_imports_still_work(module: str) -> None:
    imported = importlib.import_module(f"pytest_services.{module}")
    missing = [name for name in COMPATIBLE[module].split() if not hasattr(imported, name)]
    assert missing == []


def test_one_root_error_and_one_root_warning() -> None:
    from pytest_services import exceptions

    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        if issubclass(cls, Warning):
            assert issubclass(cls, exceptions.PytestServicesWarning), name
        else:
            assert issubclass(cls, exceptions.PytestServicesError), name
    classes = {
        name: value
        for module in filter(_importable, _all_modules())
        for name, value in vars(importlib.import_module(module)).items()
        if issubclass(type(value), type)
        and issubclass(value, (Exception, Warning))
        and value.__module__.startswith("pytest_services")
    }
    assert {value.__module__ for value in classes.values()} == {"pytest_services.exceptions"}
