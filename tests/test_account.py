"""Services that run as another account: the ids they get, and how they get them."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_services._engine import commands
from pytest_services._engine.account import ServiceAccount
from pytest_services.process import start_service

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing the user takes root")


def nobody() -> ServiceAccount:
    entry = pwd.getpwnam("nobody")
    return ServiceAccount("nobody", entry.pw_uid, entry.pw_gid)


def ids(pid: int) -> dict[str, list[str]]:
    """The Uid, Gid and Groups lines of a process's status."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = (line.split(":", 1) for line in lines)
    return {name: value.split() for name, value in fields if name in ("Uid", "Gid", "Groups")}


@needs_root
@pytest.mark.parametrize("setpriv", [True, False], ids=["setpriv", "popen"])
def test_a_service_runs_as_its_account_with_no_other_group(
    setpriv: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commands, "_SETPRIV", [] if setpriv else [None])
    account = nobody()
    folder = tmp_path / "home"
    folder.mkdir()
    os.chown(folder, account.uid, account.gid)

    def sleeping() -> bool:  # setpriv runs first, under the same pid, and then sleep
        return Path(f"/proc/{process.pid}/cmdline").read_bytes().startswith(sleep)

    process = start_service(
        "sleep", ["617.3"], account.popen_kwargs(folder), checker=lambda: True, log_dir=tmp_path
    )
    sleep = os.fsencode(process.command[0])
    try:
        deadline = time.monotonic() + 10
        while not sleeping() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert ids(process.pid) == {
            "Uid": [str(account.uid)] * 4,
            "Gid": [str(account.gid)] * 4,
            "Groups": [],
        }
        # The program itself has the pid: stops and the watchdog reach it.
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline == [sleep, b"617.3", b""]
        assert os.readlink(f"/proc/{process.pid}/cwd") == str(folder)
        assert process.args == process.command and process.command[1:] == ["617.3"]
        assert ("setpriv" in str(commands._SETPRIV)) == setpriv
    finally:
        process.stop(grace=0.2)
    assert process.returncode is not None


@needs_root
def test_the_ids_are_changed_after_the_exec_when_setpriv_is_there() -> None:
    kwargs = nobody().popen_kwargs("/")
    command = commands._switch_ids_after_exec(["prog", "arg"], kwargs)
    assert command[-3:] == ["--", "prog", "arg"] and "--clear-groups" in command
    assert kwargs == {"cwd": "/"}
    # Names, a preexec function or a shell are left to Popen.
    for odd in (
        {"user": "nobody"},
        {"user": 1, "group": 1, "preexec_fn": print},
        {"user": 1, "group": 1, "shell": True},
    ):
        assert commands._switch_ids_after_exec(["prog"], dict(odd)) == ["prog"]


GROUPS_OF_A_SERVICE = """
import os, sys, time
from pathlib import Path
from pytest_services._engine import commands
from pytest_services._engine.account import ServiceAccount
from pytest_services.process import start_service

if sys.argv[1] == "popen":
    commands._SETPRIV[:] = [None]
os.setgroups([4, 5])  # a starter with groups of its own, which the service must not keep
account = ServiceAccount("nobody", {uid}, {gid})
process = start_service("sleep", ["617.4"], account.popen_kwargs("/"), checker=lambda: True)
status = Path(f"/proc/{{process.pid}}/status")
deadline = time.monotonic() + 10
sleep = os.fsencode(process.command[0])  # setpriv runs first, with sleep's arguments
while not Path(f"/proc/{{process.pid}}/cmdline").read_bytes().startswith(sleep):
    assert time.monotonic() < deadline
    time.sleep(0.001)
lines = status.read_text().splitlines()
print([line.split(":", 1)[1].split() for line in lines if line.startswith("Groups:")][0])
process.stop(grace=0.2)
"""


@needs_root
@pytest.mark.parametrize("way", ["setpriv", "popen"])
def test_a_service_keeps_none_of_its_starters_groups(way: str) -> None:
    account = nobody()
    script = GROUPS_OF_A_SERVICE.format(uid=account.uid, gid=account.gid)
    result = subprocess.run(
        [sys.executable, "-c", script, way], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
