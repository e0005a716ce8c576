"""What services cost this process: starts, data-directory caches, prepared states, resets.

Plain code, no pytest.  The engine and the database pipeline append to it -- each service
start (:func:`started`), each look-up of a cache entry, which is either reused or built
(:func:`built`), each per-test reset (:func:`reset_done`) -- and the session's bill
(:mod:`pytest_services._bill`) reads it at the end.  A figure is kept per service, under the
name of its binary (``memcached``, ``mariadbd``...).

Whoever must act once a service runs (the report hooks, which cost nothing before) asks
:func:`on_first_start` to be called at the next start.  Work done ahead of time, which may
turn out unused, records nothing until it is used: what a thread records inside
:func:`deferring` (and what else asks :func:`deferred`, such as a spare copy to make once
the server started) is kept, to be recorded later or dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = [
    "Account",
    "accounts",
    "add_up",
    "building",
    "built",
    "cancel",
    "deferred",
    "deferring",
    "in_use",
    "on_first_start",
    "reset_done",
    "since",
    "started",
    "timed_reset",
]


@dataclass
class Account:
    """The figures of one service; seconds are wall time."""

    starts: int = 0
    start_seconds: float = 0.0
    #: The data directory the server starts from (a cache entry): reused or built.
    cache_hits: int = 0
    cache_misses: int = 0
    cache_seconds: float = 0.0
    #: Prepared states (``mysql_init``...): reused from the cache, or built.
    states_reused: int = 0
    states_built: int = 0
    state_seconds: float = 0.0
    #: Per-test resets (``mysql_clean``, ``memcached_clean``, ``redis_clean``).
    resets: int = 0
    reset_seconds: float = 0.0

    def add(self, other: Account) -> None:
        """Add the figures of ``other`` to these."""
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Account:
        """The account that :meth:`as_dict` wrote; unknown keys are ignored."""
        known = {field.name: type(getattr(cls(), field.name)) for field in fields(cls)}
        return cls(**{key: known[key](value) for key, value in data.items() if key in known})


_lock = threading.Lock()
_accounts: dict[str, Account] = {}
_first_start: list[Callable[[], None]] = []
#: Builds running (a build starts servers of its own: their time is the build's).
_builds = 0


#: What the threads inside :func:`deferring` recorded.
_local = threading.local()


@contextmanager
def deferring() -> Iterator[list[Callable[[], None]]]:
    """Keep what this thread records in the block in the list yielded: calling its items
    records it, later; dropping them forgets it."""
    kept: list[Callable[[], None]] = []
    _local.kept = kept
    try:
        yield kept
    finally:
        _local.kept = None


def deferred(call: Callable[..., None], *args: Any) -> bool:
    """Keep ``call(*args)`` for later when this thread is :func:`deferring`; tell whether."""
    kept = getattr(_local, "kept", None)
    if kept is None:
        return False
    kept.append(lambda: call(*args))
    return True


def _account(service: str) -> Account:
    account = _accounts.get(service)
    if account is None:
        account = _accounts[service] = Account()
    return account


def started(service: str, seconds: float) -> None:
    """Record that ``service`` was started and became ready in ``seconds``."""
    if deferred(started, service, seconds):
        return
    with _lock:
        if _builds == 0:
            account = _account(service)
            account.starts += 1
            account.start_seconds += seconds
    in_use()


def in_use() -> None:
    """Say that this process uses a service from now on (one it started, or one another
    process started and shares), for whoever waits for the first one."""
    with _lock:
        waiting = _first_start[:]
        _first_start.clear()
    for callback in waiting:
        callback()


def built(service: str, kind: str, was_built: bool, seconds: float) -> None:
    """Record a look-up of a cache entry of ``kind`` ``"cache"`` (the initialised data
    directory) or ``"state"`` (a prepared state): built by this call, or reused."""
    if kind not in ("cache", "state"):
        raise ValueError(f"kind must be 'cache' or 'state', not {kind!r}")
    if deferred(built, service, kind, was_built, seconds):
        return
    with _lock:
        account = _account(service)
        if kind == "cache":
            account.cache_misses += was_built
            account.cache_hits += not was_built
            account.cache_seconds += seconds
        else:
            account.states_built += was_built
            account.states_reused += not was_built
            account.state_seconds += seconds


def reset_done(service: str, seconds: float) -> None:
    """Record one per-test reset of ``service`` that took ``seconds``."""
    with _lock:
        account = _account(service)
        account.resets += 1
        account.reset_seconds += seconds


@contextmanager
def timed_reset(service: str) -> Iterator[None]:
    """Count the block as one per-test reset of ``service`` (failed or not)."""
    begun = time.perf_counter()
    try:
        yield
    finally:
        reset_done(service, time.perf_counter() - begun)


@contextmanager
def building() -> Iterator[None]:
    """While a cache entry is built: servers started meanwhile count as the build's time."""
    global _builds
    with _lock:
        _builds += 1
    try:
        yield
    finally:
        with _lock:
            _builds -= 1


def on_first_start(callback: Callable[[], None]) -> None:
    """Call ``callback`` (once) when the next service has started."""
    with _lock:
        _first_start.append(callback)


def accounts() -> dict[str, Account]:
    """A copy of the figures recorded so far, by service."""
    with _lock:
        return {name: Account(**account.as_dict()) for name, account in _accounts.items()}


def add_up(parts: Mapping[str, Mapping[str, Account]]) -> dict[str, Account]:
    """The sum of several processes' figures (``{worker: {service: account}}``), by service."""
    total: dict[str, Account] = {}
    for part in parts.values():
        for service, account in part.items():
            total.setdefault(service, Account()).add(account)
    return total


def cancel(callback: Callable[[], None]) -> None:
    """Do not call ``callback`` after all (its session ended before any start)."""
    with _lock:
        if callback in _first_start:
            _first_start.remove(callback)


def since(before: Mapping[str, Account]) -> dict[str, Account]:
    """The figures recorded since :func:`accounts` returned ``before``: a session's own,
    when several run one after the other in one process."""
    result = {}
    for service, account in accounts().items():
        earlier = before.get(service)
        if earlier is not None:
            for field in fields(account):
                value = getattr(account, field.name) - getattr(earlier, field.name)
                setattr(account, field.name, value)
        if any(getattr(account, field.name) for field in fields(account)):
            result[service] = account
    return result
