"""The app process dying or stopping mid-turn: nothing half-stored, nothing lost."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from tests.support import AppServer, FakeGroq, RedisServer, new_session

pytestmark = pytest.mark.slow


async def test_sigkill_mid_turn_stores_nothing_and_the_lock_expires(
    make_app: Callable[..., AppServer],
    shared_redis_url: str,
    start_app: type[AppServer],
    app: AppServer,
    client: httpx.AsyncClient,
    redis_server: RedisServer,
    fake_groq: FakeGroq,
) -> None:
    doomed = make_app(redis_url=shared_redis_url, TURN_LOCK_SECONDS="2")
    session_id = await new_session(client)
    body = {"session_id": session_id, "message": "!delay=0.3 a b c d e f"}
    async with (
        httpx.AsyncClient(base_url=doomed.url, timeout=30) as http,
        http.stream("POST", "/chat", json=body) as response,
    ):
        assert response.status_code == 200
        async for _ in response.aiter_raw():
            break
        doomed.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    assert (await client.get(f"/session/{session_id}/history")).json() == {"history": []}
    busy = await client.post("/chat", json={"session_id": session_id, "message": "now?"})
    assert busy.status_code == 409
    for _ in range(60):
        retry = await client.post("/chat", json={"session_id": session_id, "message": "now?"})
        if retry.status_code != 409:
            break
        await asyncio.sleep(0.1)
    assert retry.status_code == 200
    assert time.monotonic() - killed_at < 4
    history = (await client.get(f"/session/{session_id}/history")).json()["history"]
    assert history == [{"input": "now?", "output": "[n=2] now?"}]


async def test_sigterm_lets_running_turns_finish_and_be_stored(
    make_app: Callable[..., AppServer],
    shared_redis_url: str,
    start_app: type[AppServer],
    client: httpx.AsyncClient,
    redis_server: RedisServer,
    fake_groq: FakeGroq,
) -> None:
    stopping = make_app(redis_url=shared_redis_url)
    streamed_id = await new_session(client)
    abandoned_id = await new_session(client)
    async with httpx.AsyncClient(base_url=stopping.url, timeout=30) as http:
        # One client hangs up mid-reply; the other keeps reading while the server stops.
        gone = {"session_id": abandoned_id, "message": "!delay=0.2 x y z w"}
        async with http.stream("POST", "/chat", json=gone) as response:
            async for _ in response.aiter_raw():
                break
        body = {"session_id": streamed_id, "message": "!delay=0.2 a b c d"}
        async with http.stream("POST", "/chat", json=body) as response:
            received = b""
            async for chunk in response.aiter_raw():
                if not received:
                    assert stopping.process is not None
                    stopping.process.send_signal(signal.SIGTERM)
                received += chunk
    assert received.decode() == "[n=2] !delay=0.2 a b c d"
    assert stopping.process is not None
    stopping.process.wait(30)
    for session_id, message in ((streamed_id, body["message"]), (abandoned_id, gone["message"])):
        history = (await client.get(f"/session/{session_id}/history")).json()["history"]
        assert history == [{"input": message, "output": f"[n=2] {message}"}]
