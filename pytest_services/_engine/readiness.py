"""Waiting for readiness: how long to pause between checks, and calling a checker so that a
call that hangs cannot hold up the deadline.  Plain code, no pytest."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

#: Shortest and longest pause between two readiness checks.
FIRST_DELAY = 0.0002
MAX_DELAY = 0.05


def next_delay(elapsed: float) -> float:
    """Pause before the next check: a tenth of the time waited so far, within bounds.

    A service that needs 50 ms is noticed within about 5 ms of being ready, one that needs
    a second within 50 ms: the delay in noticing stays near 10 % whatever the start-up time.
    """
    return min(MAX_DELAY, max(FIRST_DELAY, elapsed / 10))


Check = TypeVar("Check", bound=Callable[[], object])


def bounded(checker: Check) -> Check:
    """Mark ``checker`` as ending every call within a short timeout of its own, so that the
    engine calls it directly instead of on a thread of its own."""
    setattr(checker, "bounded", True)  # noqa: B010 - functions take attributes only this way
    return checker


class CheckerCalls:
    """Calls a checker on a thread of its own, so that a call that hangs cannot hold up
    the deadline (Python cannot interrupt the call itself: that thread is left to finish it).

    One thread serves all the calls of one start; ``OSError`` counts as "not ready".
    """

    def __init__(self, checker: Callable[[], object] | None) -> None:
        self.checker = checker
        self.hung = False
        self._requests: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[tuple[bool, BaseException | None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.pending = False

    def _serve(self) -> None:
        assert self.checker is not None
        while True:
            self._requests.get()
            try:
                self._answers.put((bool(self.checker()), None))
            except OSError:
                # Connection refused, socket not there yet: the usual "not ready" answers.
                self._answers.put((False, None))
            except BaseException as exc:  # handed to the caller, which raises it
                self._answers.put((False, exc))

    def _call_bounded(self) -> bool:
        assert self.checker is not None
        try:
            return bool(self.checker())
        except OSError:
            return False

    def check(self, deadline: float) -> bool:
        """Ask the checker, waiting at most ``MAX_DELAY`` for its answer.

        False if it says no, or has not answered yet (it is then asked nothing more until it
        does); ``hung`` tells that it was still running at ``deadline``.  A checker that
        says it is ``bounded`` (each call ends within a short timeout of its own, as the
        ready-made ones do) is called directly, which saves handing each call to the thread.
        """
        if getattr(self.checker, "bounded", False):
            return self._call_bounded()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="checker", daemon=True)
            self._thread.start()
        if not self.pending:
            self._requests.put(None)
            self.pending = True
        remaining = deadline - time.monotonic()
        # Past the deadline, a call just made still gets a moment to answer.
        wait = min(MAX_DELAY, remaining) if remaining > 0 else MAX_DELAY
        try:
            ready, error = self._answers.get(timeout=wait)
        except queue.Empty:
            self.hung = time.monotonic() >= deadline
            return False
        self.pending = False
        if error is not None:
            raise error
        return ready


def checker_name(checker: Callable[[], object]) -> str:
    """``name()`` for a function, the ``repr`` of other checkers (``tcp(127.0.0.1:80)``)."""
    name = getattr(checker, "__qualname__", None)
    return f"{name}()" if name else repr(checker)
