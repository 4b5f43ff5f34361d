"""Turns end to end: streaming, model failures, concurrency, disconnects, the window."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.support import AppServer, FakeGroq, RedisServer, app_env, gql, new_session
from tests.support.turns import history_of


async def test_plain_text_chunks_arrive_as_they_are_produced(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    arrivals = []
    body = {"session_id": session_id, "message": "!delay=0.15 x y z"}
    async with client.stream("POST", "/chat", json=body) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            arrivals.append((time.monotonic(), chunk))
    assert b"".join(c for _, c in arrivals) == b"[n=2] !delay=0.15 x y z"
    assert len(arrivals) == 5
    assert arrivals[-1][0] - arrivals[0][0] > 0.45


@pytest.mark.parametrize("accept", ["text/plain", "text/event-stream", "application/json"])
@pytest.mark.parametrize("directive", ["!status=500", "!status=429", "!status=400"])
async def test_a_model_failure_before_the_first_token_is_502_and_stores_nothing(
    client: httpx.AsyncClient, accept: str, directive: str
) -> None:
    session_id = await new_session(client)
    response = await client.post(
        "/chat", json={"session_id": session_id, "message": directive}, headers={"accept": accept}
    )
    assert response.status_code == 502
    assert response.json()["detail"]
    assert await history_of(client, session_id) == []
    # The lock was released: the next turn runs.
    ok = await client.post("/chat", json={"session_id": session_id, "message": "again"})
    assert ok.text == "[n=2] again"


async def test_a_stream_cut_after_it_began_leaves_plain_text_incomplete(
    client: httpx.AsyncClient,
) -> None:
    session_id = await new_session(client)
    body = {"session_id": session_id, "message": "!cut=2 a b c d"}
    received: list[bytes] = []

    async def read_all() -> int:
        async with client.stream("POST", "/chat", json=body) as response:
            async for chunk in response.aiter_raw():
                received.append(chunk)
            return response.status_code

    with pytest.raises(httpx.RemoteProtocolError):
        await read_all()
    assert b"".join(received).startswith(b"[n=2]")
    assert await history_of(client, session_id) == []


async def test_a_stream_cut_after_it_began_ends_sse_with_an_error_event(
    client: httpx.AsyncClient,
) -> None:
    session_id = await new_session(client)
    response = await client.post(
        "/chat",
        json={"session_id": session_id, "message": "!cut=2 a b c d"},
        headers={"accept": "text/event-stream"},
    )
    assert response.status_code == 200
    blocks = response.text.strip().split("\n\n")
    assert blocks[0].startswith("id: 1\nevent: token")
    last = dict(line.split(": ", 1) for line in blocks[-1].splitlines())
    assert last["event"] == "error"
    assert json.loads(last["data"])["code"] == "LLM_ERROR"
    assert await history_of(client, session_id) == []


@pytest.mark.slow
@pytest.mark.parametrize("directive", ["!first_delay=30", "!hang", "!delay=30"])
async def test_a_model_that_stalls_fails_after_the_timeout(
    make_app: Callable[..., AppServer],
    shared_redis_url: str,
    start_app: type[AppServer],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
    directive: str,
) -> None:
    server = make_app(redis_url=shared_redis_url, LLM_TIMEOUT_SECONDS="1")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        session_id = await new_session(http)
        began = time.monotonic()
        response = await http.post(
            "/chat",
            json={"session_id": session_id, "message": f"{directive} a b"},
            headers={"accept": "text/event-stream"},
        )
        elapsed = time.monotonic() - began
        assert response.status_code == 502
        assert elapsed < 8
        assert await history_of(http, session_id) == []
    server.stop()


async def test_two_concurrent_turns_on_one_session_one_is_busy(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    slow = {"session_id": session_id, "message": "!delay=0.2 a b c"}
    async with client.stream("POST", "/chat", json=slow) as first:
        assert first.status_code == 200
        second = await client.post("/chat", json={"session_id": session_id, "message": "hi"})
        assert second.status_code == 409
        assert second.json()["detail"]
        body = b"".join([chunk async for chunk in first.aiter_raw()])
    assert body.decode() == "[n=2] !delay=0.2 a b c"
    assert [t["input"] for t in await history_of(client, session_id)] == ["!delay=0.2 a b c"]


@pytest.mark.slow
async def test_busy_holds_across_two_app_processes(
    make_app: Callable[..., AppServer],
    shared_redis_url: str,
    start_app: type[AppServer],
    app: AppServer,
    redis_server: RedisServer,
    fake_groq: FakeGroq,
) -> None:
    other = make_app(redis_url=shared_redis_url)
    async with (
        httpx.AsyncClient(base_url=app.url, timeout=30) as one,
        httpx.AsyncClient(base_url=other.url, timeout=30) as two,
    ):
        session_id = await new_session(one)
        slow = {"session_id": session_id, "message": "!delay=0.2 a b c"}
        async with one.stream("POST", "/chat", json=slow) as first:
            assert first.status_code == 200
            busy = await gql(
                two,
                'mutation($s: ID!) { sendMessage(sessionId: $s, message: "hi") { content } }',
                s=session_id,
            )
            assert busy["errors"][0]["extensions"]["code"] == "SESSION_BUSY"  # type: ignore[index]
            await first.aread()
        assert len(await history_of(two, session_id)) == 1
    other.stop()


async def test_a_client_that_disconnects_mid_stream_does_not_lose_the_turn(
    client: httpx.AsyncClient,
) -> None:
    session_id = await new_session(client)
    body = {"session_id": session_id, "message": "!delay=0.1 a b c d"}
    async with client.stream("POST", "/chat", json=body) as response:
        async for _ in response.aiter_raw():
            break  # read one piece, then hang up
    for _ in range(50):
        turns = await history_of(client, session_id)
        if turns:
            break
        await asyncio.sleep(0.1)
    assert turns == [{"input": "!delay=0.1 a b c d", "output": "[n=2] !delay=0.1 a b c d"}]


@pytest.mark.slow
async def test_the_model_gets_the_system_prompt_then_exactly_the_window(
    make_app: Callable[..., AppServer],
    shared_redis_url: str,
    start_app: type[AppServer],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
) -> None:
    server = make_app(redis_url=shared_redis_url, HISTORY_WINDOW="3")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        session_id = await new_session(http, system_prompt="You are terse.")
        for i in range(3):
            await http.post("/chat", json={"session_id": session_id, "message": f"m{i}"})
        sent = fake_groq.requests()["last"]
    assert isinstance(sent, dict)
    messages = [(m["role"], m["content"]) for m in sent["messages"]]
    assert messages == [
        ("system", "You are terse."),
        ("assistant", "[n=2] m0"),
        ("user", "m1"),
        ("assistant", "[n=4] m1"),
        ("user", "m2"),
    ]
    server.stop()


async def test_send_message_runs_a_whole_turn(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    body = await gql(
        client,
        'mutation($s: ID!) { sendMessage(sessionId: $s, message: "yo") '
        "{ role content createdAt } }",
        s=session_id,
    )
    message = body["data"]["sendMessage"]  # type: ignore[index]
    assert message["role"] == "ASSISTANT" and message["content"] == "[n=2] yo"
    assert await history_of(client, session_id) == [{"input": "yo", "output": "[n=2] yo"}]


async def test_a_slow_reader_gets_the_queued_tokens_merged(app: AppServer) -> None:
    """A reader behind by many tokens (here one that resumes after the first, once the
    whole reply is there) gets them merged. (A reader that merely does not read is not
    behind: the server sends into its socket's buffer as tokens come, and whether they
    came together depends on the machine's load.)"""
    from tests.support.ws_client import graphql_socket

    async with (
        httpx.AsyncClient(base_url=app.url) as http,
        graphql_socket(app.ws_url) as ws,
    ):
        session_id = await new_session(http)
        turn_id = str(uuid.uuid4())
        started = await ws.collect(
            await ws.start(
                "subscription($s: ID!, $t: ID!) { chat(sessionId: $s, turnId: $t, "
                'message: "!tokens=30 go") { token done } }',
                s=session_id,
                t=turn_id,
            )
        )
        op = await ws.start(
            "subscription($s: ID!, $t: ID!) { turn(sessionId: $s, turnId: $t, after: 1) "
            "{ token seq } }",
            s=session_id,
            t=turn_id,
        )
        got = await ws.collect(op)
    assert started.text == "[n=2] " + " ".join(f"t{i}" for i in range(30))
    text = "".join(e["token"] for e in got.events)
    assert text == " " + " ".join(f"t{i}" for i in range(30))
    assert len(got.events) < 31, "queued tokens were not merged"


@pytest.mark.slow
async def test_fast_tokens_go_out_together_at_most_every_min_interval(
    shared_redis_url: str,
    start_app: type[AppServer],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
) -> None:
    from tests.support.ws_client import graphql_socket

    env = app_env(shared_redis_url, fake_groq, STREAM_MIN_INTERVAL_MS="40")
    server = start_app(env=env).start()
    async with httpx.AsyncClient(base_url=server.url) as http:
        session_id = await new_session(http)
    async with graphql_socket(server.ws_url) as ws:
        got = await ws.chat(session_id, "!tokens=40 !delay=0.005 go")
    server.stop()
    tokens = got.events[:-1]
    assert "".join(e["token"] for e in tokens) == "[n=2] " + " ".join(f"t{i}" for i in range(40))
    # 41 pieces over about 0.2 s, at most one event every 40 ms (plus the first).
    assert 2 <= len(tokens) <= 10, len(tokens)
    gaps = [b - a for a, b in itertools.pairwise(got.times[:-1])]
    assert all(gap < 0.1 for gap in gaps), gaps


async def test_a_reader_that_keeps_up_gets_every_token_as_its_own_event(app: AppServer) -> None:
    from tests.support.ws_client import graphql_socket

    async with httpx.AsyncClient(base_url=app.url) as http:
        session_id = await new_session(http)
    async with graphql_socket(app.ws_url) as ws:
        got = await ws.chat(session_id, "one two three")
    assert [e["token"] for e in got.events[:-1]] == ["[n=2]", " one", " two", " three"]
