"""The bill: what the session's services cost, at the end of the session.

Per service: its starts and their seconds, whether its data directory came from the cache
(hit) or was built (miss), prepared states reused or built and their seconds, and the
number and total time of per-test resets -- the figures of
:mod:`pytest_services._engine.ledger`.  The terminal summary shows one line, or with
``-v`` a table; JUnit XML gets them as properties of the test suite; the ini option
``services_bill_json`` names a JSON file to write them to.  Under pytest-xdist each worker
sends its figures to the controller, which shows them added up and per worker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import pytest

from pytest_services._engine import ledger
from pytest_services._engine.ledger import Account
from pytest_services._options import verbosity

#: The ini option naming the JSON file, and the key of the figures in ``workeroutput``.
JSON_OPTION = "services_bill_json"
WORKER_KEY = "pytest_services_bill"
#: The prefix of the JUnit XML properties.
PROPERTY_PREFIX = "pytest_services"
#: The figures the JUnit properties and the JSON file carry, in this order.
FIELDS = tuple(Account().as_dict())

Figures = dict[str, Account]


class Bill:
    """Collects this session's figures, and its workers' under pytest-xdist."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.before = ledger.accounts()
        self.workers: dict[str, Figures] = {}
        self._done: Optional[tuple[Figures, dict[str, Figures]]] = None

    def own(self) -> Figures:
        return ledger.since(self.before)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", None) or {}
        figures = output.get(WORKER_KEY)
        if figures:
            worker = str(output.get("workerid") or node.gateway.id)
            self.workers[worker] = {
                name: Account.from_dict(account) for name, account in figures.items()
            }

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes its file
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        own = self.own()
        if hasattr(self.config, "workerinput"):
            self.config.workeroutput[WORKER_KEY] = {  # type: ignore[attr-defined]
                name: account.as_dict() for name, account in own.items()
            }
            return
        parts = dict(self.workers)
        if own and parts:
            parts["controller"] = own
        total = ledger.add_up(parts) if parts else own
        self._done = total, parts
        if total:
            _junit_properties(self.config, total, parts)
        path = json_path(self.config)
        if path is not None:
            _write_json(path, total, parts)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self._done is None or not self._done[0]:
            return
        total, parts = self._done
        if verbosity(terminalreporter.config) < 1:
            terminalreporter.write_sep("-", f"services: {one_line(total)} (-v: the bill)")
            return
        terminalreporter.section("services bill")
        for line in table(total, parts):
            terminalreporter.line(line)


def one_line(figures: Figures) -> str:
    """``memcached started 1x 0.01 s, 200 resets 0.04 s; mariadbd ...``."""
    return "; ".join(f"{name} {', '.join(_phrases(a))}" for name, a in sorted(figures.items()))


def _phrases(account: Account) -> list[str]:
    phrases = []
    if account.starts:
        phrases.append(f"started {account.starts}x in {account.start_seconds:.2f} s")
    if account.cache_hits or account.cache_misses:
        phrases.append(_cache(account))
    if account.states_built or account.states_reused:
        phrases.append(_states(account))
    if account.resets:
        plural = "" if account.resets == 1 else "s"
        phrases.append(f"{account.resets} reset{plural} in {account.reset_seconds:.2f} s")
    return phrases


def _cache(account: Account) -> str:
    if not (account.cache_hits or account.cache_misses):
        return "-"
    parts = [
        f"{n} {word}"
        for n, word in ((account.cache_hits, "hit"), (account.cache_misses, "miss"))
        if n
    ]
    return f"{', '.join(parts)} in {account.cache_seconds:.2f} s"


def _states(account: Account) -> str:
    if not (account.states_built or account.states_reused):
        return "-"
    parts = [
        f"{n} {word}"
        for n, word in ((account.states_reused, "reused"), (account.states_built, "built"))
        if n
    ]
    return f"{', '.join(parts)} in {account.state_seconds:.2f} s"


def table(total: Figures, parts: dict[str, Figures]) -> list[str]:
    """The lines of the bill: one row per service, then per worker and service."""
    headers = [
        "service",
        "starts",
        "start",
        "data directory",
        "prepared states",
        "resets",
        "reset time",
        "per reset",
    ]
    rows = [_row(name, account) for name, account in sorted(total.items())]
    for worker, figures in sorted(parts.items()):
        rows += [_row(f"  {worker}: {name}", account) for name, account in sorted(figures.items())]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    if parts:
        lines.insert(0, "all workers added up, then each worker:")
    return lines


def _row(label: str, account: Account) -> list[str]:
    resets = account.resets
    return [
        label,
        str(account.starts),
        f"{account.start_seconds:.3f} s" if account.starts else "-",
        _cache(account),
        _states(account),
        str(resets),
        f"{account.reset_seconds:.3f} s" if resets else "-",
        f"{account.reset_seconds / resets * 1e3:.2f} ms" if resets else "-",
    ]


def _junit_properties(config: pytest.Config, total: Figures, parts: dict[str, Figures]) -> None:
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - pytest moved it
        return
    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    for prefix, figures in [
        ("", total),
        *((f"{worker}.", f) for worker, f in sorted(parts.items())),
    ]:
        for name, account in sorted(figures.items()):
            values = account.as_dict()
            for field in FIELDS:
                value = values[field]
                text = f"{value:.6f}" if isinstance(value, float) else str(value)
                xml.add_global_property(f"{PROPERTY_PREFIX}.{prefix}{name}.{field}", text)


def json_path(config: pytest.Config) -> Optional[Path]:
    """The file that ``services_bill_json`` names (relative to the rootdir), if any."""
    value = str(config.getini(JSON_OPTION) or "").strip()
    return Path(config.rootpath, os.path.expanduser(value)) if value else None


def _write_json(path: Path, total: Figures, parts: dict[str, Figures]) -> None:
    document = {
        "services": {name: account.as_dict() for name, account in sorted(total.items())},
        "workers": {
            worker: {name: account.as_dict() for name, account in sorted(figures.items())}
            for worker, figures in sorted(parts.items())
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        JSON_OPTION,
        "write what the services cost (starts, caches, prepared states, resets) to this JSON "
        "file at the end of the session, relative to the rootdir (default: none)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(Bill(config), "services-bill")
