"""Adoption: message lists written by other LangChain programs become sessions.

A `message_store:<uuid>` list with no metadata of its own (the documented REST app's
sessions, say) gets its metadata and index entries, so it is listed like any other; the
list itself is never touched. At start every such list is adopted in the background, in
bounded batches; one used before its batch comes is adopted on the spot.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis, RedisCluster
from redis.typing import EncodableT

from resolvers.services.index import SessionIndex, now_micros
from resolvers.services.keys import INDEX_KEY, MESSAGES_PREFIX, messages_key, meta_key
from resolvers.services.scripts import Script, each
from resolvers.services.validation import is_session_id

# Scripts of one batch sent at once (on a cluster, each to its node).
_GROUP = 50


class Adoption:
    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        index: SessionIndex,
        default_system_prompt: str,
        ttl_seconds: int,
    ) -> None:
        self._redis = redis
        self._index = index
        self._default_prompt = default_system_prompt
        self._ttl = ttl_seconds
        self._adopt = Script(redis, "adopt")

    def _keys(self, session_id: str) -> dict[str, str]:
        keys = {"messages": messages_key(session_id), "meta": meta_key(session_id)}
        return {**keys, "index": INDEX_KEY} if self._index.single else keys

    def _args(self, session_id: str, now: int) -> dict[str, EncodableT]:
        return {
            "now": now,
            "session_id": session_id,
            "prompt": self._default_prompt,
            "ttl": self._ttl,
        }

    async def one(self, session_id: str) -> bool:
        """Adopt this list now, if it is one to adopt; whether it was."""
        return bool(await self._batch([session_id]))

    async def orphans(self, *, batch: int = 500, pause: float = 0.01) -> int:
        """Adopt every list without metadata: SCAN (every primary, on a cluster) in
        bounded batches, one round of scripts per batch, a short pause between batches
        to leave room for traffic. How many were adopted."""
        adopted = 0
        found: list[str] = []
        async for key in self._redis.scan_iter(match=f"{MESSAGES_PREFIX}*", count=batch):
            session_id = str(key)[len(MESSAGES_PREFIX) :]
            if is_session_id(session_id):
                found.append(session_id)
            if len(found) >= batch:
                adopted += await self._batch(found)
                found = []
                await asyncio.sleep(pause)
        if found:
            adopted += await self._batch(found)
        return adopted

    async def _batch(self, ids: list[str]) -> int:
        now = now_micros()
        done: list[str] = []
        for start in range(0, len(ids), _GROUP):
            group = ids[start : start + _GROUP]
            results = await each(
                self._adopt, self._redis, [(self._keys(s), self._args(s, now)) for s in group]
            )
            for session_id, result in zip(group, results, strict=True):
                if isinstance(result, BaseException):
                    raise result
                if int(result):
                    done.append(session_id)
        if not self._index.single:
            # The index is in another slot: its entries follow the scripts.
            await self._index.place_new(dict.fromkeys(done, now))
        return len(done)
