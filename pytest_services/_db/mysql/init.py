"""What a prepared MySQL state is made of: :class:`MySQLInit`, its loaders and its key.

Plain code, no pytest.  A state is the default database after its loaders ran, in order: SQL
files run by the ``mariadb``/``mysql`` client (so comments, several statements and procedures
without ``DELIMITER`` work as they do there), and callables given ``socket`` and
``database`` keyword arguments.  Its key decides when a cached state is still good.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import inspect
import json
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from pytest_services._db.mysql.server import MySQLError, MySQLServer, _require_tool

#: One loader: an SQL file, a callable, or a ``"module:function"`` string naming one.
Loader = Union[Path, str, Callable[..., object]]

_CALLABLE_NAME = re.compile(r"[\w.]+:[\w.]+")
_AT_LINE = re.compile(r"^ERROR \d+ \(\w+\) at line (\d+)", re.MULTILINE)


class MySQLInitError(MySQLError):
    """A loader of a prepared MySQL state failed."""


@dataclass(frozen=True)
class MySQLInit:
    """How to fill the default database once: ``load`` runs in order, ``key`` names the result.

    With ``key=None`` the key is a digest of the SQL files' contents and of each callable's
    module, name and source; pass your own (e.g. :func:`hash_files` of a migrations folder)
    when the callables depend on more than their own source.
    """

    load: Sequence[Loader] = field(default_factory=tuple)
    key: Optional[str] = None

    def __post_init__(self) -> None:
        if isinstance(self.load, (str, Path)) or callable(self.load):
            raise TypeError(
                f"MySQLInit(load=...) takes a list of loaders, not one: write load=[{self.load!r}]."
            )
        for index, item in enumerate(self.load):
            if isinstance(item, Path) or callable(item):
                continue
            if isinstance(item, str) and _CALLABLE_NAME.fullmatch(item):
                continue
            hint = " (an SQL file is a pathlib.Path)" if isinstance(item, str) else ""
            raise TypeError(
                f"MySQLInit load[{index}] is {item!r}: give a pathlib.Path of an SQL file, a "
                f"callable, or a 'module:function' string{hint}."
            )
        if self.key is not None and not isinstance(self.key, str):
            raise TypeError(f"MySQLInit key must be a str or None, not {self.key!r}.")


def hash_files(*patterns: str, root: Union[str, os.PathLike[str]] = ".") -> str:
    """A digest of the files matching the glob ``patterns`` (``**`` allowed) under ``root``:
    their paths and contents, for use as a :class:`MySQLInit` key."""
    base = Path(root)
    matches = sorted(
        {
            Path(path)
            for pattern in patterns
            for path in glob.glob(str(base / pattern), recursive=True)
        }
    )
    files = [path for path in matches if path.is_file()]
    if not files:
        raise ValueError(f"hash_files: no file under {base.resolve()} matches {list(patterns)}.")
    digest = hashlib.sha256()
    for path in files:
        digest.update(os.fsencode(path.relative_to(base)) + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


def describe(loader: Loader) -> str:
    """How error messages name a loader."""
    if isinstance(loader, Path):
        return os.fspath(loader)
    if isinstance(loader, str):
        return loader
    module = getattr(loader, "__module__", None) or "?"
    return f"{module}:{getattr(loader, '__qualname__', repr(loader))}"


def resolve(loader: Loader) -> Callable[..., object]:
    """The callable a ``"module:function"`` loader names (callables as they are)."""
    if callable(loader):
        return loader
    module_name, _, attribute = os.fspath(loader).partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise MySQLInitError(f"Cannot load the MySQL loader {loader!r}: {exc}") from exc
    if not callable(target):
        raise MySQLInitError(f"The MySQL loader {loader!r} is not callable: {target!r}.")
    return target


def state_key(init: MySQLInit, database: str) -> str:
    """The key of the state ``init`` makes in ``database``."""
    material: list[object] = [database]
    if init.key is not None:
        material.append(["key", init.key])
    else:
        for loader in init.load:
            if isinstance(loader, Path):
                try:
                    content = hashlib.sha256(loader.read_bytes()).hexdigest()
                except OSError as exc:
                    raise MySQLInitError(f"Cannot read the SQL file {loader}: {exc}") from exc
                material.append(["sql", os.path.abspath(loader), content])
            else:
                target = resolve(loader)
                try:
                    source = inspect.getsource(target)
                except (OSError, TypeError):
                    source = ""
                material.append(["callable", describe(target), source])
    text = json.dumps(material, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_loader(server: MySQLServer, loader: Loader, socket: str, database: str) -> None:
    """Run one loader against the server on ``socket``; raise :class:`MySQLInitError`."""
    if isinstance(loader, Path):
        _run_sql_file(server, loader, socket, database)
        return
    target = resolve(loader)
    try:
        target(socket=socket, database=database)
    except Exception as exc:
        raise MySQLInitError(
            f"The MySQL loader {describe(loader)} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _run_sql_file(server: MySQLServer, path: Path, socket: str, database: str) -> None:
    client = _require_tool(server, ("mariadb", "mysql"))
    command = [client, "--no-defaults", f"--socket={socket}", "--user=root", database]
    try:
        with open(path, "rb") as sql:
            result = subprocess.run(command, stdin=sql, capture_output=True, check=False)
    except OSError as exc:
        raise MySQLInitError(f"Cannot run the SQL file {path}: {exc}") from exc
    if result.returncode == 0:
        return
    output = result.stderr.decode(errors="replace").strip()
    match = _AT_LINE.search(output)
    # The client echoes the statement between dashed lines; the ERROR line says it all.
    error = next((line for line in output.splitlines() if line.startswith("ERROR")), output)
    where = f" at line {match.group(1)}" if match else ""
    message = [f"The SQL file {path} failed{where}: {error}"]
    statement = _statement_at(path, int(match.group(1))) if match else ""
    if statement:
        message.append(f"  statement:\n{_indent(statement)}")
    raise MySQLInitError("\n".join(message))


def _statement_at(path: Path, line: int, limit: int = 12) -> str:
    """The statement of ``path`` that starts at ``line`` (1-based), up to its ``;``."""
    try:
        lines = path.read_text(errors="replace").splitlines()[line - 1 :]
    except OSError:
        return ""
    taken = []
    for text in lines[:limit]:
        taken.append(text)
        if text.rstrip().endswith(";"):
            break
    return "\n".join(taken)


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
