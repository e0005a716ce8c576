"""The built wheel: it installs, registers the plugin, and ships its type information."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _source_copy(target: Path) -> Path:
    """The files a source distribution holds, copied: a build writes nothing into the checkout."""
    target.mkdir()
    for name in ("pyproject.toml", "README.rst", "LICENSE", "CHANGES.rst"):
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(
        ROOT / "pytest_services",
        target / "pytest_services",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return target


@pytest.mark.slow
def test_wheel_installs_and_registers_the_plugin(tmp_path: Path) -> None:
    source = _source_copy(tmp_path / "source")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=True,
    )
    (wheel,) = tmp_path.glob("pytest_services-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pytest_services/py.typed" in names
    packaged = {name for name in names if name.endswith(".py")}
    in_tree = {
        path.relative_to(ROOT).as_posix() for path in (ROOT / "pytest_services").rglob("*.py")
    }
    assert in_tree <= packaged, "modules missing from the wheel"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[pytest11]" in text and "pytest-services = pytest_services.plugin" in text

    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], check=True)
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_it.py").write_text(
        "def test_it(worker_id):\n    assert worker_id == 'local'\n"
    )
    result = subprocess.run(
        [python, "-m", "pytest", "--fixtures", "--trace-config", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pytest-services" in result.stdout
    assert "watcher_getter [session scope]" in result.stdout
    run = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
