"""Just enough of the Redis protocol (RESP) to start and clean a server without redis-py:
commands out, simple replies back, and the pid of the process at the other end of the
unix socket.  Plain code, no pytest.
"""

from __future__ import annotations

import socket
import struct
from types import TracebackType
from typing import Optional, Union

from pytest_services.exceptions import ProtocolError, ReplyError

__all__ = ["ProtocolError", "Reply", "ReplyError", "RespConnection", "encode_command"]

#: What :meth:`RespConnection.command` returns: a simple or bulk string, an integer, or
#: None for a null bulk string.
Reply = Union[bytes, int, None]


def encode_command(*arguments: Union[str, bytes]) -> bytes:
    """The command as a RESP array of bulk strings, as clients send it."""
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        data = argument.encode() if isinstance(argument, str) else argument
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RespConnection:
    """One connection to a Redis server's unix socket; each call waits at most ``timeout``."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._buffer = b""
        try:
            self._socket.settimeout(timeout)
            self._socket.connect(path)
            # Blocking from here on, with the timeout kept by the kernel: Python's own
            # timeout would add a poll() before every send and receive.
            self._socket.settimeout(None)
            limit = struct.pack("ll", int(timeout), int(timeout % 1 * 1_000_000))
            for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
                self._socket.setsockopt(socket.SOL_SOCKET, option, limit)
        except BaseException:
            self._socket.close()
            raise

    def peer_pid(self) -> Optional[int]:
        """The pid of the process that listens on the socket; None where the system does
        not tell (0 when that process is in another pid namespace)."""
        option = getattr(socket, "SO_PEERCRED", None)
        if option is None:
            return None
        size = struct.calcsize("3i")
        pid: int = struct.unpack("3i", self._socket.getsockopt(socket.SOL_SOCKET, option, size))[0]
        return pid

    def command(self, *arguments: Union[str, bytes]) -> Reply:
        """Send one command and return its reply; raise :class:`ReplyError` for an error."""
        return self.request(encode_command(*arguments))

    def request(self, command: bytes) -> Reply:
        """Send a command encoded already (by :func:`encode_command`) and return its reply."""
        self._socket.sendall(command)
        return self._reply()

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> RespConnection:
        return self

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    def _reply(self) -> Reply:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise ReplyError(rest.decode(errors="replace"))
        try:
            if kind == b":":
                return int(rest)
            if kind == b"$":
                size = int(rest)
                return None if size < 0 else self._exactly(size + 2)[:-2]
        except ValueError:
            pass
        raise ProtocolError(f"{self.path} sent {line[:80]!r}, which is not a Redis reply.")

    def _line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
                return line
            self._receive()

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._receive()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _receive(self) -> None:
        chunk = self._socket.recv(65536)
        if not chunk:
            raise ConnectionResetError(f"The server on {self.path} closed the connection.")
        self._buffer += chunk
