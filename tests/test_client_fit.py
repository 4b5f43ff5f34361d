"""What the clients people use expect of the server, each found with a real client: the
WebSocket subprotocol it settles on, HEAD and the favicon a browser asks for."""

from __future__ import annotations

import json

import httpx
import websockets
from websockets.typing import Subprotocol

from tests.support import AppServer
from tests.support.ws_client import LEGACY_WS, TRANSPORT_WS


async def test_graphql_transport_ws_is_chosen_when_a_client_offers_both(app: AppServer) -> None:
    # gql's default transport offers the legacy protocol first.
    offered = [Subprotocol(LEGACY_WS), Subprotocol(TRANSPORT_WS)]
    async with websockets.connect(app.ws_url, subprotocols=offered) as ws:
        assert ws.subprotocol == TRANSPORT_WS
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        # A query runs over it (the legacy protocol would refuse it).
        query = {"query": "{ serverInfo { model } }"}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
        result = json.loads(await ws.recv())
        assert result["type"] == "next", result
        assert result["payload"]["data"]["serverInfo"]["model"]


async def test_the_legacy_protocol_alone_is_still_served(app: AppServer) -> None:
    async with websockets.connect(app.ws_url, subprotocols=[Subprotocol(LEGACY_WS)]) as ws:
        assert ws.subprotocol == LEGACY_WS


async def test_head_of_the_page_and_the_favicon(client: httpx.AsyncClient) -> None:
    head = await client.head("/")
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/html")
    assert head.content == b""
    icon = await client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/svg+xml"
    assert icon.content.startswith(b"<svg")
    assert (await client.head("/favicon.ico")).status_code == 200


async def test_every_refusal_of_graphql_is_json_with_a_code(client: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, object], int, str]] = [
        ({"content": b"{bad", "headers": {"content-type": "application/json"}}, 400, "BAD_REQUEST"),
        ({"json": {"variables": {}}}, 400, "BAD_REQUEST"),
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, 400, "BAD_REQUEST"),
        ({"json": {"query": "{ nosuch }"}}, 200, "GRAPHQL_VALIDATION_FAILED"),
        ({"json": {"query": "{ {"}}, 200, "GRAPHQL_PARSE_FAILED"),
        ({"json": {"query": "{ " + "a: serverInfo { model } " * 31 + "}"}}, 200,
         "GRAPHQL_VALIDATION_FAILED"),
        ({"json": {"query": "{ " + "serverInfo { model } " * 700 + "}"}}, 200,
         "GRAPHQL_PARSE_FAILED"),  # past the token limit
        ({"json": {"query": "query($s: ID!) { session(id: $s) { id } }"}}, 200, "BAD_USER_INPUT"),
    ]  # fmt: skip
    for request, status, code in cases:
        response = await client.post("/graphql", **request)  # type: ignore[arg-type]
        assert response.status_code == status, (request, response.text)
        assert response.headers["content-type"].startswith("application/json")
        errors = response.json()["errors"]
        assert [e["extensions"]["code"] for e in errors] == [code] * len(errors), response.text
    mutation_by_get = await client.get(
        "/graphql", params={"query": "mutation { createGuest { token } }"}
    )
    assert mutation_by_get.status_code == 400
    assert mutation_by_get.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_validation_errors_over_a_websocket_carry_a_code(app: AppServer) -> None:
    async with websockets.connect(app.ws_url, subprotocols=[Subprotocol(TRANSPORT_WS)]) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        bad = {"query": "subscription { chat(sessionId: 1) { nosuch } }"}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": bad}))
        message = json.loads(await ws.recv())
    assert message["type"] == "error", message
    codes = {e["extensions"]["code"] for e in message["payload"]}
    assert codes == {"GRAPHQL_VALIDATION_FAILED"}, message
