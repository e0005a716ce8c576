"""Initialised MySQL/MariaDB data directories in the cache, and copies made from them.

Plain functions, no pytest: :func:`prepare_data_dir` puts a copy of a cached, initialised
data directory (time zone tables loaded) where a session's server will run, building the
cache entry first if needed, by the entry protocol of :mod:`pytest_services._db.cache`.
What is MySQL's own here is the key (binary, version, layout, time zones) and the build:
``mariadb-install-db`` or ``mysqld --initialize-insecure``.
"""

from __future__ import annotations

import json
import os
import subprocess
from logging import Logger
from typing import Any, Optional

from pytest_services._db import build, cache
from pytest_services._db.cache import CacheEntry
from pytest_services._db.mysql.server import (
    PACKAGE,
    ZONEINFO_DIR,
    MySQLServer,
    _digest,
    _require_tool,
)
from pytest_services.exceptions import (
    CalledProcessWithOutputError,
    MySQLError,
)
from pytest_services.process import check_output

__all__ = ["PACKAGE", "cached_data_dir", "prepare_data_dir"]

#: Only for initialising: rotate the Aria log early so that loading the time zones does not
#: leave a large log behind in the cache.
MARIADB_INIT_ONLY = ("aria-log-file-size=8M",)
#: Bump to invalidate every cache entry made by an older layout of this module.
CACHE_FORMAT = 1


def _timezone_source() -> tuple[Optional[str], str]:
    """The zoneinfo folder to load (None when missing) and a text that identifies its data."""
    if not os.path.isdir(ZONEINFO_DIR):
        return None, "none"
    try:
        with open(os.path.join(ZONEINFO_DIR, "tzdata.zi"), encoding="utf-8") as tzdata:
            return ZONEINFO_DIR, tzdata.readline().strip()
    except OSError:
        return ZONEINFO_DIR, str(os.stat(ZONEINFO_DIR).st_mtime_ns)


def _cache_entry(server: MySQLServer, mysql_cache: str, timezones: str) -> CacheEntry:
    material = json.dumps(
        {
            "format": CACHE_FORMAT,
            "binary": os.path.realpath(server.binary),
            "version": server.version_text,
            "layout": server.layout,
            "init": MARIADB_INIT_ONLY if server.is_mariadb else (),
            "timezones": timezones,
        },
        sort_keys=True,
    )
    number = ".".join(str(part) for part in server.version)
    return CacheEntry.in_folder(mysql_cache, f"{server.flavour}-{number}-{_digest(material)}")


def _timezone_sql(server: MySQLServer, zoneinfo: str) -> bytes:
    tool = _require_tool(server, ("mariadb-tzinfo-to-sql", "mysql_tzinfo_to_sql"))
    no_defaults = ["--no-defaults"] if server.is_mariadb else []
    try:
        sql, _warnings = check_output([tool, *no_defaults, zoneinfo])
    except (OSError, CalledProcessWithOutputError) as exc:
        failure = f"Cannot convert the time zones in {zoneinfo} to SQL: {exc}"
    else:
        return b"USE mysql;\n" + sql
    raise MySQLError(failure)


def _initialise(server: MySQLServer, data_dir: str, sql_file: Optional[str]) -> None:
    """Create a data directory whose root user has no password."""
    if server.is_mariadb:
        install_db = _require_tool(server, ("mariadb-install-db", "mysql_install_db"))
        with open(install_db, "rb") as script:
            supported = script.read()
        command = [install_db, "--no-defaults", f"--datadir={data_dir}"]
        for flag in (b"--auth-root-authentication-method=normal", b"--skip-test-db"):
            if flag.split(b"=")[0] in supported:
                command.append(flag.decode())
        command += [f"--{setting}" for setting in (*server.layout, *MARIADB_INIT_ONLY)]
        if sql_file is not None:
            command.append(f"--extra-file={sql_file}")
    else:
        command = [server.binary, "--no-defaults", "--initialize-insecure", f"--datadir={data_dir}"]
        if os.geteuid() == 0:
            command.append("--user=root")
        command += [f"--{setting}" for setting in server.layout]
        if sql_file is not None:
            command.append(f"--init-file={sql_file}")
    try:
        check_output(command, stdin=subprocess.DEVNULL)
    except OSError as exc:
        failure = f"Cannot run {command[0]}: {exc}"
    except CalledProcessWithOutputError as exc:
        failure = f"Initialising a {server.flavour} data directory failed: {exc}"
    else:
        return
    raise MySQLError(failure)


def _build(server: MySQLServer, build: str, zoneinfo: Optional[str], log: Logger) -> dict[str, Any]:
    """Initialise a data directory in ``build``, the time zones loaded when there are any."""
    sql_file = None
    if zoneinfo is None:
        log.warning("%s is missing (Debian package tzdata): no time zones in MySQL", ZONEINFO_DIR)
    else:
        sql_file = os.path.join(build, "timezones.sql")
        with open(sql_file, "wb") as sql:
            sql.write(_timezone_sql(server, zoneinfo))
    _initialise(server, os.path.join(build, "data"), sql_file)
    if sql_file is not None:
        os.unlink(sql_file)
    return {"version": server.version_text}


def base_entry(server: MySQLServer, mysql_cache: str) -> CacheEntry:
    """The cache entry of ``server``'s initialised data directory, built or not."""
    return _cache_entry(server, mysql_cache, _timezone_source()[1])


def cached_data_dir(server: MySQLServer, mysql_cache: str, log: Logger) -> str:
    """An initialised data directory for ``server`` to copy from; built on first use."""
    zoneinfo, timezones = _timezone_source()
    entry = _cache_entry(server, mysql_cache, timezones)
    doing = f"initialising a {server.flavour} data directory"
    build.ensure(
        entry,
        lambda folder: _build(server, folder, zoneinfo, log),
        log,
        doing,
        service=os.path.basename(server.binary),
    )
    return entry.data_dir


def prepare_data_dir(server: MySQLServer, mysql_cache: str, data_dir: str, log: Logger) -> None:
    """Fill ``data_dir`` with a copy of the cached data directory."""
    cache.copy_from(lambda: cached_data_dir(server, mysql_cache, log), data_dir)
