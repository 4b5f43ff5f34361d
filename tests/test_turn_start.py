"""A turn whose caller goes away while it is being started runs anyway (a client that
goes away does not stop a turn), so the same turn id joins it, and its lock is freed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from redis.asyncio import Redis

from resolvers.services.keys import lock_key
from resolvers.services.model import build_model
from resolvers.services.turns import TurnRunner
from tests.support import RedisServer
from tests.support.redis_proxy import RedisProxy
from tests.support.stores import stores_on


async def test_a_start_cancelled_after_the_lock_was_taken_runs_the_turn(
    redis_server: RedisServer, fresh_db: Callable[[], str]
) -> None:
    url = fresh_db()
    direct = Redis.from_url(url, decode_responses=True)
    async with RedisProxy(redis_server.port) as proxy:
        db = url.rsplit("/", 1)[1]
        slow = Redis.from_url(f"redis://127.0.0.1:{proxy.port}/{db}", decode_responses=True)
        store = stores_on(slow)
        runner = TurnRunner(
            store.turns,
            store.sessions,
            build_model("offline", offline_token_delay=0),
            max_message_chars=100,
            llm_timeout=5,
            turn_timeout=0,
            lock_seconds=20,
        )
        warm = await store.sessions.create()  # the scripts loaded, so the start is one round trip
        await store.turns.release_lock(warm.id, (await store.turns.begin_turn(warm.id)).token)
        session = await store.sessions.create()
        turn_id = str(uuid.uuid4())
        with proxy.delayed(0.4):
            starting = asyncio.create_task(
                runner.start(session_id=session.id, message="hi", turn_id=turn_id)
            )
            await asyncio.sleep(0.15)  # the lock's SET has reached Redis; its reply is held
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            assert await direct.exists(lock_key(session.id)) == 1
        for _ in range(50):
            if not await direct.exists(lock_key(session.id)):
                break
            await asyncio.sleep(0.05)
        assert await direct.exists(lock_key(session.id)) == 0
        stored = await store.sessions.messages(session.id)
        assert [(m.content, m.turn_id) for m in stored][:1] == [("hi", turn_id)]
        assert len(stored) == 2
        # The client, back with the same turn id, gets that turn: nothing runs again.
        joined = await runner.start(session_id=session.id, message="hi", turn_id=turn_id)
        reply = await asyncio.wait_for(joined.reply(), 10)
        assert reply.content == stored[1].content
        assert len(await store.sessions.messages(session.id)) == 2
        await runner.drain(5)
        await slow.aclose()
    await direct.aclose()
