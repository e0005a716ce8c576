"""Running a server that refuses root as an unprivileged system account.

Plain code, no pytest.  When pytest runs as root, :func:`service_account` names the system
account a server runs as (PostgreSQL's ``postgres``); the engine starts the server with
:meth:`ServiceAccount.popen_kwargs`, and only the folders handed to the account with
:func:`open_to` are opened to it: nothing else of root's becomes reachable.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from typing import Any, Optional

from pytest_services._engine.paths import StrPath
from pytest_services.exceptions import ServiceError

__all__ = ["ServiceAccount", "chown_tree", "open_to", "service_account"]


@dataclass(frozen=True)
class ServiceAccount:
    """A system account that a server runs as."""

    name: str
    uid: int
    gid: int

    def popen_kwargs(self, cwd: StrPath) -> dict[str, Any]:
        """``Popen`` arguments that start a program as this account, with no extra groups,
        in ``cwd`` (a folder it may enter, unlike ours)."""
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "cwd": cwd}


def service_account(name: str, what: str, error: type[ServiceError]) -> Optional[ServiceAccount]:
    """The account ``name`` to run ``what`` as when this process is root, else None.

    A missing account is ``error``, naming how to create it.
    """
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise error(
            f"{what} refuses to run as root, and there is no {name!r} account to run it as: "
            f"create one (useradd --system {name}; Debian's server package does), "
            "or run pytest as an ordinary user."
        ) from None
    if entry.pw_uid == 0:
        raise error(f"The account {name!r} is root: {what} refuses to run as root.")
    return ServiceAccount(name, entry.pw_uid, entry.pw_gid)


def chown_tree(path: StrPath, uid: int, gid: int) -> None:
    """Give ``path`` and everything below it to ``uid``:``gid`` (symbolic links themselves)."""
    os.lchown(path, uid, gid)
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.lchown(os.path.join(folder, name), uid, gid)


def open_to(account: Optional[ServiceAccount], parent: str, name: str) -> str:
    """A folder ``name`` in ``parent`` that only ``account`` (or we, when None) may enter.

    ``parent`` is a private folder of ours, which becomes passable (``0711``: its entries
    cannot be listed) so that the account reaches its own folder inside, or a folder that
    is the account's already.
    """
    path = os.path.join(parent, name)
    os.makedirs(path, mode=0o700, exist_ok=True)
    if account is not None:
        info = os.lstat(parent)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (os.getuid(), account.uid):
            raise ServiceError(f"{parent} must be a folder of ours to open {name} in it.")
        if info.st_uid != account.uid:
            os.chmod(parent, 0o711)
        os.chown(path, account.uid, account.gid)
        os.chmod(path, 0o700)
    return path
