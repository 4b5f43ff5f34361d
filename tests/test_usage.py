"""Usage: each reply's token counts as the provider reported them (Groq's `x_groq.usage`,
on the fast path and through LangChain's `astream`), summed per session at commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support import AppServer, FakeGroq, gql, new_session
from tests.support.ws_client import graphql_socket

SESSION = """
query($s: ID!) {
  session(id: $s) {
    usage { inputTokens outputTokens }
    messages { role usage { inputTokens outputTokens } finishReason }
  }
}
"""


def reported(fake: FakeGroq, pieces: int) -> dict[str, int]:
    """What the fake provider reported for its last request: its prompt is counted as
    words plus one a message, its reply as its pieces."""
    body = fake.requests()["last"]
    assert isinstance(body, dict)
    messages: list[dict[str, Any]] = body["messages"]
    words = sum(len(str(m["content"]).split()) for m in messages)
    return {"inputTokens": words + len(messages), "outputTokens": pieces}


async def session_usage(client: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    body = await gql(client, SESSION, s=session_id)
    found: dict[str, Any] = body["data"]["session"]  # type: ignore[index]
    return found


@pytest.mark.parametrize("fast", ["true", "false"], ids=["fast-path", "langchain-astream"])
async def test_usage_is_the_providers_count_per_reply_and_summed_per_session(
    make_app: Callable[..., AppServer], fake_groq: FakeGroq, fast: str
) -> None:
    app = make_app(LLM_FAST_STREAM=fast)
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
        session_id = await new_session(client)
        expected = []
        for message in ("one two three", "four five"):
            reply = await client.post("/chat", json={"session_id": session_id, "message": message})
            assert reply.status_code == 200
            # The fake's reply: "[n=K]" and each word of the message, one piece each.
            expected.append(reported(fake_groq, 1 + len(message.split())))
        session = await session_usage(client, session_id)
    replies = [m for m in session["messages"] if m["role"] == "ASSISTANT"]
    assert [m["usage"] for m in replies] == expected
    assert [m["finishReason"] for m in replies] == ["stop", "stop"]
    assert all(m["usage"] is None for m in session["messages"] if m["role"] == "USER")
    assert session["usage"] == {
        "inputTokens": sum(e["inputTokens"] for e in expected),
        "outputTokens": sum(e["outputTokens"] for e in expected),
    }


async def test_usage_sums_stay_exact_under_concurrent_turns(
    client: httpx.AsyncClient,
) -> None:
    sessions = [await new_session(client) for _ in range(6)]

    async def turns(session_id: str) -> None:
        for i in range(4):
            words = " ".join(["w"] * (i + 1))
            reply = await client.post(
                "/chat", json={"session_id": session_id, "message": f"!delay=0.01 {words}"}
            )
            assert reply.status_code == 200

    await asyncio.gather(*(turns(s) for s in sessions))
    for session_id in sessions:
        session = await session_usage(client, session_id)
        replies = [m["usage"] for m in session["messages"] if m["role"] == "ASSISTANT"]
        assert len(replies) == 4 and all(replies)
        assert session["usage"] == {
            "inputTokens": sum(r["inputTokens"] for r in replies),
            "outputTokens": sum(r["outputTokens"] for r in replies),
        }


async def test_the_session_usage_follows_its_stored_replies_in_every_branch(
    app: AppServer, client: httpx.AsyncClient
) -> None:
    session_id = await new_session(client)
    for message in ("one two", "three four five", "six"):
        await client.post("/chat", json={"session_id": session_id, "message": message})

    async def check(*off_path: dict[str, int]) -> list[dict[str, Any]]:
        """The usage is the sum over the path's replies and those of other branches."""
        session = await session_usage(client, session_id)
        replies = [m["usage"] for m in session["messages"] if m["role"] == "ASSISTANT"]
        replies += off_path
        assert session["usage"] == {
            "inputTokens": sum(r["inputTokens"] for r in replies),
            "outputTokens": sum(r["outputTokens"] for r in replies),
        }
        messages: list[dict[str, Any]] = session["messages"]
        return messages

    assert len(await check()) == 6
    ids = await gql(client, "query($s: ID!) { session(id: $s) { messages { id } } }", s=session_id)
    third = ids["data"]["session"]["messages"][4]["id"]  # type: ignore[index]
    rewound = "mutation($s: ID!, $m: ID!) { rewind(sessionId: $s, messageId: $m) { id } }"
    assert "errors" not in await gql(client, rewound, s=session_id, m=third)
    replaced = (await check())[-1]["usage"]
    async with graphql_socket(app.ws_url) as ws:
        op = await ws.start(
            "subscription($s: ID!) { regenerate(sessionId: $s) { done } }", s=session_id
        )
        assert (await ws.collect(op)).events[-1]["done"]
    # The regenerated reply's old version is kept on its branch, and still counts.
    assert len(await check(replaced)) == 4
