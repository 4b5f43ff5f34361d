"""The index of sessions by activity: the one owner of its scores.

`sessions:index` lists every session; of its owner's indexes, `sessions:owner:<user>`
lists the sessions one user owns and has not archived, `sessions:archived:<user>` those
archived, `sessions:pinned:<user>` those pinned and not archived (`owner_indexes`). Each
is a sorted set of ids scored by the session's `updated_at` (µs since the epoch): the
rule every writer follows (scripts through the `_index.lua` include, Python through this
class). Activity moves a score on with `ZADD GT` only, so two writers racing never move
it back; an import, which writes a session whole, sets it.

A page is one `ZREVRANGEBYSCORE` (keyset paging, stable under inserts), never `KEYS` or
`SCAN`. On a cluster the indexes live in other slots than the sessions: they are written
after the step that stored the session, and an entry that fails there is kept in a
backlog that `repair` writes later, never reported as a failure of the stored turn.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

from resolvers.services.errors import BadInput
from resolvers.services.keys import (
    INDEX_KEY,
    archived_index_key,
    meta_key,
    owner_index_key,
    pinned_index_key,
    share_key,
    share_pointer_key,
    shares_key,
)
from resolvers.services.validation import check_session_id

logger = logging.getLogger(__name__)

MAX_PAGE = 1000  # larger pages are cut to this; the cursor gives the rest
# Expired sessions' entries dropped at once by a listing (bounded).
_PRUNE_BATCH = 200

_last_stamp = 0


def now_micros() -> int:
    """The time as µs since the epoch, strictly increasing within the process, so "most
    recently active first" is exact even for two sessions made in the same µs."""
    global _last_stamp
    stamp = max(time.time_ns() // 1000, _last_stamp + 1)
    _last_stamp = stamp
    return stamp


def from_micros(value: bytes | str | int | None) -> datetime:
    """A time this server stored (µs since the epoch); the epoch itself for a value
    another program left that is not one (a read never fails on it)."""
    try:
        micros = int(value or 0)
        return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, tz=UTC)


def encode_cursor(score: float, session_id: str) -> str:
    return base64.urlsafe_b64encode(f"{int(score)}:{session_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        score, _, session_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        return int(score), check_session_id(session_id)
    except (ValueError, binascii.Error, UnicodeError, BadInput):
        raise BadInput("cursor is not one this server returned") from None


@dataclass(frozen=True, slots=True)
class IdPage:
    ids: list[str]
    next_cursor: str | None


Listing = Literal["main", "archived", "pinned"]


def index_key(owner: str | None = None, listing: Listing = "main") -> str:
    """Everyone's index, or one of an owner's three."""
    if owner is None:
        return INDEX_KEY
    if listing == "archived":
        return archived_index_key(owner)
    if listing == "pinned":
        return pinned_index_key(owner)
    return owner_index_key(owner)


def owner_indexes(owner: str, *, pinned: bool, archived: bool) -> list[str]:
    """The owner's indexes that list a session with these flags (`_index.lua`'s
    `owner_lists`, the same rule)."""
    if archived:
        return [archived_index_key(owner)]
    if pinned:
        return [owner_index_key(owner), pinned_index_key(owner)]
    return [owner_index_key(owner)]


def every_owner_index(owner: str) -> list[str]:
    return [owner_index_key(owner), archived_index_key(owner), pinned_index_key(owner)]


def owner_keys(owner: str) -> dict[str, str]:
    """The owner's three indexes by the names scripts give them."""
    return {
        "owner_index": owner_index_key(owner),
        "archived_index": archived_index_key(owner),
        "pinned_index": pinned_index_key(owner),
    }


class SessionIndex:
    def __init__(self, redis: Redis | RedisCluster, *, ttl_seconds: int = 0) -> None:
        self._redis = redis
        self._single = isinstance(redis, Redis)
        self._ttl = ttl_seconds
        # Entries a cluster could not write after their session: (index, id) -> score.
        self._backlog: dict[tuple[str, str], int] = {}

    @property
    def single(self) -> bool:
        """One Redis: scripts may write the indexes in the step that writes a session."""
        return self._single

    def queue_place(
        self,
        pipe: Any,
        session_id: str,
        score: int,
        owner: str | None,
        *,
        pinned: bool = False,
        archived: bool = False,
        replacing: bool = False,
        old_owner: str | None = None,
    ) -> None:
        """Queue the entries of a session written whole (a new one, an import): set where
        its flags list it; `replacing` one that was there (an import), dropped from its
        owner's other indexes, and from `old_owner`'s."""
        listed = _indexes(owner, pinned=pinned, archived=archived)
        for former in {old_owner, owner} - {None} if replacing else set():
            for index in every_owner_index(str(former)):
                if index not in listed:
                    pipe.zrem(index, session_id)
        for index in listed:
            pipe.zadd(index, {session_id: score})

    async def place_after(self, session_id: str, score: int, *, owner: str | None) -> None:
        """On a cluster, after the step that stored the session: move its entries on
        (in its owner's indexes by its flags, read now). A failure is kept for `repair`,
        never raised (the session is stored)."""
        pinned = archived = False
        if owner is not None:
            try:
                flags = await self._redis.hmget(meta_key(session_id), ["pinned", "archived"])
                pinned, archived = (flag == "1" for flag in flags)
            except Exception as exc:
                logger.warning("flags of session %s unread: %s", session_id, type(exc).__name__)
        for index in _indexes(owner, pinned=pinned, archived=archived):
            try:
                await self._redis.zadd(index, {session_id: score}, gt=True)
            except Exception as exc:
                logger.warning(
                    "index entry of session %s left for repair: %s",
                    session_id,
                    type(exc).__name__,
                )
                entry = (index, session_id)
                self._backlog[entry] = max(score, self._backlog.get(entry, 0))

    async def place_new(self, scores: dict[str, int]) -> None:
        """Entries of sessions adopted on a cluster (never moving one back)."""
        if scores:
            await self._redis.zadd(INDEX_KEY, scores, gt=True)

    async def remove(self, session_id: str, *, owner: str | None) -> None:
        for index in [INDEX_KEY, *(every_owner_index(owner) if owner is not None else [])]:
            await self._redis.zrem(index, session_id)

    async def refile(
        self, session_id: str, *, owner: str, score: int, pinned: bool, archived: bool
    ) -> None:
        """On a cluster, after a session's flags changed: its entries in its owner's
        indexes as its flags now list it (one Redis does this in the script that changed
        them)."""
        listed = owner_indexes(owner, pinned=pinned, archived=archived)
        for index in every_owner_index(owner):
            if index in listed:
                await self._redis.zadd(index, {session_id: score}, gt=True)
            else:
                await self._redis.zrem(index, session_id)

    def forget(self, session_id: str) -> None:
        """A deleted session's entries are not repaired."""
        for entry in [e for e in self._backlog if e[1] == session_id]:
            del self._backlog[entry]

    async def repair(self) -> int:
        """Write the entries that failed after their session was stored; how many remain."""
        while self._backlog:
            (index, session_id), score = next(iter(self._backlog.items()))
            # Deleted meanwhile (perhaps by another process): no entry to bring back.
            if await self._redis.exists(meta_key(session_id)):
                await self._redis.zadd(index, {session_id: score}, gt=True)
            if self._backlog.get((index, session_id)) == score:
                del self._backlog[(index, session_id)]
        return len(self._backlog)

    async def prune(self, index: str) -> None:
        """Drop entries of sessions that expired (their TTL): only those whose metadata
        is gone, a bounded batch at a time, so a session that exists is never left out
        of a listing, however old its last activity."""
        if not self._ttl:
            return
        oldest = now_micros() - self._ttl * 1_000_000
        stale = await self._redis.zrangebyscore(
            index, "-inf", f"({oldest}", start=0, num=_PRUNE_BATCH
        )
        if not stale:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id in stale:
                pipe.exists(meta_key(str(session_id)))
            alive = await pipe.execute()
        gone = [str(sid) for sid, found in zip(stale, alive, strict=True) if not found]
        if gone:
            await self._redis.zrem(index, *gone)
            await self._drop_shares(gone)

    async def _drop_shares(self, gone: list[str]) -> None:
        """The share links of expired sessions: they read as none already (a share is
        read only while its session is there); their keys, which have no TTL of their
        own, go with the session's entry."""
        for session_id in gone:
            try:
                found = await self._redis.zrange(shares_key(session_id), 0, -1)
            except ResponseError:  # another program's value: not this server's to drop
                continue
            share_ids = [str(s) for s in found]
            doomed = [share_key(session_id, s) for s in share_ids] + [shares_key(session_id)]
            await self._redis.delete(*doomed)
            for share_id in share_ids:  # each in a slot of its own
                await self._redis.delete(share_pointer_key(share_id))

    async def slice(
        self, index: str, count: int, after: str | None
    ) -> tuple[list[tuple[str, float]], bool, int]:
        """`count` entries after the cursor, whether more follow, and the index's size."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(index)
            if after is None:
                pipe.zrevrange(index, 0, count, withscores=True)
            else:
                score, after_id = decode_cursor(after)
                # Entries sharing the cursor's score, then strictly older ones.
                pipe.zrevrangebyscore(index, score, score, withscores=True)
                pipe.zrevrangebyscore(
                    index, f"({score}", "-inf", start=0, num=count + 1, withscores=True
                )
            results = await pipe.execute()
        total = int(results[0])
        rows: list[tuple[str, float]] = []
        if after is None:
            rows = [(str(m), s) for m, s in results[1]]
        else:
            ties = [(str(m), s) for m, s in results[1]]
            rows = [(m, s) for m, s in ties if m < after_id]
            rows += [(str(m), s) for m, s in results[2]]
        return rows[:count], len(rows) > count, total

    async def ids(
        self,
        *,
        limit: int | None,
        cursor: str | None,
        owner: str | None,
        listing: Listing = "main",
    ) -> IdPage:
        """Session ids, most recently active first: all of them, or one page."""
        index = index_key(owner, listing)
        await self.prune(index)
        if limit is None:
            if cursor is not None:
                raise BadInput("cursor needs limit")
            raw = await self._redis.zrevrange(index, 0, -1)
            return IdPage(ids=[str(r) for r in raw], next_cursor=None)
        if limit < 1:
            raise BadInput("limit must be at least 1")
        limit = min(limit, MAX_PAGE)
        entries, has_next, _ = await self.slice(index, limit, cursor)
        next_cursor = (
            encode_cursor(entries[-1][1], entries[-1][0]) if has_next and entries else None
        )
        return IdPage(ids=[session_id for session_id, _ in entries], next_cursor=next_cursor)


def _indexes(owner: str | None, *, pinned: bool = False, archived: bool = False) -> list[str]:
    if owner is None:
        return [INDEX_KEY]
    return [INDEX_KEY, *owner_indexes(owner, pinned=pinned, archived=archived)]
