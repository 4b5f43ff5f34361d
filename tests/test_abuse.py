"""Limits against abuse: rate limits, GraphQL limits, WebSocket limits, CORS, CSRF."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.support import AppServer, FakeGroq, RedisServer, app_env, error_codes, gql, new_session
from tests.support.ws_client import CHAT, TRANSPORT_WS, graphql_socket


@pytest.fixture(scope="module")
def strict_env(fresh_db: Callable[[], str], fake_groq: FakeGroq) -> dict[str, str]:
    return app_env(
        fresh_db(),
        fake_groq,
        RATE_LIMIT_EXEMPT="",
        GRAPHQL_INTROSPECTION="false",
        GRAPHQL_MAX_ALIASES="5",
        WS_INIT_TIMEOUT_SECONDS="1",
        WS_MAX_SUBSCRIPTIONS="2",
        WS_MAX_MESSAGE_BYTES="4096",
        CORS_ORIGINS="https://app.example.com",
        RATE_LIMIT_TURNS_PER_MINUTE="2",
        GRAPHQL_MAX_DEPTH="3",
    )


@pytest.fixture(scope="module")
def strict(start_app: type[AppServer], strict_env: dict[str, str]) -> AppServer:
    return start_app(env=strict_env).start()


@pytest.fixture
async def http(strict: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=strict.url, timeout=30) as client:
        yield client


@pytest.mark.slow
async def test_rate_limit_per_address_holds_across_processes(
    start_app: type[AppServer], fresh_db: Callable[[], str], fake_groq: FakeGroq
) -> None:
    env = app_env(fresh_db(), fake_groq, RATE_LIMIT_EXEMPT="", RATE_LIMIT_PER_MINUTE="4")
    one, two = start_app(env=env).start(), start_app(env=env).start()
    async with (
        httpx.AsyncClient(base_url=one.url) as a,
        httpx.AsyncClient(base_url=two.url) as b,
    ):
        statuses = [(await c.post("/new_session")).status_code for c in (a, b, a, b)]
        assert statuses == [200, 200, 200, 200]
        limited = await b.post("/new_session")
        assert limited.status_code == 429
        assert limited.json()["detail"]
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        graphql = await a.post("/graphql", json={"query": "{ serverInfo { model } }"})
        assert graphql.status_code == 429
        assert graphql.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert (await a.get("/healthz")).status_code == 200  # probes are never limited
    one.stop()
    two.stop()


async def test_rate_limit_of_turns_per_session(http: httpx.AsyncClient) -> None:
    # The limit counts turns a clock minute: three turns that straddle a minute's end
    # are two minutes' (it failed so once). Start early in a minute (waits at most 15 s).
    if time.time() % 60 > 45:
        await asyncio.sleep(60.5 - time.time() % 60)
    session_id = await new_session(http)
    for text in ("one", "two"):
        ok = await http.post("/chat", json={"session_id": session_id, "message": text})
        assert ok.status_code == 200
    limited = await http.post("/chat", json={"session_id": session_id, "message": "three"})
    assert limited.status_code == 429
    assert "retry-after" in limited.headers
    body = await gql(
        http,
        'mutation($s: ID!) { sendMessage(sessionId: $s, message: "four") { content } }',
        s=session_id,
    )
    assert error_codes(body) == ["RATE_LIMITED"]
    assert len((await http.get(f"/session/{session_id}/history")).json()["history"]) == 2
    # Another session is not affected.
    other = await new_session(http)
    assert (await http.post("/chat", json={"session_id": other, "message": "x"})).status_code == 200


async def test_deep_queries_are_refused(http: httpx.AsyncClient) -> None:
    four = "{ sessions { edges { node { id } } } }"
    assert "errors" not in await gql(http, four)
    five = "{ sessions { edges { node { messages { role } } } } }"
    assert "errors" in await gql(http, five)


async def test_wide_and_huge_queries_are_refused(client: httpx.AsyncClient) -> None:
    wide = "{ " + " ".join(f"a{i}: serverInfo {{ model }}" for i in range(40)) + " }"
    assert "errors" in await gql(client, wide)
    huge = "{ serverInfo { " + " ".join(["model"] * 3000) + " } }"
    assert "errors" in await gql(client, huge)


async def test_aliases_limit_is_configurable(http: httpx.AsyncClient) -> None:
    five = "{ " + " ".join(f"a{i}: serverInfo {{ model }}" for i in range(5)) + " }"
    assert "errors" not in await gql(http, five)
    six = "{ " + " ".join(f"a{i}: serverInfo {{ model }}" for i in range(6)) + " }"
    assert "errors" in await gql(http, six)


async def test_batched_queries_are_refused(client: httpx.AsyncClient) -> None:
    query = {"query": "{ serverInfo { model } }"}
    response = await client.post("/graphql", json=[query, query])
    assert response.status_code == 400


async def test_introspection_can_be_turned_off(
    http: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    query = "{ __schema { queryType { name } } }"
    assert (await gql(client, query))["data"] == {"__schema": {"queryType": {"name": "Query"}}}
    assert "errors" in await gql(http, query)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", '{"query": "mutation { createSession { id } }"}'),
        ("application/x-www-form-urlencoded", "query=mutation+%7B+createSession+%7B+id+%7D+%7D"),
    ],
)
async def test_form_like_posts_cannot_run_mutations(
    client: httpx.AsyncClient, content_type: str, body: str
) -> None:
    response = await client.post("/graphql", content=body, headers={"content-type": content_type})
    assert response.status_code == 400
    mutation_by_get = await client.get(
        "/graphql", params={"query": "mutation { createSession { id } }"}
    )
    assert mutation_by_get.status_code == 400


async def test_a_socket_that_never_says_hello_is_closed(strict: AppServer) -> None:
    async with websockets.connect(strict.ws_url, subprotocols=[TRANSPORT_WS]) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408


async def test_open_subscriptions_per_socket_are_capped(
    strict: AppServer, http: httpx.AsyncClient
) -> None:
    sessions = [await new_session(http) for _ in range(3)]
    async with graphql_socket(strict.ws_url) as ws:
        for session_id in sessions[:2]:
            await ws.start(CHAT, sessionId=session_id, message="!delay=0.3 a b c")
        third = await ws.start(CHAT, sessionId=sessions[2], message="too many")
        for _ in range(50):
            message = await ws.recv()
            if message.get("id") == third:
                break
    assert message["type"] == "error"
    assert "limit" in message["payload"][0]["message"]


async def test_an_oversized_websocket_message_closes_the_socket(strict: AppServer) -> None:
    async with graphql_socket(strict.ws_url) as ws:
        big = json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "x" * 10_000}})
        await ws.ws.send(big)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_cors_is_same_origin_unless_configured(
    client: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    preflight = {
        "origin": "https://app.example.com",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    default = await client.options("/graphql", headers=preflight)
    assert "access-control-allow-origin" not in default.headers
    allowed = await http.options("/graphql", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    evil = await http.options("/graphql", headers=preflight | {"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in evil.headers
    # Apollo Client's headers, a request id and the trace context pass the preflight.
    sent = (
        "content-type, authorization, apollographql-client-name, apollographql-client-version, "
        "x-request-id, traceparent, tracestate"
    )
    apollo = await http.options(
        "/graphql", headers=preflight | {"access-control-request-headers": sent}
    )
    assert apollo.status_code == 200, apollo.text
    assert apollo.headers["access-control-allow-origin"] == "https://app.example.com"
    unknown = preflight | {"access-control-request-headers": "x-made-up"}
    assert (await http.options("/graphql", headers=unknown)).status_code == 400
    # A page's script may read the turn id and the rate limit's wait.
    response = await http.get("/healthz", headers={"origin": "https://app.example.com"})
    exposed = response.headers["access-control-expose-headers"].lower()
    assert {"x-turn-id", "retry-after"} <= {h.strip() for h in exposed.split(",")}


async def test_websockets_from_other_origins_are_refused(strict: AppServer) -> None:
    with pytest.raises(InvalidStatus):
        async with websockets.connect(
            strict.ws_url,
            subprotocols=[TRANSPORT_WS],
            origin=Origin("https://evil.example"),
        ):
            pass
    # The log says which setting lets the origin in: this server's, not Strawberry's.
    for _ in range(50):
        if "https://evil.example" in strict.output():
            break
        await asyncio.sleep(0.1)
    refused = [line for line in strict.output().splitlines() if "evil.example" in line]
    assert refused and all("CORS_ORIGINS" in line for line in refused), refused
    assert "allowed_origins" not in strict.output()
    async with websockets.connect(
        strict.ws_url,
        subprotocols=[TRANSPORT_WS],
        origin=Origin("https://app.example.com"),
    ) as ws:
        assert ws.subprotocol == TRANSPORT_WS


@pytest.mark.slow
async def test_errors_leave_no_traceback_path_or_secret_in_the_log(
    shared_redis_url: str,
    start_app: type[AppServer],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
) -> None:
    env = app_env(shared_redis_url, fake_groq, ADMIN_TOKEN="very-secret-token")
    server = start_app(env=env).start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        session_id = await new_session(http)
        await http.post("/chat", json={"session_id": session_id, "message": "!status=500 x"})
        sse = {"accept": "text/event-stream"}
        cut = {"session_id": session_id, "message": "!cut=1 a b c"}
        await http.post("/chat", json=cut, headers=sse)
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/chat", json=cut)
        await http.post("/chat", json={"session_id": "nope", "message": "x"})
        await http.get("/sessions", headers={"authorization": "Bearer wrong"})
        await gql(http, '{ history(sessionId: "nope") { input } }')
        await gql(http, "{ nosuchfield }")
    server.stop()
    log = server.output()
    assert "Traceback" not in log
    assert ".py" not in log
    assert "very-secret-token" not in log and "test-key" not in log


def test_session_ids_are_random_uuid4() -> None:
    import uuid

    from resolvers.services.validation import check_session_id

    ids = {str(uuid.uuid4()) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(check_session_id(i) for i in ids)
