"""Helpers shared by the benchmark scripts.

* :func:`ensure_old_venv` creates (once) a separate virtual environment holding
  pytest-services 2.2.2 from PyPI, the release this project is compared with;
* :func:`run_inner_pytest` runs a generated test folder in a fresh pytest session, with the
  interpreter of this project or of that environment;
* :func:`median`, :func:`ms` and :func:`print_table` summarise and print the numbers.

Only the standard library is used here, so the scripts run wherever pytest does.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

#: The release of pytest-services that the benchmarks compare with.
OLD_VERSION = "2.2.2"
#: What is installed in the comparison environment.  2.2.2 still uses
#: ``pytest.yield_fixture``, which pytest 10 removes.
OLD_REQUIREMENTS = (f"pytest-services=={OLD_VERSION}", "pytest>=7,<10")
#: Where the comparison environment lives unless ``--old-venv`` says otherwise.
DEFAULT_OLD_VENV = os.path.join(tempfile.gettempdir(), "bench-venv-pss222")

#: An ini file for inner sessions, so that no project configuration around them applies.
INNER_INI = "[pytest]\naddopts =\n"

#: Environment variables of the calling session that must not leak into inner sessions.
_DROPPED_ENV = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_XDIST_WORKER", "PYTHONPATH")


def log(message: str) -> None:
    """Print a progress message on stderr (the tables go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def venv_python(venv: str | os.PathLike[str]) -> Path:
    """The interpreter of the virtual environment ``venv``."""
    return Path(venv, "bin", "python")


def installed_version(python: str | os.PathLike[str], distribution: str) -> str | None:
    """The version of ``distribution`` that ``python`` imports, or None when it has none."""
    code = (
        "import importlib.metadata as m, sys\n"
        "try:\n"
        f"    print(m.version({distribution!r}))\n"
        "except m.PackageNotFoundError:\n"
        "    sys.exit(3)\n"
    )
    try:
        result = subprocess.run(
            [os.fspath(python), "-I", "-c", code], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_old_venv(venv: str | os.PathLike[str]) -> Path:
    """Return the interpreter of a venv holding pytest-services 2.2.2; create it if needed."""
    python = venv_python(venv)
    if installed_version(python, "pytest-services") == OLD_VERSION:
        return python
    if not python.exists():
        log(f"creating a virtual environment for pytest-services {OLD_VERSION} in {venv}")
        subprocess.run([sys.executable, "-m", "venv", os.fspath(venv)], check=True)
    log(f"installing {' '.join(OLD_REQUIREMENTS)} into {venv}")
    pip = [os.fspath(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, *OLD_REQUIREMENTS], check=True)
    version = installed_version(python, "pytest-services")
    if version != OLD_VERSION:
        raise SystemExit(f"{venv} should hold pytest-services {OLD_VERSION}, it has {version}")
    return python


def check_new_python() -> str:
    """Make sure this interpreter imports this project's pytest-services; return its version."""
    version = installed_version(sys.executable, "pytest-services")
    if version is None or version == OLD_VERSION:
        raise SystemExit(
            f"{sys.executable} must have this project installed (pip install -e .), "
            f"it has pytest-services {version}."
        )
    return version


def write_files(folder: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` (name -> text, dedented) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())


def inner_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of an inner pytest session: this one, cleaned, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key not in _DROPPED_ENV}
    env.update(extra)
    return env


def inner_pytest_command(python: str | os.PathLike[str], folder: Path) -> list[str]:
    """The command running the tests in ``folder`` in a plain, quiet pytest session."""
    return [
        os.fspath(python),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "-W",
        "ignore::DeprecationWarning",
        "-c",
        os.fspath(folder / "pytest.ini"),
        "--rootdir",
        os.fspath(folder),
        os.fspath(folder),
    ]


def run_inner_pytest(
    python: str | os.PathLike[str], folder: Path, env: Mapping[str, str], timeout: float = 600
) -> None:
    """Run the tests in ``folder`` with ``python -m pytest``; fail loudly if they fail."""
    result = subprocess.run(
        inner_pytest_command(python, folder),
        env=inner_env(env),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(
            f"inner pytest session with {python} failed (exit code {result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )


def new_scratch_dir(prefix: str) -> Path:
    """A fresh temporary folder; remove it with :func:`remove_dir`."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_dir(path: Path) -> None:
    """Remove a scratch folder and everything in it."""
    shutil.rmtree(path, ignore_errors=True)


def median(values: Iterable[float]) -> float:
    """The median of ``values`` (NaN when there are none)."""
    data = list(values)
    return statistics.median(data) if data else float("nan")


def ms(seconds: float) -> str:
    """Format a duration in milliseconds."""
    return "-" if seconds != seconds else f"{seconds * 1000:.1f} ms"


def ratio(numerator: float, denominator: float) -> str:
    """Format ``numerator / denominator`` as ``1.23x``."""
    if denominator <= 0 or numerator != numerator or denominator != denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ]
        return "  ".join(parts).rstrip()

    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))


def add_old_version_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--old-venv`` and ``--skip-old``: where the old release lives, or not to run it."""
    parser.add_argument(
        "--old-venv",
        default=DEFAULT_OLD_VENV,
        metavar="PATH",
        help=f"virtual environment with pytest-services {OLD_VERSION}, created "
        "there if missing (default: %(default)s)",
    )
    parser.add_argument(
        "--skip-old",
        action="store_true",
        help=f"do not measure pytest-services {OLD_VERSION} (no venv, no download)",
    )
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help=f"compare with another checkout of this project (e.g. a git worktree of an "
        f"earlier commit) instead of pytest-services {OLD_VERSION}, with this interpreter",
    )


def other_implementation(args: argparse.Namespace, scratch: Path) -> tuple[str, Path] | None:
    """What to compare with, as a label and an interpreter: a ``--baseline`` checkout,
    pytest-services 2.2.2, or nothing (``--skip-old``)."""
    if args.baseline:
        checkout = Path(args.baseline).resolve()
        if not (checkout / "pytest_services" / "plugin.py").is_file():
            raise SystemExit(f"--baseline {checkout} is not a checkout of this project")
        # An interpreter that imports the plugin from that checkout, inner sessions included.
        wrapper = scratch / "baseline-python"
        wrapper.write_text(
            f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(checkout))} "
            f'exec {shlex.quote(sys.executable)} "$@"\n'
        )
        wrapper.chmod(0o755)
        return f"baseline {checkout.name}", wrapper
    if args.skip_old:
        return None
    return f"pytest-services {OLD_VERSION}", ensure_old_venv(args.old_venv)


#: Inner conftest text shared by the comparisons with 2.2.2: the plugin's logger is replaced
#: by a silent one, because 2.2.2 logs every message to syslog (and prints a traceback for
#: each one where ``/dev/log`` is missing), which would weigh on its numbers.
SILENT_LOG_CONFTEST = """
    import logging

    import pytest


    @pytest.fixture(scope="session")
    def services_log():
        logger = logging.getLogger("bench.services")
        logger.propagate = False
        logger.addHandler(logging.NullHandler())
        return logger
"""


#: Conftest hooks that time each test's setup and teardown into ``_times`` (a dict with the
#: lists ``"setup"`` and ``"teardown"``), for the inner sessions of the benchmarks.
RUN_TIMES_HOOKS = """
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    start = time.perf_counter()
    yield
    _times["setup"].append(time.perf_counter() - start)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    start = time.perf_counter()
    yield
    _times["teardown"].append(time.perf_counter() - start)
"""
