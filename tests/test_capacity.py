"""Many replies streaming at once do not queue behind each other."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import httpx
import pytest

from tests.support import AppServer, FakeGroq, new_session

pytestmark = pytest.mark.slow


async def test_more_concurrent_replies_than_the_sdks_default_pool(
    app: AppServer, fake_groq: FakeGroq
) -> None:
    # The provider SDK's own pool holds 100 connections: the 101st reply used to wait for
    # one of the first hundred to end. The fake provider counts the streams it holds open
    # at once: while each reply waits 3 s for its first token, more than 100 must be open
    # together (all 130 on an idle machine). The test's own requests go through several
    # small clients: one httpx pool of 130 is slow on its own.
    count, clients = 130, 13
    async with AsyncExitStack() as stack:
        pool = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=app.url, timeout=60))
            for _ in range(clients)
        ]
        sessions = await asyncio.gather(*(new_session(pool[i % clients]) for i in range(count)))
        fake_groq.reset()
        replies = await asyncio.gather(
            *(
                pool[i % clients].post(
                    "/chat",
                    json={"session_id": s, "message": "!first_delay=3 wait"},
                    headers={"accept": "application/json"},
                )
                for i, s in enumerate(sessions)
            )
        )
    assert all(r.status_code == 200 for r in replies)
    seen = fake_groq.requests()
    assert seen["count"] == count
    max_open = seen["max_open"]
    assert isinstance(max_open, int)
    assert max_open > 100, f"at most {max_open} of {count} streamed at once"
