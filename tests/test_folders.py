"""Session folders: where they are, who may enter them, and that they are removed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

FOLDERS_PROBE = """
    import os, json, pathlib

    def test_folders(root_dir, base_dir, temp_dir, memory_root_dir, memory_base_dir,
                     memory_temp_dir, run_dir, lock_dir):
        values = dict(root_dir=str(root_dir), base_dir=base_dir, temp_dir=temp_dir,
                      memory_root_dir=memory_root_dir, memory_base_dir=memory_base_dir,
                      memory_temp_dir=memory_temp_dir, run_dir=run_dir, lock_dir=lock_dir)
        for name in ("base_dir", "temp_dir", "memory_base_dir", "memory_temp_dir", "run_dir",
                     "lock_dir"):
            assert os.path.isdir(values[name]), name
        pathlib.Path(temp_dir, "leftover").write_text("x")
        pathlib.Path(os.environ["PROBE_OUT"]).write_text(json.dumps(values))
        assert os.environ.get("PROBE_FAIL") != "1", "failing on purpose"
"""


def _run(pytester: pytest.Pytester, *args: str, fail: bool = False) -> dict[str, str]:
    import json

    out = pytester.path / "probe.json"
    pytester.makepyfile(test_probe=FOLDERS_PROBE)
    env = {"PROBE_OUT": str(out), "PROBE_FAIL": "1" if fail else "0"}
    for key, value in env.items():
        os.environ[key] = value
    try:
        result = pytester.runpytest_subprocess(*args)
    finally:
        for key in env:
            del os.environ[key]
    result.assert_outcomes(**({"failed": 1} if fail else {"passed": 1}))
    values: dict[str, str] = json.loads(out.read_text())
    return values


@pytest.mark.parametrize("fail", [False, True], ids=["passing", "failing"])
def test_session_folders_created_private_and_removed(pytester: pytest.Pytester, fail: bool) -> None:
    values = _run(pytester, fail=fail)
    assert Path(values["temp_dir"]).parent == Path(values["base_dir"])
    assert Path(values["base_dir"]).parent == Path(values["root_dir"])
    assert Path(values["memory_base_dir"]).parent == Path(values["memory_root_dir"])
    assert Path(values["run_dir"]).parent == Path(values["memory_base_dir"])
    for name in ("base_dir", "memory_base_dir"):
        assert not os.path.exists(values[name]), f"{name} left behind"
    lock = os.stat(values["lock_dir"])
    assert stat.S_IMODE(lock.st_mode) == 0o700
    assert lock.st_uid == os.getuid()


def test_memory_root_is_shm_when_present(pytester: pytest.Pytester) -> None:
    values = _run(pytester)
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        assert values["memory_root_dir"] == "/dev/shm"


@pytest.mark.parametrize("kind", ["str", "pathlib"])
def test_root_dir_override(pytester: pytest.Pytester, kind: str) -> None:
    root = pytester.path / "my-root"
    value = repr(str(root)) if kind == "str" else f"pathlib.Path({str(root)!r})"
    pytester.makeconftest(
        f"""
        import pathlib, pytest

        @pytest.fixture(scope="session")
        def root_dir():
            return {value}
        """
    )
    values = _run(pytester)
    assert Path(values["base_dir"]).parent == root
    assert not os.path.exists(values["base_dir"])
    assert root.is_dir()


def test_two_sessions_share_lock_dir_but_not_base_dir(pytester: pytest.Pytester) -> None:
    first = _run(pytester)
    second = _run(pytester, "-p", "xdist")
    assert first["lock_dir"] == second["lock_dir"]
    assert first["base_dir"] != second["base_dir"]


def test_lock_dir_of_another_owner_is_refused(tmp_path: Path) -> None:
    from pytest_services.folders import FolderError, private_dir

    target = tmp_path / "not-a-dir"
    target.write_text("")
    with pytest.raises(FolderError, match="must be a folder"):
        private_dir(target)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    private_dir(shared)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o700
    if os.getuid() == 0:
        os.chown(shared, 65534, 65534)
        with pytest.raises(FolderError, match="belongs to uid 65534, not to you"):
            private_dir(shared)
    blocked = tmp_path / "file" / "sub"
    (tmp_path / "file").write_text("")
    with pytest.raises(FolderError, match="Cannot create the folder .*/file/sub"):
        private_dir(blocked)


def test_socket_path_too_long_for_a_unix_socket(tmp_path: Path) -> None:
    from pytest_services.folders import FolderError, socket_path

    assert socket_path(tmp_path, "ok.sock") == str(tmp_path / "ok.sock")
    with pytest.raises(FolderError, match=r"is longer than 107 bytes, the limit of unix sockets"):
        socket_path(tmp_path / ("x" * 120), "server.sock")
