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

logger = logging.getLogger(__name__)

_HASH = re.compile(r"[0-9a-f]{64}")
_INDEX = "{apq}:index"
_PREFIX = "{apq}:doc:"

# KEYS: the document, the index. ARGV: hash, document, ttl (s), now (ms), most kept.
# Keeps the document and its place in the index; past the most kept, drops the least
# recently used documents with their entries.
_PUT = (
    """
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if over > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #oldest, 2 do
    redis.call('DEL', '"""
    + _PREFIX
    + """' .. oldest[i])
  end
end
return 1
"""
)


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
        self._put = redis.register_script(_PUT)

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
        """Keep `document` under its hash; False when it is too large to keep."""
        if self._max_documents == 0 or len(document.encode()) > self._max_bytes:
            return False
        await self._put(
            keys=[_PREFIX + digest, _INDEX],
            args=[digest, document, self._ttl, _now_ms(), self._max_documents],
        )
        return True


def _now_ms() -> int:
    return int(time.time() * 1000)
