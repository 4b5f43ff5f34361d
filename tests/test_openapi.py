"""The OpenAPI document as generated clients read it: a Python client generated from
/openapi.json by openapi-python-client calls every REST route of a running server."""

from __future__ import annotations

import contextlib
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.support import AppServer, FakeGroq
from tests.support.servers import app_env

ADMIN = "openapi-admin-token"
GENERATOR = Path(sys.executable).parent / "openapi-python-client"


@pytest.fixture(scope="module")
def server(start_app: type[AppServer], fresh_db: Any, fake_groq: FakeGroq) -> Iterator[AppServer]:
    app = start_app(env=app_env(fresh_db(), fake_groq, ADMIN_TOKEN=ADMIN)).start()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def spec(server: AppServer) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{server.url}/openapi.json").json()
    return found


@pytest.fixture(scope="module")
def generated(spec: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The client package openapi-python-client makes of the server's document."""
    folder = tmp_path_factory.mktemp("generated")
    (folder / "openapi.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [str(GENERATOR), "generate", "--path", "openapi.json", "--meta", "none"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("chat_session_server_client")
    finally:
        sys.path.remove(str(folder))


def api(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.api.{name}")


def test_the_document_says_what_generated_clients_need(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            if path in ("/healthz", "/readyz"):
                continue
            # A guest token is what an anonymous caller asks for: POST /guest needs none.
            expected: list[dict[str, list[str]]] = [] if path == "/guest" else [{}, {"bearer": []}]
            assert operation["security"] == expected, where
            assert "429" in operation["responses"], where
            assert operation["responses"]["429"]["headers"]["Retry-After"], where
            names = [p["name"] for p in operation.get("parameters", [])]
            assert "authorization" not in names, where
    for path in ("/sessions", "/me/sessions"):
        (limit,) = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == "limit"]
        assert limit["schema"]["type"] == "integer"
    chat = spec["paths"]["/chat"]["post"]["responses"]["200"]
    # The default first: generated clients read a response as its first type.
    assert list(chat["content"]) == ["text/plain", "text/event-stream", "application/json"]
    events = spec["paths"]["/session/{session_id}/turns/{turn_id}/events"]["get"]
    assert list(events["responses"]["200"]["content"]) == ["text/event-stream"]
    (after,) = [p for p in events["parameters"] if p["name"] == "after"]
    assert after["schema"]["type"] == "integer"
    assert chat["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatResponse"
    }
    assert "X-Turn-Id" in chat["headers"]


def test_every_reference_of_the_document_resolves(spec: dict[str, Any]) -> None:
    refs: list[str] = []
    pending: list[Any] = [spec]
    while pending:  # every node once: the document is a tree
        node = pending.pop()
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    assert "#/components/schemas/ToolCallBody" in refs  # the chat answer's tool calls
    for ref in refs:
        found: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            found = found.get(part) if isinstance(found, dict) else None
        assert isinstance(found, dict), ref


@pytest.mark.slow  # generates a client with openapi-python-client
def test_a_generated_client_calls_every_route(
    generated: ModuleType, server: AppServer, spec: dict[str, Any]
) -> None:
    client_module = importlib.import_module(f"{generated.__name__}.client")
    models = importlib.import_module(f"{generated.__name__}.models")
    with contextlib.ExitStack() as clients:
        check_every_route(generated, client_module, models, server, spec, clients)


def check_every_route(
    generated: ModuleType,
    client_module: Any,
    models: Any,
    server: AppServer,
    spec: dict[str, Any],
    clients: contextlib.ExitStack,
) -> None:
    plain = clients.enter_context(client_module.Client(base_url=server.url))
    called: set[str] = set()

    assert api(generated, "operations.healthz_healthz_get").sync(client=plain) is not None
    assert (
        api(generated, "operations.readyz_readyz_get").sync_detailed(client=plain).status_code
        == 200
    )
    called |= {"GET /healthz", "GET /readyz"}

    guest = api(generated, "identity.guest_guest_post").sync(client=plain)
    called.add("POST /guest")
    user = clients.enter_context(
        client_module.AuthenticatedClient(base_url=server.url, token=guest.token)
    )
    admin = clients.enter_context(
        client_module.AuthenticatedClient(base_url=server.url, token=ADMIN)
    )

    made = api(generated, "sessions.new_session_new_session_post").sync(
        client=user, body=models.NewSessionBody(title="from a generated client")
    )
    session_id = made.session_id
    called.add("POST /new_session")

    chat = api(generated, "chat.chat_chat_post")
    # With its defaults: the plain-text reply, read as text.
    plain_reply = chat.sync_detailed(
        client=user, body=models.ChatBody(session_id=session_id, message="first")
    )
    assert plain_reply.status_code == 200 and plain_reply.parsed == "[n=2] first"
    reply = chat.sync_detailed(
        client=user,
        body=models.ChatBody(session_id=session_id, message="hello there"),
        accept="application/json",
    )
    assert reply.status_code == 200
    assert json.loads(reply.parsed) == {"session_id": session_id, "response": "[n=4] hello there"}
    turn_id = reply.headers["x-turn-id"]
    called.add("POST /chat")

    # The events with the generated function's defaults, then resumed after a point.
    turn_events = api(generated, "chat.turn_events_session_session_id_turns_turn_id_events_get")
    events = turn_events.sync_detailed(session_id, turn_id, client=user)
    assert events.status_code == 200 and "event: done" in events.parsed
    resumed = turn_events.sync_detailed(session_id, turn_id, client=user, after=1)
    assert resumed.status_code == 200 and "id: 1\n" not in resumed.parsed
    # ... and as a stream, through the generated client's own connection.
    with user.get_httpx_client().stream(
        "GET", f"/session/{session_id}/turns/{turn_id}/events"
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert "event: done" in stream.read().decode()
    called.add("GET /session/{session_id}/turns/{turn_id}/events")

    stopped = api(generated, "chat.stop_turn_session_session_id_stop_post").sync(
        session_id, client=user, body=models.StopBody()
    )
    assert stopped.stopped is False
    called.add("POST /session/{session_id}/stop")

    history = api(generated, "sessions.history_session_session_id_history_get").sync(
        session_id, client=user
    )
    assert [turn.input_ for turn in history.history] == ["first", "hello there"]
    called.add("GET /session/{session_id}/history")

    mine = api(generated, "sessions.my_sessions_me_sessions_get").sync(client=user, limit=10)
    assert mine.sessions == [session_id]
    called.add("GET /me/sessions")
    every = api(generated, "sessions.sessions_sessions_get").sync(client=admin, limit=1000)
    assert session_id in every.sessions
    refused = api(generated, "sessions.sessions_sessions_get").sync(client=user, limit=10)
    assert isinstance(refused, models.ErrorResponse)
    called.add("GET /sessions")

    # A share is made over GraphQL; anyone reads it with no token.
    made_share = user.get_httpx_client().post(
        "/graphql",
        json={"query": f'mutation {{ shareSession(id: "{session_id}") {{ id }} }}'},
    )
    share_id = made_share.json()["data"]["shareSession"]["id"]
    shared = api(generated, "shares.share_share_share_id_get").sync(share_id, client=plain)
    assert [m.content for m in shared.messages] == [
        "first",
        "[n=2] first",
        "hello there",
        "[n=4] hello there",
    ]
    called.add("GET /share/{share_id}")

    deleted = api(generated, "sessions.delete_session_session_session_id_delete").sync_detailed(
        session_id, client=user
    )
    assert deleted.status_code == 204
    called.add("DELETE /session/{session_id}")

    routes = {f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops}
    assert called == routes, routes - called
