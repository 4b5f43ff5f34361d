"""Conversation control: renaming a session and changing its prompt, paging back through
a long conversation by message id, and rewinding it (then sending anew: an edit)."""

from __future__ import annotations

import json
import uuid

import httpx
from redis.asyncio import Redis

from resolvers.services.keys import messages_key
from tests.support import FakeGroq, error_codes, gql, new_session
from tests.support.turns import history_of

SESSION = "id title systemPrompt messageCount"
UPDATE = f"""
mutation($s: ID!, $title: String, $prompt: String) {{
  updateSession(id: $s, input: {{title: $title, systemPrompt: $prompt}}) {{ {SESSION} }}
}}
"""
PAGE = """
query($s: ID!, $last: Int!, $before: ID) {
  session(id: $s) { messagesPage(last: $last, before: $before) { id role content turnId } }
}
"""
MESSAGES = "query($s: ID!) { session(id: $s) { messages { id role content turnId } } }"
REWIND = f"""
mutation($s: ID!, $m: ID!) {{ rewind(sessionId: $s, messageId: $m) {{ {SESSION} }} }}
"""


async def messages_of(client: httpx.AsyncClient, session_id: str) -> list[dict[str, str]]:
    body = await gql(client, MESSAGES, s=session_id)
    found: list[dict[str, str]] = body["data"]["session"]["messages"]  # type: ignore[index]
    return found


async def test_update_session_renames_and_changes_the_prompt_and_returns_the_session(
    client: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(client, title="Before", system_prompt="Be brief.")
    body = await gql(client, UPDATE, s=session_id, title="After", prompt="Be thorough.")
    assert body["data"] == {
        "updateSession": {
            "id": session_id,
            "title": "After",
            "systemPrompt": "Be thorough.",
            "messageCount": 0,
        }
    }
    # A field left null is unchanged; a blank title clears it.
    body = await gql(client, UPDATE, s=session_id, title="  ")
    assert body["data"]["updateSession"]["title"] is None  # type: ignore[index]
    assert body["data"]["updateSession"]["systemPrompt"] == "Be thorough."  # type: ignore[index]
    # The new prompt is what the next turn sends first.
    await client.post("/chat", json={"session_id": session_id, "message": "hello"})
    sent = fake_groq.requests()["last"]
    assert isinstance(sent, dict)
    assert sent["messages"][0] == {"role": "system", "content": "Be thorough."}
    # Same limits as on create: refused, nothing changed.
    for title, prompt in (("x" * 201, None), (None, "p" * 40_000)):
        got = await gql(client, UPDATE, s=session_id, title=title, prompt=prompt)
        assert error_codes(got) == ["BAD_USER_INPUT"], (title, prompt)
    body = await gql(client, UPDATE, s=session_id)
    assert body["data"]["updateSession"]["systemPrompt"] == "Be thorough."  # type: ignore[index]
    assert error_codes(await gql(client, UPDATE, s=str(uuid.uuid4()), title="x")) == ["NOT_FOUND"]


async def test_a_long_conversation_is_paged_back_to_its_start_each_message_once(
    client: httpx.AsyncClient, shared_redis_url: str
) -> None:
    session_id = await new_session(client)
    redis = Redis.from_url(shared_redis_url, decode_responses=True)
    try:
        batch = []
        for i in range(10_000):  # written by another program: ids come from positions
            kind = "human" if i % 2 == 0 else "ai"
            batch.append(json.dumps({"type": kind, "data": {"content": f"m{i}"}}))
            if len(batch) == 1000:
                await redis.lpush(messages_key(session_id), *batch)
                batch = []
    finally:
        await redis.aclose()
    await client.post("/chat", json={"session_id": session_id, "message": "newest"})
    seen: list[str] = []
    before = None
    for _ in range(60):  # 10,002 messages in pages of 200: 51 pages
        body = await gql(client, PAGE, s=session_id, last=200, before=before)
        page = body["data"]["session"]["messagesPage"]  # type: ignore[index]
        if not page:
            break
        seen = [m["content"] for m in page] + seen
        before = page[0]["id"]
    # The turn sent the system prompt, the last HISTORY_WINDOW (40) messages and its own.
    assert seen == [f"m{i}" for i in range(10_000)] + ["newest", "[n=42] newest"]
    last = await gql(client, PAGE, s=session_id, last=2, before=None)
    ids = [m["id"] for m in last["data"]["session"]["messagesPage"]]  # type: ignore[index]
    assert [i.split(".")[0] for i in ids] == ["10000", "10001"]
    # Malformed, too long, or no such message: a bad argument.
    for bad in ("nope", "99999", "5.bad", "5." + "a" * 100):
        got = await gql(client, PAGE, s=session_id, last=5, before=bad)
        assert error_codes(got) == ["BAD_USER_INPUT"], bad
    assert error_codes(await gql(client, PAGE, s=session_id, last=-1)) == ["BAD_USER_INPUT"]
    # Past the largest page: refused, not cut (a cut page would read as the start).
    assert error_codes(await gql(client, PAGE, s=session_id, last=1001)) == ["BAD_USER_INPUT"]


async def test_rewind_forgets_a_message_and_the_rest_and_a_new_message_edits(
    client: httpx.AsyncClient,
) -> None:
    session_id = await new_session(client)
    for text in ("one", "two", "three"):
        await client.post("/chat", json={"session_id": session_id, "message": text})
    messages = await messages_of(client, session_id)
    assert [m["content"] for m in messages][::2] == ["one", "two", "three"]
    second = messages[2]
    body = await gql(client, REWIND, s=session_id, m=second["id"])
    assert body["data"]["rewind"]["messageCount"] == 2  # type: ignore[index]
    # Edit: rewound, then the new text sent; the new message's id is a new one.
    await client.post("/chat", json={"session_id": session_id, "message": "two, edited"})
    after = await messages_of(client, session_id)
    # The model was sent the rewound history: the prompt, two messages and the new one.
    assert [m["content"] for m in after] == [
        "one",
        "[n=2] one",
        "two, edited",
        "[n=4] two, edited",
    ]
    assert after[2]["id"] != second["id"]
    assert after[2]["id"].split(".")[0] == second["id"].split(".")[0]
    assert len({m["id"] for m in after}) == 4
    # The old id is gone; a malformed one is bad input; nothing changes either way.
    assert error_codes(await gql(client, REWIND, s=session_id, m=second["id"])) == [
        "BAD_USER_INPUT"
    ]
    assert error_codes(await gql(client, REWIND, s=session_id, m="x")) == ["BAD_USER_INPUT"]
    assert len(await history_of(client, session_id)) == 2
    # Rewinding to the first message forgets everything.
    body = await gql(client, REWIND, s=session_id, m=after[0]["id"])
    assert body["data"]["rewind"]["messageCount"] == 0  # type: ignore[index]
    assert await history_of(client, session_id) == []


async def test_rewind_is_refused_while_a_turn_runs(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    await client.post("/chat", json={"session_id": session_id, "message": "first"})
    first = (await messages_of(client, session_id))[0]
    async with client.stream(
        "POST", "/chat", json={"session_id": session_id, "message": "!delay=0.05 slow a b c d"}
    ) as streaming:
        chunks = streaming.aiter_bytes()
        await anext(chunks)  # the turn is running
        got = await gql(client, REWIND, s=session_id, m=first["id"])
        assert error_codes(got) == ["SESSION_BUSY"]
        async for _ in chunks:
            pass
    assert len(await history_of(client, session_id)) == 2
