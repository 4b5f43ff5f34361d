"""What the durable-turn tests share: the documents of `chat` with a turn id, `turn` and
`stopTurn`, reading the first events of a subscription, the checks of numbering, and
messages written by another program."""

from __future__ import annotations

import json
from typing import Any

import httpx
from langchain_core.messages import AIMessage, HumanMessage, message_to_dict
from redis.asyncio import Redis

from resolvers.services.keys import messages_key
from tests.support.servers import FakeGroq
from tests.support.ws_client import GraphQLSocket

EVENT = "token done seq turnId status message { id turnId status content role }"
CHAT_TURN = f"""
subscription($s: ID!, $m: String!, $t: ID) {{
  chat(sessionId: $s, message: $m, turnId: $t) {{ {EVENT} }}
}}
"""
FOLLOW = f"""
subscription($s: ID!, $t: ID, $a: Int! = 0) {{
  turn(sessionId: $s, turnId: $t, after: $a) {{ {EVENT} }}
}}
"""
STOP = "mutation($s: ID!, $t: ID) { stopTurn(sessionId: $s, turnId: $t) }"


async def read_events(ws: GraphQLSocket, op_id: str, count: int) -> list[dict[str, Any]]:
    """The first `count` events of a subscription (fewer if it ends first)."""
    events: list[dict[str, Any]] = []
    for _ in range(count * 4):
        message = await ws.recv()
        if message.get("type") in ("ka", "ping", "pong"):
            continue
        if message["type"] == "complete":
            return events
        assert message["type"] == "next", message
        assert message["id"] == op_id, message
        events.append(next(iter(message["payload"]["data"].values())))
        if len(events) == count:
            return events
    raise AssertionError("too few events")


def by_seq(*runs: list[dict[str, Any]]) -> str:
    """What a client that keeps the events it has not seen (by `seq`) shows."""
    seen = 0
    text = []
    for events in runs:
        for event in events:
            if event["seq"] > seen and not event["done"]:
                text.append(event["token"])
            seen = max(seen, event["seq"])
    return "".join(text)


def assert_numbered(events: list[dict[str, Any]]) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), seqs


def requests_made(fake: FakeGroq) -> int:
    return int(str(fake.requests()["count"]))


def streams_gone(fake: FakeGroq) -> int:
    return int(str(fake.requests()["gone"]))


async def history_of(http: httpx.AsyncClient, session_id: str) -> list[dict[str, str]]:
    response = await http.get(f"/session/{session_id}/history")
    assert response.status_code == 200, response.text
    history: list[dict[str, str]] = response.json()["history"]
    return history


async def written_outside(redis_url: str, session_id: str, *messages: tuple[str, str]) -> None:
    """Messages (kind, text), oldest first, appended as another LangChain program appends
    them (`RedisChatMessageHistory`: one LPUSH of `message_to_dict` each)."""
    kinds = {"human": HumanMessage, "ai": AIMessage}
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        for kind, text in messages:
            entry = message_to_dict(kinds[kind](content=text))
            await redis.lpush(messages_key(session_id), json.dumps(entry))
    finally:
        await redis.aclose()


def alternating(texts: list[str]) -> list[tuple[str, str]]:
    """A conversation of these texts: the user's first, then the model's, and so on."""
    return [("human" if i % 2 == 0 else "ai", text) for i, text in enumerate(texts)]
