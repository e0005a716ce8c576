"""Find the MySQL or MariaDB server, and keep initialised data directories in a cache.

Plain functions, no pytest: :func:`get_server` tells which server binary runs and its
version, :func:`prepare_data_dir` puts a copy of a cached, initialised data directory (time
zone tables loaded) where a session's server will run, building the cache entry first if
needed, and :func:`defaults_file_text` writes the server's own ``my.cnf``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from logging import Logger
from typing import Optional

from pytest_services.folders import private_dir
from pytest_services.locks import file_lock
from pytest_services.process import (
    CalledProcessWithOutputError,
    ServiceError,
    check_output,
    find_program,
)


class MySQLError(ServiceError):
    """The MySQL/MariaDB server or its tools are missing, or initialising it failed."""


CACHE_DIR_ENV = "PYTEST_SERVICES_CACHE_DIR"
SERVER_ENV = "PYTEST_SERVICES_MYSQLD"

#: Server binaries tried, in this order, when ``PYTEST_SERVICES_MYSQLD`` is not set.
SERVER_NAMES = ("mariadbd", "mysqld")
#: Searched after ``PATH``: Debian installs the server in ``/usr/sbin``, which is not on the
#: ``PATH`` of ordinary users.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
ZONEINFO_DIR = "/usr/share/zoneinfo"
PACKAGE = "mariadb-server"
INSTALL_HINT = (
    "install the Debian package mariadb-server (or MySQL's mysql-server), "
    f"or set {SERVER_ENV} to the server binary"
)

#: Bump to invalidate every cache entry made by an older layout of this module.
CACHE_FORMAT = 1
MARKER = "complete.json"
#: Cache entries unused for this many days are removed when a new entry is built.
UNUSED_ENTRY_DAYS = 30
#: Seconds a session waits for another one that is initialising the same cache entry.
BUILD_LOCK_TIMEOUT = 600.0
#: Seconds the server has to accept connections once started.
START_TIMEOUT = 60.0
#: Unix socket paths longer than this do not fit in ``sockaddr_un``.
#: Settings fixed when a MariaDB data directory is created, and needed again by every server
#: started from it: a small InnoDB system tablespace and redo log keep each copy cheap.
MARIADB_LAYOUT = (
    "innodb-data-file-path=ibdata1:10M:autoextend",
    "innodb-log-file-size=8M",
    "innodb-undo-tablespaces=0",
)
#: Only for initialising: rotate the Aria log early so that loading the time zones does not
#: leave a large log behind in the cache.
MARIADB_INIT_ONLY = ("aria-log-file-size=8M",)
#: Settings of every server: no network, no binary log, no durability (the data is thrown
#: away), no performance schema, and small MyISAM caches, which start faster.
COMMON_SETTINGS = (
    "skip-networking",
    "skip-name-resolve",
    "skip-log-bin",
    "performance-schema=OFF",
    "character-set-server=utf8mb4",
    "innodb-flush-log-at-trx-commit=0",
    "innodb-doublewrite=OFF",
    "innodb-buffer-pool-load-at-startup=OFF",
    "innodb-buffer-pool-dump-at-shutdown=OFF",
    "key-buffer-size=8M",
)
#: The same for the Aria engine of MariaDB's system and temporary tables.
MARIADB_SETTINGS = ("aria-pagecache-buffer-size=16M",)
#: MySQL 8 starts the X plugin, which listens on a TCP port and a socket of its own.
MYSQL8_SETTINGS = ("mysqlx=OFF",)

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class MySQLServer:
    """A server binary and what its ``--version`` says about it."""

    binary: str
    version_text: str

    @property
    def is_mariadb(self) -> bool:
        """True for MariaDB, False for MySQL."""
        return "mariadb" in self.version_text.lower()

    @property
    def flavour(self) -> str:
        """``mariadb`` or ``mysql``."""
        return "mariadb" if self.is_mariadb else "mysql"

    @property
    def version(self) -> tuple[int, int, int]:
        """The version number, ``(0, 0, 0)`` when it cannot be read."""
        match = _VERSION.search(self.version_text)
        if match is None:
            return (0, 0, 0)
        major, minor, patch = (int(part) for part in match.groups())
        return (major, minor, patch)

    @property
    def layout(self) -> tuple[str, ...]:
        """Settings shared by the initialisation and every server started from its result."""
        return MARIADB_LAYOUT if self.is_mariadb else ()

    def settings(self) -> tuple[str, ...]:
        """The settings of every server of this flavour, layout included."""
        extra: tuple[str, ...]
        if self.is_mariadb:
            extra = MARIADB_SETTINGS
        else:
            extra = MYSQL8_SETTINGS if self.version >= (8, 0, 0) else ()
        return (*self.layout, *COMMON_SETTINGS, *extra)


# -- finding the programs ----------------------------------------------------------------------


def find_server_binary() -> str:
    """Path of the server binary to run: ``$PYTEST_SERVICES_MYSQLD``, ``mariadbd``, ``mysqld``.

    Looked up on PATH and then in the sbin folders, where Debian puts it but ordinary users
    do not look; a missing binary is an error naming the package.
    """
    wanted = os.environ.get(SERVER_ENV, "").strip()
    if wanted and os.sep in wanted:
        if os.path.isfile(wanted) and os.access(wanted, os.X_OK):
            return wanted
        raise MySQLError(f"MySQL/MariaDB server {wanted} ({SERVER_ENV}) not found: {INSTALL_HINT}.")
    return find_program((wanted,) if wanted else SERVER_NAMES, PACKAGE, then=SBIN_DIRS)


def _sibling_dirs(binary: str) -> list[str]:
    """Folders near the server binary (and near its link target) where its helpers live."""
    found: list[str] = []
    for path in (os.path.abspath(binary), os.path.realpath(binary)):
        here = os.path.dirname(path)
        prefix = os.path.dirname(here)
        for folder in (here, os.path.join(prefix, "bin"), os.path.join(prefix, "scripts")):
            if folder not in found:
                found.append(folder)
    return found


def _require_tool(server: MySQLServer, names: Sequence[str]) -> str:
    """A helper program of ``server``: looked up next to it first, then on PATH."""
    return find_program(names, PACKAGE, first=_sibling_dirs(server.binary), then=SBIN_DIRS)


def _server_version(binary: str, cache_dir: str) -> str:
    """``binary --version``, remembered in the cache for as long as the binary is unchanged."""
    real = os.path.realpath(binary)
    info = os.stat(real)
    identity = f"{real}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_ino}"
    memo = os.path.join(cache_dir, f"version-{_digest(identity)}")
    with contextlib.suppress(OSError), open(memo, encoding="utf-8") as memo_file:
        text = memo_file.read().strip()
        if text:
            return text
    try:
        output, err = check_output([binary, "--no-defaults", "--version"])
    except (OSError, CalledProcessWithOutputError) as exc:
        failure = f"Cannot run {binary} --version: {exc}"
    else:
        text = (output or err).decode(errors="replace").strip()
        # "/usr/sbin/mariadbd  Ver 10.11.6-MariaDB ...": drop the name it was called by.
        text = text[text.find(" Ver ") + 1 :] if " Ver " in text else text
        _write_atomically(memo, text.encode())
        return text
    raise MySQLError(failure)


# -- the cache of initialised data directories ---------------------------------------------------


def cache_root(memory_root_dir: str) -> str:
    """The user's cache folder shared by all sessions, created private (mode 0700).

    Relative paths (in ``PYTEST_SERVICES_CACHE_DIR`` too) are taken from the current folder.
    """
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return private_dir(os.path.abspath(configured))
    parent = os.path.abspath(memory_root_dir)
    return private_dir(os.path.join(parent, f"pytest-services-cache-{os.getuid()}"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_atomically(path: str, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as temp_file:
            temp_file.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


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
            "files": _file_sizes(data_dir),
        }
        with open(os.path.join(build, MARKER), "w", encoding="utf-8") as marker:
            json.dump(manifest, marker)
        os.rename(build, entry.path)
    finally:
        shutil.rmtree(build, ignore_errors=True)


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


def _copy_data(source: str, target: str) -> None:
    shutil.copytree(source, target, copy_function=shutil.copyfile, dirs_exist_ok=True)


def prepare_data_dir(server: MySQLServer, mysql_cache: str, data_dir: str, log: Logger) -> None:
    """Fill ``data_dir`` with a copy of the cached data directory."""
    try:
        _copy_data(cached_data_dir(server, mysql_cache, log), data_dir)
    except OSError:
        # Another session found the entry damaged and is replacing it: take the new one.
        shutil.rmtree(data_dir, ignore_errors=True)
        _copy_data(cached_data_dir(server, mysql_cache, log), data_dir)


# -- small helpers for the fixtures ------------------------------------------------------------


_servers: dict[tuple[str, str], MySQLServer] = {}


def mysql_cache_dir(memory_root_dir: str) -> str:
    """The folder of the cached MySQL data directories, created private."""
    return private_dir(os.path.join(cache_root(memory_root_dir), "mysql"))


def get_server(memory_root_dir: str) -> MySQLServer:
    """The server binary to run and its version."""
    binary = find_server_binary()
    mysql_cache = mysql_cache_dir(memory_root_dir)
    key = (binary, mysql_cache)
    if key not in _servers:
        _servers[key] = MySQLServer(binary, _server_version(binary, mysql_cache))
    return _servers[key]


def defaults_file_text(
    server: MySQLServer, data_dir: str, socket: str, pid_file: str, tmp_dir: str
) -> str:
    """The contents of the server's own ``my.cnf`` (relative paths made absolute)."""
    data_dir, socket, pid_file, tmp_dir = map(
        os.path.abspath, (data_dir, socket, pid_file, tmp_dir)
    )
    lines = [
        "# Written by pytest-services for one test session; the system my.cnf is not read.",
        "[mysqld]",
        f"datadir={data_dir}",
        f"socket={socket}",
        f"pid-file={pid_file}",
        f"tmpdir={tmp_dir}",
        *server.settings(),
        "",
        "[client]",
        "user=root",
        f"socket={socket}",
        "",
    ]
    return "\n".join(lines)


# -- fixtures ------------------------------------------------------------------------------
