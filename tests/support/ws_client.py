"""A small GraphQL-over-WebSocket client speaking both subprotocols, for the tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

TRANSPORT_WS = Subprotocol("graphql-transport-ws")
LEGACY_WS = Subprotocol("graphql-ws")

CHAT = """
subscription Chat($sessionId: ID!, $message: String!) {
  chat(sessionId: $sessionId, message: $message) {
    token done message { role content createdAt }
  }
}
"""


@dataclass
class Received:
    """What one subscription delivered, with the arrival time of each event."""

    events: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    completed: bool = False

    @property
    def codes(self) -> list[str]:
        return [e.get("extensions", {}).get("code", "") for e in self.errors]

    @property
    def text(self) -> str:
        return "".join(e["token"] for e in self.events if not e["done"])


class GraphQLSocket:
    def __init__(self, ws: ClientConnection, protocol: Subprotocol) -> None:
        self.ws = ws
        self.protocol = protocol
        self._ids = 0

    async def recv(self, timeout: float = 15) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        return message

    async def start(self, query: str, **variables: Any) -> str:
        self._ids += 1
        op_id = str(self._ids)
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        payload = {"query": query, "variables": variables}
        await self.ws.send(json.dumps({"id": op_id, "type": kind, "payload": payload}))
        return op_id

    async def collect(self, op_id: str, limit: int = 10_000) -> Received:
        got = Received()
        for _ in range(limit):
            message = await self.recv()
            if message.get("type") in ("ka", "ping", "pong"):
                continue
            assert message.get("id") == op_id, message
            kind = message["type"]
            if kind in ("next", "data"):
                payload = message["payload"]
                if payload.get("errors"):
                    got.errors += payload["errors"]
                if payload.get("data"):
                    got.events.append(next(iter(payload["data"].values())))
                    got.times.append(time.monotonic())
            elif kind == "error":
                payload = message["payload"]
                got.errors += payload if isinstance(payload, list) else [payload]
                got.completed = True
                return got
            elif kind == "complete":
                got.completed = True
                return got
        raise AssertionError("subscription did not complete")

    async def chat(self, session_id: str, message: str) -> Received:
        return await self.collect(await self.start(CHAT, sessionId=session_id, message=message))


@asynccontextmanager
async def graphql_socket(
    url: str, protocol: Subprotocol = TRANSPORT_WS, payload: dict[str, Any] | None = None
) -> AsyncIterator[GraphQLSocket]:
    async with websockets.connect(url, subprotocols=[protocol]) as ws:
        assert ws.subprotocol == protocol
        init: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            init["payload"] = payload
        await ws.send(json.dumps(init))
        socket = GraphQLSocket(ws, protocol)
        for _ in range(10):
            ack = await socket.recv()
            if ack["type"] == "connection_ack":
                break
            assert ack["type"] == "ka", ack
        yield socket
