"""Talking to an X server: a connection setup with an MIT-MAGIC-COOKIE-1, as a readiness check.

The check blocks on the server's answer instead of sleeping, and makes sure the server that
answers is the one started here (the peer of the unix socket is in the caller's process
tree), not one that another user started on the same display.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Optional

from pytest_services._reserve.displays import X_SOCKET

#: Longest wait for the server's answer to one connection setup.
HANDSHAKE_TIMEOUT = 1.0
COOKIE_PROTOCOL = "MIT-MAGIC-COOKIE-1"


class X11Handshake:
    """Readiness check: an X11 connection setup with the cookie on the display's unix socket.

    True once the server accepts the cookie.  Until Xvfb listens, connecting fails and the
    check says "not yet"; once connected, the reply arrives the moment the server is up (or
    the connection drops if it dies), so the check needs no sleeping of its own.  A server
    that does not lead a process group started by this process (another X server already on
    the display) never counts as ready, even if it lets anyone in.
    """

    #: Each call waits at most ``timeout`` for the server: the engine may call it directly.
    bounded = True

    def __init__(self, display: int, cookie: str, timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.path = X_SOCKET.format(display)
        self.request = _setup_request(bytes.fromhex(cookie))
        self.timeout = timeout
        self.answer = "no connection yet"

    def __call__(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                peer = _peer_pid(sock)
                if peer is not None and not _started_here(peer):
                    self.answer = f"answered by pid {peer}, an X server this process did not start"
                    return False
                sock.sendall(self.request)
                head = _receive(sock, 8)
                if head[0] == 1:
                    self.answer = "accepted"
                    return True
                reason = _receive(sock, struct.unpack_from("<H", head, 6)[0] * 4)
        except OSError as exc:
            self.answer = f"no answer ({exc})"
            raise  # the usual "not ready yet" of the engine
        if head[0] == 0:
            reason = reason[: head[1]]
        self.answer = f"refused: {reason.rstrip(bytes(1)).decode(errors='replace').strip()}"
        return False

    def __repr__(self) -> str:
        return f"<X11 connection setup on {self.path}: {self.answer}>"


def _peer_pid(sock: socket.socket) -> Optional[int]:
    """The pid of the process at the other end of a unix socket, where the system tells."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    size = struct.calcsize("3i")
    pid: int = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, size))[0]
    return pid if pid > 0 else None


def _started_here(pid: int) -> bool:
    """Tell whether ``pid`` is in a process group whose leader is a child of this process."""
    try:
        leader = os.getpgid(pid)
        with open(f"/proc/{leader}/stat", "rb") as stat:
            parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return True  # cannot tell: do not hold up the start
    return parent == os.getpid()


def _setup_request(cookie: bytes) -> bytes:
    """An X11 connection setup request, little-endian, protocol 11.0, with a magic cookie."""
    name = COOKIE_PROTOCOL.encode()
    head = struct.pack("<BxHHHHxx", ord("l"), 11, 0, len(name), len(cookie))
    return head + _padded(name) + _padded(cookie)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the X server closed the connection")
        data += chunk
    return data
