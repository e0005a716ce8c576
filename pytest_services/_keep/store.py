"""Where kept services are recorded: one private folder per key, one slot per copy.

``ROOT/KEY/SLOT/`` holds ``slot.lock`` (held while a run looks the slot up or starts its
service), ``keeper.lock`` (held by the slot's keeper for as long as it lives),
``record.json`` (what the service is: its processes, by pid *and* start time, its command,
log, ports and the value its start function returned), ``ended.json`` (why the last copy
ended, when it did not end on its idle timeout), ``leases/`` and the service's ``logs/`` and
``data/``.  A record is trusted only when it is a regular file of the user's, closed to
others, in the user's private folder, and holds exactly the fields below; anything else is
discarded, and no process it names is ever signalled for it.  Only the standard library is
used (the keeper imports this module too).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
import stat
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

#: Environment variable naming the keep folder (tests and unusual hosts).
KEEP_DIR_ENV = "PYTEST_SERVICES_KEEP_DIR"
RECORD = "record.json"
ENDED = "ended.json"
SLOT_LOCK = "slot.lock"
KEEPER_LOCK = "keeper.lock"
USED = "used"
DATA = "data"
LOGS = "logs"
#: Copies of one key kept at most: one per run that uses it at the same time.
MAX_SLOTS = 4
FORMAT = 1
_MAX_RECORD = 1 << 20


@dataclass
class Process:
    """One process group of a kept service, identified by pid and start time."""

    name: str
    pid: int
    #: Start time of the process, in clock ticks since boot (``/proc/PID/stat`` field 22).
    since: int
    tag: str
    command: list[str]
    log: str | None


@dataclass
class Record:
    """What ``record.json`` holds."""

    key: str
    name: str
    rootdir: str
    concurrent: bool
    created: float
    value: Any
    keeper_pid: int
    keeper_since: int
    processes: list[Process]
    ports: list[int] = field(default_factory=list)
    runs: int = 1
    format: int = FORMAT

    def command(self) -> str:
        return " ; ".join(" ".join(process.command) for process in self.processes) or "-"


def service_key(
    name: str, start: object, key: object, concurrent: bool, version: str, rootdir: str
) -> str:
    """The digest of what decides a kept service's behaviour, and of the checkout."""
    code = getattr(start, "__code__", None)
    try:
        source = inspect.getsource(start)  # type: ignore[arg-type]
    except (OSError, TypeError):
        source = code.co_code.hex() if code is not None else repr(start)
    payload = [
        name,
        getattr(start, "__module__", None),
        getattr(start, "__qualname__", repr(start)),
        source,
        json.dumps(key, sort_keys=True, default=repr),
        concurrent,
        version,
        os.path.realpath(rootdir),
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]


def process_since(pid: int) -> int | None:
    """The start time of a live (not zombie) process ``pid``, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            fields = stat_file.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def is_running(pid: int, since: int) -> bool:
    """Tell whether the process started at ``since`` still runs as ``pid``."""
    return since > 0 and process_since(pid) == since


def slot_path(root: str, key: str, slot: int) -> str:
    return os.path.join(root, key, str(slot))


def make_slot(root: str, key: str, slot: int) -> str:
    """Create (private) the folder of one slot and return it."""
    path = slot_path(root, key, slot)
    os.makedirs(path, mode=0o700, exist_ok=True)
    for folder in (os.path.dirname(path), path):
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise OSError(f"{folder} is not a folder of yours")
        if info.st_mode & 0o077:
            os.chmod(folder, 0o700)
    return path


def _checked(value: Any, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise ValueError(f"{value!r} is not {kind}")
    return value


def _process(data: Any) -> Process:
    _checked(data, dict)
    command = [_checked(part, str) for part in _checked(data["command"], list)]
    log = data["log"]
    return Process(
        _checked(data["name"], str),
        _checked(data["pid"], int),
        _checked(data["since"], int),
        _checked(data["tag"], str),
        command,
        None if log is None else _checked(log, str),
    )


def parse_record(data: Any, key: str) -> Record:
    """A :class:`Record` from JSON ``data``; :class:`ValueError` (or KeyError) otherwise."""
    _checked(data, dict)
    if data.get("format") != FORMAT or data.get("key") != key:
        raise ValueError("another format or key")
    ports = [_checked(port, int) for port in _checked(data["ports"], list)]
    record = Record(
        key=key,
        name=_checked(data["name"], str),
        rootdir=_checked(data["rootdir"], str),
        concurrent=_checked(data["concurrent"], bool),
        created=float(_checked(data["created"], (int, float))),
        value=data["value"],
        keeper_pid=_checked(data["keeper_pid"], int),
        keeper_since=_checked(data["keeper_since"], int),
        processes=[_process(item) for item in _checked(data["processes"], list)],
        ports=ports,
        runs=_checked(data["runs"], int),
    )
    if record.keeper_pid <= 0 or any(process.pid <= 0 for process in record.processes):
        raise ValueError("a pid that is no pid")
    return record


def read_record(slot: str, key: str) -> tuple[Record | None, str | None]:
    """The record of ``slot``, or None with why it cannot be trusted (None: no record)."""
    path = os.path.join(slot, RECORD)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"unreadable record ({exc.strerror})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None, "a record that is not a private file of yours"
        data = os.read(fd, _MAX_RECORD)
    finally:
        os.close(fd)
    try:
        return parse_record(json.loads(data), key), None
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"corrupt record ({type(exc).__name__})"


def write_json(slot: str, name: str, data: Any) -> None:
    """Write ``slot/name`` at once (private, renamed into place)."""
    fd, temporary = tempfile.mkstemp(dir=slot, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(temporary, os.path.join(slot, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_record(slot: str, record: Record) -> None:
    write_json(slot, RECORD, asdict(record))


def remove(slot: str, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(slot, name))


def read_ended(slot: str) -> dict[str, Any]:
    """Why the last copy of ``slot`` ended (``reason``, ``log``), or ``{}``."""
    try:
        with open(os.path.join(slot, ENDED), "rb") as ended:
            data = json.loads(ended.read(_MAX_RECORD))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("reason"), str) else {}


def reset_slot(slot: str) -> None:
    """Empty ``slot`` for a new copy: the locks stay, everything else goes."""
    for entry in (DATA, LOGS, "leases", ENDED, RECORD, USED):
        path = os.path.join(slot, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            remove(slot, entry)


def all_slots(root: str) -> list[tuple[str, str]]:
    """Every ``(key, slot folder)`` of the keep folder."""
    found = []
    with contextlib.suppress(OSError):
        for key in sorted(os.listdir(root)):
            if len(key) != 32 or not key.isalnum():
                continue
            with contextlib.suppress(OSError):
                for slot in sorted(os.listdir(os.path.join(root, key))):
                    if slot.isdigit():
                        found.append((key, os.path.join(root, key, slot)))
    return found


def touch_used(slot: str) -> None:
    """Note that a run uses the service of ``slot`` now (the keeper does, while leased)."""
    path = os.path.join(slot, USED)
    try:
        os.utime(path)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))


def last_used(slot: str, default: float) -> float:
    """When a run last used the service of ``slot`` (``default`` if none was seen yet)."""
    try:
        return os.stat(os.path.join(slot, USED)).st_mtime
    except OSError:
        return default
