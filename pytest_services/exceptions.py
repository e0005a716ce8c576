"""Every exception and warning of pytest-services, in one small hierarchy.

Catch :class:`PytestServicesError` for any error of the plugin, :class:`ServiceError` for a
service that is missing, cannot start or is not ready; filter :class:`PytestServicesWarning`
for every warning.  The classes are also importable from the modules that raise them
(``pytest_services.process.ServiceError``, ``pytest_services.mysql.MySQLError``...).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_services._engine.text import describe_exit, indent, join, last_lines

__all__ = [
    "CalledProcessWithOutputError",
    "CheckerError",
    "DatabaseError",
    "DatabaseInitError",
    "DjangoMigrationError",
    "FolderError",
    "FolderWarning",
    "KeeperError",
    "LockError",
    "LockWarning",
    "MySQLError",
    "MySQLInitError",
    "PostgreSQLError",
    "PostgreSQLInitError",
    "ProtocolError",
    "PytestServicesError",
    "PytestServicesWarning",
    "ReplyError",
    "ServiceError",
    "ServiceStartError",
    "ServicesWarning",
    "SharedServiceError",
    "StartTimedOut",
    "XvfbError",
    "XwdError",
]


class PytestServicesError(Exception):
    """The root of every error raised by pytest-services."""


# -- services ------------------------------------------------------------------------------


class ServiceError(PytestServicesError):
    """A service could not be started or was not ready in time."""


class ServiceStartError(ServiceError):
    """A service exited while starting, or never became ready."""

    def __init__(
        self,
        message: str,
        *,
        name: str,
        command: Sequence[str],
        returncode: int | None = None,
        log_path: Path | None = None,
        tail: str = "",
    ) -> None:
        self.name = name
        self.command = list(command)
        self.returncode = returncode
        self.log_path = log_path
        self.tail = tail
        lines = [message, f"  command: {shlex.join(self.command)}"]
        if log_path is not None:
            lines.append(f"  output: {log_path}")
        if tail:
            lines.append(f"  last lines of its output:\n{indent(tail)}")
        elif returncode is not None or log_path is not None:
            lines.append("  it printed nothing")
        super().__init__("\n".join(lines))


class CalledProcessWithOutputError(subprocess.CalledProcessError, PytestServicesError):
    """A command exited with a non-zero code; carries its ``output`` and ``err``."""

    def __init__(self, returncode: int, cmd: Any, output: bytes, err: bytes) -> None:
        super().__init__(returncode, cmd, output, err)
        self.err = err

    def __str__(self) -> str:
        lines = [f"Command {describe_exit(self.returncode)}.", f"  command: {join(self.cmd)}"]
        for label, data in (("stdout", self.output), ("stderr", self.err)):
            if data:
                text = last_lines(data.decode(errors="replace"))
                lines.append(f"  last lines of its {label}:\n{indent(text)}")
        return "\n".join(lines)


class CheckerError(ServiceError):
    """A checker cannot work the way it was used."""


class XvfbError(ServiceError):
    """Xvfb or xauth is missing, or Xvfb could not serve the display."""


class XwdError(XvfbError, ValueError):
    """The data is not an XWD image of a kind this module encodes."""


class ReplyError(ServiceError):
    """Redis answered a command with an error reply (``-ERR ...``, ``-LOADING ...``)."""


class ProtocolError(ConnectionError, PytestServicesError):
    """What came back is not a Redis reply: not a Redis server, maybe."""


class DatabaseError(ServiceError):
    """A database server or its tools are missing, or initialising it failed."""


class DatabaseInitError(DatabaseError):
    """A loader of a prepared database state failed."""


class DjangoMigrationError(DatabaseInitError):
    """Django's ``migrate`` failed while it prepared a state; the message names the migration."""


class MySQLError(DatabaseError):
    """The MySQL/MariaDB server or its tools are missing, or initialising it failed."""


class MySQLInitError(MySQLError, DatabaseInitError):
    """A loader of a prepared MySQL state failed."""


class PostgreSQLError(DatabaseError):
    """The PostgreSQL server or its programs are missing, or initialising it failed."""


class PostgreSQLInitError(PostgreSQLError, DatabaseInitError):
    """A loader of a prepared PostgreSQL state failed."""


# -- folders, locks and the run's keeper ---------------------------------------------------


class FolderError(PytestServicesError):
    """A folder the plugin needs cannot be created or is not safe to use."""


class LockError(PytestServicesError):
    """A lock could not be taken, or no free resource was found."""


class SharedServiceError(PytestServicesError):
    """A shared service failed to start, or was not ready in time."""


class StartTimedOut(SharedServiceError):
    """A shared service's start function had not returned within its timeout."""


class KeeperError(PytestServicesError):
    """The keeper of the run cannot be reached, or it did not answer."""


# -- warnings ------------------------------------------------------------------------------


class PytestServicesWarning(UserWarning):
    """The root of every warning issued by pytest-services."""


class ServicesWarning(PytestServicesWarning):
    """A warning about how pytest-services is used."""


class FolderWarning(PytestServicesWarning):
    """A shared folder of the user's was taken by someone else; another one serves."""


class LockWarning(PytestServicesWarning):
    """A host-wide lock table could not be used; reservations hold for this user only."""
