"""A Redis the documented FastAPI + Redis + LangChain app left its chats in.

A team that runs that app has a Redis on localhost:6379 holding `message_store:<id>`
lists. Started without REDIS_URL, this server keeps its sessions in an embedded Redis of
its own and their chats are not listed; so at start it looks, once, whether such a Redis
answers there, and says how to serve those chats (the log, and the page when its list is
empty). It only counts keys (a bounded SCAN): it writes nothing there and reads nothing
else, and it never uses that Redis for anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from resolvers.services.keys import MESSAGES_PREFIX

logger = logging.getLogger(__name__)

# Where the documented app's Redis is, and the REDIS_URL that serves it.
DOCUMENTED_REDIS = "redis://127.0.0.1:6379/0"
DOCUMENTED_REDIS_URL = "redis://localhost:6379/0"
# Bounds on the look: SCAN calls of COUNT keys each (at most 2,000 keys examined).
SCAN_CALLS = 20
SCAN_COUNT = 100


@dataclass(frozen=True, slots=True)
class OutsideHistories:
    """LangChain chat histories in a Redis this server does not use."""

    count: int
    # True when the look stopped at its bound: there are at least `count`.
    more: bool
    redis_url: str = DOCUMENTED_REDIS_URL

    @property
    def advice(self) -> str:
        many = f"{self.count}{'+' if self.more else ''}"
        return (
            f"a Redis at localhost:6379 holds {many} LangChain chat histories "
            f"({MESSAGES_PREFIX}*) that this server does not serve: it keeps its sessions "
            f"in an embedded Redis of its own. To serve them (they are adopted as they "
            f"are, nothing rewritten), start it with REDIS_URL={self.redis_url} "
            "(docs/migrating.md)"
        )


async def look_for_histories(url: str = DOCUMENTED_REDIS) -> OutsideHistories | None:
    """The chat histories a Redis at `url` holds, counted by a bounded SCAN; None when
    nothing answers there, or it holds none."""
    client = Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=1.0, retry_on_timeout=False
    )
    try:
        found = 0
        cursor = 0
        for _ in range(SCAN_CALLS):
            cursor, keys = await client.scan(cursor, match=f"{MESSAGES_PREFIX}*", count=SCAN_COUNT)
            found += len(keys)
            if cursor == 0:
                break
        more = cursor != 0
    except (RedisError, OSError):
        return None
    finally:
        await client.aclose()
    if not found:
        return None
    return OutsideHistories(count=found, more=more)
