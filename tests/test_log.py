"""``services_log`` is a plain logger; ``dont_capture`` and ``remove_handlers`` still work."""

from __future__ import annotations

import pytest


def test_services_log_reaches_caplog_and_live_logging(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import logging

        def test_log(services_log, caplog, port_getter):
            assert services_log.name == "pytest_services.local"
            with caplog.at_level(logging.DEBUG, logger="pytest_services"):
                port = port_getter()
            assert f"reserved port {port}" in caplog.text
        """
    )
    pytester.runpytest_subprocess("-p", "no:xdist").assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("-p", "no:xdist", "--log-cli-level=DEBUG")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*DEBUG*reserved port *"])


def test_dont_capture_writes_past_pytest_capture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_services.log import dont_capture

        def test_print(request):
            print("captured line")
            with dont_capture(request):
                print("UNCAPTURED LINE")
            print("captured again")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    result.assert_outcomes(passed=1)
    assert "UNCAPTURED LINE" in result.stdout.str()
    assert "captured line" not in result.stdout.str()


def test_remove_handlers_keeps_files_and_pytest_handlers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import logging, sys
        from pytest_services.log import remove_handlers

        def test_remove(caplog, tmp_path):
            console = logging.StreamHandler(sys.stderr)
            file_handler = logging.FileHandler(tmp_path / "log.txt")
            logging.root.addHandler(console)
            logging.root.addHandler(file_handler)
            try:
                remove_handlers()
                assert console not in logging.root.handlers
                assert file_handler in logging.root.handlers
                logging.getLogger("app").warning("still captured")
                assert "still captured" in caplog.text
            finally:
                logging.root.removeHandler(file_handler)
                file_handler.close()
        """
    )
    pytester.runpytest_subprocess("-p", "no:xdist").assert_outcomes(passed=1)
