"""Many replies streaming at once do not queue behind each other."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import httpx

from tests.conftest import AppServer, new_session


async def test_more_concurrent_replies_than_the_sdks_default_pool(app: AppServer) -> None:
    # The provider SDK's own pool holds 100 connections: the 101st reply used to wait for
    # one of the first hundred to end, doubling its latency. (The test's own requests go
    # through several small clients: one httpx pool of 130 is slow on its own.)
    count, clients = 130, 13
    async with AsyncExitStack() as stack:
        pool = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=app.url, timeout=60))
            for _ in range(clients)
        ]
        sessions = await asyncio.gather(*(new_session(pool[i % clients]) for i in range(count)))
        began = time.monotonic()
        replies = await asyncio.gather(
            *(
                pool[i % clients].post(
                    "/chat",
                    json={"session_id": s, "message": "!first_delay=1.5 wait"},
                    headers={"accept": "application/json"},
                )
                for i, s in enumerate(sessions)
            )
        )
        elapsed = time.monotonic() - began
    assert all(r.status_code == 200 for r in replies)
    assert elapsed < 2.9, f"{count} replies of 1.5 s each took {elapsed:.2f} s: they queued"
