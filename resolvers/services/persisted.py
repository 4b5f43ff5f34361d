"""Automatic persisted queries (Apollo's APQ): GraphQL documents kept in Redis by their
SHA-256, so a client may send the hash alone once the server has seen the document.

Bounded three ways: a document is kept only up to `max_bytes`, each for `ttl` seconds
after it was last used, and at most `max_documents` of them (the least recently used
go first). Every key shares the `{apq}` hash tag, so on a cluster they live together.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time

from redis.asyncio import Redis, RedisCluster

from resolvers.services.scripts import Script

logger = logging.getLogger(__name__)

_HASH = re.compile(r"[0-9a-f]{64}")
_INDEX = "{apq}:index"
_PREFIX = "{apq}:doc:"


def is_query_hash(value: object) -> bool:
    return isinstance(value, str) and _HASH.fullmatch(value) is not None


def query_hash(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


class PersistedQueries:
    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        max_documents: int = 1000,
        max_bytes: int = 65_536,
        ttl: int = 7 * 86_400,
    ) -> None:
        self._redis = redis
        self._max_documents = max_documents
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._keep = Script(redis, "keep_document")

    async def get(self, digest: str) -> str | None:
        """The document with this hash, if kept (its time to live starts again)."""
        if not is_query_hash(digest) or self._max_documents == 0:
            return None
        document = await self._redis.getex(_PREFIX + digest, ex=self._ttl)
        if document is None:
            return None
        await self._redis.zadd(_INDEX, {digest: _now_ms()}, xx=True)
        return str(document)

    async def put(self, digest: str, document: str) -> bool:
        """Keep `document` under its hash; False when it is too large to keep (or the
        index holds what this server did not write)."""
        if self._max_documents == 0 or len(document.encode()) > self._max_bytes:
            return False
        kept = await self._keep(
            keys={"document": _PREFIX + digest, "index": _INDEX},
            args={
                "hash": digest,
                "document": document,
                "ttl": self._ttl,
                "now": _now_ms(),
                "most": self._max_documents,
                "prefix": _PREFIX,
            },
        )
        return bool(int(kept))


def _now_ms() -> int:
    return int(time.time() * 1000)
