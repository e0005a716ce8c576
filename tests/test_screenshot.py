"""Screenshots of failing tests that used the X display: real Xvfb, real X clients, and the
PNG files checked with ImageMagick."""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_services._xwd import read_xwd
from pytest_services.folders import default_lock_dir, private_dir
from pytest_services.locks import get_free_display, unlock_display
from pytest_services.process import start_service
from pytest_services.xvfb import start_xvfb

needs_x = pytest.mark.skipif(
    not all(shutil.which(name) for name in ("Xvfb", "xauth", "xlogo", "xwd", "convert")),
    reason="needs Xvfb, xauth, xlogo, xwd and convert: "
    "apt-get install xvfb xauth x11-apps imagemagick",
)

GREEN = "#12AB34"
#: Inner test helper: show a window of a solid colour at the top left, wait until it is drawn.
SHOW = """
import subprocess, time

def show(color="#12ab34"):
    logo = subprocess.Popen(["xlogo", "-bg", color, "-geometry", "300x200+0+0"],
                            stderr=subprocess.DEVNULL)
    pixel = bytes.fromhex(color[5:7] + color[3:5] + color[1:3])
    deadline = time.monotonic() + 60
    dump = ["xwd", "-root", "-silent"]
    while subprocess.run(dump, capture_output=True).stdout.count(pixel) < 30000:
        assert time.monotonic() < deadline, "xlogo was never drawn"
        time.sleep(0.05)
    return logo
"""
SECTION = re.compile(r"screenshot at the failure \((\w+)\): (\S+\.png) \(\d+ bytes, \d+ ms\)")


def colors(png: Path) -> dict[str, int]:
    """Pixel counts by colour (``#RRGGBB``), as ImageMagick reads the file."""
    histogram = subprocess.run(
        ["convert", str(png), "-format", "%c", "histogram:info:-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {m[1]: int(m[0]) for m in re.findall(r"(\d+): \([^)]*\) (#[0-9A-F]{6})", histogram)}


def screenshots(result: pytest.RunResult) -> list[tuple[str, Path]]:
    return [(m[0], Path(m[1])) for m in SECTION.findall(result.stdout.str())]


def assert_shows_the_window(png: Path) -> None:
    size = subprocess.run(["identify", "-format", "%wx%h", str(png)], capture_output=True)
    assert size.stdout == b"1366x768"
    assert colors(png).get(GREEN, 0) > 30000  # most of the 300x200 window


@needs_x
@pytest.mark.parametrize("phase", ["setup", "call", "teardown"])
def test_a_failing_phase_saves_the_screen_and_names_it_in_the_report_and_junit(
    pytester: pytest.Pytester, phase: str
) -> None:
    pytester.makeconftest(
        SHOW
        + f"""
import pytest

@pytest.fixture
def window(xvfb):
    logo = show()
    if {phase!r} == "setup":
        raise RuntimeError("setup broke")
    yield
    if {phase!r} == "teardown":
        raise RuntimeError("teardown broke")
    logo.kill()
"""
    )
    pytester.makepyfile(
        f"""
def test_window(window):
    assert {phase!r} != "call", "call broke"
"""
    )
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "--run-services", f"--junitxml={junit}", "-o", "junit_logging=system-out"
    )
    outcomes = {
        "setup": {"errors": 1},
        "call": {"failed": 1},
        "teardown": {"passed": 1, "errors": 1},
    }
    result.assert_outcomes(**outcomes[phase])
    result.stdout.fnmatch_lines(["*Captured stdout of the screen of display :*"])
    result.stdout.fnmatch_lines([f"*{phase} broke*"])
    [(when, png)] = screenshots(result)
    assert when == phase and png.name.endswith(f".py_test_window-{phase}.png")
    assert png.parent.name == "xvfb-screenshots"
    assert_shows_the_window(png)
    xml = junit.read_text()
    assert f'<property name="xvfb_screenshot" value="{png}"' in xml
    assert f"screenshot at the failure ({phase}): {png}" in xml


@needs_x
def test_passing_tests_and_tests_without_the_display_get_no_screenshot(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
def test_passes(xvfb):
    assert "-fbdir" in xvfb.args

def test_fails_without_the_display():
    assert False, "no display here"
"""
    )
    result = pytester.runpytest_subprocess("--run-services", "--basetemp", "base")
    result.assert_outcomes(passed=1, failed=1)
    assert "screen of display" not in result.stdout.str()
    assert not (pytester.path / "base" / "xvfb-screenshots").exists()


@needs_x
def test_the_ini_turns_screenshots_off_and_xvfb_runs_without_fbdir(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nxvfb_screenshots = false\n")
    pytester.makepyfile(
        """
def test_fails(xvfb):
    assert "-fbdir" not in xvfb.args
    assert False, "failed on purpose"
"""
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*failed on purpose*"])
    assert "screen of display" not in result.stdout.str()


@needs_x
def test_the_ini_names_the_folder_relative_to_the_rootdir(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nxvfb_screenshots_dir = shots/x\n")
    pytester.makepyfile(
        SHOW
        + """
def test_window(xvfb_display):
    show()
    assert False
"""
    )
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(failed=1)
    [(_, png)] = screenshots(result)
    assert png.parent == pytester.path / "shots" / "x"
    assert_shows_the_window(png)


@needs_x
def test_a_capture_that_fails_is_noted_and_the_test_fails_as_it_would(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
import pytest

@pytest.fixture(scope="session")
def xvfb_resolution():
    return (640, 480, 16)
"""
    )
    pytester.makepyfile("def test_fails(xvfb):\n    assert 1 == 2, 'the real failure'\n")
    result = pytester.runpytest_subprocess("--run-services")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: the real failure*",
            "*Captured stdout of the screen of display :*",
            "no screenshot: XwdError: cannot encode a screen of depth 16 with 16 bits per pixel "
            "(visual class 4): screenshots need depth 8 or 24",
        ]
    )


@pytest.fixture
def own_xvfb(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An Xvfb started by hand, as a user's own X server: (display, Xauthority)."""
    lock_dir = private_dir(default_lock_dir())
    log = logging.getLogger("test_screenshot")
    display = get_free_display(lock_dir, log)
    xauthority = tmp_path / "Xauthority"
    server = start_xvfb(
        display, (1366, 768, 24), xauthority, functools.partial(start_service, log_dir=tmp_path)
    )
    yield display, xauthority
    server.stop()
    unlock_display(display, lock_dir, log)


@needs_x
def test_a_display_given_with_xvfb_display_is_dumped_with_xwd(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, own_xvfb: tuple[int, Path]
) -> None:
    display, xauthority = own_xvfb
    monkeypatch.setenv("XAUTHORITY", str(xauthority))
    pytester.makepyfile(
        SHOW
        + """
def test_window(xvfb, xvfb_display):
    assert xvfb is None
    show()
    assert False
"""
    )
    result = pytester.runpytest_subprocess("--xvfb-display", f":{display}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*Captured stdout of the screen of display :{display}*"])
    [(_, png)] = screenshots(result)
    assert_shows_the_window(png)


@needs_x
def test_each_xdist_worker_saves_its_own_screen(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        SHOW
        + """
import pytest

@pytest.fixture
def window(xvfb, color):
    logo = show(color)
    yield
    logo.kill()  # after the screenshot of the call
    logo.wait()

@pytest.mark.parametrize("color", ["#12ab34", "#a01b2c"])
def test_window(window):
    assert False
"""
    )
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "each")
    result.assert_outcomes(failed=4)
    shots = {png for _, png in screenshots(result)}
    assert len(shots) == 4  # two tests in each of two workers, each in its worker's folder
    for png in shots:
        counts = colors(png)
        mine, other = (GREEN, "#A01B2C") if "12ab34" in png.name else ("#A01B2C", GREEN)
        assert counts.get(mine, 0) > 30000 and other not in counts


@needs_x
@pytest.mark.parametrize("depth", [8, 24])
def test_xwd_images_encode_as_imagemagick_reads_them(tmp_path: Path, depth: int) -> None:
    lock_dir = private_dir(default_lock_dir())
    log = logging.getLogger("test_screenshot")
    display = get_free_display(lock_dir, log)
    xauthority = tmp_path / f"Xauthority-{depth}"
    server = start_xvfb(
        display, (320, 240, depth), xauthority, functools.partial(start_service, log_dir=tmp_path)
    )
    env = {"DISPLAY": f":{display}", "XAUTHORITY": str(xauthority), "PATH": "/usr/bin:/bin"}
    try:
        logo = subprocess.Popen(["xlogo", "-bg", "#12ab34", "-geometry", "200x100+0+0"], env=env)
        try:
            dump = tmp_path / "screen.xwd"
            for _ in range(1200):
                dump.write_bytes(
                    subprocess.run(["xwd", "-root"], env=env, capture_output=True).stdout
                )
                theirs = colors(Path(f"xwd:{dump}"))
                if theirs.get(GREEN, 0) > 10000:
                    break
            ours = tmp_path / "screen.png"
            ours.write_bytes(read_xwd(dump.read_bytes()).png())
            assert colors(ours) == theirs
        finally:
            logo.kill()
    finally:
        server.stop()
        unlock_display(display, lock_dir, log)
