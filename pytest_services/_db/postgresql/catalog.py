"""What a test can change of a PostgreSQL database's tables, read from its catalogs.

Plain code, no pytest.  :func:`fingerprint` tells in one query, for every relation of the
user's schemas, how many rows of each catalog describe it and whether any of them was
written since a transaction; :func:`describe` gives a table's definition as the catalog
functions spell it (``pg_get_constraintdef``, ``pg_get_indexdef``...), and
:func:`rebuildable` whether :mod:`~pytest_services._db.postgresql.undo` can make a table of
that definition again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["Relation", "describe", "fingerprint", "rebuildable"]

_USER = """n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'"""
_NEW = "age(xmin) <= age(%(horizon)s::text::xid)"
#: Each relation of the user's schemas (row -1: name, kind and the table an index or a
#: sequence belongs to), then for each catalog and relation its rows, and whether any is new.
_FINGERPRINT = f"""
SELECT -1, c.oid, 0::bigint, age(c.xmin) <= age(%(horizon)s::text::xid),
       format('%%I.%%I', n.nspname, c.relname), c.relkind::text,
       coalesce(i.indrelid, d.refobjid, 0::oid),
       concat_ws(' ', c.relpersistence, c.relnatts, c.relchecks, c.relhasrules,
                 c.relrowsecurity, c.relforcerowsecurity, c.relispartition, c.relreplident,
                 c.relam, c.reltablespace, c.relowner, c.reloftype, c.relacl, c.reloptions)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index i ON i.indexrelid = c.oid
LEFT JOIN pg_depend d ON c.relkind = 'S' AND d.classid = 'pg_class'::regclass
    AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
WHERE c.oid >= 16384 AND {_USER}
UNION ALL SELECT 0, attrelid, count(*), bool_or({_NEW}), NULL, NULL, NULL, NULL
    FROM pg_attribute WHERE attrelid >= 16384 GROUP BY 2
UNION ALL SELECT 1, adrelid, count(*), bool_or({_NEW}), NULL, NULL, NULL, NULL
    FROM pg_attrdef WHERE adrelid >= 16384 GROUP BY 2
UNION ALL SELECT 2, conrelid, count(*), bool_or({_NEW}), NULL, NULL, NULL, NULL
    FROM pg_constraint WHERE conrelid >= 16384 GROUP BY 2
UNION ALL SELECT 3, indrelid, count(*), bool_or({_NEW}), NULL, NULL, NULL, NULL
    FROM pg_index WHERE indrelid >= 16384 GROUP BY 2
UNION ALL SELECT 4, tgrelid, count(*), bool_or({_NEW}), NULL, NULL, NULL, NULL
    FROM pg_trigger WHERE tgrelid >= 16384 GROUP BY 2
UNION ALL SELECT 5, objid, count(*), bool_or({_NEW}), NULL, NULL, NULL, NULL
    FROM pg_depend WHERE classid = 'pg_class'::regclass AND objid >= 16384 GROUP BY 2
UNION ALL SELECT 6, seqrelid, 1, {_NEW}, NULL, NULL, NULL, NULL
    FROM pg_sequence WHERE seqrelid >= 16384
UNION ALL SELECT 7, typrelid, count(*), bool_or({_NEW}), NULL, NULL, NULL, NULL
    FROM pg_type WHERE typrelid >= 16384 GROUP BY 2
UNION ALL SELECT 8, objoid, count(*), bool_or({_NEW}), NULL, NULL, NULL, NULL
    FROM pg_description WHERE objoid >= 16384 AND classoid = 'pg_class'::regclass GROUP BY 2
UNION ALL SELECT 10, 0, count(*), bool_or({_NEW}), NULL, NULL, NULL, NULL
    FROM pg_type t WHERE oid >= 16384 AND typrelid = 0
    AND NOT EXISTS (SELECT FROM pg_type e WHERE e.oid = t.typelem AND e.typrelid <> 0)
UNION ALL SELECT 11, 0, count(*), bool_or({_NEW}), NULL, NULL, NULL, NULL
    FROM pg_constraint WHERE oid >= 16384 AND conrelid = 0
UNION ALL SELECT 12, 0, count(*), bool_or({_NEW}), NULL, NULL, NULL, NULL
    FROM pg_description WHERE objoid >= 16384 AND classoid <> 'pg_class'::regclass
"""
#: What a table is: everything the rebuild reproduces, and what it does not but must see.
_DESCRIBE = f"""
SELECT format('%%I.%%I', n.nspname, c.relname), json_build_object(
  'kind', c.relkind, 'persistence', c.relpersistence, 'options', c.reloptions,
  'owner', pg_get_userbyid(c.relowner), 'acl', c.relacl::text, 'am', am.amname,
  'other', json_build_array(c.relispartition, c.relrowsecurity, c.relforcerowsecurity,
                 c.relhasrules, c.reloftype <> 0, c.relhassubclass, c.relreplident <> 'd',
                 c.reltablespace <> 0),
  'inherits', (SELECT count(*) FROM pg_inherits WHERE c.oid IN (inhrelid, inhparent)),
  'statistics', (SELECT count(*) FROM pg_statistic WHERE starelid = c.oid)
                + (SELECT count(*) FROM pg_statistic_ext WHERE stxrelid = c.oid),
  'policies', (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid),
  'member', EXISTS (SELECT FROM pg_depend WHERE classid = 'pg_class'::regclass
                    AND objid = c.oid AND deptype = 'e'),
  'comments', (SELECT json_agg(json_build_array(objsubid, description) ORDER BY objsubid)
               FROM pg_description WHERE objoid = c.oid AND classoid = 'pg_class'::regclass),
  'part_comments',
      (SELECT count(*) FROM pg_index x JOIN pg_description e ON e.objoid = x.indexrelid
       WHERE x.indrelid = c.oid)
      + (SELECT count(*) FROM pg_constraint k JOIN pg_description e ON e.objoid = k.oid
         WHERE k.conrelid = c.oid)
      + (SELECT count(*) FROM pg_trigger g JOIN pg_description e ON e.objoid = g.oid
         WHERE g.tgrelid = c.oid)
      + (SELECT count(*) FROM pg_depend d JOIN pg_description e ON e.objoid = d.objid
         WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid
           AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')),
  'columns', (SELECT json_agg(json_build_array(
          a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
          pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
          CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
          json_build_array(a.attisdropped, a.attstorage <> t.typstorage,
                a.attcompression <> '', a.attstattarget <> -1, a.attacl IS NOT NULL,
                a.attoptions IS NOT NULL, a.attfdwoptions IS NOT NULL)) ORDER BY a.attnum)
      FROM pg_attribute a LEFT JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = c.oid AND a.attnum > 0),
  'constraints', (SELECT json_agg(json_build_array(conname, contype, pg_get_constraintdef(oid),
          conislocal, coninhcount, connoinherit) ORDER BY conname)
      FROM pg_constraint WHERE conrelid = c.oid),
  'referenced_by', (SELECT json_agg(json_build_array(format('%%I.%%I', fn.nspname, f.relname),
          k.conname, pg_get_constraintdef(k.oid)) ORDER BY 1, 2)
      FROM pg_constraint k JOIN pg_class f ON f.oid = k.conrelid
      JOIN pg_namespace fn ON fn.oid = f.relnamespace
      WHERE k.confrelid = c.oid AND k.conrelid <> c.oid),
  'indexes', (SELECT json_agg(json_build_array(i.relname, pg_get_indexdef(x.indexrelid),
          EXISTS (SELECT FROM pg_constraint WHERE conindid = x.indexrelid AND conrelid = c.oid),
          json_build_array(x.indisclustered, x.indisreplident, NOT x.indisvalid,
                           i.reltablespace <> 0))
          ORDER BY i.relname)
      FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid),
  'triggers', (SELECT json_agg(json_build_array(tgname, pg_get_triggerdef(oid), tgenabled)
          ORDER BY tgname) FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal),
  'sequences', (SELECT json_agg(json_build_array(format('%%I.%%I', sn.nspname, s.relname),
          a.attname, d.deptype, format_type(q.seqtypid, NULL), q.seqstart, q.seqincrement,
          q.seqmax, q.seqmin, q.seqcache, q.seqcycle, s.relpersistence,
          pg_get_userbyid(s.relowner), s.relacl::text) ORDER BY s.relname)
      FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
      JOIN pg_namespace sn ON sn.oid = s.relnamespace
      JOIN pg_sequence q ON q.seqrelid = s.oid
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
        AND d.refobjid = c.oid AND d.deptype IN ('a', 'i')),
  'dependents',
      (SELECT count(*) FROM pg_depend d
       WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid
         AND d.classid NOT IN ('pg_class'::regclass, 'pg_constraint'::regclass,
                               'pg_attrdef'::regclass, 'pg_trigger'::regclass,
                               'pg_type'::regclass))
      + (SELECT count(*) FROM pg_depend d
         WHERE d.refclassid = 'pg_type'::regclass AND d.refobjid = c.reltype
           AND NOT (d.classid = 'pg_type'::regclass AND d.deptype = 'i'))
      + (SELECT count(*) FROM pg_depend s JOIN pg_depend d
             ON d.refclassid = 'pg_class'::regclass AND d.refobjid = s.objid
         WHERE s.refclassid = 'pg_class'::regclass AND s.refobjid = c.oid
           AND s.classid = 'pg_class'::regclass AND s.deptype IN ('a', 'i')
           AND d.classid = 'pg_attrdef'::regclass
           AND d.objid NOT IN (SELECT oid FROM pg_attrdef WHERE adrelid = c.oid))
)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r', 'p') AND {_USER}
  AND (%(names)s::text[] IS NULL OR format('%%I.%%I', n.nspname, c.relname) = ANY(%(names)s))
"""


@dataclass(frozen=True)
class Relation:
    """What :func:`fingerprint` says of one relation."""

    kind: str
    #: The table an index or an owned sequence belongs to ("" for none).
    owner: str
    counts: tuple[int, ...]
    #: Whether a row of it in any catalog was written since the last reset...
    new: bool
    #: ... and whether only its row of ``pg_class`` was, and what that row says but for its
    #: files and statistics (what ``TRUNCATE`` changes).
    class_only: bool
    signature: str


def fingerprint(
    connection: Any, horizon: str
) -> tuple[dict[str, Relation], dict[int, tuple[int, bool]]]:
    """Each relation of the user's schemas by name; and by the query's number of each, the
    count of the types, domain constraints and comments of no relation, and whether any
    was written.  Written: since the transaction ``horizon`` (the oldest one running at the
    last reset)."""
    rows = connection.execute(_FINGERPRINT, {"horizon": horizon}, prepare=True).fetchall()
    names: dict[int, tuple[str, str, int, bool, str]] = {}
    counts: dict[int, list[int]] = {}
    new: set[int] = set()
    loose: dict[int, tuple[int, bool]] = {}
    for what, oid, count, written, name, kind, owner, signature in rows:
        if what == -1:
            names[oid] = (name, kind, owner, written, signature)
        elif what >= 10:
            loose[what] = (count, bool(written))
        else:
            counts.setdefault(oid, [0] * 9)[what] = count
            if written:
                new.add(oid)
    relations = {}
    for oid, (name, kind, owner, written, signature) in names.items():
        relations[name] = Relation(
            kind,
            names[owner][0] if owner in names else "",
            tuple(counts.get(oid, ())),
            written or oid in new,
            oid not in new,
            signature,
        )
    return relations, loose


def describe(connection: Any, names: Optional[Iterable[str]] = None) -> dict[str, Any]:
    """The description of each table named (every table of the user's schemas: None)."""
    wanted = None if names is None else sorted(names)
    return dict(connection.execute(_DESCRIBE, {"names": wanted}, prepare=True).fetchall())


def rebuildable(table: dict[str, Any]) -> bool:
    """Whether the rebuild can reproduce a table of this description (what this cannot
    see, the check after the rebuild does)."""
    return (
        table["kind"] == "r"
        and table["am"] == "heap"
        and table["acl"] is None
        and not any(table["other"])
        and not (table["inherits"] or table["statistics"] or table["policies"])
        and not (table["member"] or table["dependents"] or table["part_comments"])
        and not any(any(column[7]) for column in table["columns"] or ())
        and not any(any(index[3]) for index in table["indexes"] or ())
        and all(trigger[2] == "O" for trigger in table["triggers"] or ())
    )
