"""A headed Chromium driven through Selenium on the session's Xvfb, alone and under xdist:
the page must be on the X screen itself, as the server's own framebuffer shows."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

needs_chromium = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER) and shutil.which("Xvfb")),
    reason="needs Chromium, its driver and Xvfb: apt-get install chromium chromium-driver xvfb",
)

#: The README's browser fixture, and a test that finds its page's colour on the X screen.
CONFTEST = f"""
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service


@pytest.fixture
def browser(xvfb, tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = {CHROMIUM!r}
    for flag in ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-position=0,0", "--window-size=800,600",
                 f"--user-data-dir={{tmp_path / 'chromium'}}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service({CHROMEDRIVER!r}), options=options)
    yield driver
    driver.quit()
"""

TEST = """
import json, os, pathlib, time

from pytest_services import _screenshot


def screen_pixels(display, bgrx):
    # The server's own framebuffer (Xvfb -fbdir): count the pixels of one colour.
    folder = _screenshot.SCREENS[display]
    return pathlib.Path(folder, _screenshot.SCREEN_FILE).read_bytes().count(bgrx)


def test_page_is_on_the_x_screen(browser, xvfb_display, worker_id, tmp_path):
    red, green, blue = (0x12, 0xAB, 0x34) if worker_id != "gw1" else (0xA0, 0x1B, 0x2C)
    page = tmp_path / "page.html"
    page.write_text(
        f"<html><body style='margin:0;background:rgb({red},{green},{blue})'>"
        f"<h1 id='title'>worker {worker_id}</h1></body></html>"
    )
    browser.get(page.as_uri())
    assert browser.find_element("id", "title").text == f"worker {worker_id}"
    pixel = bytes((blue, green, red))  # the fourth byte of each pixel is padding
    deadline = time.monotonic() + 60
    while (count := screen_pixels(xvfb_display, pixel)) < 200_000:
        assert time.monotonic() < deadline, f"only {count} pixels of the page on the screen"
        time.sleep(0.1)
    other = bytes((0x2C, 0x1B, 0xA0)) if worker_id != "gw1" else bytes((0x34, 0xAB, 0x12))
    record = {"worker": worker_id, "display": os.environ["DISPLAY"], "pixels": count,
              "other": screen_pixels(xvfb_display, other)}
    pathlib.Path(os.environ["RECORDS"], worker_id).write_text(json.dumps(record))
"""


@needs_chromium
@pytest.mark.parametrize("workers", [None, 2], ids=["plain", "xdist"])
def test_a_headed_chromium_draws_its_page_on_the_session_xvfb(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    workers: int | None,
) -> None:
    pytest.importorskip("selenium", reason="needs selenium: pip install selenium")
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv("RECORDS", str(records))
    # Selenium must not look for a driver or a browser anywhere: both paths are given.
    monkeypatch.setenv("SE_MANAGER_PATH", str(tmp_path / "no-selenium-manager"))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TEST)
    if workers is None:
        result = pytester.runpytest_subprocess("--run-services")
        expected = ["local"]
    else:
        result = pytester.runpytest_subprocess("-n", str(workers), "--dist", "each")
        expected = ["gw0", "gw1"]
    result.assert_outcomes(passed=len(expected))
    found = [json.loads(path.read_text()) for path in sorted(records.iterdir())]
    assert [record["worker"] for record in found] == expected
    assert len({record["display"] for record in found}) == len(expected)
    for record in found:
        # Most of the 800x600 window, minus tabs and address bar; nothing of the other page.
        assert record["pixels"] >= 200_000 and record["other"] == 0
