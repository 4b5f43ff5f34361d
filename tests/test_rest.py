"""The documented REST routes, over real HTTP, with the bodies and statuses of docs/api.md."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.support import AppServer, FakeGroq, RedisServer, gql, new_session

UUID4_LEN = 36


async def test_new_session_without_body_returns_a_uuid4(client: httpx.AsyncClient) -> None:
    response = await client.post("/new_session")
    assert response.status_code == 200
    session_id = response.json()["session_id"]
    assert len(session_id) == UUID4_LEN and uuid.UUID(session_id).version == 4


async def test_new_session_keeps_title_and_system_prompt(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client, title="Trip", system_prompt="Talk like a pirate")
    body = await gql(
        client, "query($id: ID!) { session(id: $id) { title systemPrompt } }", id=session_id
    )
    assert body["data"] == {"session": {"title": "Trip", "systemPrompt": "Talk like a pirate"}}


@pytest.mark.parametrize("payload", [b"{not json", b'{"title": 5}', b"[1, 2]"])
async def test_new_session_with_a_body_that_is_not_the_documented_json_is_422(
    client: httpx.AsyncClient, payload: bytes
) -> None:
    response = await client.post(
        "/new_session", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)


async def test_new_session_with_an_over_long_title_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/new_session", json={"title": "x" * 1000})
    assert response.status_code == 400


async def test_chat_streams_plain_text_by_default(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    response = await client.post("/chat", json={"session_id": session_id, "message": "hello you"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "[n=2] hello you"


async def test_chat_sends_the_history_with_each_turn(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    await client.post("/chat", json={"session_id": session_id, "message": "one"})
    response = await client.post("/chat", json={"session_id": session_id, "message": "two"})
    assert response.text == "[n=4] two"


def parse_sse(text: str) -> list[tuple[str, dict[str, str]]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_chat_streams_server_sent_events_when_asked(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    response = await client.post(
        "/chat",
        json={"session_id": session_id, "message": "a b c"},
        headers={"accept": "text/event-stream"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    tokens = [data["token"] for name, data in events if name == "token"]
    assert tokens == ["[n=2]", " a", " b", " c"]
    assert events[-1] == ("done", {"response": "[n=2] a b c", "status": "COMPLETE"})
    # Each event is numbered, so EventSource can resume after the last it saw.
    ids = [
        int(block.split("\n", 1)[0].removeprefix("id: "))
        for block in response.text.strip().split("\n\n")
    ]
    assert ids == [1, 2, 3, 4, 5]
    assert response.headers["x-turn-id"]


async def test_chat_answers_one_json_body_when_asked(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    response = await client.post(
        "/chat",
        json={"session_id": session_id, "message": "hi"},
        headers={"accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.json() == {"session_id": session_id, "response": "[n=2] hi"}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"session_id": "not-a-uuid", "message": "hi"}, 400),
        ({"session_id": str(uuid.uuid1()), "message": "hi"}, 400),
        ({"session_id": str(uuid.uuid4()), "message": "hi"}, 404),
        ({"session_id": str(uuid.uuid4())}, 422),
        ({"message": "hi"}, 422),
        ({"session_id": str(uuid.uuid4()), "message": 5}, 422),
    ],
)
async def test_chat_refuses_bad_requests(
    client: httpx.AsyncClient, body: dict[str, object], status: int
) -> None:
    response = await client.post("/chat", json=body)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize("message", ["", "   \n", "x" * 32001])
async def test_chat_refuses_empty_and_over_long_messages(
    client: httpx.AsyncClient, message: str
) -> None:
    session_id = await new_session(client)
    response = await client.post("/chat", json={"session_id": session_id, "message": message})
    assert response.status_code == 400
    history = await client.get(f"/session/{session_id}/history")
    assert history.json() == {"history": []}


async def test_chat_body_that_is_not_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/chat", content=b"session_id=x", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


async def test_history_lists_turns_oldest_first(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    for text in ("first", "second"):
        await client.post("/chat", json={"session_id": session_id, "message": text})
    response = await client.get(f"/session/{session_id}/history")
    assert response.status_code == 200
    assert response.json() == {
        "history": [
            {"input": "first", "output": "[n=2] first"},
            {"input": "second", "output": "[n=4] second"},
        ]
    }


async def test_history_of_unknown_or_malformed_session(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/session/{uuid.uuid4()}/history")).status_code == 404
    assert (await client.get("/session/abc/history")).status_code == 400


async def test_delete_session(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client)
    await client.post("/chat", json={"session_id": session_id, "message": "hi"})
    assert (await client.delete(f"/session/{session_id}")).status_code == 204
    assert (await client.delete(f"/session/{session_id}")).status_code == 404
    assert (await client.get(f"/session/{session_id}/history")).status_code == 404
    assert (await client.delete("/session/bad-id")).status_code == 400
    assert session_id not in (await client.get("/sessions")).json()["sessions"]


async def test_sessions_lists_most_recently_active_first(client: httpx.AsyncClient) -> None:
    older = await new_session(client)
    newer = await new_session(client)
    listed = (await client.get("/sessions")).json()
    assert list(listed) == ["sessions"]
    assert listed["sessions"][:2] == [newer, older]
    await client.post("/chat", json={"session_id": older, "message": "wake"})
    assert (await client.get("/sessions")).json()["sessions"][:2] == [older, newer]


async def test_sessions_pages_with_limit_and_cursor(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await new_session(client)
    everything = (await client.get("/sessions")).json()["sessions"]
    seen: list[str] = []
    cursor = None
    for _ in range(len(everything) + 1):
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/sessions", params=params)).json()
        assert len(page["sessions"]) <= 2
        seen += page["sessions"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything


@pytest.mark.parametrize("params", [{"limit": "x"}, {"limit": "0"}, {"limit": "2", "cursor": "zz"}])
async def test_sessions_bad_paging_arguments_are_400(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    assert (await client.get("/sessions", params=params)).status_code == 400


@pytest.mark.slow
async def test_admin_token_protects_the_session_list(
    make_app: Callable[..., AppServer],
    shared_redis_url: str,
    start_app: type[AppServer],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
) -> None:
    server = make_app(redis_url=shared_redis_url, ADMIN_TOKEN="s3cret")
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/sessions")).status_code == 401
        wrong = await http.get("/sessions", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["detail"]
        right = await http.get("/sessions", headers={"authorization": "Bearer s3cret"})
        assert right.status_code == 200
        # Sessions themselves are not admin operations.
        assert (await http.post("/new_session")).status_code == 200
    server.stop()
    assert "s3cret" not in server.output()


async def test_health_readiness_docs_and_page(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/new_session", "/chat", "/sessions", "/session/{session_id}/history"} <= set(paths)
    page = await client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
