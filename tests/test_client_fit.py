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
