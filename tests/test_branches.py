"""Branches over the API, against two server processes and the fake provider: an edit in
the middle of a chat keeps the old branch, a switch brings it back, and the model is sent
exactly the active path; regenerations become siblings; switches race turns safely."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.support import AppServer, FakeGroq, app_env, error_codes, gql, new_session
from tests.support.turns import history_of
from tests.support.ws_client import graphql_socket

# Two processes of their own, and the fast tier has the store's tests of the same rules
# (tests/test_branch_store.py).
pytestmark = pytest.mark.slow

FIELDS = "id role content parentId branch branches siblingIds"
EVENT = f"token done seq turnId status message {{ {FIELDS} }}"
MESSAGES = f"query($s: ID!) {{ session(id: $s) {{ messages {{ {FIELDS} }} }} }}"
PAGE = f"""
query($s: ID!, $last: Int!, $before: ID) {{
  session(id: $s) {{ messagesPage(last: $last, before: $before) {{ {FIELDS} }} }}
}}
"""
SWITCH = """
mutation($s: ID!, $m: ID!) { switchBranch(sessionId: $s, messageId: $m) { id messageCount } }
"""
EDIT = f"""
subscription($s: ID!, $m: ID!, $text: String!, $t: ID) {{
  edit(sessionId: $s, messageId: $m, message: $text, turnId: $t) {{ {EVENT} }}
}}
"""
REGENERATE = f"""
subscription($s: ID!, $m: ID) {{ regenerate(sessionId: $s, messageId: $m) {{ {EVENT} }} }}
"""


@pytest.fixture(scope="module")
def pair(
    start_app: type[AppServer], fresh_db: Callable[[], str], fake_groq: FakeGroq
) -> list[AppServer]:
    """Two processes on one Redis, for the whole module (each test its own sessions)."""
    env = app_env(fresh_db(), fake_groq, RATE_LIMIT_TURNS_PER_MINUTE="0")
    return [start_app(env=env).start(), start_app(env=env).start()]


@pytest.fixture
async def http(pair: list[AppServer]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pair[0].url, timeout=30) as client:
        yield client


async def messages(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    body = await gql(http, MESSAGES, s=session_id)
    assert "errors" not in body, body
    found: list[dict[str, Any]] = body["data"]["session"]["messages"]  # type: ignore[index]
    return found


async def run(server: AppServer, query: str, **variables: Any) -> dict[str, Any]:
    """A streamed operation to its end: its done event (errors fail the test)."""
    async with graphql_socket(server.ws_url) as ws:
        got = await ws.collect(await ws.start(query, **variables))
    assert not got.errors, got.errors
    done: dict[str, Any] = got.events[-1]
    assert done["done"]
    return done


def sent(fake: FakeGroq) -> list[str]:
    """What the provider was sent last: the contents of its messages, the prompt left out."""
    body = fake.requests()["last"]
    assert isinstance(body, dict)
    return [m["content"] for m in body["messages"] if m["role"] != "system"]


async def test_an_edit_in_the_middle_keeps_the_old_branch_and_the_model_sees_the_active_path(
    pair: list[AppServer], http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(http)
    for text in ("one", "two", "three"):
        assert (
            await http.post("/chat", json={"session_id": session_id, "message": text})
        ).is_success
    old = await messages(http, session_id)
    assert [m["content"] for m in old][::2] == ["one", "two", "three"]
    assert [m["parentId"] for m in old] == [None, *[m["id"] for m in old[:-1]]]
    assert all(m["branch"] == m["branches"] == 1 for m in old)
    assert all(m["siblingIds"] == [m["id"]] for m in old)

    # Edit "two" (on the other process): a sibling, answered from the path before it.
    done = await run(pair[1], EDIT, s=session_id, m=old[2]["id"], text="two, edited")
    assert sent(fake_groq) == ["one", old[1]["content"], "two, edited"]
    new = await messages(http, session_id)
    assert [m["content"] for m in new] == [
        "one",
        old[1]["content"],
        "two, edited",
        done["message"]["content"],
    ]
    assert new[2]["parentId"] == old[1]["id"] and new[3]["parentId"] == new[2]["id"]
    assert (new[2]["branch"], new[2]["branches"]) == (2, 2)
    assert new[2]["siblingIds"] == [old[2]["id"], new[2]["id"]]
    assert done["message"]["parentId"] == new[2]["id"]
    history = await history_of(http, session_id)
    assert [t["input"] for t in history] == ["one", "two, edited"]

    # A turn on the new branch, then back to the old one: each branch keeps its replies.
    await http.post("/chat", json={"session_id": session_id, "message": "four"})
    switched = await gql(http, SWITCH, s=session_id, m=old[2]["id"])
    assert switched["data"]["switchBranch"]["messageCount"] == 6  # type: ignore[index]
    back = await messages(http, session_id)
    assert [m["id"] for m in back] == [m["id"] for m in old]
    assert (back[2]["branch"], back[2]["branches"]) == (1, 2)
    # A turn now: the provider receives exactly the active path, nothing of the edit.
    await http.post("/chat", json={"session_id": session_id, "message": "five"})
    assert sent(fake_groq) == [m["content"] for m in old] + ["five"]
    body = json.dumps(fake_groq.requests()["last"])
    assert "edited" not in body and "four" not in body

    # The edit's branch, with its own turn, is still whole.
    await gql(http, SWITCH, s=session_id, m=new[2]["id"])
    assert [m["content"] for m in await messages(http, session_id)][::2] == [
        "one",
        "two, edited",
        "four",
    ]


async def test_regenerating_any_reply_adds_siblings_shown_on_every_page(
    pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    for text in ("one", "two"):
        await http.post("/chat", json={"session_id": session_id, "message": text})
    for _ in range(3):
        await run(pair[0], REGENERATE, s=session_id)
    last = (await messages(http, session_id))[-1]
    assert (last["branch"], last["branches"]) == (4, 4)
    # A page that starts mid-path knows its first message's parent.
    page = await gql(http, PAGE, s=session_id, last=1, before=None)
    [only] = page["data"]["session"]["messagesPage"]  # type: ignore[index]
    assert only == last
    # Back to the first version of the reply, then regenerate the first reply by id.
    await gql(http, SWITCH, s=session_id, m=last["siblingIds"][0])
    first_reply = (await messages(http, session_id))[1]
    done = await run(pair[1], REGENERATE, s=session_id, m=first_reply["id"])
    now = await messages(http, session_id)
    assert [m["content"] for m in now] == ["one", done["message"]["content"]]
    assert now[1]["siblingIds"] == [first_reply["id"], now[1]["id"]]
    # What was below the first reply is one switch away, with its four versions.
    await gql(http, SWITCH, s=session_id, m=first_reply["id"])
    again = await messages(http, session_id)
    assert len(again) == 4 and again[-1]["branches"] == 4


async def test_bad_branch_operations_change_nothing(
    pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    await http.post("/chat", json={"session_id": session_id, "message": "one"})
    before = await messages(http, session_id)
    reply_id, user_id = before[1]["id"], before[0]["id"]
    for bad in ("1.00000000", "x", "9" * 80):
        assert error_codes(await gql(http, SWITCH, s=session_id, m=bad)) == ["BAD_USER_INPUT"]
    async with graphql_socket(pair[0].ws_url) as ws:
        got = await ws.collect(await ws.start(EDIT, s=session_id, m=reply_id, text="x"))
        assert got.codes == ["BAD_USER_INPUT"]  # a reply is not edited
        got = await ws.collect(await ws.start(REGENERATE, s=session_id, m=user_id))
        assert got.codes == ["BAD_USER_INPUT"]  # a user message is not regenerated
        got = await ws.collect(await ws.start(EDIT, s=session_id, m=user_id, text=" "))
        assert got.codes == ["BAD_USER_INPUT"]
    assert await messages(http, session_id) == before
    missing = str(uuid.uuid4())
    assert error_codes(await gql(http, SWITCH, s=missing, m=user_id)) == ["NOT_FOUND"]


async def test_a_switch_racing_a_turn_on_another_process_is_one_or_the_other(
    pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    """While a turn runs, every switch, edit and regenerate is refused; a switch that
    wins the race leaves the turn to start on the path it made."""
    session_id = await new_session(http)
    await http.post("/chat", json={"session_id": session_id, "message": "one"})
    await run(pair[0], REGENERATE, s=session_id)
    first, second = (await messages(http, session_id))[1]["siblingIds"]
    async with graphql_socket(pair[1].ws_url) as ws:
        op = await ws.start(
            'subscription($s: ID!) { chat(sessionId: $s, message: "!delay=0.05 !tokens=20 two") '
            f"{{ {EVENT} }} }}",
            s=session_id,
        )
        await ws.recv()  # the turn runs
        refused = await gql(http, SWITCH, s=session_id, m=first)
        assert error_codes(refused) == ["SESSION_BUSY"]
        async with graphql_socket(pair[0].ws_url) as other:
            got = await other.collect(await other.start(EDIT, s=session_id, m=first, text="x"))
            assert got.codes == ["SESSION_BUSY"]
        rest = await ws.collect(op)
        assert rest.events[-1]["done"]
    path = await messages(http, session_id)
    assert [m["id"] for m in path][:2] == [path[0]["id"], second]
    assert len(path) == 4

    # Many at once from both processes: each switch wins whole or is refused whole.
    async def switch(k: int) -> list[str]:
        async with httpx.AsyncClient(base_url=pair[k % 2].url, timeout=30) as client:
            return error_codes(
                await gql(client, SWITCH, s=session_id, m=first if k % 2 else second)
            )

    async def turn() -> int:
        response = await http.post("/chat", json={"session_id": session_id, "message": "race"})
        return response.status_code

    results = await asyncio.gather(turn(), *(switch(k) for k in range(8)))
    assert results[0] in (200, 409)
    assert all(codes in ([], ["SESSION_BUSY"]) for codes in results[1:])
    final = await messages(http, session_id)
    # Whatever won, the path is whole: each message follows the one before it.
    assert [m["parentId"] for m in final] == [None, *[m["id"] for m in final[:-1]]]
