"""A private Redis for the tests: ``redis_client`` talks to it over a unix socket.

Every session (and every pytest-xdist worker) gets its own server, in memory and with
nothing persisted, so tests running in parallel never see each other's keys.
``redis_clean`` empties it before a test; ``redis_url`` is what other clients take.
"""

from __future__ import annotations

from typing import Any


def allow(client: Any, user: str, limit: int) -> bool:
    """A fixed-window rate limiter: true while ``user`` made at most ``limit`` calls."""
    key = f"calls:{user}"
    calls = client.incr(key)
    if calls == 1:
        client.expire(key, 60)
    return bool(calls <= limit)


def test_rate_limiter_counts_per_user(redis_client: Any, redis_clean: None) -> None:
    assert [allow(redis_client, "ann", 2) for _ in range(3)] == [True, True, False]
    assert allow(redis_client, "bob", 2)


def test_each_test_starts_with_an_empty_server(redis_client: Any, redis_clean: None) -> None:
    assert redis_client.dbsize() == 0


def test_the_url_serves_other_clients(redis_url: str, redis_client: Any) -> None:
    import redis

    other = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        redis_client.set("greeting", "hello")
        assert other.get("greeting") == "hello"
    finally:
        other.close()
