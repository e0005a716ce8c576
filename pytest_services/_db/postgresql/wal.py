"""What a PostgreSQL server's write-ahead log says a test wrote to the default database.

Plain code, no pytest.  The log's records since a position (read with ``pg_walinspect``,
from the ``postgres`` database) name the files they wrote.  :func:`read_changes` sorts them
into the default database's tables and sequences, the catalogs of the default database
(DDL), and the shared catalogs (databases and roles).
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["CATALOG_FILES", "Changes", "read_changes"]

#: The log's records since a position: the files they wrote, and those that make or drop
#: databases and files (``description`` then says which).
_RECORDS = r"""
SELECT DISTINCT r.resource_manager, r.record_type, m[1]::oid, m[2]::oid,
       CASE WHEN m IS NULL THEN r.description END
FROM pg_get_wal_records_info_till_end_of_wal(%s::pg_lsn) r
LEFT JOIN LATERAL regexp_matches(r.block_ref, 'rel \d+/(\d+)/(\d+)', 'g') AS m ON true
WHERE r.resource_manager NOT IN ('Transaction', 'Standby', 'LogicalMessage')
  AND NOT (r.resource_manager = 'Heap2' AND r.record_type IN ('PRUNE', 'VACUUM', 'VISIBLE'))
"""
#: A commit of our own, synchronous: the log up to here is flushed, so that it can be read.
_FLUSH = "SELECT pg_logical_emit_message(true, 'pytest_services', '')"
#: The files of the system catalogs of a database, each with the catalog it belongs to
#: (itself, or the catalog of an index or of a TOAST table).
CATALOG_FILES = """
SELECT pg_relation_filenode(c.oid), coalesce(o.relname, t.relname, c.relname)
FROM pg_class c
LEFT JOIN pg_index i ON i.indexrelid = c.oid
LEFT JOIN pg_class t ON t.oid = i.indrelid
LEFT JOIN pg_class o ON o.reltoastrelid = coalesce(t.oid, c.oid)
WHERE c.oid < 16384 AND pg_relation_filenode(c.oid) IS NOT NULL
"""


class Changes:
    """What the log says was written: tables, sequences, catalogs, databases."""

    def __init__(self) -> None:
        self.tables: set[str] = set()
        self.sequences = False
        #: The default database's catalogs that were written to (DDL).
        self.catalogs: set[str] = set()
        #: Something was written that only a copy of the template undoes: a file of the
        #: default database no catalog and no relation explains, a materialized view...
        self.unknown = False
        self.databases = False

    @property
    def structure(self) -> bool:
        """Whether the definitions of the default database may have changed."""
        return bool(self.catalogs) or self.unknown

    def everything(self) -> Changes:
        self.unknown = self.databases = self.sequences = True
        return self


def read_changes(
    control: Any,
    since: Optional[str],
    database_oid: int,
    relations: dict[int, tuple[str, str]],
    catalogs: dict[int, str],
) -> Changes:
    """The changes the log shows since ``since`` (None: since the server started), read on
    the ``control`` connection.  ``relations`` maps the file numbers of the default
    database's tables, sequences and their parts to ``(kind, table)``; ``catalogs`` those of
    its catalogs to the catalog's name."""
    changes = Changes()
    if since is None:
        start = control.execute(
            "SELECT checkpoint_lsn::text, checkpoint_time > pg_postmaster_start_time() "
            "FROM pg_control_checkpoint()"
        ).fetchone()
        if start[1]:  # a checkpoint since the server started: its start is out of reach
            return changes.everything()
        since = start[0]
    control.execute(_FLUSH)
    try:
        records = control.execute(_RECORDS, (since,)).fetchall()
    except Exception as exc:  # the log was recycled by a checkpoint: look at everything
        if type(exc).__module__.split(".")[0] != "psycopg":
            raise
        return changes.everything()
    strange_files = False
    for manager, kind, database, node, description in records:
        if manager == "Database":
            changes.databases = True
        elif manager == "Storage" or (manager == "Heap" and kind == "TRUNCATE"):
            if description is None or f"/{database_oid}/" in f"/{description}":
                strange_files = True
        elif database == 0:
            changes.databases = True
        elif database == database_oid:
            relation = relations.get(int(node))
            if relation is None:
                # A catalog, or a relation made since the last reset, or a new file of one.
                catalog = catalogs.get(int(node))
                if catalog is None:
                    strange_files = True
                else:
                    changes.catalogs.add(catalog)
            elif relation[0] == "m":
                changes.unknown = True
            elif relation[0] == "S":
                changes.sequences = True
            else:
                changes.tables.add(relation[1])
    # New files are made only by DDL, which the catalogs show; without it, they are unknown.
    if strange_files and not changes.catalogs:
        changes.unknown = True
    return changes
