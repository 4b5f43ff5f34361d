"""Rich turns over the API, against server processes and the fake provider: reasoning
streamed apart from the answer (and resumed on another process), tools the client runs
(a round trip through Groq's fast path and through LangChain's `astream`, two rounds,
calls cancelled by a new message), every bad input leaving the history as it was, and
the REST shapes (SSE `reasoning` and `tool_calls` events, `tool_results`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.support import AppServer, FakeGroq, app_env, gql, new_session
from tests.support.tools import ADD, CHAT, EVENT, SESSION, SUBMIT, run, sse_events
from tests.support.turns import history_of
from tests.support.ws_client import graphql_socket

pytestmark = pytest.mark.slow

FOLLOW = f"""
subscription($s: ID!, $t: ID!, $after: Int!) {{
  turn(sessionId: $s, turnId: $t, after: $after) {{ {EVENT} }}
}}
"""
CLOCK = {"name": "current_time", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture(scope="module")
def servers(
    start_app: type[AppServer], fresh_db: Callable[[], str], fake_groq: FakeGroq
) -> dict[str, AppServer]:
    """Two processes on one Redis with Groq's fast path, and one with LangChain's
    `astream` (LLM_FAST_STREAM=false) on the same Redis."""
    env = app_env(fresh_db(), fake_groq, RATE_LIMIT_TURNS_PER_MINUTE="0")
    slow = {**env, "LLM_FAST_STREAM": "false"}
    return {
        "fast": start_app(env=env).start(),
        "other": start_app(env=env).start(),
        "astream": start_app(env=slow).start(),
    }


@pytest.fixture
async def http(servers: dict[str, AppServer]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=servers["fast"].url, timeout=30) as client:
        yield client


def sent_with(fake: FakeGroq, marker: str) -> list[dict[str, Any]]:
    """The request bodies the provider received whose user messages hold `marker`, in
    the order received."""
    recent = fake.requests()["recent"]
    assert isinstance(recent, list)
    return [
        body
        for body in recent
        if any(
            m.get("role") == "user" and marker in str(m.get("content")) for m in body["messages"]
        )
    ]


async def state(http: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    body = await gql(http, SESSION, s=session_id)
    assert "errors" not in body, body
    found: dict[str, Any] = body["data"]["session"]  # type: ignore[index]
    return found


@pytest.mark.parametrize("path", ["fast", "astream"])
async def test_reasoning_streams_apart_from_the_answer_and_is_never_sent_back(
    path: str, servers: dict[str, AppServer], http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(http)
    marker = uuid.uuid4().hex[:8]
    got = await run(
        servers[path].ws_url, CHAT, s=session_id, m=f"!reason=4 !interleave {marker} two"
    )
    assert not got.errors, got.errors
    events, done = got.events[:-1], got.events[-1]
    # The first piece is reasoning, and reasoning comes between answer tokens too.
    assert events[0]["reasoning"] and events[0]["token"] == ""
    kinds = ["r" if e["reasoning"] is not None else "t" for e in events]
    assert "r" in kinds[kinds.index("t") :]  # reasoning between answer tokens too
    assert all((e["reasoning"] is None) or e["token"] == "" for e in events)
    reasoning = "".join(e["reasoning"] or "" for e in events)
    answer = "".join(e["token"] for e in events)
    assert reasoning == " r0 r1 r2 r3"
    assert answer == f"[n=2] !reason=4 !interleave {marker} two"
    seqs = [e["seq"] for e in got.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert done["status"] == "COMPLETE" and done["toolCalls"] is None
    assert done["message"]["reasoning"] == reasoning
    assert done["message"]["content"] == answer
    stored = await state(http, session_id)
    assert stored["messages"][-1]["reasoning"] == reasoning
    assert stored["messages"][-1]["content"] == answer
    assert stored["turns"] == [{"input": f"!reason=4 !interleave {marker} two", "output": answer}]
    # The next turn sends the reply's answer, never its reasoning.
    await run(servers[path].ws_url, CHAT, s=session_id, m=f"{marker} again")
    last = sent_with(fake_groq, marker)[-1]
    assistant = [m for m in last["messages"] if m["role"] == "assistant"]
    assert assistant == [{"role": "assistant", "content": answer}]
    assert " r0" not in json.dumps(last)


async def test_the_rest_stream_sends_reasoning_as_its_own_event_and_text_the_answer_only(
    http: httpx.AsyncClient,
) -> None:
    session_id = await new_session(http)
    async with http.stream(
        "POST",
        "/chat",
        json={"session_id": session_id, "message": "!reason=3 sse"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        body = (await response.aread()).decode()
    events = sse_events(body)
    assert events[0][0] == "reasoning" and events[-1][0] == "done"
    assert "".join(data["reasoning"] for kind, data in events if kind == "reasoning") == (
        " r0 r1 r2"
    )
    assert "".join(data.get("token", "") for _, data in events) == "[n=2] !reason=3 sse"
    plain = await http.post("/chat", json={"session_id": session_id, "message": "!reason=3 text"})
    assert plain.status_code == 200
    assert plain.text == "[n=4] !reason=3 text"


async def test_a_follower_on_another_process_resumes_mid_reasoning(
    servers: dict[str, AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    turn_id = str(uuid.uuid4())
    async with graphql_socket(servers["fast"].ws_url) as ws:
        await ws.start(CHAT, s=session_id, m="!reason=12 !delay=0.05 resumed", t=turn_id)
        first: list[dict[str, Any]] = []
        for _ in range(200):
            message = await ws.recv()
            if message.get("type") == "next":
                first.append(message["payload"]["data"]["chat"])
            if len(first) == 3:
                break
    assert all(e["reasoning"] for e in first), first  # still reasoning when it left
    rest = await run(
        servers["other"].ws_url, FOLLOW, s=session_id, t=turn_id, after=first[-1]["seq"]
    )
    assert not rest.errors, rest.errors
    events = first + rest.events[:-1]
    assert "".join(e["reasoning"] or "" for e in events) == "".join(f" r{i}" for i in range(12))
    assert "".join(e["token"] for e in events) == "[n=2] !reason=12 !delay=0.05 resumed"
    assert rest.events[-1]["done"] and rest.events[-1]["message"]["reasoning"].startswith(" r0")


@pytest.mark.parametrize("path", ["fast", "astream"])
async def test_a_tool_round_trip(
    path: str, servers: dict[str, AppServer], http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    url = servers[path].ws_url
    session_id = await new_session(http)
    marker = uuid.uuid4().hex[:8]
    message = f'!call=add{{"a":2,"b":40}} {marker}'
    asked = await run(url, CHAT, s=session_id, m=message, tools=[ADD, CLOCK])
    assert not asked.errors, asked.errors
    done = asked.events[-1]
    assert done["status"] == "REQUIRES_ACTION"
    [call] = done["toolCalls"]
    assert call["name"] == "add" and json.loads(call["arguments"]) == {"a": 2, "b": 40}
    assert call["id"].startswith("call_")
    assert done["message"]["toolCalls"] == [call]
    # The provider was offered the tools, as ChatGroq's bind_tools sends them.
    [request] = sent_with(fake_groq, marker)
    offered = {t["function"]["name"]: t for t in request["tools"]}
    assert offered["add"] == {"type": "function", "function": ADD}
    assert set(offered) == {"add", "current_time"}
    pending = await state(http, session_id)
    assert pending["pendingToolCalls"] == [call]
    assert pending["turns"] == [{"input": message, "output": ""}]

    answered = await run(
        url, SUBMIT, s=session_id, r=[{"toolCallId": call["id"], "content": "42"}], tools=[ADD]
    )
    assert not answered.errors, answered.errors
    final = answered.events[-1]
    assert final["status"] == "COMPLETE" and final["toolCalls"] is None
    assert final["message"]["content"] == f"[n=4] {call['id']}=42"
    # What the provider received the second time: the reply with its call, then the
    # result with its call's id.
    second = sent_with(fake_groq, marker)[-1]
    assistant, result = second["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["content"] is None
    [sent_call] = assistant["tool_calls"]
    assert sent_call["id"] == call["id"] and sent_call["function"]["name"] == "add"
    assert json.loads(sent_call["function"]["arguments"]) == {"a": 2, "b": 40}
    assert result == {"role": "tool", "content": "42", "tool_call_id": call["id"]}
    after = await state(http, session_id)
    assert after["pendingToolCalls"] == []
    roles = [m["role"] for m in after["messages"]]
    assert roles == ["USER", "ASSISTANT", "TOOL", "ASSISTANT"]
    assert after["messages"][2]["toolCallId"] == call["id"]
    assert [m["parentId"] for m in after["messages"][1:]] == [
        m["id"] for m in after["messages"][:-1]
    ]
    assert after["turns"] == [{"input": message, "output": f"[n=4] {call['id']}=42"}]
    assert await history_of(http, session_id) == after["turns"]


async def test_two_rounds_of_calls(
    servers: dict[str, AppServer], http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    url = servers["fast"].ws_url
    session_id = await new_session(http)
    message = '!rounds=2 !call=current_time !call=add{"a":1,"b":1} twice'
    first = (await run(url, CHAT, s=session_id, m=message, tools=[ADD, CLOCK])).events[-1]
    assert first["status"] == "REQUIRES_ACTION"
    assert [c["name"] for c in first["toolCalls"]] == ["current_time", "add"]
    assert first["toolCalls"][0]["arguments"] == "{}"
    results = [
        {"toolCallId": c["id"], "content": f"r{i}"} for i, c in enumerate(first["toolCalls"])
    ]
    # Answered in any order: stored in the order of the calls.
    second = (await run(url, SUBMIT, s=session_id, r=results[::-1], tools=[ADD, CLOCK])).events[-1]
    assert second["status"] == "REQUIRES_ACTION" and len(second["toolCalls"]) == 2
    assert {c["id"] for c in second["toolCalls"]}.isdisjoint(c["id"] for c in first["toolCalls"])
    results = [{"toolCallId": c["id"], "content": "ok"} for c in second["toolCalls"]]
    third = (await run(url, SUBMIT, s=session_id, r=results, tools=[ADD, CLOCK])).events[-1]
    assert third["status"] == "COMPLETE"
    roles = [m["role"] for m in (await state(http, session_id))["messages"]]
    assert roles == ["USER", "ASSISTANT", "TOOL", "TOOL", "ASSISTANT", "TOOL", "TOOL", "ASSISTANT"]
    tools = [m for m in (await state(http, session_id))["messages"] if m["role"] == "TOOL"]
    assert [t["content"] for t in tools[:2]] == ["r0", "r1"]


async def test_a_new_message_cancels_the_pending_calls(
    servers: dict[str, AppServer], http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    url = servers["fast"].ws_url
    session_id = await new_session(http)
    marker = uuid.uuid4().hex[:8]
    asked = (
        await run(
            url,
            CHAT,
            s=session_id,
            m=f"!call=add{{}} !call=current_time {marker}",
            tools=[ADD, CLOCK],
        )
    ).events[-1]
    ids = [c["id"] for c in asked["toolCalls"]]
    assert len(ids) == 2
    moved_on = await run(url, CHAT, s=session_id, m=f"never mind {marker}")
    assert moved_on.events[-1]["status"] == "COMPLETE"
    sent = sent_with(fake_groq, f"never mind {marker}")[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert [(m["tool_call_id"], m["content"]) for m in sent[3:5]] == [(i, "cancelled") for i in ids]
    after = await state(http, session_id)
    assert after["pendingToolCalls"] == []
    assert [m["role"] for m in after["messages"]] == [
        "USER",
        "ASSISTANT",
        "TOOL",
        "TOOL",
        "USER",
        "ASSISTANT",
    ]
    assert (
        after["turns"][0]["output"] == "" and after["turns"][1]["input"] == f"never mind {marker}"
    )


async def test_every_bad_input_is_refused_and_stores_nothing(
    servers: dict[str, AppServer], http: httpx.AsyncClient
) -> None:
    url = servers["fast"].ws_url
    session_id = await new_session(http)
    # No pending calls yet.
    nothing = await run(url, SUBMIT, s=session_id, r=[{"toolCallId": "call_x", "content": "1"}])
    assert nothing.codes == ["BAD_USER_INPUT"]
    asked = (
        await run(
            url, CHAT, s=session_id, m='!call=add{"a":1} !call=current_time bad', tools=[ADD, CLOCK]
        )
    ).events[-1]
    one, two = (c["id"] for c in asked["toolCalls"])
    before = await state(http, session_id)
    wrong_results = [
        [{"toolCallId": "call_nope", "content": "1"}, {"toolCallId": two, "content": "1"}],
        [{"toolCallId": one, "content": "1"}],  # a missing result
        [{"toolCallId": one, "content": "1"}, {"toolCallId": one, "content": "2"}],
        [
            {"toolCallId": one, "content": "1"},
            {"toolCallId": two, "content": "1"},
            {"toolCallId": "x", "content": ""},
        ],
        [],
        [{"toolCallId": one, "content": "\ud800"}, {"toolCallId": two, "content": "1"}],
    ]
    for results in wrong_results:
        got = await run(url, SUBMIT, s=session_id, r=results)
        assert got.codes == ["BAD_USER_INPUT"], (results, got.errors)
    wrong_tools: list[Any] = [
        [{"name": "has space"}],
        [{"name": "x" * 65}],
        [ADD, ADD],
        [{"name": "t", "parameters": "not a schema"}],
        [{"name": "t", "parameters": {"type": "string"}}],
        [{"name": "t", "parameters": {"type": "object", "properties": {"a": 1}}}],
        [{"name": "t", "parameters": {"type": "object", "x": "y" * 20_000}}],
        [{"name": "t", "parameters": _nested(40)}],
        [{"name": f"t{n}"} for n in range(65)],
    ]
    for tools in wrong_tools:
        got = await run(url, CHAT, s=session_id, m="hello", tools=tools)
        assert got.codes == ["BAD_USER_INPUT"], (str(tools)[:80], got.errors)
        got = await run(
            url,
            SUBMIT,
            s=session_id,
            r=[{"toolCallId": one, "content": "1"}, {"toolCallId": two, "content": "2"}],
            tools=tools,
        )
        assert got.codes == ["BAD_USER_INPUT"], (str(tools)[:80], got.errors)
    assert await state(http, session_id) == before
    # REST: the same refusals, as 400, and a body with neither a message nor results.
    refused = await http.post(
        "/chat",
        json={"session_id": session_id, "tool_results": [{"tool_call_id": one, "content": "1"}]},
    )
    assert refused.status_code == 400 and "has no result" in refused.json()["detail"]
    refused = await http.post(
        "/chat",
        json={
            "session_id": session_id,
            "message": "hi",
            "tools": [{"name": "t", "parameters": []}],
        },
    )
    assert refused.status_code == 400 and "JSON Schema object" in refused.json()["detail"]
    assert (await http.post("/chat", json={"session_id": session_id})).status_code == 422
    assert await state(http, session_id) == before


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


async def test_a_rest_tool_round_trip(http: httpx.AsyncClient, fake_groq: FakeGroq) -> None:
    session_id = await new_session(http)
    async with http.stream(
        "POST",
        "/chat",
        json={
            "session_id": session_id,
            "message": '!reason=2 !call=add{"a":3,"b":4} rest',
            "tools": [ADD],
        },
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        body = (await response.aread()).decode()
    events = sse_events(body)
    assert {kind for kind, _ in events[:-2]} == {"reasoning"}
    assert "".join(data["reasoning"] for _, data in events[:-2]) == " r0 r1"
    (calls, listed), (done, answer) = events[-2], events[-1]
    assert (calls, done) == ("tool_calls", "done")
    [call] = listed["tool_calls"]
    assert call["name"] == "add" and json.loads(call["arguments"]) == {"a": 3, "b": 4}
    assert answer == {"response": "", "status": "REQUIRES_ACTION"}
    answered = await http.post(
        "/chat",
        json={
            "session_id": session_id,
            "tool_results": [{"tool_call_id": call["id"], "content": "7"}],
        },
        headers={"Accept": "application/json"},
    )
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"session_id": session_id, "response": f"[n=4] {call['id']}=7"}
    assert await history_of(http, session_id) == [
        {"input": '!reason=2 !call=add{"a":3,"b":4} rest', "output": f"[n=4] {call['id']}=7"}
    ]


async def test_a_stopped_turn_asks_for_no_calls(
    servers: dict[str, AppServer], http: httpx.AsyncClient
) -> None:
    """A reply stopped while its call streamed is stored STOPPED, without the call cut
    short: nothing is left pending."""
    session_id = await new_session(http)
    turn_id = str(uuid.uuid4())
    async with graphql_socket(servers["fast"].ws_url) as ws:
        op = await ws.start(
            CHAT,
            s=session_id,
            m='!reason=3 !delay=0.2 !call=add{"a":1,"b":2} stop',
            t=turn_id,
            tools=[ADD],
        )
        for _ in range(100):
            message = await ws.recv()
            if message.get("type") == "next":
                break
        stopped = await gql(http, "mutation($s: ID!) { stopTurn(sessionId: $s) }", s=session_id)
        assert stopped == {"data": {"stopTurn": True}}
        got = await ws.collect(op)
    assert got.events[-1]["status"] == "STOPPED" and got.events[-1]["toolCalls"] is None
    after = await state(http, session_id)
    assert after["pendingToolCalls"] == [] and after["messages"][-1]["toolCalls"] is None


async def test_submitting_while_a_turn_runs_is_busy(
    servers: dict[str, AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    asked = (
        await run(
            servers["fast"].ws_url, CHAT, s=session_id, m="!call=current_time busy", tools=[CLOCK]
        )
    ).events[-1]
    [call] = asked["toolCalls"]
    results = [{"toolCallId": call["id"], "content": "noon"}]
    async with graphql_socket(servers["fast"].ws_url) as ws:
        op = await ws.start(SUBMIT, s=session_id, r=results, t=str(uuid.uuid4()))
        second = await run(servers["other"].ws_url, SUBMIT, s=session_id, r=results)
        assert second.codes in (["SESSION_BUSY"], ["BAD_USER_INPUT"]), second.errors
        first = await ws.collect(op)
    assert first.events[-1]["status"] == "COMPLETE"
    assert [m["role"] for m in (await state(http, session_id))["messages"]] == [
        "USER",
        "ASSISTANT",
        "TOOL",
        "ASSISTANT",
    ]


@pytest.mark.parametrize(
    ("model", "sent"),
    [
        ("groq:qwen/qwen3-32b", "parsed"),
        ("groq:openai/gpt-oss-20b", None),
        ("groq:llama-3.1-8b-instant", None),
    ],
)
async def test_the_reasoning_format_goes_to_the_models_that_take_it(
    make_app: Callable[..., AppServer], fake_groq: FakeGroq, model: str, sent: str | None
) -> None:
    app = make_app(LLM_MODEL=model)
    marker = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
        reply = await http.post("/chat", json={"session_id": session_id, "message": marker})
        assert reply.status_code == 200, reply.text
    [body] = sent_with(fake_groq, marker)
    assert body["model"] == model.partition(":")[2]
    assert body.get("reasoning_format") == sent
