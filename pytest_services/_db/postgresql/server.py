"""Find the PostgreSQL server programs, and describe how to run the server.

Plain code, no pytest.  :func:`find_bindir` tells which installation runs; a
:class:`PostgreSQLServer` gives its programs and the settings of every server started from
it, all on the command line (``-c``): the ``postgresql.conf`` of the data directory is empty,
and the system's is never read.  :func:`account` is who the server runs as.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from pytest_services._db.cache import cache_root
from pytest_services._engine.account import ServiceAccount, service_account
from pytest_services._engine.paths import private_dir
from pytest_services._engine.readiness import bounded
from pytest_services.exceptions import PostgreSQLError
from pytest_services.process import ServiceProcess

__all__ = [
    "BINDIR_ENV",
    "INSTALL_HINT",
    "START_TIMEOUT",
    "PostgreSQLServer",
    "account",
    "find_bindir",
    "get_server",
    "postgresql_cache_dir",
    "postmaster_checker",
    "remove_leftover_memory",
    "shut_down_now",
]

BINDIR_ENV = "PYTEST_SERVICES_PG_BINDIR"
PACKAGE = "postgresql"
INSTALL_HINT = (
    f"install the Debian package {PACKAGE} (apt-get install {PACKAGE}), "
    f"or set {BINDIR_ENV} to the folder of its programs"
)
#: Where Debian installs each major version's programs (not on PATH).
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
#: The system account a server started by root runs as.
ACCOUNT = "postgres"
#: Seconds the server has to accept connections once started.
START_TIMEOUT = 60.0
#: Settings of every server: no durability (the data is thrown away), little memory, no
#: background work that writes (so that the WAL position moves only when a client writes),
#: WAL kept readable for the per-test reset, logs on stderr (the service's log).
SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "shared_buffers=16MB",
    "max_connections=50",
    "wal_level=replica",
    "max_wal_senders=0",
    "max_replication_slots=0",
    "min_wal_size=4MB",
    "max_wal_size=64MB",
    "checkpoint_timeout=1d",
    "autovacuum=off",
    "logging_collector=off",
    "log_destination=stderr",
    "log_timezone=UTC",
    "timezone=UTC",
    "datestyle=iso, mdy",
    "lc_messages=C",
    "default_text_search_config=pg_catalog.english",
    # Segments in the data directory, not in /dev/shm: they go with it, even after a SIGKILL.
    "dynamic_shared_memory_type=mmap",
)


@dataclass(frozen=True)
class PostgreSQLServer:
    """One PostgreSQL installation: the folder of its programs."""

    bindir: str

    def program(self, name: str) -> str:
        """The path of one of its programs (``postgres``, ``initdb``, ``psql``)."""
        return os.path.join(self.bindir, name)

    @property
    def identity(self) -> str:
        """What decides the server's behaviour, as a short digest: its binary, unchanged."""
        real = os.path.realpath(self.program("postgres"))
        info = os.stat(real)
        material = [real, info.st_size, info.st_mtime_ns, info.st_ino, SETTINGS]
        return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:16]

    @property
    def major(self) -> str:
        """The major version, from the layout of the installation (``15``), or ``pg``."""
        match = re.search(r"/postgresql/([\d.]+)/bin$", os.path.realpath(self.bindir))
        return match.group(1) if match else "pg"

    def version_text(self) -> str:
        """``postgres --version``."""
        result = subprocess.run(
            [self.program("postgres"), "--version"], capture_output=True, check=False
        )
        return result.stdout.decode(errors="replace").strip()

    def arguments(
        self, data_dir: str, socket_dir: str, port: int, *, tcp: bool = False
    ) -> list[str]:
        """The command-line arguments of a server on ``data_dir``, listening on a unix socket
        in ``socket_dir`` (and on 127.0.0.1:``port`` only when ``tcp``)."""
        settings = (
            *SETTINGS,
            f"port={port}",
            f"unix_socket_directories={socket_dir}",
            f"listen_addresses={'127.0.0.1' if tcp else ''}",
        )
        return ["-D", data_dir, *(part for item in settings for part in ("-c", item))]

    def launch(
        self,
        data_dir: str,
        socket_dir: str,
        port: int,
        account: Optional[ServiceAccount],
        work_dir: str,
        *,
        tcp: bool = False,
    ) -> tuple[str, list[str], Optional[dict[str, Any]], Callable[[], bool]]:
        """How to start a server on ``data_dir`` as ``account`` (we, when None) in its
        folder ``work_dir``: the program, its :meth:`arguments`, the ``Popen`` keywords and
        the readiness check, in the order ``start_service`` and ``watcher_getter`` take."""
        kwargs = account.popen_kwargs(work_dir) if account is not None else None
        arguments = self.arguments(data_dir, socket_dir, port, tcp=tcp)
        return self.program("postgres"), arguments, kwargs, postmaster_checker(data_dir)


def _has_server(folder: str) -> bool:
    path = os.path.join(folder, "postgres")
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _version_key(folder: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([\d.]+)/bin$", folder)
    return tuple(int(part) for part in match.group(1).split(".")) if match else (0,)


def find_bindir(candidates: Optional[Sequence[str]] = None) -> str:
    """The folder of the server programs to run: ``$PYTEST_SERVICES_PG_BINDIR``, else the
    newest ``/usr/lib/postgresql/<version>/bin``, else ``pg_config --bindir``, else the
    folder of ``postgres`` on PATH; none is an error naming the package to install."""
    wanted = os.environ.get(BINDIR_ENV, "").strip()
    if wanted:
        if _has_server(wanted):
            return wanted
        raise PostgreSQLError(
            f"There is no PostgreSQL server program in {wanted} ({BINDIR_ENV}): {INSTALL_HINT}."
        )
    found = [path for path in (candidates or glob.glob(DEBIAN_BINDIRS)) if _has_server(path)]
    if found:
        return max(found, key=_version_key)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, check=False)
        folder = result.stdout.decode(errors="replace").strip()
        if result.returncode == 0 and _has_server(folder):
            return folder
    on_path = shutil.which("postgres")
    if on_path is not None:
        return os.path.dirname(on_path)
    raise PostgreSQLError(
        f"The PostgreSQL server (postgres) is not installed: not found in {DEBIAN_BINDIRS}, "
        f"by pg_config or on PATH. To fix this, {INSTALL_HINT}."
    )


def account() -> Optional[ServiceAccount]:
    """The account the server runs as: ``postgres`` when we are root, else None (us)."""
    return service_account(ACCOUNT, "PostgreSQL", PostgreSQLError)


def postgresql_cache_dir(memory_root_dir: str) -> str:
    """The folder of the cached PostgreSQL data directories, created private."""
    return private_dir(os.path.join(cache_root(memory_root_dir), "postgresql"))


def get_server() -> PostgreSQLServer:
    """The PostgreSQL installation to run."""
    return PostgreSQLServer(find_bindir())


def postmaster_checker(data_dir: str) -> Callable[[], bool]:
    """A readiness check that passes once the server on ``data_dir`` says it is ready in its
    ``postmaster.pid``, and that server is a child of this process: the one we started,
    not a server someone else runs on the same files."""
    pid_file = os.path.join(data_dir, "postmaster.pid")

    @bounded
    def postmaster_ready() -> bool:
        try:
            with open(pid_file, encoding="utf-8") as lines:
                fields = lines.read().split("\n")
        except FileNotFoundError:
            return False
        if len(fields) < 8 or fields[7].strip() != "ready":
            return False
        try:
            with open(f"/proc/{int(fields[0])}/stat", "rb") as stat:
                parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError):
            return False
        return parent == os.getpid()

    return postmaster_ready


def shut_down_now(process: ServiceProcess, data_dir: str) -> None:
    """Stop the server with its children: they lead process groups of their own, which a
    stop of the server's group does not reach; on SIGQUIT the server ends them and waits."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGQUIT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=START_TIMEOUT)
    remove_leftover_memory(data_dir)  # when it had died


def remove_leftover_memory(data_dir: str, wait: float = 5.0) -> None:
    """Remove the small System V segment that a server killed on ``data_dir`` left behind,
    once its children (which notice the death of the server) detached from it; a server
    that exits cleanly removes it, and its ``postmaster.pid``, itself."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8") as pid_file:
            fields = pid_file.read().split("\n")
        server, shmid = int(fields[0]), int(fields[6].split()[1])
    except (OSError, IndexError, ValueError):
        return
    deadline = time.monotonic() + wait
    while True:
        # Columns: key shmid perms size cpid lpid nattch...: only the server's own.
        attached = _attached(shmid, server)
        if attached is None:
            return
        if attached == 0:
            subprocess.run(["ipcrm", "-m", str(shmid)], capture_output=True, check=False)
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)


def _attached(shmid: int, creator: int) -> Optional[int]:
    """How many processes are attached to segment ``shmid`` made by ``creator``; None if
    there is no such segment."""
    try:
        with open("/proc/sysvipc/shm", encoding="utf-8") as table:
            rows = [line.split() for line in table.readlines()[1:]]
    except OSError:
        return None
    for row in rows:
        if int(row[1]) == shmid and int(row[4]) == creator:
            return int(row[6])
    return None
