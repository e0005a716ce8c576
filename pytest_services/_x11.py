"""Talking to an X server: a connection setup with an MIT-MAGIC-COOKIE-1, as a readiness check.

The check blocks on the server's answer instead of sleeping, and makes sure the server that
answers is the very process started for it: the peer of the display's unix sockets (the
filesystem one and the abstract one that X clients try first) must have that process's pid.
An X server that someone else started on the same display never passes, even one that lets
anyone in.
"""

from __future__ import annotations

import socket
import struct
from subprocess import Popen
from typing import Any, Optional

from pytest_services._reserve.displays import X_SOCKET

#: Longest wait for the server's answer to one connection setup.
HANDSHAKE_TIMEOUT = 1.0
COOKIE_PROTOCOL = "MIT-MAGIC-COOKIE-1"


class X11Handshake:
    """Readiness check: an X11 connection setup with the cookie on the display's unix socket.

    True once the server accepts the cookie and both of the display's unix sockets are served
    by the process handed to :meth:`attach` (the engine does that as soon as it has started
    it).  Until Xvfb listens, connecting fails and the check says "not yet"; once connected,
    the reply arrives the moment the server is up (or the connection drops if it dies), so
    the check needs no sleeping of its own.
    """

    #: Each call waits at most ``timeout`` for the server: the engine may call it directly.
    bounded = True

    def __init__(self, display: int, cookie: str, timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.path = X_SOCKET.format(display)
        self.request = _setup_request(bytes.fromhex(cookie))
        self.timeout = timeout
        self.answer = "no connection yet"
        #: The pid that must answer: the server's, once :meth:`attach` was called.
        self.pid: Optional[int] = None

    def attach(self, process: Popen[Any]) -> None:
        """Expect ``process`` (its pid) at the other end of the display's sockets."""
        self.pid = process.pid

    def __call__(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                if not self._ours(sock):
                    return False
                sock.sendall(self.request)
                head = _receive(sock, 8)
                if head[0] == 1:
                    return self._abstract_socket_ours()
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

    def _ours(self, sock: socket.socket) -> bool:
        """Tell whether the server process expected is the peer of ``sock``; say why not."""
        if self.pid is None:
            self.answer = "no server process was attached to the check"
            return False
        peer = _peer_pid(sock)
        if peer != self.pid:
            who = "a process the system does not name" if peer is None else f"pid {peer}"
            self.answer = f"answered by {who}, not by the server started (pid {self.pid})"
            return False
        return True

    def _abstract_socket_ours(self) -> bool:
        """The abstract socket, which X clients try first, is the server's too (or absent)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect("\0" + self.path)
            except (FileNotFoundError, ConnectionRefusedError):
                self.answer = "accepted (no abstract socket)"
                return True
            if not self._ours(sock):
                self.answer += f" on the abstract socket @{self.path}"
                return False
        self.answer = "accepted"
        return True


def _peer_pid(sock: socket.socket) -> Optional[int]:
    """The pid of the process at the other end of a unix socket, where the system tells."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    size = struct.calcsize("3i")
    pid: int = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, size))[0]
    return pid if pid > 0 else None


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
