"""Run a real X client on the session's own Xvfb.

    pytest examples/test_demo_xvfb.py --run-services
    pytest examples/test_demo_xvfb.py -n 2       # each worker gets its own display

``xvfb`` starts the server and exports ``DISPLAY`` and ``XAUTHORITY``, so any X program
the test starts finds the screen and is let in, without being told anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional

import pytest

from pytest_services.process import ServiceProcess


@pytest.fixture
def xdpyinfo() -> str:
    path = shutil.which("xdpyinfo")
    if path is None:
        pytest.skip("xdpyinfo is missing: apt-get install x11-utils")
    return path


def test_an_x_client_sees_the_virtual_screen(
    xvfb: Optional[ServiceProcess], xvfb_display: int, xdpyinfo: str
) -> None:
    if xvfb is None:
        pytest.skip("services are off: run with --run-services or -n 2")
    assert os.environ["DISPLAY"] == f":{xvfb_display}"

    info = subprocess.run([xdpyinfo], capture_output=True, text=True, check=True).stdout

    assert f"name of display:    :{xvfb_display}" in info
    assert "dimensions:    1366x768 pixels" in info
    assert "depth of root window:    24 planes" in info
