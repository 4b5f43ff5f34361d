"""The history a turn sends is cut to HISTORY_MAX_TOKENS (an estimate) as well as
HISTORY_WINDOW messages, so a long session keeps answering; `Session.context` says
exactly what the next turn would send; a provider's "context too long" is retried once
with half the budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately

from tests.support import AppServer, FakeGroq, gql, new_session
from tests.support.turns import alternating, requests_made, written_outside
from tests.support.ws_client import graphql_socket

pytestmark = pytest.mark.slow

BUDGET = 2000
CONTEXT = """
query($s: ID!) {
  session(id: $s) {
    context { messageIds trimmed summary estimatedTokens }
    messages { id content }
  }
}
"""
KINDS = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


@pytest.fixture(scope="module")
def app(make_app: Callable[..., AppServer]) -> AppServer:
    return make_app(HISTORY_MAX_TOKENS=str(BUDGET))


@pytest.fixture
async def http(app: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
        yield client


def sent_history(fake: FakeGroq) -> list[dict[str, Any]]:
    """The history messages of the last request: all but the system prompt and the new
    message."""
    body = fake.requests()["last"]
    assert isinstance(body, dict)
    messages: list[dict[str, Any]] = body["messages"]
    return messages[1:-1]


def estimate(messages: list[dict[str, Any]]) -> int:
    return count_tokens_approximately([KINDS[m["role"]](content=m["content"]) for m in messages])


async def test_a_session_far_past_the_budget_keeps_answering_within_it(
    app: AppServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(http)
    texts = [f"message {i} " + "lorem " * 400 for i in range(40)]  # about 600 tokens each
    await written_outside(app.env["REDIS_URL"], session_id, *alternating(texts))
    before = (await gql(http, CONTEXT, s=session_id))["data"]["session"]  # type: ignore[index]
    reply = await http.post("/chat", json={"session_id": session_id, "message": "still there?"})
    assert reply.status_code == 200
    history = sent_history(fake_groq)
    assert 0 < len(history) < 40
    assert estimate(history) <= BUDGET
    assert [m["content"] for m in history] == texts[-len(history) :]  # the newest kept
    # The receipt said exactly this, before the turn.
    receipt = before["context"]
    by_id = {m["id"]: m["content"] for m in before["messages"]}
    assert [by_id[i] for i in receipt["messageIds"]] == [m["content"] for m in history]
    assert receipt["trimmed"] == 40 - len(history)
    assert receipt["summary"] is None
    body = fake_groq.requests()["last"]
    assert isinstance(body, dict)
    assert receipt["estimatedTokens"] == estimate(body["messages"][:-1])


async def test_a_message_larger_than_the_budget_is_sent_cut(
    app: AppServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(http)
    huge = "start " + "x" * 30_000 + " end"  # about 7,500 tokens, over the budget alone
    await written_outside(app.env["REDIS_URL"], session_id, *alternating(["question", huge]))
    reply = await http.post("/chat", json={"session_id": session_id, "message": "and?"})
    assert reply.status_code == 200
    history = sent_history(fake_groq)
    assert len(history) == 1
    assert huge.endswith(history[0]["content"]) and len(history[0]["content"]) < len(huge)
    assert estimate(history) <= BUDGET


async def test_the_providers_context_too_long_is_retried_once_with_half_the_budget(
    app: AppServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(http)
    # About 53 tokens, 100 words, each.
    await written_outside(app.env["REDIS_URL"], session_id, *alternating(["w " * 100] * 40))
    count = requests_made(fake_groq)
    # The full budget sends about 3,700 words of history; half of it about 1,800.
    reply = await http.post(
        "/chat", json={"session_id": session_id, "message": "!context=3000 short please"}
    )
    assert reply.status_code == 200, reply.text
    assert requests_made(fake_groq) == count + 2
    assert estimate(sent_history(fake_groq)) <= BUDGET // 2
    # A context too long even at half the budget fails as the provider's failure.
    refused = await http.post(
        "/chat", json={"session_id": session_id, "message": "!context=10 tiny window"}
    )
    assert refused.status_code == 502


async def test_with_summaries_the_trimmed_part_is_summarized_and_sent_first(
    make_app: Callable[..., AppServer], fake_groq: FakeGroq
) -> None:
    app = make_app(HISTORY_MAX_TOKENS="500", HISTORY_SUMMARY="true")
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
        # The fake answers the summary request with the directives of its last user
        # message, the transcript: five short pieces, after a pause.
        texts = ["!tokens=5 !first_delay=0.5 " + "w " * 100] + ["w " * 100] * 19
        await written_outside(app.env["REDIS_URL"], session_id, *alternating(texts))
        reply = await http.post("/chat", json={"session_id": session_id, "message": "hi"})
        assert reply.status_code == 200
        # The reply did not wait for the summary, which comes after it.
        receipt = (await gql(http, CONTEXT, s=session_id))["data"]["session"]["context"]  # type: ignore[index]
        assert receipt["summary"] is None
        for _ in range(100):  # bounded wait for the background summary
            receipt = (await gql(http, CONTEXT, s=session_id))["data"]["session"]["context"]  # type: ignore[index]
            if receipt["summary"]:
                break
            await asyncio.sleep(0.05)
        summary = receipt["summary"]
        assert summary == "[n=2] t0 t1 t2 t3 t4"  # what the model answered
        # Kept in the list in LangChain's layout, as a SYSTEM message.
        messages = (await gql(http, CONTEXT, s=session_id))["data"]["session"]["messages"]  # type: ignore[index]
        assert summary in [m["content"] for m in messages]
        await http.post("/chat", json={"session_id": session_id, "message": "again"})
        recent = fake_groq.requests()["recent"]
        assert isinstance(recent, list)
        [body] = [b for b in recent if b["messages"][-1]["content"] == "again"]
        assert body["messages"][1] == {"role": "system", "content": summary}
        assert estimate(body["messages"][1:-1]) <= 500
        # A regenerate right after the summary was written (it is then the newest
        # element): the reply below it is replaced, and the summary is sent once.
        async with graphql_socket(app.ws_url) as ws:
            op = await ws.start(
                "subscription($s: ID!) { regenerate(sessionId: $s) { done } }", s=session_id
            )
            regenerated = await ws.collect(op)
        assert not regenerated.errors, regenerated.errors
        recent = fake_groq.requests()["recent"]
        assert isinstance(recent, list)
        sent = [b for b in recent if b["messages"][-1]["content"] == "again"][-1]["messages"]
        # The system prompt, then the summary (refreshed by now), once.
        assert [m["role"] for m in sent].count("system") == 2
        assert sent[1]["role"] == "system" and sent[1]["content"].startswith("[n=2]")
        # Rewound to before the summary's place: the summary goes with it.
        first_id = messages[0]["id"]
        rewind = "mutation($s: ID!, $m: ID!) { rewind(sessionId: $s, messageId: $m) { id } }"
        assert "errors" not in await gql(http, rewind, s=session_id, m=first_id)
        receipt = (await gql(http, CONTEXT, s=session_id))["data"]["session"]["context"]  # type: ignore[index]
        assert receipt["summary"] is None and receipt["messageIds"] == []
