"""Rate limits and quotas kept in Redis, so they hold across every process sharing it.

Two kinds. Per client address (RATE_LIMIT_PER_MINUTE requests, and
RATE_LIMIT_TURNS_PER_MINUTE turns on one session), which RATE_LIMIT_EXEMPT lifts for
trusted addresses. And per identity: a user wherever they connect from, or the address
of an anonymous caller (then lifted by RATE_LIMIT_EXEMPT too): turns a minute, sessions
made a minute and held, documents kept for APQ a minute. Every turn and every session
counts, however many one request carries (aliases, batches). Admins count against none
of them.

Fixed one-minute windows: one `INCR` + `EXPIRE` per check (a script where several counts
must move together). A window's key carries its number, so a burst at a window's edge
can reach twice the limit for a moment; for abuse control that is the accepted price of
one round trip per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis, RedisCluster

from resolvers.services import metrics
from resolvers.services.errors import DataConflict, QuotaExceeded, RateLimited
from resolvers.services.identity import Identity
from resolvers.services.keys import (
    address_rate_key,
    identity_held_key,
    identity_rate_key,
    identity_tag,
    messages_key,
    meta_key,
    turn_rate_key,
)
from resolvers.services.scripts import Script

WINDOW_SECONDS = 60


class RateLimiter:
    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        per_address: int,
        turns_per_session: int,
        exempt: frozenset[str],
        user_turns: int = 0,
        user_sessions: int = 0,
        user_max_sessions: int = 0,
        document_registrations: int = 0,
    ) -> None:
        self._redis = redis
        self._per_address = per_address
        self._per_session = turns_per_session
        self._exempt = exempt
        self._user_turns = user_turns
        self._user_sessions = user_sessions
        self._user_max_sessions = user_max_sessions
        self._registrations = document_registrations
        self._claim = Script(redis, "claim_session")

    def exempt(self, address: str | None) -> bool:
        return address is None or address in self._exempt

    def identity_of(self, who: Identity, address: str | None) -> str | None:
        """The tag the caller's own limits count under: its user's, or its address's
        when anonymous; None when none apply (an admin, an exempt address)."""
        if who.is_admin:
            return None
        if who.user_id is not None:
            return identity_tag("user", who.user_id)
        if self.exempt(address):
            return None
        return identity_tag("addr", str(address))

    def counts_turns(self, who: Identity, address: str | None) -> bool:
        """Whether a turn of this caller counts against any limit."""
        per_session = self._per_session and not self.exempt(address)
        own = self._user_turns and self.identity_of(who, address) is not None
        return bool(per_session or own)

    async def check_address(self, address: str | None) -> None:
        """Count one request from `address`; RateLimited past the limit."""
        if self._per_address and not self.exempt(address):
            await self._hit(
                lambda window: address_rate_key(address, window),
                self._per_address,
                "requests from your address",
                name="address",
            )

    async def check_turn(
        self, session_id: str, address: str | None, who: Identity | None = None
    ) -> None:
        """Count one turn: on the session (a valid id: the key shares its slot), and
        against the caller's own limit."""
        if self._per_session and not self.exempt(address):
            await self._hit(
                lambda window: turn_rate_key(session_id, window),
                self._per_session,
                "turns on this session",
                name="turns",
            )
        tag = self.identity_of(who, address) if who is not None else None
        if self._user_turns and tag is not None:
            await self._hit(
                lambda window: identity_rate_key(tag, "turns", window),
                self._user_turns,
                "turns (yours, in all sessions)",
                name="user_turns",
            )

    async def check_registration(self, address: str | None, who: Identity) -> None:
        """Count one document kept for automatic persisted queries."""
        tag = self.identity_of(who, address)
        if self._registrations and tag is not None:
            await self._hit(
                lambda window: identity_rate_key(tag, "documents", window),
                self._registrations,
                "documents registered for persisted queries",
                name="documents",
            )

    async def claim_session(self, session_id: str, address: str | None, who: Identity) -> None:
        """Count a new session against its creator's limits: made this minute, and held
        (USER_MAX_SESSIONS). Sessions gone since they were counted (deleted, expired)
        are forgotten when the count reaches the bound."""
        tag = self.identity_of(who, address)
        if tag is None or not (self._user_sessions or self._user_max_sessions):
            return
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        held = identity_held_key(tag)
        for attempt in range(2):
            result = self._claim.named(
                await self._claim(
                    keys={"held": held, "made": identity_rate_key(tag, "sessions", window)},
                    args={
                        "session_id": session_id,
                        "now_ms": int(now * 1000),
                        "most_held": self._user_max_sessions,
                        "per_minute": self._user_sessions,
                        "window_s": WINDOW_SECONDS * 2,
                    },
                )
            )
            outcome = int(result["outcome"])
            if outcome == 1:
                return
            if outcome == -9:
                raise DataConflict(f"{held} holds a value of another type")
            if outcome == -1:
                metrics.RATE_LIMITED.labels("sessions").inc()
                retry_after = _until_next(window, now)
                raise RateLimited(
                    f"too many sessions made: at most {self._user_sessions} a minute; retry "
                    f"in {retry_after} s",
                    retry_after=retry_after,
                )
            if attempt == 0 and await self._forget_gone(held):
                continue
            metrics.RATE_LIMITED.labels("max_sessions").inc()
            raise QuotaExceeded(
                f"you hold the most sessions allowed ({self._user_max_sessions}): delete "
                "some to make new ones",
                retry_after=None,
            )

    async def _forget_gone(self, held: str) -> int:
        """Drop the sessions of a held set that no longer exist; how many went."""
        members = [str(m) for m in await self._redis.zrange(held, 0, -1)]
        gone: list[str] = []
        for start in range(0, len(members), 500):
            group = members[start : start + 500]
            async with self._redis.pipeline(transaction=False) as pipe:
                for session_id in group:
                    pipe.exists(meta_key(session_id), messages_key(session_id))
                found = await pipe.execute()
            gone += [sid for sid, there in zip(group, found, strict=True) if not there]
        if gone:
            await self._redis.zrem(held, *gone)
        return len(gone)

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
            retry_after = _until_next(window, now)
            raise RateLimited(
                f"too many {what}: at most {limit} a minute; retry in {retry_after} s",
                retry_after=retry_after,
            )


def _until_next(window: int, now: float) -> int:
    return max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
