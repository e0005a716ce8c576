"""A private memcached for the tests: ``memcached_client`` talks to it over a unix socket.

Every session (and every pytest-xdist worker) gets its own server, so tests running in
parallel never see each other's keys.  ``memcached_clean`` empties it before a test.
"""

from __future__ import annotations

from typing import Any


def cached_square(client: Any, number: int) -> tuple[int, bool]:
    """Return ``number ** 2`` and whether it came from the cache."""
    key = f"square:{number}"
    value = client.get(key)
    if value is not None:
        return value, True
    value = number**2
    client.set(key, value, time=60)
    return value, False


def test_second_call_is_served_from_cache(memcached_client: Any, memcached_clean: None) -> None:
    assert cached_square(memcached_client, 12) == (144, False)
    assert cached_square(memcached_client, 12) == (144, True)


def test_each_test_starts_with_an_empty_cache(memcached_client: Any, memcached_clean: None) -> None:
    assert memcached_client.get("square:12") is None
    memcached_client.set_multi({"a": 1, "b": 2})
    assert memcached_client.get_multi(["a", "b", "c"]) == {"a": 1, "b": 2}
