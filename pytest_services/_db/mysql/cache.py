"""The cache of initialised MySQL/MariaDB data directories, and copies made from it.

Plain functions, no pytest: :func:`prepare_data_dir` puts a copy of a cached, initialised
data directory (time zone tables loaded) where a session's server will run, building the
cache entry first if needed.  Entries are built next to their place under a lock, renamed
into place in one step, and checked by a marker that lists every file's size, so concurrent
sessions build an entry once and a damaged entry is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from logging import Logger
from typing import Optional

from pytest_services._db.mysql.server import (
    PACKAGE,
    ZONEINFO_DIR,
    MySQLError,
    MySQLServer,
    _digest,
    _require_tool,
)
from pytest_services._db.sparse import copy_tree, sparsify_tree
from pytest_services.locks import file_lock
from pytest_services.process import CalledProcessWithOutputError, check_output

__all__ = ["PACKAGE", "cached_data_dir", "prepare_data_dir"]

#: Only for initialising: rotate the Aria log early so that loading the time zones does not
#: leave a large log behind in the cache.
MARIADB_INIT_ONLY = ("aria-log-file-size=8M",)
#: Bump to invalidate every cache entry made by an older layout of this module.
CACHE_FORMAT = 1
MARKER = "complete.json"
#: Cache entries unused for this many days are removed when a new entry is built.
UNUSED_ENTRY_DAYS = 30
#: Seconds a session waits for another one that is initialising the same cache entry.
BUILD_LOCK_TIMEOUT = 600.0


def _timezone_source() -> tuple[Optional[str], str]:
    """The zoneinfo folder to load (None when missing) and a text that identifies its data."""
    if not os.path.isdir(ZONEINFO_DIR):
        return None, "none"
    try:
        with open(os.path.join(ZONEINFO_DIR, "tzdata.zi"), encoding="utf-8") as tzdata:
            return ZONEINFO_DIR, tzdata.readline().strip()
    except OSError:
        return ZONEINFO_DIR, str(os.stat(ZONEINFO_DIR).st_mtime_ns)


@dataclass(frozen=True)
class _CacheEntry:
    key: str
    path: str

    @property
    def data_dir(self) -> str:
        return os.path.join(self.path, "data")


def _cache_entry(server: MySQLServer, mysql_cache: str, timezones: str) -> _CacheEntry:
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
    key = f"{server.flavour}-{number}-{_digest(material)}"
    return _CacheEntry(key, os.path.join(mysql_cache, key))


def _file_sizes(data_dir: str) -> dict[str, int]:
    sizes = {}
    for folder, _dirs, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(folder, name)
            sizes[os.path.relpath(path, data_dir)] = os.lstat(path).st_size
    return sizes


def _entry_is_complete(entry: _CacheEntry) -> bool:
    """True when the entry's marker exists, names its key, and every file has its size."""
    try:
        with open(os.path.join(entry.path, MARKER), encoding="utf-8") as marker:
            manifest = json.load(marker)
        return bool(
            manifest["key"] == entry.key and manifest["files"] == _file_sizes(entry.data_dir)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _discard(path: str) -> None:
    """Remove a folder: renamed first, so nobody takes a half-removed folder for a good one."""
    if not os.path.lexists(path):
        return
    trash = f"{os.path.dirname(path)}/.trash-{os.path.basename(path)}-{os.getpid()}"
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


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


def _build(server: MySQLServer, entry: _CacheEntry, zoneinfo: Optional[str], log: Logger) -> None:
    """Initialise ``entry`` next to its place, then rename it into place in one step."""
    parent = os.path.dirname(entry.path)
    build = tempfile.mkdtemp(prefix=f".build-{entry.key}-", dir=parent)
    try:
        sql_file = None
        if zoneinfo is None:
            log.warning(
                "%s is missing (Debian package tzdata): no time zones in MySQL", ZONEINFO_DIR
            )
        else:
            sql_file = os.path.join(build, "timezones.sql")
            with open(sql_file, "wb") as sql:
                sql.write(_timezone_sql(server, zoneinfo))
        data_dir = os.path.join(build, "data")
        _initialise(server, data_dir, sql_file)
        if sql_file is not None:
            os.unlink(sql_file)
        manifest = {
            "key": entry.key,
            "version": server.version_text,
            "files": _file_sizes(sparsify_tree(data_dir)),
        }
        with open(os.path.join(build, MARKER), "w", encoding="utf-8") as marker:
            json.dump(manifest, marker)
        os.rename(build, entry.path)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def base_entry(server: MySQLServer, mysql_cache: str) -> _CacheEntry:
    """The cache entry of ``server``'s initialised data directory, built or not."""
    return _cache_entry(server, mysql_cache, _timezone_source()[1])


def cached_data_dir(server: MySQLServer, mysql_cache: str, log: Logger) -> str:
    """An initialised data directory for ``server`` to copy from; built on first use."""
    zoneinfo, timezones = _timezone_source()
    entry = _cache_entry(server, mysql_cache, timezones)
    if _entry_is_complete(entry):
        _mark_used(entry)
        return entry.data_dir
    with file_lock(f"{entry.path}.lock", remove=False, timeout=BUILD_LOCK_TIMEOUT):
        if _entry_is_complete(entry):
            return entry.data_dir
        for name in os.listdir(mysql_cache):
            if name.startswith((f".build-{entry.key}-", f".trash-{entry.key}-")):
                shutil.rmtree(os.path.join(mysql_cache, name), ignore_errors=True)
        if os.path.lexists(entry.path):
            log.warning("MySQL cache entry %s is incomplete or damaged: rebuilding it", entry.path)
            _discard(entry.path)
        log.info("initialising a %s data directory in %s", server.flavour, entry.path)
        _build(server, entry, zoneinfo, log)
    _prune(mysql_cache, entry.key, log)
    return entry.data_dir


def _mark_used(entry: _CacheEntry) -> None:
    with contextlib.suppress(OSError):
        os.utime(os.path.join(entry.path, MARKER))


def _prune(mysql_cache: str, keep: str, log: Logger) -> None:
    """Remove the entries (of older server versions, say) unused for ``UNUSED_ENTRY_DAYS``."""
    limit = time.time() - UNUSED_ENTRY_DAYS * 86400
    for name in os.listdir(mysql_cache):
        path = os.path.join(mysql_cache, name)
        if name.startswith(".") or name == keep or not os.path.isdir(path):
            continue
        marker = os.path.join(path, MARKER)
        try:
            used = os.stat(marker if os.path.exists(marker) else path).st_mtime
        except OSError:
            continue
        if used < limit:
            log.info("removing the unused MySQL cache entry %s", path)
            _discard(path)
            with contextlib.suppress(OSError):
                os.unlink(f"{path}.lock")


def prepare_data_dir(server: MySQLServer, mysql_cache: str, data_dir: str, log: Logger) -> None:
    """Fill ``data_dir`` with a copy of the cached data directory."""
    try:
        copy_tree(cached_data_dir(server, mysql_cache, log), data_dir)
    except OSError:
        # Another session found the entry damaged and is replacing it: take the new one.
        shutil.rmtree(data_dir, ignore_errors=True)
        copy_tree(cached_data_dir(server, mysql_cache, log), data_dir)
