"""pytest-postgresql, timed beside this plugin by ``bench_postgresql.py``.

pytest-postgresql runs ``initdb`` and ``pg_ctl`` as whoever runs pytest, and PostgreSQL
refuses root; so when the benchmark runs as root its pytest-postgresql sessions run as an
ordinary account (``--peer-user``, ``postgres`` by default: the account this plugin runs its
own servers as), through ``runuser``.  They run in a virtual environment of their own
(``--peer-venv``), which that account builds on first use with pytest-postgresql 10.0.0 and
psycopg, from an interpreter it can run: this one's, else Debian's of the same version, else
Debian's ``python3``.

* :func:`peer_ready` times, per session, the setup of the first test that uses
  ``postgresql_proc`` (``initdb``, ``pg_ctl start``, the template database);
* :func:`peer_resets` times, per test, what the function-scoped ``postgresql`` fixture costs
  (the teardown of a test, which drops its database, plus the setup of the next, which clones
  the template that ``--postgresql-load`` filled);
* :func:`per_reset` turns either side's phase times into the cost after each kind of change.

Only the standard library (and pytest-services' own account lookup) is used here.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import _common
from _common import installed_version, log, venv_python

PEER_VERSION = "10.0.0"
PEER_REQUIREMENTS = (f"pytest-postgresql=={PEER_VERSION}", "psycopg[binary]")
DEFAULT_PEER_VENV = "/tmp/bench-venv-pytest-postgresql"

TIMES_CONFTEST = (
    """
import json, os, time

import pytest

_times = {"setup": [], "teardown": []}

"""
    + _common.RUN_TIMES_HOOKS
    + """


def pytest_sessionfinish(session):
    with open(os.environ["BENCH_TIMES"], "w") as out:
        json.dump(_times, out)
"""
)

START_TEST = """
def test_ready(postgresql_proc):
    assert postgresql_proc.running()
"""

RESET_TEST = """
import pytest

CHANGES = {changes!r}
ORDER = [kind for _ in range({resets}) for kind in CHANGES] + ["nothing"]


@pytest.mark.parametrize("step", range(len(ORDER)))
def test_step(step, postgresql):
    connection = postgresql
    exec(CHANGES[ORDER[step]])
    postgresql.commit()
"""


def peer_user(name: str) -> Optional[str]:
    """Who runs the pytest-postgresql sessions: ``name`` when we are root, else nobody but us."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SystemExit(f"no account {name!r} to run pytest-postgresql as (--peer-user)") from None
    if entry.pw_uid == 0:
        raise SystemExit(f"--peer-user {name!r} is root, which PostgreSQL refuses")
    return name


def as_user(user: Optional[str], command: Sequence[str]) -> list[str]:
    """``command``, run as ``user`` through runuser (as it is when None)."""
    return ["runuser", "-u", user, "--", *command] if user else list(command)


def give(user: Optional[str], path: Path) -> Path:
    """Create the folder ``path`` for ``user`` (ours when None)."""
    path.mkdir(parents=True, exist_ok=True)
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _interpreter(user: Optional[str]) -> str:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    own = os.path.realpath(os.path.join(sys.base_prefix, "bin", f"python{version}"))
    for candidate in (own, f"/usr/bin/python{version}", "/usr/bin/python3"):
        check = as_user(user, [candidate, "-c", "import ensurepip, venv"])
        if subprocess.run(check, cwd="/", capture_output=True, check=False).returncode == 0:
            return candidate
    raise SystemExit(f"{user or 'we'} can run no Python with venv: install python3-venv")


def ensure_peer_venv(venv: Path, user: Optional[str]) -> Path:
    """The interpreter of ``venv``, holding pytest-postgresql; created (as ``user``) if needed."""
    python = venv_python(venv)
    if installed_version(python, "pytest-postgresql") == PEER_VERSION:
        return python
    give(user, venv)
    env = {**os.environ, "HOME": str(venv), "PIP_CACHE_DIR": str(venv / "pip-cache")}
    if not python.exists():
        interpreter = _interpreter(user)
        log(f"creating a virtual environment for pytest-postgresql in {venv} ({interpreter})")
        subprocess.run(as_user(user, [interpreter, "-m", "venv", str(venv)]), cwd="/", check=True)
    log(f"installing {' '.join(PEER_REQUIREMENTS)} into {venv}")
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(as_user(user, [*pip, *PEER_REQUIREMENTS]), cwd="/", env=env, check=True)
    if installed_version(python, "pytest-postgresql") != PEER_VERSION:
        raise SystemExit(f"{venv} should hold pytest-postgresql {PEER_VERSION}")
    return python


def _session(
    python: Path, user: Optional[str], folder: Path, test: str, options: Sequence[str]
) -> dict[str, list[float]]:
    """Run ``test`` in a fresh pytest session as ``user``; its phase times."""
    give(user, folder)
    (folder / "conftest.py").write_text(TIMES_CONFTEST)
    (folder / "test_bench.py").write_text(test)
    (folder / "pytest.ini").write_text("[pytest]\naddopts =\n")
    tmp = give(user, folder / "tmp")
    times = folder / "times.json"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "BENCH_TIMES": str(times),
    }
    command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    command += ["--basetemp", str(tmp / "basetemp"), *options]
    subprocess.run(
        as_user(user, command), cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL
    )
    result: dict[str, list[float]] = json.loads(times.read_text())
    return result


def peer_ready(
    python: Path, user: Optional[str], work: Path, pg_ctl: str, rounds: int
) -> list[float]:
    """Seconds from session start to a ready ``postgresql_proc``, in ``rounds`` sessions."""
    ready = []
    for n in range(rounds):
        times = _session(
            python, user, work / f"peer-ready-{n}", START_TEST, [f"--postgresql-exec={pg_ctl}"]
        )
        ready.append(times["setup"][0])
        log(f"pytest-postgresql start {n}")
    return ready


def peer_resets(
    python: Path,
    user: Optional[str],
    folder: Path,
    pg_ctl: str,
    sql: Path,
    changes: Mapping[str, str],
    resets: int,
) -> dict[str, list[float]]:
    """The cost of pytest-postgresql's ``postgresql`` after each kind of change."""
    os.chmod(sql, 0o644)
    test = RESET_TEST.format(changes=dict(changes), resets=resets)
    options = [f"--postgresql-exec={pg_ctl}", f"--postgresql-load={sql}"]
    return per_reset(_session(python, user, folder, test, options), list(changes), resets)


def per_reset(
    times: Mapping[str, Any], kinds: Sequence[str], resets: int
) -> dict[str, list[float]]:
    """What putting the database back cost after each kind of change: the teardown of the
    test that made it plus the setup of the next test (the first test, which starts the
    server, and the last teardown, which stops it, are left out)."""
    order = [kind for _ in range(resets) for kind in kinds] + ["nothing"]
    after: dict[str, list[float]] = {kind: [] for kind in kinds}
    for step in range(1, len(order)):
        after[order[step - 1]].append(times["teardown"][step - 1] + times["setup"][step])
    return after


#: The most our ``postgresql_clean`` should take after each kind of change (seconds): on
#: the 20-table reference schema, and on a big one (nothing, rows; DDL).
CLEAN_TARGETS = {
    20: ({"nothing": 0.0003, "rows in one table": 0.002}, 0.008),
    0: ({"nothing": 0.001, "rows in one table": 0.005}, 0.030),
}
#: The most our first ``postgresql`` (warm cache) should take, against ``postgresql_proc``.
READY_TARGET = 0.15


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return (ordered[middle] + ordered[~middle]) / 2 if ordered else float("nan")


def print_ready(ours: Sequence[float], by_hand: Sequence[float], peer: Sequence[float]) -> None:
    """The ready times side by side, as ratios to pytest-postgresql's ``postgresql_proc``."""
    theirs = _median(peer)
    print(f"  pytest-postgresql postgresql_proc {theirs * 1000:8.2f} ms")
    print(
        f"  empty / pytest-postgresql         {_median(ours) / theirs:8.3f}x"
        f"   (target <= {READY_TARGET}x)"
    )
    print(f"  by hand / pytest-postgresql       {_median(by_hand) / theirs:8.3f}x")


def print_resets(
    tables: int,
    clean: Mapping[str, Sequence[float]],
    ours: Mapping[str, Sequence[float]],
    peer: Optional[Mapping[str, Sequence[float]]],
) -> None:
    """Our ``postgresql_clean`` against its target, and each side's cost per test."""
    print(f"\nAfter a test that changed ... ({tables} tables; medians, ms):")
    head = f"  {'':18} {'clean':>8} {'target':>9} {'ours':>8}"
    print(head + (f" {'pytest-postgresql':>18} {'ours/theirs':>12}" if peer else ""))
    for kind, values in clean.items():
        targets, ddl = CLEAN_TARGETS[20 if tables == 20 else 0]
        target = targets.get(kind, ddl)
        mark = "ok" if _median(values) <= target else "over"
        row = (
            f"  {kind:18} {_median(values) * 1000:8.2f} {target * 1000:4.1f} {mark:>2}"
            f" {_median(ours[kind]) * 1000:8.2f}"
        )
        if peer:
            theirs = _median(peer[kind])
            row += f" {theirs * 1000:18.2f} {_median(ours[kind]) / theirs:11.3f}x"
        print(row)
    print(
        "  clean: the setup of postgresql_clean; ours, pytest-postgresql: the teardown of the"
        "\n  test plus the setup of the next (postgresql_clean; pytest-postgresql's postgresql)"
    )
