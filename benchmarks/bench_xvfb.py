"""How fast the ``xvfb`` fixture gets a display ready and gone, next to other ways of doing it.

    python benchmarks/bench_xvfb.py [--rounds N]

Each round runs every variant once, in a random order, at 1366x768x24 unless named:

* pytest-services: the fixture's own code path, driven without pytest: reserve a display,
  write the cookie with xauth, start Xvfb through the process engine (with ``-fbdir``, as
  the fixture runs it while screenshots are on), wait for an X11 connection setup with the
  cookie to succeed, answered by that very process; then stop it and release the display.
  Once at depth 24 (the default) and once at depth 8 (the default of 2.2).
* ``Xvfb :N -displayfd FD`` started by hand: ready when the display number is read from
  the pipe; stopped with SIGTERM.
* The same by hand without ``-displayfd``, ready when an X11 connection setup succeeds,
  polled as the engine polls: the two readiness methods side by side.
* PyVirtualDisplay, which pytest-xvfb runs: ``Display(...).start()`` and ``.stop()``, in a
  virtual environment of its own that this script creates on first use.

The table gives medians, and ratios to the hand start measured in the same run.  "Left
behind" counts X lock files and sockets still on disk after a variant stopped its server.
Then one screenshot, as a failing test gets it: the framebuffer file of an Xvfb showing an
``xlogo`` window read and encoded as a PNG (median of 20 captures, and the PNG's size).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Iterator
from pathlib import Path

import _common

from pytest_services._screenshot import SCREEN_FILE, fbdir
from pytest_services._xwd import capture_png
from pytest_services.folders import default_lock_dir, private_dir
from pytest_services.locks import X_LOCK, X_SOCKET, get_free_display, unlock_display
from pytest_services.process import FIRST_DELAY, MAX_DELAY, start_service
from pytest_services.xvfb import DEFAULT_RESOLUTION, X11Handshake, start_xvfb, write_xauthority

#: Where the environment with pytest-xvfb lives unless ``--xvfb-venv`` says otherwise.
DEFAULT_VENV = Path(tempfile.gettempdir(), "bench-venv-pytest-xvfb")
SCREEN = "x".join(map(str, DEFAULT_RESOLUTION))
LOG = logging.getLogger("bench_xvfb")
HAND = "Xvfb -displayfd, by hand"

#: Runs in PyVirtualDisplay's environment: one display started and stopped per input line.
PYVIRTUALDISPLAY_ROUND = """
import json, sys, time
from pyvirtualdisplay.display import Display

for _ in sys.stdin:
    start = time.perf_counter()
    display = Display(backend="xvfb", size=({}, {}), color_depth={})
    display.start()
    ready = time.perf_counter()
    display.stop()
    gone = time.perf_counter()
    print(json.dumps([ready - start, gone - ready, display.display]), flush=True)
""".format(*DEFAULT_RESOLUTION)

Round = Callable[[], tuple[float, float, int]]


def left_behind(display: int) -> int:
    """Count the lock file and socket of ``display`` left on disk; remove dead sockets."""
    count = 0
    if os.path.lexists(X_LOCK.format(display)):
        count += 1
    path = X_SOCKET.format(display)
    if os.path.lexists(path):
        count += 1
        with socket.socket(socket.AF_UNIX) as sock, contextlib.suppress(OSError):
            try:
                sock.connect(path)
            except ConnectionRefusedError:
                os.unlink(path)  # its server was killed: nobody listens any more
    return count


def fixture_path(lock_dir: str, folder: Path, depth: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    display = get_free_display(lock_dir, LOG)
    server = start_xvfb(
        display,
        (*DEFAULT_RESOLUTION[:2], depth),
        folder / "Xauthority",
        functools.partial(start_service, log_dir=folder),
        fbdir=fbdir(folder, display),
    )
    ready = time.perf_counter()
    server.stop()
    unlock_display(display, lock_dir, LOG)
    gone = time.perf_counter()
    return ready - start, gone - ready, left_behind(display)


def hand_displayfd(display: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", f":{display}", "-screen", "0", SCREEN, "-displayfd", str(write_end)],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        if not pipe.readline().strip():
            raise RuntimeError(f"Xvfb :{display} did not start: exit code {server.wait()}")
    ready = time.perf_counter()
    server.terminate()
    server.wait()
    gone = time.perf_counter()
    return ready - start, gone - ready, left_behind(display)


def hand_handshake(display: int, folder: Path) -> tuple[float, float, int]:
    xauthority, cookie = folder / "Xauthority-hand", "00112233445566778899aabbccddeeff"
    write_xauthority(xauthority, display, cookie)
    start = time.perf_counter()
    server = subprocess.Popen(
        ["Xvfb", f":{display}", "-screen", "0", SCREEN, "-auth", str(xauthority), "-noreset"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # as the engine starts services; the check looks for it
    )
    check, delay = X11Handshake(display, cookie), FIRST_DELAY
    check.attach(server)
    while True:
        with contextlib.suppress(OSError):
            if check():
                break
        if server.poll() is not None:
            raise RuntimeError(f"Xvfb :{display} did not start: exit code {server.returncode}")
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_DELAY)
    ready = time.perf_counter()
    server.terminate()
    server.wait()
    gone = time.perf_counter()
    return ready - start, gone - ready, left_behind(display)


def pyvirtualdisplay_python(where: Path) -> Path | None:
    """Python of a virtual environment holding pytest-xvfb and PyVirtualDisplay, or None."""
    python = _common.venv_python(where)
    probe = [str(python), "-I", "-c", "import pyvirtualdisplay, pytest_xvfb"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    _common.log(f"creating {where} with pytest-xvfb and PyVirtualDisplay ...")
    try:
        venv.create(where, with_pip=True, clear=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "pytest-xvfb", "PyVirtualDisplay"],
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        _common.log(f"cannot install pytest-xvfb, leaving it out: {exc}")
        return None
    return python


@contextlib.contextmanager
def pyvirtualdisplay_rounds(python: Path) -> Iterator[Round]:
    worker = subprocess.Popen(
        [str(python), "-c", PYVIRTUALDISPLAY_ROUND],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdin is not None and worker.stdout is not None
    stdin, stdout = worker.stdin, worker.stdout

    def one_round() -> tuple[float, float, int]:
        stdin.write("go\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the PyVirtualDisplay worker exited with {worker.wait()}")
        ready, teardown, display = json.loads(line)
        return ready, teardown, left_behind(display)

    try:
        yield one_round
    finally:
        stdin.close()
        worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds per variant (15)")
    parser.add_argument(
        "--xvfb-venv",
        type=Path,
        default=DEFAULT_VENV,
        help=f"virtual environment with pytest-xvfb, created if missing ({DEFAULT_VENV})",
    )
    parser.add_argument(
        "--skip-pytest-xvfb", action="store_true", help="leave PyVirtualDisplay out"
    )
    options = parser.parse_args()
    for name in ("Xvfb", "xauth"):
        if shutil.which(name) is None:
            sys.exit(f"{name} is missing: apt-get install xvfb xauth")
    python = None if options.skip_pytest_xvfb else pyvirtualdisplay_python(options.xvfb_venv)
    lock_dir = private_dir(default_lock_dir())
    hand_display = get_free_display(lock_dir, LOG)  # held for the whole run
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        variants: dict[str, Round] = {
            "pytest-services xvfb, depth 24": lambda: fixture_path(lock_dir, folder, 24),
            "pytest-services xvfb, depth 8": lambda: fixture_path(lock_dir, folder, 8),
            HAND: lambda: hand_displayfd(hand_display),
            "Xvfb + X11 setup polling, by hand": lambda: hand_handshake(hand_display, folder),
        }
        if python is not None:
            variants["PyVirtualDisplay (pytest-xvfb)"] = stack.enter_context(
                pyvirtualdisplay_rounds(python)
            )
        for run in variants.values():
            run()  # warm up: caches, the watchdog process, imports
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in variants}
        order = list(variants)
        for number in range(options.rounds):
            _common.log(f"round {number + 1}/{options.rounds}")
            random.shuffle(order)  # no variant always follows the same one
            for name in order:
                results[name].append(variants[name]())
        shot = screenshot(lock_dir, folder) if shutil.which("xlogo") else None
    unlock_display(hand_display, lock_dir, LOG)
    report(results, options.rounds)
    if shot is None:
        print("screenshot: not measured, xlogo is missing (apt-get install x11-apps)")
    else:
        print(
            f"screenshot of {SCREEN} with an xlogo window: {_common.ms(shot[0])} median "
            f"of 20 captures, {shot[1]} bytes of PNG"
        )


def screenshot(lock_dir: str, folder: Path) -> tuple[float, int]:
    """Capture the screen of an Xvfb showing a window, as for a failing test."""
    display = get_free_display(lock_dir, LOG)
    xauthority = folder / "Xauthority-shot"
    server = start_xvfb(
        display,
        DEFAULT_RESOLUTION,
        xauthority,
        functools.partial(start_service, log_dir=folder),
        fbdir=fbdir(folder, display),
    )
    env = dict(os.environ, DISPLAY=f":{display}", XAUTHORITY=str(xauthority))
    logo = subprocess.Popen(
        ["xlogo", "-geometry", "400x300+0+0"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(1)  # let it draw
        framebuffer = os.path.join(fbdir(folder, display), SCREEN_FILE)
        times, png = [], b""
        for _ in range(20):
            started = time.perf_counter()
            png = capture_png(display, framebuffer)
            times.append(time.perf_counter() - started)
        return _common.median(times), len(png)
    finally:
        logo.kill()
        logo.wait()
        server.stop()
        unlock_display(display, lock_dir, LOG)


def report(results: dict[str, list[tuple[float, float, int]]], rounds: int) -> None:
    base_ready = _common.median(r[0] for r in results[HAND])
    base_gone = _common.median(r[1] for r in results[HAND])
    rows = []
    for name, runs in results.items():
        ready = _common.median(r[0] for r in runs)
        gone = _common.median(r[1] for r in runs)
        rows.append(
            [
                name,
                _common.ms(ready),
                _common.ms(gone),
                _common.ratio(ready, base_ready),
                _common.ratio(gone, base_gone),
                str(sum(r[2] for r in runs)),
            ]
        )
    print(f"Xvfb at {SCREEN}, {rounds} rounds, medians; ratios to the -displayfd hand start")
    headers = ["variant", "ready", "teardown", "ready ratio", "teardown ratio", "left behind"]
    _common.print_table(headers, rows)


if __name__ == "__main__":
    main()
