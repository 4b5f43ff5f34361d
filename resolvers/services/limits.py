"""Rate limits kept in Redis, so they hold across every process sharing it.

Fixed one-minute windows: one pipelined `INCR` + `EXPIRE` per check. A window's key
carries its number, so a burst at a window's edge can reach twice the limit for a
moment; for abuse control that is the accepted price of one round trip per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis, RedisCluster

from resolvers.services import metrics
from resolvers.services.errors import RateLimited
from resolvers.services.keys import address_rate_key, turn_rate_key

WINDOW_SECONDS = 60


class RateLimiter:
    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        per_address: int,
        turns_per_session: int,
        exempt: frozenset[str],
    ) -> None:
        self._redis = redis
        self._per_address = per_address
        self._per_session = turns_per_session
        self._exempt = exempt

    def exempt(self, address: str | None) -> bool:
        return address is None or address in self._exempt

    async def check_address(self, address: str | None) -> None:
        """Count one request from `address`; RateLimited past the limit."""
        if self._per_address and not self.exempt(address):
            await self._hit(
                lambda window: address_rate_key(address, window),
                self._per_address,
                "requests from your address",
                name="address",
            )

    async def check_turn(self, session_id: str, address: str | None) -> None:
        """Count one turn on the session (a valid id: the key shares the session's slot)."""
        if self._per_session and not self.exempt(address):
            await self._hit(
                lambda window: turn_rate_key(session_id, window),
                self._per_session,
                "turns on this session",
                name="turns",
            )

    async def _hit(self, key_of: Callable[[int], str], limit: int, what: str, *, name: str) -> None:
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        key = key_of(window)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS * 2)
            count, _ = await pipe.execute()
        if int(count) > limit:
            metrics.RATE_LIMITED.labels(name).inc()
            retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
            raise RateLimited(
                f"too many {what}: at most {limit} a minute; retry in {retry_after} s",
                retry_after=retry_after,
            )
