"""Everything kept in Redis, as one process opens it: the index, adoption, sessions,
turns and summaries, sharing one client (and one for blocking stream reads)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis, RedisCluster

from resolvers.services.adoption import Adoption
from resolvers.services.index import SessionIndex
from resolvers.services.sessions import SessionStore
from resolvers.services.summaries import SummaryStore
from resolvers.services.turn_store import TurnStore


@dataclass(frozen=True, slots=True)
class Stores:
    index: SessionIndex
    adoption: Adoption
    sessions: SessionStore
    turns: TurnStore
    summaries: SummaryStore


def open_stores(
    redis: Redis | RedisCluster,
    *,
    default_system_prompt: str,
    history_window: int,
    ttl_seconds: int,
    lock_seconds: float,
    max_prompt_chars: int = 32000,
    replay_seconds: int = 300,
    blocking: Redis | RedisCluster | None = None,
) -> Stores:
    index = SessionIndex(redis, ttl_seconds=ttl_seconds)
    adoption = Adoption(
        redis, index=index, default_system_prompt=default_system_prompt, ttl_seconds=ttl_seconds
    )
    return Stores(
        index=index,
        adoption=adoption,
        sessions=SessionStore(
            redis,
            index=index,
            adoption=adoption,
            default_system_prompt=default_system_prompt,
            ttl_seconds=ttl_seconds,
            max_prompt_chars=max_prompt_chars,
        ),
        turns=TurnStore(
            redis,
            index=index,
            adoption=adoption,
            default_system_prompt=default_system_prompt,
            history_window=history_window,
            ttl_seconds=ttl_seconds,
            lock_seconds=lock_seconds,
            replay_seconds=replay_seconds,
            blocking=blocking,
        ),
        summaries=SummaryStore(redis),
    )
