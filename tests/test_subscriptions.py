"""The `chat` subscription as a client sees it, over both WebSocket subprotocols."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import httpx
import pytest
from websockets.typing import Subprotocol

from tests.support import AppServer, new_session
from tests.support.ws_client import LEGACY_WS, TRANSPORT_WS, graphql_socket

PROTOCOLS = [TRANSPORT_WS, LEGACY_WS]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_chat_streams_tokens_then_one_done_event(
    app: AppServer, client: httpx.AsyncClient, protocol: Subprotocol
) -> None:
    session_id = await new_session(client)
    async with graphql_socket(app.ws_url, protocol) as ws:
        got = await ws.chat(session_id, "tell me more")
    assert got.completed and not got.errors
    *tokens, done = got.events
    assert tokens and all(not e["done"] and e["message"] is None for e in tokens)
    assert got.text == "[n=2] tell me more"
    assert done["done"] is True
    assert done["message"]["role"] == "ASSISTANT"
    assert done["message"]["content"] == "[n=2] tell me more"
    assert done["message"]["createdAt"].endswith("+00:00")
    history = (await client.get(f"/session/{session_id}/history")).json()["history"]
    assert history == [{"input": "tell me more", "output": "[n=2] tell me more"}]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tokens_arrive_one_by_one_not_all_at_the_end(
    app: AppServer, client: httpx.AsyncClient, protocol: Subprotocol
) -> None:
    session_id = await new_session(client)
    async with graphql_socket(app.ws_url, protocol) as ws:
        got = await ws.chat(session_id, "!delay=0.15 w1 w2 w3")
    token_times = got.times[:-1]
    assert len(token_times) == 5
    gaps = [b - a for a, b in itertools.pairwise(token_times)]
    assert all(gap > 0.08 for gap in gaps), gaps


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("session", "message", "code"),
    [
        ("not-a-uuid", "hi", "BAD_USER_INPUT"),
        ("unknown", "hi", "NOT_FOUND"),
        ("new", "", "BAD_USER_INPUT"),
        ("new", "!status=500 boom", "LLM_ERROR"),
        ("new", "!cut=2 one two three four", "LLM_ERROR"),
    ],
)
async def test_chat_errors_carry_their_code(
    app: AppServer,
    client: httpx.AsyncClient,
    protocol: Subprotocol,
    session: str,
    message: str,
    code: str,
) -> None:
    session_id = {"unknown": str(uuid.uuid4()), "new": await new_session(client)}.get(
        session, session
    )
    async with graphql_socket(app.ws_url, protocol) as ws:
        got = await ws.chat(session_id, message)
    assert got.codes == [code]
    assert got.completed
    if session == "new":
        assert (await client.get(f"/session/{session_id}/history")).json() == {"history": []}


async def test_a_second_turn_on_a_streaming_session_is_busy(
    app: AppServer, client: httpx.AsyncClient
) -> None:
    session_id = await new_session(client)
    async with graphql_socket(app.ws_url) as first, graphql_socket(app.ws_url) as second:
        running = await first.start(
            'subscription($s: ID!) { chat(sessionId: $s, message: "!delay=0.2 a b c") { token } }',
            s=session_id,
        )
        await first.recv()  # the first token: the turn is running
        busy = await second.chat(session_id, "me too")
        assert busy.codes == ["SESSION_BUSY"]
        finished = await first.collect(running)
    assert not finished.errors
    history = (await client.get(f"/session/{session_id}/history")).json()["history"]
    assert [turn["input"] for turn in history] == ["!delay=0.2 a b c"]


async def test_a_client_that_leaves_mid_stream_does_not_lose_the_turn(
    app: AppServer, client: httpx.AsyncClient
) -> None:
    session_id = await new_session(client)
    async with graphql_socket(app.ws_url) as ws:
        await ws.start(
            'subscription($s: ID!) { chat(sessionId: $s, message: "!delay=0.1 a b c d") '
            "{ token } }",
            s=session_id,
        )
        await ws.recv()
    # The socket is closed; the reply still completes and is stored.
    for _ in range(50):
        history = (await client.get(f"/session/{session_id}/history")).json()["history"]
        if history:
            break
        await asyncio.sleep(0.1)
    assert history == [{"input": "!delay=0.1 a b c d", "output": "[n=2] !delay=0.1 a b c d"}]


async def test_queries_and_mutations_also_run_over_the_socket(app: AppServer) -> None:
    async with graphql_socket(app.ws_url) as ws:
        got = await ws.collect(await ws.start("mutation { createSession { id messageCount } }"))
    assert got.events[0]["messageCount"] == 0
