"""Options, their ini twins, the report header, and the fixtures the plugin registers."""

from __future__ import annotations

import pytest

RUN_SERVICES_PROBE = """
    def test_probe(run_services):
        print(f"RUN_SERVICES={run_services!r}")
"""


@pytest.mark.parametrize(
    ("args", "ini", "expected"),
    [
        ((), "", "False"),
        (("--run-services",), "", "True"),
        ((), "[pytest]\nrun_services = true\n", "True"),
        ((), "[pytest]\nrun_services = false\n", "False"),
        (("--run-services",), "[pytest]\nrun_services = false\n", "True"),
    ],
    ids=["default", "cli", "ini-true", "ini-false", "cli-beats-ini"],
)
def test_run_services_sources(
    pytester: pytest.Pytester, args: tuple[str, ...], ini: str, expected: str
) -> None:
    if ini:
        pytester.makeini(ini)
    pytester.makepyfile(RUN_SERVICES_PROBE)
    result = pytester.runpytest_subprocess("-s", *args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*RUN_SERVICES={expected}*"])


def test_run_services_false_with_xdist_installed_but_unused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(RUN_SERVICES_PROBE)
    result = pytester.runpytest_subprocess("-s", "-p", "xdist", "-n", "0")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*RUN_SERVICES=False*"])


def test_run_services_true_in_xdist_worker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_probe(run_services, worker_id):
            assert run_services is True
            assert worker_id.startswith("gw")
        """
    )
    result = pytester.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=1)


def test_run_services_overridden_in_conftest(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def run_services():
            return True
        """
    )
    pytester.makepyfile(RUN_SERVICES_PROBE)
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*RUN_SERVICES=True*"])


@pytest.mark.slow
def test_xvfb_display_option_cli_and_ini(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_services.plugin import xvfb_display_option

        def test_probe(request):
            print(f"DISPLAY_OPTION={xvfb_display_option(request.config)!r}")
        """
    )
    result = pytester.runpytest_subprocess("-s", "--xvfb-display", ":42")
    result.stdout.fnmatch_lines(["*DISPLAY_OPTION=42*"])
    pytester.makeini("[pytest]\nxvfb_display = 43\n")
    result = pytester.runpytest_subprocess("-s")
    result.stdout.fnmatch_lines(["*DISPLAY_OPTION=43*"])
    result = pytester.runpytest_subprocess("-s", "--xvfb-display", "44")
    result.stdout.fnmatch_lines(["*DISPLAY_OPTION=44*"])
    result = pytester.runpytest_subprocess("-s", "--xvfb-display", ":45.0")  # with a screen
    result.stdout.fnmatch_lines(["*DISPLAY_OPTION=45*"])


@pytest.mark.slow
def test_port_range_option_cli_and_ini(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_probe(port_getter):
            ports = [port_getter() for _ in range(30)]
            print(f"PORTS={min(ports)}-{max(ports)}")
        """
    )
    result = pytester.runpytest_subprocess("-s", "--services-port-range=20000-20040")
    result.stdout.fnmatch_lines(["*PORTS=200[0-4]?-200[0-4]?*"])
    pytester.makeini("[pytest]\nservices_port_range = 21000-21040\n")
    result = pytester.runpytest_subprocess("-s")
    result.stdout.fnmatch_lines(["*PORTS=210[0-4]?-210[0-4]?*"])
    result = pytester.runpytest_subprocess("-s", "--services-port-range", "22000 - 22040")
    result.stdout.fnmatch_lines(["*PORTS=220[0-4]?-220[0-4]?*"])


@pytest.mark.parametrize("value", ["30000", "3000-2000", "0-100", "20000-70000", "a-b"])
@pytest.mark.parametrize("source", ["cli", "ini"])
def test_bad_port_range_is_a_usage_error(
    pytester: pytest.Pytester, source: str, value: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    if source == "cli":
        result = pytester.runpytest_subprocess(f"--services-port-range={value}")
    else:
        pytester.makeini(f"[pytest]\nservices_port_range = {value}\n")
        result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*Invalid port range '{value}': give LOW-HIGH with 1 <= LOW <= HIGH <= 65535*"]
    )


@pytest.mark.parametrize("source", ["cli", "ini"])
def test_bad_xvfb_display_is_a_usage_error(pytester: pytest.Pytester, source: str) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    if source == "cli":
        result = pytester.runpytest_subprocess("--xvfb-display", "screen")
    else:
        pytester.makeini("[pytest]\nxvfb_display = screen\n")
        result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*Invalid X display 'screen': give a display number as ':N', ':N.S' or 'N'*"]
    )


def test_report_header_when_verbose(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    quiet = pytester.runpytest_subprocess()
    assert "services:" not in quiet.stdout.str()
    result = pytester.runpytest_subprocess(
        "-v", "--run-services", "--xvfb-display", ":7", "--services-port-range=20000-29999"
    )
    result.stdout.fnmatch_lines(
        [
            "services: started by --run-services",
            "services folders: disk *, memory *, locks *pytest-services-locks-*, "
            "host-wide locks /tmp *",
            "services X display: :7 (no Xvfb started)",
            "services ports: 20000-29999",
        ]
    )
    result = pytester.runpytest_subprocess("-v")
    result.stdout.fnmatch_lines(["services: not started (use --run-services or pytest-xdist)"])


CORE_FIXTURES = [
    "run_services",
    "worker_id",
    "slave_id",
    "session_id",
    "watcher_getter",
    "root_dir",
    "base_dir",
    "temp_dir",
    "memory_root_dir",
    "memory_base_dir",
    "memory_temp_dir",
    "lock_dir",
    "run_dir",
    "port_getter",
    "display_getter",
    "lock_resource_timeout",
    "services_log",
    "memcached",
    "memcached_socket",
    "memcached_connection",
    "do_memcached_clean",
    "memcached_client",
    "memcached_clean",
    "mysql",
    "mysql_watcher",
    "mysql_database",
    "mysql_database_name",
    "mysql_database_getter",
    "mysql_connection",
    "mysql_socket",
    "mysql_pid",
    "mysql_data_dir",
    "mysql_defaults_file",
    "mysql_base_dir",
    "mysql_system_database",
    "mysql_init",
    "mysql_clean",
    "do_mysql_clean",
    "mysql_url",
    "redis",
    "redis_socket",
    "redis_url",
    "redis_client",
    "redis_args",
    "do_redis_clean",
    "redis_clean",
    "shared_service",
    "xvfb",
    "xvfb_display",
    "xvfb_resolution",
]


def test_fixtures_are_listed_with_docstrings(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:xdist")
    out = result.stdout.str()
    for name in CORE_FIXTURES:
        result.stdout.fnmatch_lines([f"{name} *", "    ?*"])
        assert f"{name} [session scope] -- " in out or f"{name} -- " in out, name
    assert "no docstring available" not in out.split("fixtures defined from pytest_services")[-1]


def test_plugin_registered_by_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--trace-config", "-p", "no:xdist")
    result.stdout.fnmatch_lines(["*pytest-services*pytest_services*plugin*"])
