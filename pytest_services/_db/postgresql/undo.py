"""Undo a test's DDL table by table, where it touched only tables and their parts.

Plain code, no pytest.  When the log shows that a test wrote only to the catalogs of tables,
their columns, defaults, constraints, indexes, triggers, sequences and comments
(:data:`CATALOGS_UNDONE`), :meth:`Undo.plan` compares the relations'
:func:`~pytest_services._db.postgresql.catalog.fingerprint` with the template's and plans:

1. the tables the test created are dropped;
2. a table whose catalog rows came or went (or whose index's or sequence's did) is dropped
   and rebuilt from the template's
   :func:`~pytest_services._db.postgresql.catalog.describe`: its rows copied back, its
   sequences set, the foreign keys that pointed at it added again (:meth:`Undo.scripts`);
3. a table whose only written row is its ``pg_class`` row, unchanged but for its files
   (``TRUNCATE``), and one whose rows changed but whose definition is still the template's,
   only get their rows back;
4. the first time a table is rebuilt in a session, it and the tables whose foreign keys were
   added again must then be described as in the template.

Anything else (a view, a function, a type, a schema, an extension, a table that others
depend on, or one the rebuild does not reproduce) is left to a copy of the template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from pytest_services._db.postgresql.catalog import Relation, rebuildable
from pytest_services._db.postgresql.describe import literal, quote, setval

__all__ = ["CATALOGS_UNDONE", "Plan", "Undo"]

#: The catalogs whose changes an undo understands.
CATALOGS_UNDONE = frozenset(
    {
        "pg_class",
        "pg_attribute",
        "pg_attrdef",
        "pg_constraint",
        "pg_depend",
        "pg_description",
        "pg_index",
        "pg_sequence",
        "pg_trigger",
        "pg_type",
    }
)
#: ``DROP`` of a relation of each kind.
_DROP = {"r": "TABLE", "p": "TABLE", "S": "SEQUENCE", "i": "INDEX", "I": "INDEX", "c": "TYPE"}


@dataclass
class Plan:
    """What an undo does: drop, rebuild, add foreign keys again, and check; and the tables
    whose rows only are to be put back (their definitions are as in the template)."""

    drop: list[str]
    rebuild: list[str]
    foreign_keys: list[str]
    check: list[str]
    restore: list[str]


class Undo:
    """Plans undoing a test's DDL against a template's fingerprint and descriptions."""

    def __init__(
        self,
        relations: dict[str, Relation],
        loose: dict[int, tuple[int, bool]],
        tables: dict[str, Any],
    ) -> None:
        self.relations = relations
        self.loose = {what: count for what, (count, _) in loose.items()}
        self.tables = tables
        self.rebuildable = {name for name, table in tables.items() if rebuildable(table)}
        #: The tables found as in the template after a rebuild.
        self.verified: set[str] = set()

    def plan(
        self,
        now: dict[str, Relation],
        loose: dict[int, tuple[int, bool]],
        describe: Callable[[list[str]], dict[str, Any]],
    ) -> Optional[Plan]:
        """What undoes the difference between ``now`` and the template; None when only a
        copy of the template can.  ``describe`` describes tables as they are now."""
        if any(new or self.loose.get(what) != count for what, (count, new) in loose.items()):
            return None  # a type, a domain constraint or a comment of no table
        rebuild: set[str] = set()
        written: set[str] = set()  # rows of the catalogs changed, but none came or went
        truncated: set[str] = set()  # only the files of the table or its parts changed
        for name, was in self.relations.items():
            relation = now.get(name)
            if relation is None or relation.counts != was.counts:
                rebuild.add(was.owner or name)
            elif relation.new:
                table = was.owner or name
                if relation.class_only and relation.signature == was.signature:
                    truncated.add(table)
                else:
                    written.add(table)
        written -= rebuild
        restore = truncated - rebuild - written
        if written:  # an ALTER put back as it was, or a rename both ways...
            described = describe(sorted(written))
            same = {
                name
                for name in written
                if name in self.tables and described.get(name) == self.tables[name]
            }
            restore |= same
            rebuild |= written - same
        if not rebuild <= self.rebuildable:
            return None
        created: dict[str, list[str]] = {}
        for name, relation in now.items():
            if name in self.relations:
                continue
            if relation.kind not in _DROP:
                return None
            owner = relation.owner
            if owner and (owner in rebuild or owner not in self.relations):
                continue  # goes with its table
            created.setdefault(_DROP[relation.kind], []).append(name)
        drop = [f"DROP TABLE IF EXISTS {', '.join(sorted(rebuild))} CASCADE"] if rebuild else []
        if "TABLE" in created:
            drop.append(f"DROP TABLE IF EXISTS {', '.join(sorted(created.pop('TABLE')))}")
        owned = [  # that a test may have set free, or moved to a table it renamed
            sequence[0]
            for name in sorted(rebuild)
            for sequence in self.tables[name]["sequences"] or ()
            if sequence[2] == "a"
        ]
        if owned:
            drop.append(f"DROP SEQUENCE IF EXISTS {', '.join(owned)}")
        for kind in sorted(created):
            drop.append(f"DROP {kind} IF EXISTS {', '.join(sorted(created[kind]))}")
        keys, check = [], set(rebuild)
        for name in sorted(rebuild):
            for table, key, definition in self.tables[name]["referenced_by"] or ():
                if table not in rebuild:
                    keys.append(f"ALTER TABLE {table} ADD CONSTRAINT {quote(key)} {definition}")
                    check.add(table)
        return Plan(drop, sorted(rebuild), keys, sorted(check), sorted(restore))

    def before_rows(self, name: str) -> list[str]:
        """The statements that make an empty table ``name`` with its columns."""
        table = self.tables[name]
        statements, identity = [], {}
        for sequence in table["sequences"] or ():
            if sequence[2] == "i":
                identity[sequence[1]] = sequence
            else:
                statements.append(
                    f"CREATE SEQUENCE {sequence[0]} AS {sequence[3]} {_options(sequence)}"
                )
        columns = []
        for column, kind, not_null, default, ident, generated, collation, _ in table["columns"]:
            parts = [quote(column), kind]
            if collation:
                parts.append(f"COLLATE {collation}")
            if generated:
                parts.append(f"GENERATED ALWAYS AS ({default}) STORED")
            elif ident:
                sequence = identity[column]
                how = "ALWAYS" if ident == "a" else "BY DEFAULT"
                options = f"SEQUENCE NAME {sequence[0]} {_options(sequence)}"
                parts.append(f"GENERATED {how} AS IDENTITY ({options})")
            elif default is not None:
                parts.append(f"DEFAULT {default}")
            if not_null:
                parts.append("NOT NULL")
            columns.append(" ".join(parts))
        unlogged = "UNLOGGED " if table["persistence"] == "u" else ""
        options = f" WITH ({', '.join(table['options'])})" if table["options"] else ""
        statements.append(f"CREATE {unlogged}TABLE {name} ({', '.join(columns)}){options}")
        return statements

    def after_rows(self, name: str, user: str) -> list[str]:
        """The statements that complete table ``name`` once its rows are in, but for the
        foreign keys (:meth:`foreign_keys`)."""
        table = self.tables[name]
        statements = [
            f"ALTER SEQUENCE {sequence[0]} OWNED BY {name}.{quote(sequence[1])}"
            for sequence in table["sequences"] or ()
            if sequence[2] == "a"
        ]
        for constraint, kind, definition, local, _, _ in table["constraints"] or ():
            if local and kind not in ("f", "n"):
                statements.append(
                    f"ALTER TABLE {name} ADD CONSTRAINT {quote(constraint)} {definition}"
                )
        statements += [index[1] for index in table["indexes"] or () if not index[2]]
        statements += [trigger[1] for trigger in table["triggers"] or ()]
        for column, text in table["comments"] or ():
            target = f"TABLE {name}"
            if column:
                target = f"COLUMN {name}.{quote(table['columns'][column - 1][0])}"
            statements.append(f"COMMENT ON {target} IS {literal(text)}")
        if table["owner"] != user:
            statements.append(f"ALTER TABLE {name} OWNER TO {quote(table['owner'])}")
        return statements

    def foreign_keys(self, name: str) -> list[str]:
        """The foreign keys of table ``name``."""
        return [
            f"ALTER TABLE {name} ADD CONSTRAINT {quote(constraint)} {definition}"
            for constraint, kind, definition, local, _, _ in self.tables[name]["constraints"] or ()
            if local and kind == "f"
        ]

    def scripts(self, plan: Plan, user: str, sequences: dict[str, list[Any]]) -> tuple[str, str]:
        """What ``plan`` runs before the rows of its tables are copied in, and after, as
        ``user``; ``sequences`` are the values of the state's sequences."""
        before = ["SET LOCAL session_replication_role = replica", *plan.drop]
        after, keys, setvals = [], [], []
        for name in plan.rebuild:
            before += self.before_rows(name)
            after += self.after_rows(name, user)
            keys += self.foreign_keys(name)
            for sequence in self.tables[name]["sequences"] or ():
                value, start = sequences.get(sequence[0], (None, sequence[4]))
                setvals.append(setval(sequence[0], value, start))
        after += keys + plan.foreign_keys
        if setvals:
            after.append(f"SELECT {', '.join(setvals)}")
        return ";\n".join(before), ";\n".join(after)

    def matches(self, names: list[str], described: dict[str, Any]) -> bool:
        """Whether the tables ``names``, described after a rebuild, are as in the template."""
        return sorted(described) == names and all(
            self.tables.get(name) == table for name, table in described.items()
        )


def _options(sequence: list[Any]) -> str:
    start, increment, maximum, minimum, cache, cycle = sequence[4:10]
    return (
        f"INCREMENT BY {increment} MINVALUE {minimum} MAXVALUE {maximum} START WITH {start} "
        f"CACHE {cache} {'CYCLE' if cycle else 'NO CYCLE'}"
    )
