"""Ready-made readiness checks for ``watcher_getter(..., checker=...)``.

Each function returns a callable object that tells, in one cheap call, whether a service is
ready: no thread or process per call, and no call blocks longer than :data:`CALL_TIMEOUT`,
so the engine's millisecond backoff keeps its meaning.  Each has a one-line ``repr`` that
start errors quote, and :func:`all_of` combines them with each other and with plain
callables::

    checker=checkers.all_of(checkers.tcp(port), checkers.output(r"Ready to accept"))
"""

from __future__ import annotations

import codecs
import http.client as http_client
import os
import re
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Union

from pytest_services._engine.paths import StrPath
from pytest_services._engine.readiness import checker_name
from pytest_services.exceptions import (
    CheckerError,
    ServiceError,  # noqa: F401 (importable here since 3.0)
)
from pytest_services.process import ServiceProcess

__all__ = [
    "CALL_TIMEOUT",
    "Checker",
    "CheckerError",
    "all_of",
    "http",
    "output",
    "path_exists",
    "tcp",
    "unix_socket",
]

#: Longest time, in seconds, that one check may wait for a connection or an answer.
CALL_TIMEOUT = 0.5
#: Longest stretch of output that :func:`output` reads in one call.
READ_LIMIT = 1 << 20

Pattern = Union[str, bytes, "re.Pattern[str]", "re.Pattern[bytes]"]


class Checker:
    """Base of the ready-made checkers: a callable with a readable ``repr``."""

    #: Each call ends within ``CALL_TIMEOUT``: the engine may call it directly.
    bounded = True
    #: Why the last call said "not ready" (``connection refused``...), for start errors.
    reason: str | None = None

    def __call__(self) -> bool:
        raise NotImplementedError

    def __repr__(self) -> str:
        raise NotImplementedError


class _Tcp(Checker):
    def __init__(self, port: int, host: str) -> None:
        self.port, self.host = int(port), host

    def __call__(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=CALL_TIMEOUT):
                return True
        except OSError as exc:
            self.reason = _why(exc)
            return False

    def __repr__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp({host}:{self.port})"


class _UnixSocket(Checker):
    def __init__(self, path: StrPath) -> None:
        self.path = os.fspath(path)

    def __call__(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CALL_TIMEOUT)
            try:
                sock.connect(self.path)
            except OSError as exc:
                self.reason = _why(exc)
                return False
        return True

    def __repr__(self) -> str:
        return f"unix_socket({self.path})"


class _Http(Checker):
    def __init__(self, url: str, status: int | Collection[int]) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CheckerError(
                f"http({url!r}): give an absolute http:// or https:// URL, "
                "such as 'http://127.0.0.1:8000/health'."
            )
        self.url, self.parts = url, parts
        self.status: Collection[int] = (status,) if isinstance(status, int) else status
        self.last_status: int | None = None
        self.context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            # Readiness, not trust: a test server's certificate is usually self-signed.
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE

    def __call__(self) -> bool:
        parts = self.parts
        connection: http_client.HTTPConnection
        if self.context is not None:
            connection = http_client.HTTPSConnection(
                parts.netloc, timeout=CALL_TIMEOUT, context=self.context
            )
        else:
            connection = http_client.HTTPConnection(parts.netloc, timeout=CALL_TIMEOUT)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        try:
            connection.request("GET", target)
            self.last_status = connection.getresponse().status
        except OSError as exc:
            self.reason = _why(exc)
            return False
        except http_client.HTTPException as exc:
            self.reason = f"not an HTTP answer ({type(exc).__name__}: {exc})"
            return False
        finally:
            connection.close()
        self.reason = f"answered {self.last_status}"
        return self.last_status in self.status

    def __repr__(self) -> str:
        details = [self.url]
        if not isinstance(self.status, range) or self.status != range(200, 400):
            details.append(f"status={_statuses(self.status)}")
        if self.last_status is not None and self.last_status not in self.status:
            details.append(f"last answer {self.last_status}")
        return f"http({', '.join(details)})"


class _Output(Checker):
    def __init__(self, pattern: Pattern) -> None:
        self.pattern: re.Pattern[str] | re.Pattern[bytes] = (
            re.compile(pattern) if isinstance(pattern, (str, bytes)) else pattern
        )
        # Searched line by line: ``^`` and ``$`` mean the start and end of any line.
        self._search = re.compile(self.pattern.pattern, self.pattern.flags | re.MULTILINE)
        self.log_path: Path | None = None
        self._bound = False
        self._offset = 0
        self._seen: str | bytes = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def bind(self, log_path: Path | None) -> None:
        """Read the output of the service about to start from ``log_path``.

        ``None`` means that its output is not captured (the caller passed ``stdout`` or
        ``stderr`` itself), which this checker cannot work with.
        """
        if log_path is None:
            raise CheckerError(
                f"{self!r} reads the output that pytest-services captures, but this service's "
                "output is not captured: stdout/stderr were passed in kwargs (or the engine "
                "was given no log_dir). Leave stdout and stderr out of kwargs, or use "
                "another checker, such as checkers.tcp() or checkers.path_exists()."
            )
        self.log_path, self._bound, self._offset = log_path, True, 0
        self._seen = b"" if isinstance(self.pattern.pattern, bytes) else ""
        self._decoder.reset()

    def __call__(self) -> bool:
        if not self._bound or self.log_path is None:
            raise CheckerError(
                f"{self!r} has no output to read: pass it as checker= to watcher_getter(), "
                "which tells it where the service's output goes."
            )
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._offset)
                data = log.read(READ_LIMIT)
        except OSError:
            return False
        if not data:
            return False  # nothing new: the answer is the same as last time
        self._offset += len(data)
        if isinstance(self._seen, bytes):
            self._seen += data
        else:
            self._seen += self._decoder.decode(data)
        seen = self._seen
        # All the output so far is searched, so a match may span chunks and lines; a match
        # that reaches the end of a line not finished yet waits for the rest of that line.
        # Whatever the chunks, the answer is then the same.
        matches = self._search.finditer(seen)  # type: ignore[arg-type]
        if seen.endswith("\n" if isinstance(seen, str) else b"\n"):  # type: ignore[arg-type]
            return next(matches, None) is not None
        return any(match.end() < len(seen) for match in matches)

    def __repr__(self) -> str:
        return f"output({self.pattern.pattern!r})"


class _PathExists(Checker):
    def __init__(self, path: StrPath) -> None:
        self.path = os.fspath(path)

    def __call__(self) -> bool:
        found = os.path.exists(self.path)
        self.reason = None if found else "it does not exist"
        return found

    def __repr__(self) -> str:
        return f"path_exists({self.path})"


class _AllOf(Checker):
    def __init__(self, checkers: tuple[Callable[[], object], ...]) -> None:
        if not checkers:
            raise CheckerError("all_of() needs at least one checker.")
        self.checkers = checkers
        self.bounded = all(getattr(checker, "bounded", False) for checker in checkers)

    def bind(self, log_path: Path | None) -> None:
        """Pass the service's log to every member that reads it."""
        for checker in self.checkers:
            bind = getattr(checker, "bind", None)
            if callable(bind):
                bind(log_path)

    def attach(self, process: ServiceProcess) -> None:
        """Tell every member that checks who answers which process that must be."""
        for checker in self.checkers:
            attach = getattr(checker, "attach", None)
            if callable(attach):
                attach(process)

    def __call__(self) -> bool:
        for checker in self.checkers:
            try:
                answer = checker()
            except OSError as exc:  # a plain callable's "not ready yet"
                answer, why = False, _why(exc)
            else:
                why = getattr(checker, "reason", None) or f"returned {answer!r}"
            if not answer:
                self.reason = f"{checker_name(checker)}: {why}"
                return False
        return True

    def __repr__(self) -> str:
        return f"all_of({', '.join(checker_name(checker) for checker in self.checkers)})"


def tcp(port: int, host: str = "127.0.0.1") -> Checker:
    """Ready once a TCP connection to ``host:port`` is accepted."""
    return _Tcp(port, host)


def unix_socket(path: StrPath) -> Checker:
    """Ready once a connection to the unix stream socket ``path`` is accepted."""
    return _UnixSocket(path)


def http(url: str, status: int | Collection[int] = range(200, 400)) -> Checker:
    """Ready once a GET of ``url`` answers with ``status`` (one code, or a collection)."""
    return _Http(url, status)


def output(pattern: Pattern) -> Checker:
    """Ready once the service's output matches the regular expression ``pattern``.

    It reads the log that ``watcher_getter`` captures; each call reads only what is new,
    and searches all the output so far with ``re.MULTILINE``: ``^`` and ``$`` match at the
    start and end of every line, and a match may span lines.  A match that reaches the end
    of a line still being written counts once more output follows, so how the service's
    writes are chunked never changes the answer.
    """
    return _Output(pattern)


def path_exists(path: StrPath) -> Checker:
    """Ready once ``path`` exists (a socket, a pid file, a marker file...)."""
    return _PathExists(path)


def all_of(*checkers: Callable[[], object]) -> Checker:
    """Ready once every checker is; plain callables may be mixed in."""
    return _AllOf(checkers)


def _why(error: OSError) -> str:
    """Why a connection failed, in a few words: ``connection refused``, ``no answer...``."""
    if isinstance(error, socket.timeout):
        return f"no answer within {CALL_TIMEOUT:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return error.strerror or str(error) or type(error).__name__


def _statuses(status: Collection[int]) -> str:
    if isinstance(status, range) and status.step == 1 and len(status) > 1:
        return f"{status.start}-{status.stop - 1}"
    return "|".join(str(code) for code in sorted(status))
