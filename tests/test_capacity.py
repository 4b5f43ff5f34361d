"""Many replies streaming at once do not queue behind each other."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.conftest import AppServer, new_session


async def test_more_concurrent_replies_than_the_sdks_default_pool(app: AppServer) -> None:
    # The provider SDK's own pool holds 100 connections: the 101st reply used to wait for
    # one of the first hundred to end, doubling its latency.
    count = 130
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(base_url=app.url, timeout=60, limits=limits) as http:
        sessions = await asyncio.gather(*(new_session(http) for _ in range(count)))
        began = time.monotonic()
        replies = await asyncio.gather(
            *(
                http.post(
                    "/chat",
                    json={"session_id": s, "message": "!first_delay=1.5 wait"},
                    headers={"accept": "application/json"},
                )
                for s in sessions
            )
        )
        elapsed = time.monotonic() - began
    assert all(r.status_code == 200 for r in replies)
    assert elapsed < 2.9, f"{count} replies of 1.5 s each took {elapsed:.2f} s: they queued"
