"""Find the MySQL or MariaDB server, and describe how to run it.

Plain functions, no pytest: :func:`get_server` tells which server binary runs and its
version, and :func:`defaults_file_text` writes the server's own ``my.cnf``.  The cache of
initialised data directories is in :mod:`pytest_services._db.mysql.cache`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_services._db.cache import CACHE_DIR_ENV, cache_root  # noqa: F401 - their old home
from pytest_services._engine.paths import private_dir
from pytest_services.exceptions import (
    CalledProcessWithOutputError,
    MySQLError,
)
from pytest_services.process import (
    check_output,
    find_program,
)

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
#: Settings of every server: no network, no binary log, no durability (the data is thrown
#: away), no performance schema, and small MyISAM caches, which start faster.
COMMON_SETTINGS = (
    "skip-networking",
    "skip-name-resolve",
    "performance-schema=OFF",
    "character-set-server=utf8mb4",
    "innodb-flush-log-at-trx-commit=0",
    "innodb-doublewrite=OFF",
    "innodb-buffer-pool-load-at-startup=OFF",
    "innodb-buffer-pool-dump-at-shutdown=OFF",
    "key-buffer-size=8M",
)
#: Without a binary log: servers that only prepare a state for the cache.
NO_BINLOG = ("skip-log-bin",)
#: A session's server keeps a binary log of rows, never synced: its position tells at once
#: whether anything was written, and its events name the tables (see ``_mysql_clean``).
BINLOG = (
    "log-bin=binlog",
    "binlog-format=ROW",
    "binlog-row-image=MINIMAL",
    "sync-binlog=0",
    "server-id=1",
    # Without it, a binary log refuses functions not declared DETERMINISTIC or READS SQL DATA.
    "log-bin-trust-function-creators=1",
)
#: The same for the Aria engine of MariaDB's system and temporary tables.
MARIADB_SETTINGS = ("aria-pagecache-buffer-size=16M",)
#: A session's MariaDB server shows which connection holds which lock (for ``mysql_clean``).
MARIADB_SESSION_SETTINGS = ("plugin-load-add=metadata_lock_info",)
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

    def settings(self, *, binlog: bool = False) -> tuple[str, ...]:
        """The settings of every server of this flavour, layout included."""
        extra: tuple[str, ...]
        if self.is_mariadb:
            extra = (*MARIADB_SETTINGS, *(MARIADB_SESSION_SETTINGS if binlog else ()))
        else:
            extra = MYSQL8_SETTINGS if self.version >= (8, 0, 0) else ()
        return (*self.layout, *COMMON_SETTINGS, *(BINLOG if binlog else NO_BINLOG), *extra)


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
    server: MySQLServer,
    data_dir: str,
    socket: str,
    pid_file: str,
    tmp_dir: str,
    *,
    binlog: bool = True,
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
        *server.settings(binlog=binlog),
        "",
        "[client]",
        "user=root",
        f"socket={socket}",
        "",
    ]
    return "\n".join(lines)


# -- fixtures ------------------------------------------------------------------------------
