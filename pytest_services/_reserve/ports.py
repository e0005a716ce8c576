"""TCP ports on 127.0.0.1 that no two sessions or workers on the host share.

A port is picked at random outside the kernel's ephemeral (client) range, must bind on
127.0.0.1, and is held by a byte lock in the host-wide port table until it is released or
its holder dies.  Holding any number of ports costs one file descriptor.
"""

from __future__ import annotations

import functools
import random
import socket
import time
from logging import Logger
from typing import Optional

from pytest_services._engine.paths import StrPath
from pytest_services._reserve import registry as _registry
from pytest_services.exceptions import LockError

#: Where Linux keeps the kernel's ephemeral (client) port range.
PORT_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
#: Ports below this are left to well-known services.
LOWEST_PORT = 10000
HIGHEST_PORT = 65535

PortRange = tuple[int, int]


def ephemeral_port_range() -> PortRange:
    """The kernel's ephemeral port range (the Linux default when it cannot be read)."""
    return _read_port_range(PORT_RANGE_FILE)


@functools.lru_cache(maxsize=4)
def _read_port_range(path: str) -> PortRange:
    try:
        with open(path) as range_file:
            low, high = (int(part) for part in range_file.read().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def candidate_ports(port_range: Optional[PortRange] = None) -> list[range]:
    """The port ranges handed out: ``port_range`` if given, else all but the ephemeral range.

    Where the ephemeral range leaves no port from ``LOWEST_PORT`` up (some tuned hosts and
    containers), every port from ``LOWEST_PORT`` up is used: a port must bind anyway, and
    ``port_range`` (``--services-port-range``) lets the user choose better.
    """
    if port_range is not None:
        return [range(port_range[0], port_range[1] + 1)]
    low, high = ephemeral_port_range()
    ranges = [
        range(LOWEST_PORT, min(low, HIGHEST_PORT + 1)),
        range(max(high + 1, LOWEST_PORT), HIGHEST_PORT + 1),
    ]
    ranges = [r for r in ranges if len(r)]
    return ranges or [range(LOWEST_PORT, HIGHEST_PORT + 1)]


def port_binds(port: int) -> bool:
    """Tell whether a TCP socket can bind ``127.0.0.1:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def get_free_port(
    lock_dir: StrPath,
    services_log: Logger,
    lock_resource_timeout: float = 20,
    *,
    port_range: Optional[PortRange] = None,
) -> int:
    """Reserve a port that binds on 127.0.0.1 and that no session on the host holds."""
    ranges = candidate_ports(port_range)
    total = sum(len(r) for r in ranges)
    mine = _registry.held("port", lock_dir)
    deadline = time.monotonic() + lock_resource_timeout
    tried: set[int] = set()
    while len(tried) < total - len(mine):
        index = random.randrange(total)
        for candidate in ranges:
            if index < len(candidate):
                port = candidate[index]
                break
            index -= len(candidate)
        if port in mine or port in tried:
            continue
        if port_binds(port) and _registry.take("port", port, lock_dir):
            services_log.debug("reserved port %d", port)
            return port
        tried.add(port)
        if time.monotonic() > deadline:
            raise LockError(
                f"No free port found in {_describe(ranges)} within {lock_resource_timeout:g} s "
                f"({len(tried)} tried)."
            )
    raise LockError(
        f"Every port in {_describe(ranges)} is reserved or does not bind "
        f"({len(mine)} of them by this process). Choose a larger range with "
        "--services-port-range=LOW-HIGH (ini: services_port_range)."
    )


def _describe(ranges: list[range]) -> str:
    return ", ".join(f"{r.start}-{r.stop - 1}" for r in ranges)


def unlock_port(port: int, lock_dir: StrPath, services_log: Logger) -> None:
    """Release a port reserved by :func:`get_free_port`."""
    if _registry.drop("port", port, lock_dir):
        services_log.debug("released port %d", port)
