"""What a prepared database state is made of: its loaders, its key, and its description.

Plain code, no pytest.  A state is the default database after its loaders ran, in order: SQL
files, run by the server's own command-line client (so comments, several statements and
procedures work as they do there), and callables given keyword arguments that say where the
database is.  Its key decides when a cached state is still good.  Each engine subclasses
:class:`DatabaseInit` (``MySQLInit``...) to name itself in messages; the rest is shared.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import inspect
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

from pytest_services._engine.text import indent
from pytest_services.exceptions import DatabaseInitError

__all__ = [
    "DEFAULT_TIMEOUT",
    "STATE_FILE",
    "DatabaseInit",
    "Loader",
    "State",
    "describe",
    "hash_files",
    "read_state",
    "statement_at",
    "statement_ending_at",
    "write_state",
]

#: One loader: an SQL file, a callable, or a ``"module:function"`` string naming one.
Loader = Union[Path, str, Callable[..., object]]
#: The description of a prepared state that an engine's reset restores: JSON data.
State = dict[str, Any]
#: The file of a cache entry that holds its state's description.
STATE_FILE = "state.json"
#: Seconds the loaders of a state may take together, unless the state says otherwise.
DEFAULT_TIMEOUT = 600.0

_CALLABLE_NAME = re.compile(r"[\w.]+:[\w.]+")


@dataclass(frozen=True)
class DatabaseInit:
    """How to fill the default database once: ``load`` runs in order, ``key`` names the result.

    With ``key=None`` the key is a digest of the SQL files' contents and of each callable's
    module, name and source; pass your own (e.g. :func:`hash_files` of a migrations folder)
    when the callables depend on more than their own source.  The loaders together may take
    ``timeout`` seconds (default ``DEFAULT_TIMEOUT``, ten minutes).
    """

    load: Sequence[Loader] = field(default_factory=tuple)
    key: Optional[str] = None
    timeout: float = DEFAULT_TIMEOUT

    #: How messages name the engine ("MySQL"), and the error its loaders raise.
    engine: ClassVar[str] = "database"
    error: ClassVar[type[DatabaseInitError]] = DatabaseInitError

    def __post_init__(self) -> None:
        name = type(self).__name__
        if isinstance(self.load, (str, Path)) or callable(self.load):
            raise TypeError(
                f"{name}(load=...) takes a list of loaders, not one: write load=[{self.load!r}]."
            )
        for index, item in enumerate(self.load):
            if isinstance(item, Path) or callable(item):
                continue
            if isinstance(item, str) and _CALLABLE_NAME.fullmatch(item):
                continue
            hint = " (an SQL file is a pathlib.Path)" if isinstance(item, str) else ""
            raise TypeError(
                f"{name} load[{index}] is {item!r}: give a pathlib.Path of an SQL file, a "
                f"callable, or a 'module:function' string{hint}."
            )
        if self.key is not None and not isinstance(self.key, str):
            raise TypeError(f"{name} key must be a str or None, not {self.key!r}.")
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, (int, float))
            or not self.timeout > 0
        ):
            raise TypeError(
                f"{name} timeout must be a positive number of seconds, not {self.timeout!r}."
            )

    def resolve(self, loader: Loader) -> Callable[..., object]:
        """The callable a ``"module:function"`` loader names (callables as they are)."""
        if callable(loader):
            return loader
        module_name, _, attribute = os.fspath(loader).partition(":")
        try:
            target: object = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise self.error(f"Cannot load the {self.engine} loader {loader!r}: {exc}") from exc
        if not callable(target):
            raise self.error(f"The {self.engine} loader {loader!r} is not callable: {target!r}.")
        return target

    def state_key(self, database: str) -> str:
        """The key of the state this makes in ``database``."""
        material: list[object] = [database]
        if self.key is not None:
            material.append(["key", self.key])
        else:
            for loader in self.load:
                if isinstance(loader, Path):
                    try:
                        content = hashlib.sha256(loader.read_bytes()).hexdigest()
                    except OSError as exc:
                        raise self.error(f"Cannot read the SQL file {loader}: {exc}") from exc
                    material.append(["sql", content])  # no path: the same key everywhere
                else:
                    target = self.resolve(loader)
                    try:
                        source = inspect.getsource(target)
                    except (OSError, TypeError):
                        source = ""
                    material.append(["callable", describe(target), source])
        text = json.dumps(material, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def lineage(self, database: str) -> str:
        """What states of the same loaders share, whatever their contents: an entry of the
        same lineage and another key is an older version of the same state."""
        names = [
            describe(loader) if not callable(loader) else describe(self.resolve(loader))
            for loader in self.load
        ]
        text = json.dumps([type(self).__name__, database, names])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def sql_file_error(
        self, path: Path, error: str, line: Optional[int] = None, statement: str = ""
    ) -> DatabaseInitError:
        """The error of an SQL file that failed: the file, the line, the client's error and
        the statement, as far as the client told them."""
        where = f" at line {line}" if line is not None else ""
        message = f"The SQL file {path} failed{where}: {error}"
        if statement:
            message += f"\n  statement:\n{indent(statement)}"
        return self.error(message)

    def run(self, loader: Loader, run_sql: Callable[[Path], None], **where: str) -> None:
        """Run one loader: an SQL file through ``run_sql``, a callable with ``where`` as its
        keyword arguments; a failure is this engine's :attr:`error`, naming the loader."""
        if isinstance(loader, Path):
            run_sql(loader)
            return
        target = self.resolve(loader)
        try:
            target(**where)
        except Exception as exc:
            raise self.error(
                f"The {self.engine} loader {describe(loader)} failed: {type(exc).__name__}: {exc}"
            ) from exc


def hash_files(*patterns: str, root: Union[str, os.PathLike[str]] = ".") -> str:
    """A digest of the files matching the glob ``patterns`` (``**`` allowed) under ``root``:
    their paths and contents, for use as the key of a prepared state."""
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


def statement_at(path: Path, line: int, limit: int = 12) -> str:
    """The statement of the SQL file ``path`` that starts at ``line`` (1-based), up to its
    ``;``, for the message of a failing SQL file."""
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


def statement_ending_at(path: Path, line: int, limit: int = 12) -> str:
    """The statement of the SQL file ``path`` whose ``;`` is on ``line`` (1-based): where
    clients that report the end of a statement (``psql``) say it failed."""
    try:
        lines = path.read_text(errors="replace").splitlines()[max(0, line - limit) : line]
    except OSError:
        return ""
    start = 0
    for index, text in enumerate(lines[:-1]):
        if text.rstrip().endswith(";"):
            start = index + 1
    taken = lines[start:]
    while taken and (not taken[0].strip() or taken[0].lstrip().startswith("--")):
        taken.pop(0)
    return "\n".join(taken)


def write_state(folder: str, state: State) -> None:
    """Keep ``state`` in the build folder of a cache entry."""
    with open(os.path.join(folder, STATE_FILE), "w", encoding="utf-8") as state_file:
        json.dump(state, state_file)


def read_state(folder: str) -> State:
    """The state kept in a cache entry."""
    with open(os.path.join(folder, STATE_FILE), encoding="utf-8") as state_file:
        state: State = json.load(state_file)
    return state
