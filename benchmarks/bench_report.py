"""Per-test cost of the report hooks (service sections, dead-service checks) when all pass.

An inner pytest session runs ``--tests`` (1000) passing tests while three services started
through ``watcher_getter`` and the session's Xvfb run for the whole session.  It runs with
the hooks of ``pytest_services._report`` and the screenshot hook, and without them
(``-p no:pytest_services._report -o xvfb_screenshots=false``), in
alternating order, ``--rounds`` times each.  The inner ``conftest.py`` adds up the time
spent inside the module's hooks (it registers a timing stand-in for them), and times the
test loop alone (``pytest_runtestloop``), so interpreter start-up and collection do not
count.  The figure that matters is the first: the median time in the hooks divided by the
number of tests, with a target under 50 µs; the screenshot hook, for tests that use the
display and pass, is timed the same way.  The difference of the test loops, on versus
off, is printed too; on a busy machine its noise is larger than the hooks' cost.

Run it with the interpreter where this project is installed::

    python benchmarks/bench_report.py [--tests N] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import _common

#: The most a passing test may cost with the hooks, in seconds.
TARGET = 50e-6

INNER_CONFTEST = """
    import json, os, sys, time

    import pytest

    SERVICE = [sys.executable, "-c", "import time; time.sleep(3600)"]


    def start(watcher_getter, request):
        return watcher_getter(SERVICE[0], SERVICE[1:], request=request, grace=0)


    @pytest.fixture(scope="session")
    def first(watcher_getter, request):
        return start(watcher_getter, request)


    @pytest.fixture(scope="session")
    def second(watcher_getter, request):
        return start(watcher_getter, request)


    @pytest.fixture(scope="session")
    def third(watcher_getter, request):
        return start(watcher_getter, request)


    @pytest.fixture(scope="session", autouse=True)
    def services(first, second, third, xvfb):
        return first, second, third, xvfb


    IN_HOOKS = [0.0]
    IN_SCREENSHOTS = [0.0]


    class TimedScreenshots:
        # Stands in for the screenshot hook and adds up the time spent in it.

        def __init__(self, inner):
            self.inner = inner

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(self, item, call):
            started = time.perf_counter()
            inner = self.inner.pytest_runtest_makereport(item, call)
            next(inner)
            IN_SCREENSHOTS[0] += time.perf_counter() - started
            outcome = yield
            started = time.perf_counter()
            try:
                inner.send(outcome)
            except StopIteration:
                pass
            IN_SCREENSHOTS[0] += time.perf_counter() - started

        def pytest_sessionfinish(self):
            self.inner.pytest_sessionfinish()


    class Timed:
        # Stands in for the report module's hooks and adds up the time spent in them.

        def __init__(self, inner):
            self.inner = inner

        def _time(self, hook, *args):
            # The hooks moved between the report module's classes over time: each may lack some.
            if hook is None:
                return None
            started = time.perf_counter()
            try:
                return hook(*args)
            finally:
                IN_HOOKS[0] += time.perf_counter() - started

        def _hook(self, name):
            return getattr(self.inner, name, None)

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtest_setup(self, item):
            self._time(self._hook("pytest_runtest_setup"), item)

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtest_teardown(self, item):
            self._time(self._hook("pytest_runtest_teardown"), item)

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(self, item, call):
            inner = self._time(self._hook("pytest_runtest_makereport"), item, call)
            if inner is None:
                yield
                return
            self._time(next, inner)
            outcome = yield
            try:
                self._time(inner.send, outcome)
            except StopIteration:
                pass

        def pytest_runtest_logreport(self, report):
            self._time(self._hook("pytest_runtest_logreport"), report)

        def pytest_terminal_summary(self, terminalreporter):
            hook = self._hook("pytest_terminal_summary")
            if hook is not None:
                hook(terminalreporter)

        def pytest_unconfigure(self):
            hook = self._hook("pytest_unconfigure")
            if hook is not None:
                hook()


    WRAPPERS = {
        "services-report": Timed,
        "services-report-summary": Timed,
        "services-screenshots": TimedScreenshots,
    }


    def wrap(manager, name):
        plugin = manager.get_plugin(name)
        if plugin is not None and not isinstance(plugin, (Timed, TimedScreenshots)):
            manager.unregister(plugin)
            manager.register(WRAPPERS[name](plugin), name)


    def pytest_plugin_registered(plugin, manager):
        # The plugin registers its per-test hooks when the first service starts.
        name = manager.get_name(plugin)
        if name in WRAPPERS and not isinstance(plugin, (Timed, TimedScreenshots)):
            wrap(manager, name)


    def pytest_sessionstart(session):
        # Earlier versions registered the hooks in their pytest_configure, after ours.
        for name in WRAPPERS:
            wrap(session.config.pluginmanager, name)


    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtestloop(session):
        started = time.perf_counter()
        yield
        elapsed = time.perf_counter() - started
        plugin = session.config.pluginmanager.get_plugin("services-report") is not None
        with open(os.environ["BENCH_RESULT"], "w") as result:
            json.dump({"seconds": elapsed, "hooks": IN_HOOKS[0], "report_hooks": plugin,
                   "screenshots": IN_SCREENSHOTS[0]}, result)
"""

INNER_TEST = """
    import pytest


    @pytest.mark.parametrize("n", range({tests}))
    def test_passes(n, services):
        assert all(service.poll() is None for service in services)
"""


def run_session(folder: Path, with_hooks: bool) -> tuple[float, float, float]:
    """Run the inner session once; return the seconds of its test loop, of the report
    hooks and of the screenshot hook."""
    result = folder / "result.json"
    command = [*_common.inner_pytest_command(sys.executable, folder), "--run-services"]
    if not with_hooks:
        command += ["-p", "no:pytest_services._report", "-o", "xvfb_screenshots=false"]
    completed = subprocess.run(
        command,
        env=_common.inner_env({"BENCH_RESULT": str(result)}),
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"inner session failed:\n{completed.stdout}\n{completed.stderr}")
    data = json.loads(result.read_text())
    if data["report_hooks"] != with_hooks:
        raise SystemExit(f"the report hooks were {'off' if with_hooks else 'on'} unexpectedly")
    return float(data["seconds"]), float(data["hooks"]), float(data["screenshots"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=1000, help="passing tests (default 1000)")
    parser.add_argument("--rounds", type=int, default=7, help="sessions each way (default 7)")
    args = parser.parse_args()
    if args.tests < 1 or args.rounds < 1:
        parser.error("--tests and --rounds must be at least 1")
    _common.check_new_python()

    folder = _common.new_scratch_dir("bench-report-")
    try:
        _common.write_files(
            folder,
            {
                "pytest.ini": _common.INNER_INI,
                "conftest.py": INNER_CONFTEST,
                "test_many.py": INNER_TEST.format(tests=args.tests),
            },
        )
        timings: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
        for number in range(args.rounds):
            # Alternate the order so that neither side always runs on a warmer system.
            order = (True, False) if number % 2 == 0 else (False, True)
            for with_hooks in order:
                timings[with_hooks].append(run_session(folder, with_hooks))
                _common.log(f"round {number + 1}: hooks {'on' if with_hooks else 'off'} done")
    finally:
        _common.remove_dir(folder)

    hooks = _common.median(t[1] for t in timings[True]) / args.tests
    shots = _common.median(t[2] for t in timings[True]) / args.tests
    on, off = (_common.median(t[0] for t in timings[flag]) for flag in (True, False))
    loop = (on - off) / args.tests
    print(
        f"{args.tests} passing tests, 3 services and Xvfb, "
        f"median of {args.rounds} sessions each way"
    )
    _common.print_table(
        ["", "hooks on", "hooks off", "per test", "target", ""],
        [
            [
                "time in the report hooks",
                _common.ms(hooks * args.tests),
                "-",
                f"{hooks * 1e6:.1f} µs",
                f"< {TARGET * 1e6:.0f} µs",
                "ok" if hooks < TARGET else "MISSED",
            ],
            [
                "time in the screenshot hook",
                _common.ms(shots * args.tests),
                "-",
                f"{shots * 1e6:.1f} µs",
                f"< {TARGET * 1e6:.0f} µs",
                "ok" if shots < TARGET else "MISSED",
            ],
            ["test loop", _common.ms(on), _common.ms(off), f"{loop * 1e6:+.1f} µs", "", ""],
        ],
    )
    return 0 if hooks < TARGET and shots < TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
