"""Every key of a Redis database as it is, to show that a step changed nothing."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis


async def snapshot(redis: Redis) -> dict[str, tuple[str, Any, bool]]:
    """Each key's type, serialized value (DUMP) and whether it has an expiry."""
    found: dict[str, tuple[str, Any, bool]] = {}
    async for key in redis.scan_iter(count=1000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        kind = await redis.type(name)
        dumped = await redis.dump(name)
        expires = await redis.pttl(name) > 0
        found[name] = (str(kind), dumped, expires)
    return found
