"""Queries and mutations over HTTP, with the error codes of docs/api.md."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from tests.support import AppServer, error_codes, gql, new_session
from tests.support.ws_client import graphql_socket

SESSION = """
query($id: ID!) {
  session(id: $id) {
    id title systemPrompt createdAt updatedAt messageCount
    messages { role content createdAt }
    last: messages(last: 1) { content }
    turns { input output }
  }
}
"""

SESSIONS = """
query($first: Int!, $after: String) {
  sessions(first: $first, after: $after) {
    totalCount
    edges { cursor node { id title messageCount } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def test_create_session_returns_the_new_session(client: httpx.AsyncClient) -> None:
    body = await gql(
        client,
        'mutation { createSession(input: {title: "T", systemPrompt: "P"}) '
        "{ id title systemPrompt createdAt updatedAt messageCount messages { content } } }",
    )
    created = body["data"]["createSession"]  # type: ignore[index]
    assert uuid.UUID(created["id"]).version == 4
    assert (created["title"], created["systemPrompt"], created["messageCount"]) == ("T", "P", 0)
    assert created["createdAt"] == created["updatedAt"]
    assert created["createdAt"].endswith("+00:00")
    assert created["messages"] == []


async def test_create_session_without_input_uses_the_default_prompt(
    client: httpx.AsyncClient,
) -> None:
    body = await gql(client, "mutation { createSession { title systemPrompt } }")
    created = body["data"]["createSession"]  # type: ignore[index]
    assert created["title"] is None and created["systemPrompt"]


async def test_session_shows_messages_turns_and_counts(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    for text in ("a", "b"):
        await client.post("/chat", json={"session_id": session_id, "message": text})
    found = (await gql(client, SESSION, id=session_id))["data"]["session"]  # type: ignore[index]
    assert found["messageCount"] == 4
    assert [(m["role"], m["content"]) for m in found["messages"]] == [
        ("USER", "a"),
        ("ASSISTANT", "[n=2] a"),
        ("USER", "b"),
        ("ASSISTANT", "[n=4] b"),
    ]
    assert all(m["createdAt"] for m in found["messages"])
    assert found["last"] == [{"content": "[n=4] b"}]
    assert found["turns"] == [
        {"input": "a", "output": "[n=2] a"},
        {"input": "b", "output": "[n=4] b"},
    ]
    assert found["title"] == "a"  # a session without a title is named by its first message
    assert found["updatedAt"] > found["createdAt"]


async def test_unknown_session_is_null_and_malformed_id_is_bad_input(
    client: httpx.AsyncClient,
) -> None:
    assert (await gql(client, SESSION, id=str(uuid.uuid4())))["data"] == {"session": None}
    body = await gql(client, SESSION, id="1 OR 1=1")
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_history_query_matches_the_rest_history(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    await client.post("/chat", json={"session_id": session_id, "message": "q"})
    body = await gql(
        client, "query($s: ID!) { history(sessionId: $s) { input output } }", s=session_id
    )
    rest = (await client.get(f"/session/{session_id}/history")).json()["history"]
    assert body["data"] == {"history": rest}
    missing = await gql(
        client, "query($s: ID!) { history(sessionId: $s) { input } }", s=str(uuid.uuid4())
    )
    assert error_codes(missing) == ["NOT_FOUND"]


async def test_delete_session_reports_whether_there_was_one(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    query = "mutation($id: ID!) { deleteSession(id: $id) }"
    assert (await gql(client, query, id=session_id))["data"] == {"deleteSession": True}
    assert (await gql(client, query, id=session_id))["data"] == {"deleteSession": False}
    assert error_codes(await gql(client, query, id="nope")) == ["BAD_USER_INPUT"]


@pytest.mark.parametrize(
    ("message", "code"),
    [("", "BAD_USER_INPUT"), ("x" * 32001, "BAD_USER_INPUT"), ("!status=503", "LLM_ERROR")],
)
async def test_send_message_errors(client: httpx.AsyncClient, message: str, code: str) -> None:
    session_id = await new_session(client)
    body = await gql(
        client,
        "mutation($s: ID!, $m: String!) { sendMessage(sessionId: $s, message: $m) { content } }",
        s=session_id,
        m=message,
    )
    assert error_codes(body) == [code]
    assert (await client.get(f"/session/{session_id}/history")).json() == {"history": []}


async def test_send_message_to_unknown_session_is_not_found(client: httpx.AsyncClient) -> None:
    body = await gql(
        client,
        'mutation($s: ID!) { sendMessage(sessionId: $s, message: "hi") { content } }',
        s=str(uuid.uuid4()),
    )
    assert error_codes(body) == ["NOT_FOUND"]


@pytest.fixture(scope="module")
def listing_app(make_app: Callable[..., AppServer]) -> AppServer:
    """An app on a Redis database of its own, so the list holds only this module's sessions."""
    return make_app(ADMIN_TOKEN="admin-token")


@pytest.fixture
async def admin(listing_app: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": "Bearer admin-token"}
    async with httpx.AsyncClient(base_url=listing_app.url, headers=headers, timeout=30) as http:
        yield http


async def test_sessions_connection_pages_most_recent_first(admin: httpx.AsyncClient) -> None:
    created = [await new_session(admin) for _ in range(5)]
    first = (await gql(admin, SESSIONS, first=2))["data"]["sessions"]  # type: ignore[index]
    total = first["totalCount"]
    assert total >= 5
    ids = [edge["node"]["id"] for edge in first["edges"]]
    assert ids == list(reversed(created))[:2]
    after = first["pageInfo"]["endCursor"]
    assert first["pageInfo"]["hasNextPage"] and after == first["edges"][-1]["cursor"]
    for _ in range(total):
        page = (await gql(admin, SESSIONS, first=2, after=after))["data"]["sessions"]  # type: ignore[index]
        ids += [edge["node"]["id"] for edge in page["edges"]]
        after = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
    assert len(ids) == total == len(set(ids))
    rest = (await admin.get("/sessions")).json()["sessions"]
    assert ids == rest


async def test_sessions_default_page_is_50(admin: httpx.AsyncClient) -> None:
    body = await gql(admin, "{ sessions { edges { node { id } } } }")
    assert len(body["data"]["sessions"]["edges"]) <= 50  # type: ignore[index]


@pytest.mark.parametrize(("first", "after"), [(-1, None), (5, "not-a-cursor")])
async def test_sessions_bad_arguments(
    admin: httpx.AsyncClient, first: int, after: str | None
) -> None:
    assert error_codes(await gql(admin, SESSIONS, first=first, after=after)) == ["BAD_USER_INPUT"]


async def test_sessions_needs_the_admin_token(listing_app: AppServer) -> None:
    async with httpx.AsyncClient(base_url=listing_app.url) as anonymous:
        body = await gql(anonymous, SESSIONS, first=1)
        assert error_codes(body) == ["UNAUTHENTICATED"]
        wrong = await gql(anonymous, SESSIONS, {"authorization": "Bearer x"}, first=1)
        assert error_codes(wrong) == ["UNAUTHENTICATED"]


async def test_admin_token_in_the_websocket_connection_init(listing_app: AppServer) -> None:
    query = "{ sessions(first: 1) { totalCount } }"
    async with graphql_socket(
        listing_app.ws_url, payload={"Authorization": "Bearer admin-token"}
    ) as ws:
        got = await ws.collect(await ws.start(query))
    assert not got.errors and got.events[0]["totalCount"] >= 0
    async with graphql_socket(listing_app.ws_url) as ws:
        denied = await ws.collect(await ws.start(query))
    assert denied.codes == ["UNAUTHENTICATED"]


async def test_graphiql_is_served_to_browsers(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


async def test_queries_also_work_over_get(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql", params={"query": f'{{ session(id: "{uuid.uuid4()}") {{ id }} }}'}
    )
    assert response.status_code == 200 and response.json() == {"data": {"session": None}}


async def test_server_info_names_the_model_and_limits(client: httpx.AsyncClient) -> None:
    body = await gql(client, "{ serverInfo { model adminRequired maxMessageChars } }")
    assert body["data"] == {
        "serverInfo": {
            "model": "groq:llama-3.1-8b-instant",
            "adminRequired": False,
            "maxMessageChars": 32000,
        }
    }


async def test_a_subscription_sent_as_plain_http_is_refused_clearly(
    client: httpx.AsyncClient,
) -> None:
    session_id = await new_session(client)
    body = await gql(
        client,
        'subscription($s: ID!) { chat(sessionId: $s, message: "hi") { token } }',
        s=session_id,
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "WebSocket" in body["errors"][0]["message"]  # type: ignore[index]
    assert (await client.get(f"/session/{session_id}/history")).json() == {"history": []}
