"""The bill of what services cost, and tests that use no service paying nothing for hooks."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("memcached") is None or shutil.which("redis-server") is None,
    reason="memcached and redis-server are needed: apt-get install memcached redis-server",
)

TESTS = """
import pytest

@pytest.mark.parametrize("i", range(5))
def test_memcached(i, memcached, memcached_clean):
    pass

@pytest.mark.parametrize("i", range(3))
def test_redis(i, redis, redis_clean):
    pass

def test_plain():
    pass
"""

RUN = ("--run-services", "-p", "no:cacheprovider")


def test_one_line_without_verbose_and_a_table_with_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines(
        [
            "*- services: memcached started 1x in *.?? s, 5 resets in *.?? s; redis-server "
            "started 1x in *.?? s, 3 resets in *.?? s (-v: the bill) -*",
        ]
    )
    assert "services bill" not in result.stdout.str()

    result = pytester.runpytest_subprocess(*RUN, "-v")
    result.stdout.fnmatch_lines(
        [
            "*= services bill =*",
            "service * starts * start * data directory * prepared states * resets * reset time "
            "* per reset",
            "memcached * 1 * 0.??? s * - * - * 5 * 0.??? s * ?.?? ms",
            "redis-server * 1 * 0.??? s * - * - * 3 * 0.??? s * ?.?? ms",
        ]
    )


def test_no_bill_when_no_service_ran(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess(*RUN, "-v")
    result.assert_outcomes(passed=1)
    assert "services" not in result.stdout.str().split("test_plain PASSED")[-1]


def test_json_file_and_junit_properties(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TESTS)
    pytester.makeini("[pytest]\nservices_bill_json = reports/bill.json\n")
    result = pytester.runpytest_subprocess(*RUN, "--junitxml=junit.xml")
    result.assert_outcomes(passed=9)
    bill = json.loads((pytester.path / "reports" / "bill.json").read_text())
    assert bill["workers"] == {}
    assert sorted(bill["services"]) == ["memcached", "redis-server"]
    memcached = bill["services"]["memcached"]
    assert (memcached["starts"], memcached["resets"]) == (1, 5)
    assert 0 < memcached["start_seconds"] < 20 and 0 < memcached["reset_seconds"] < 20
    assert memcached["cache_hits"] == memcached["states_built"] == 0
    suite = ET.parse(pytester.path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["pytest_services.memcached.starts"] == "1"
    assert properties["pytest_services.redis-server.resets"] == "3"
    assert float(properties["pytest_services.memcached.reset_seconds"] or "0") > 0


def test_xdist_controller_adds_up_its_workers(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(TESTS)
    pytester.makeini("[pytest]\nservices_bill_json = bill.json\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "-v")
    result.assert_outcomes(passed=9)
    bill = json.loads((pytester.path / "bill.json").read_text())
    # A worker that started no service (it ran only test_plain) has nothing to bill.
    assert bill["workers"] and set(bill["workers"]) <= {"gw0", "gw1"}
    resets = sum(w.get("memcached", {}).get("resets", 0) for w in bill["workers"].values())
    assert resets == bill["services"]["memcached"]["resets"] == 5
    starts = [w["memcached"]["starts"] for w in bill["workers"].values() if "memcached" in w]
    assert sum(starts) == bill["services"]["memcached"]["starts"]
    result.stdout.fnmatch_lines(
        [
            "*= services bill =*",
            "all workers added up, then each worker:",
            "service *",
            "memcached *",
            "*gw?: *",
        ]
    )


def test_per_test_hooks_wait_for_the_first_service(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        SEEN = []

        def registered(config):
            names = ("services-report", "services-screenshots", "services-report-summary")
            return sorted(n for n in names if config.pluginmanager.get_plugin(n) is not None)

        @pytest.fixture
        def hooks(request):
            return registered(request.config)

        def pytest_sessionfinish(session):
            print("\\nat the end:", registered(session.config))
        """
    )
    pytester.makepyfile(
        """
        def test_plain(hooks, request):
            assert hooks == []
            assert "_mysql_clean_when_asked" not in request.fixturenames

        def test_with_memcached(memcached, hooks):
            assert hooks == ["services-report", "services-report-summary"]
        """
    )
    result = pytester.runpytest_subprocess(*RUN, "-s")
    result.assert_outcomes(passed=2)
    # A line, not a pattern: its brackets would be a character range to fnmatch.
    assert "at the end: ['services-report', 'services-report-summary']" in result.outlines
