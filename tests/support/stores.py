"""The session store opened on a test's Redis, as the app opens it (`open_stores`), with
small defaults the tests override by name."""

from __future__ import annotations

from redis.asyncio import Redis, RedisCluster

from resolvers.services.stores import Stores, open_stores

PROMPT = "be brief"


def stores_on(
    redis: Redis | RedisCluster,
    *,
    prompt: str = PROMPT,
    window: int = 40,
    ttl: int = 0,
    lock: float = 20,
) -> Stores:
    return open_stores(
        redis,
        default_system_prompt=prompt,
        history_window=window,
        ttl_seconds=ttl,
        lock_seconds=lock,
    )
