"""What a database engine tells the shared pipeline: the contract of an engine module set.

The pipeline (:mod:`pytest_services._db.prepare`) builds prepared states in the cache, once
per key, for any server that describes itself this way; the engine modules of one server
(``pytest_services._db.mysql``...) say only what is theirs: binaries, configuration,
initialisation, how to run a loader, and how to describe and restore the state in SQL.
"""

from __future__ import annotations

from typing import Optional, Protocol

from pytest_services._db.cache import CacheEntry
from pytest_services._db.state import DatabaseInit, Loader, State
from pytest_services._engine.paths import StrPath
from pytest_services.process import ServiceProcess

__all__ = ["Cleaner", "Engine"]


class Engine(Protocol):
    """One database server: where its cache entries are, and how it prepares a state."""

    #: How messages and logs name the server ("MySQL").
    name: str
    #: Seconds the preparing server has to start, and to shut down cleanly.
    start_timeout: float

    @property
    def owner(self) -> Optional[tuple[int, int]]:
        """The user and group id that a session's copy of a data directory is given to (the
        account the server runs as), or None to keep it this process's."""
        ...

    def base_entry(self) -> CacheEntry:
        """The cache entry of the server's initialised data directory, built or not."""
        ...

    def base_data_dir(self) -> str:
        """The initialised data directory to copy from; built on first use."""
        ...

    def start_preparing(
        self, build: str, data_dir: str, run_dir: StrPath, log_dir: StrPath
    ) -> ServiceProcess:
        """Start a private server on ``data_dir`` (inside the build folder ``build``)."""
        ...

    def create_database(self, database: str) -> None:
        """Create the default database on the preparing server."""
        ...

    def run_loader(self, init: DatabaseInit, loader: Loader, database: str) -> None:
        """Run one loader against ``database`` on the preparing server: an SQL file through
        the server's client, a callable with the engine's keyword arguments (through
        :meth:`DatabaseInit.run`, which names a failing loader)."""
        ...

    def describe(self, database: str) -> State:
        """Describe the filled ``database`` for the per-test reset, and keep what the
        reset restores from (a template of its rows)."""
        ...

    def tidy(self, build: str) -> None:
        """Remove what the stopped preparing server left in ``build`` besides ``data/``."""
        ...


class Cleaner(Protocol):
    """Puts one server's default database back in its prepared state before a test."""

    def reset(self, test: str = "") -> None:
        """Make the default database what the state describes before the test ``test`` (a
        node id, which the next reset's messages name as the previous test); cheap when
        nothing changed."""
        ...

    def close(self) -> None:
        """Release what the cleaner holds (its connection)."""
        ...
