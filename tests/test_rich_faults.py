"""Rich turns where they can go wrong (each found by a review with a reproduction): a
tool turn's commit whose answer is lost, a call too big for the history budget, a call
that streams for longer than the wait for one token, arguments escaping a lone
surrogate, a regenerate of the answer to tools' results, HISTORY_WINDOW=0, a join of a
tool turn, and the statuses a tool turn leaves."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage, message_to_dict
from redis.asyncio import Redis

from resolvers.services import scripts
from resolvers.services.history import ToolCall, reply_message
from resolvers.services.keys import messages_key
from tests.support import AppServer, FakeGroq, RedisServer, gql, new_session
from tests.support.redis_proxy import RedisProxy
from tests.support.stores import stores_on
from tests.support.tools import ADD, CHAT, EVENT, SESSION, SUBMIT, run, sent_answering

JSON_REPLY = {"accept": "application/json"}
REGENERATE = f"subscription($s: ID!) {{ regenerate(sessionId: $s) {{ {EVENT} }} }}"


async def asked(app: AppServer, http: httpx.AsyncClient, message: str) -> tuple[str, Any]:
    """A new session and the done event of a turn whose reply calls `add`."""
    session_id = await new_session(http)
    got = await run(app.ws_url, CHAT, s=session_id, m=message, tools=[ADD])
    assert not got.errors, got.errors
    return session_id, got.events[-1]


def calls_have_their_results(messages: list[dict[str, Any]]) -> bool:
    asked_for = {c["id"] for m in messages for c in m.get("tool_calls") or []}
    return all(m["tool_call_id"] in asked_for for m in messages if m["role"] == "tool")


@pytest.fixture(scope="module")
def plain_app(make_app: Callable[..., AppServer]) -> AppServer:
    return make_app(RATE_LIMIT_TURNS_PER_MINUTE="0")


async def test_a_retried_commit_of_a_tool_turn_answers_as_the_first(db: Redis) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    reply = reply_message("", tool_calls=[ToolCall(id="call_1", name="add", arguments="{}")])

    async def commit() -> int:
        return await store.turns.commit_turn(
            session.id,
            start.token,
            asked=[json.dumps(message_to_dict(HumanMessage(content="q")))],
            reply_json=json.dumps(message_to_dict(reply)),
            first_message="q",
            turn_id=start.turn_id,
            status="REQUIRES_ACTION",
        )

    assert await commit() == 1
    assert await commit() == 1  # the retry after a lost answer: stored, once
    assert await db.llen(messages_key(session.id)) == 2


@pytest.mark.slow
async def test_a_tool_turn_whose_commit_answer_is_lost_is_reported_stored(
    make_app: Callable[..., AppServer], redis_server: RedisServer, fresh_db: Callable[[], str]
) -> None:
    database = int(fresh_db().rsplit("/", 1)[1])
    commit_sha = hashlib.sha1(scripts.source("commit_turn").encode()).hexdigest()  # noqa: S324
    async with RedisProxy(redis_server.port) as proxy:
        app = make_app(redis_url=f"{proxy.url[:-2]}/{database}")
        async with httpx.AsyncClient(base_url=app.url, timeout=60) as http:
            session_id = await new_session(http)
            warm = {"session_id": session_id, "message": "warm"}
            assert (await http.post("/chat", json=warm, headers=JSON_REPLY)).status_code == 200
            body = {
                "session_id": session_id,
                "message": '!delay=0.3 !call=add{"a":1} x',
                "tools": [ADD],
            }
            reply = asyncio.ensure_future(http.post("/chat", json=body, headers=JSON_REPLY))
            await asyncio.sleep(0.3)
            await proxy.lose_reply_then_go_down(commit_sha.encode(), 1.0)
            response = await reply
            state = await gql(http, SESSION, s=session_id)
    assert proxy.replies_lost == 1
    session = state["data"]["session"]  # type: ignore[index]
    assert session["messageCount"] == 4 and len(session["pendingToolCalls"]) == 1
    assert response.status_code == 200, response.text
    assert response.json()["tool_calls"] == session["pendingToolCalls"]


@pytest.mark.slow
async def test_a_call_too_big_for_the_budget_still_goes_with_its_results(
    make_app: Callable[..., AppServer], fake_groq: FakeGroq
) -> None:
    app = make_app(HISTORY_MAX_TOKENS="200", RATE_LIMIT_TURNS_PER_MINUTE="0")
    big = json.dumps({"a": "x" * 2000}, separators=(",", ":"))
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id, done = await asked(app, http, f"!call=add{big} big")
        [call] = done["toolCalls"]
        results = [{"toolCallId": call["id"], "content": "1"}]
        answered = await run(app.ws_url, SUBMIT, s=session_id, r=results)
        assert not answered.errors, answered.errors
        sent = sent_answering(fake_groq, call["id"])
        assert [m["role"] for m in sent] == ["system", "assistant", "tool"]
        assert calls_have_their_results(sent)
        # A new message cancels calls left pending: the calls go with those results too.
        again_id, again = await asked(app, http, f"!call=add{big} again")
        moved_on = await run(app.ws_url, CHAT, s=again_id, m="never mind")
        assert not moved_on.errors, moved_on.errors
        [pending] = again["toolCalls"]
        assert calls_have_their_results(sent_answering(fake_groq, pending["id"]))


@pytest.mark.slow
@pytest.mark.parametrize("fast", ["true", "false"])
async def test_a_call_that_streams_longer_than_one_tokens_wait(
    make_app: Callable[..., AppServer], fast: str
) -> None:
    """Its pieces come every 0.4 s for 4 s in all, LLM_TIMEOUT_SECONDS=2: each piece
    is a sign of life, as a token is."""
    app = make_app(LLM_TIMEOUT_SECONDS="2", LLM_FAST_STREAM=fast, RATE_LIMIT_TURNS_PER_MINUTE="0")
    args = json.dumps({"text": "x" * 40}, separators=(",", ":"))
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
        got = await run(
            app.ws_url, CHAT, s=session_id, m=f"!delay=0.4 !call=add{args} slow", tools=[ADD]
        )
    assert not got.errors, got.errors
    assert json.loads(got.events[-1]["toolCalls"][0]["arguments"]) == {"text": "x" * 40}


@pytest.mark.slow
async def test_arguments_escaping_a_lone_surrogate_are_valid_text_everywhere(
    plain_app: AppServer, fake_groq: FakeGroq
) -> None:
    message = '!call=add{"a":"\\ud800b"} x'
    async with httpx.AsyncClient(base_url=plain_app.url, timeout=30) as http:
        session_id, done = await asked(plain_app, http, message)
        [call] = done["toolCalls"]
        assert json.loads(call["arguments"]) == {"a": "\ufffdb"}
        state = await gql(http, SESSION, s=session_id)
        assert state["data"]["session"]["pendingToolCalls"] == [call]  # type: ignore[index]
        rest_id = await new_session(http)
        body = {"session_id": rest_id, "message": message, "tools": [ADD]}
        rest = await http.post("/chat", json=body, headers=JSON_REPLY)
        assert rest.status_code == 200, rest.text
        async with http.stream(
            "POST", "/chat", json=body | {"session_id": await new_session(http)},
            headers={"Accept": "text/event-stream"},
        ) as response:  # fmt: skip
            sse = (await response.aread()).decode()
        assert "event: tool_calls" in sse and "event: done" in sse
        # The next request carries the arguments as the client saw them.
        results = [{"toolCallId": call["id"], "content": "1"}]
        assert not (await run(plain_app.ws_url, SUBMIT, s=session_id, r=results)).errors
        [sent_call] = sent_answering(fake_groq, call["id"])[-2]["tool_calls"]
        assert json.loads(sent_call["function"]["arguments"]) == {"a": "\ufffdb"}


@pytest.mark.slow
async def test_the_answer_to_tools_results_can_be_regenerated(
    plain_app: AppServer, fake_groq: FakeGroq
) -> None:
    async with httpx.AsyncClient(base_url=plain_app.url, timeout=30) as http:
        session_id, done = await asked(plain_app, http, '!call=add{"a":1} regen')
        [call] = done["toolCalls"]
        results = [{"toolCallId": call["id"], "content": "1"}]
        assert not (await run(plain_app.ws_url, SUBMIT, s=session_id, r=results)).errors
        again = await run(plain_app.ws_url, REGENERATE, s=session_id)
        assert not again.errors, again.errors
        assert again.events[-1]["message"]["content"] == f"[n=4] {call['id']}=1"
        sent = sent_answering(fake_groq, call["id"])
        assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
        state = await gql(http, SESSION, s=session_id)
    roles = [m["role"] for m in state["data"]["session"]["messages"]]  # type: ignore[index]
    assert roles == ["USER", "ASSISTANT", "TOOL", "ASSISTANT"]


@pytest.mark.slow
async def test_calls_are_answered_with_no_history_window(
    make_app: Callable[..., AppServer], fake_groq: FakeGroq
) -> None:
    app = make_app(HISTORY_WINDOW="0", RATE_LIMIT_TURNS_PER_MINUTE="0")
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id, done = await asked(app, http, '!call=add{"a":1} w0')
        [call] = done["toolCalls"]
        listed = await gql(http, SESSION, s=session_id)
        assert listed["data"]["session"]["pendingToolCalls"] == [call]  # type: ignore[index]
        results = [{"toolCallId": call["id"], "content": "1"}]
        answered = await run(app.ws_url, SUBMIT, s=session_id, r=results)
        assert not answered.errors, answered.errors
        # No history, but the call goes with its result.
        assert [m["role"] for m in sent_answering(fake_groq, call["id"])] == [
            "system",
            "assistant",
            "tool",
        ]
        # And a new message cancels pending calls there too.
        session_id, done = await asked(app, http, '!call=add{"a":2} w0 again')
        assert not (await run(app.ws_url, CHAT, s=session_id, m="moving on")).errors
        state = await gql(http, SESSION, s=session_id)
    roles = [m["role"] for m in state["data"]["session"]["messages"]]  # type: ignore[index]
    assert roles == ["USER", "ASSISTANT", "TOOL", "USER", "ASSISTANT"]


@pytest.mark.slow
async def test_a_tool_turn_joined_and_its_statuses(plain_app: AppServer) -> None:
    async with httpx.AsyncClient(base_url=plain_app.url, timeout=30) as http:
        session_id = await new_session(http)
        turn_id = str(uuid.uuid4())
        first = await run(
            plain_app.ws_url, CHAT, s=session_id, m='!call=add{"a":1} j', t=turn_id, tools=[ADD]
        )
        joined = await run(plain_app.ws_url, CHAT, s=session_id, m="other", t=turn_id)
        body = {"session_id": session_id, "message": "x", "turn_id": turn_id}
        rest = await http.post("/chat", json=body, headers=JSON_REPLY)
        replay = await http.get(f"/session/{session_id}/turns/{turn_id}/events")
        [call] = first.events[-1]["toolCalls"]
        results = [{"toolCallId": call["id"], "content": "1"}]
        assert not (await run(plain_app.ws_url, SUBMIT, s=session_id, r=results)).errors
        state = await gql(http, SESSION, s=session_id)
    assert first.events[-1]["status"] == joined.events[-1]["status"] == "REQUIRES_ACTION"
    assert joined.events[-1]["toolCalls"] == first.events[-1]["toolCalls"]
    assert rest.json()["tool_calls"] == first.events[-1]["toolCalls"]
    assert "event: tool_calls" in replay.text
    # Message.status keeps its meaning: a reply that asked for tools is COMPLETE.
    assert first.events[-1]["message"]["status"] == "COMPLETE"
    statuses = [m["status"] for m in state["data"]["session"]["messages"]]  # type: ignore[index]
    assert statuses == ["COMPLETE"] * 4
