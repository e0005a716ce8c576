"""The database layer: what every database server shares, and one module set per engine.

Shared: the cache entry protocol (:mod:`.cache`), prepared states -- their loaders and keys
(:mod:`.state`) and the pipeline that builds them (:mod:`.prepare`) -- the per-test reset's
scheduling (:mod:`.reset`) and the pytest-django glue (:mod:`.django`).  An engine
(:mod:`.mysql`, :mod:`.postgresql`) implements :class:`Engine` and :class:`Cleaner` and
says only what is its own: binaries, configuration, initialisation, change detection and
SQL.
"""

from pytest_services._db.cache import CacheEntry
from pytest_services._db.protocol import Cleaner, Engine
from pytest_services._db.state import DatabaseInit, State

__all__ = ["CacheEntry", "Cleaner", "DatabaseInit", "Engine", "State"]
