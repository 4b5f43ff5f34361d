"""Hypothesis state machines whose rules call async code (the app's own services)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import ClassVar, TypeVar

from hypothesis.stateful import RuleBasedStateMachine
from redis.asyncio import Redis

from resolvers.services.storage import make_client
from tests.support.fuzzing import FuzzStats

T = TypeVar("T")


class AsyncMachine(RuleBasedStateMachine):
    """A state machine whose rules call async code on an event loop of its own."""

    redis_url: ClassVar[str]
    stats: ClassVar[FuzzStats]
    name: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clients: list[Redis] = []

    def run(self, awaitable: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await awaitable

        return self.loop.run_until_complete(wrapped())

    def client(self, *, app_like: bool) -> Redis:
        """The app's own client setup, or a plain client that keeps replies as bytes."""

        async def make() -> Redis:
            if app_like:
                client = make_client(self.redis_url, max_connections=4)
                assert isinstance(client, Redis)  # a single-node URL, not a cluster
                return client
            return Redis.from_url(self.redis_url, decode_responses=False)

        made = self.run(make())
        self.clients.append(made)
        return made

    def step(self, what: str) -> None:
        self.stats.record(self.name, what)

    def teardown(self) -> None:
        async def close() -> None:
            for client in self.clients:
                await client.aclose()
                await client.connection_pool.disconnect()

        try:
            self.run(close())
        finally:
            self.loop.close()
