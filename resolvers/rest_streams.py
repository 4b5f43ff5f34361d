"""A turn's reply as a REST response, streamed as it is produced: plain text, server-sent
events, or (the route's choice) one JSON body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict
from typing import Literal

from fastapi import Response
from starlette.types import Receive, Scope, Send

from resolvers.services.errors import ChatError
from resolvers.services.turnlog import TurnEvent

StreamMode = Literal["text", "sse", "json"]


def stream_mode(accept: str | None) -> StreamMode:
    types = {part.split(";")[0].strip().lower() for part in (accept or "").split(",")}
    if "text/event-stream" in types:
        return "sse"
    if "application/json" in types and "text/plain" not in types:
        return "json"
    return "text"


class TurnStreamResponse(Response):
    """A turn's reply as it is produced: plain text, or server-sent events.

    A failure after the status was sent cannot change it: SSE gets an `error` event;
    plain text ends the connection without the chunked body's terminator, so clients
    see an incomplete response instead of a short reply that looks whole.
    """

    def __init__(
        self,
        first: TurnEvent,
        rest: AsyncIterator[TurnEvent],
        *,
        sse: bool,
        turn_id: str,
        retry_ms: int | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        media_type = "text/event-stream; charset=utf-8" if sse else "text/plain; charset=utf-8"
        # No content-length: the body is chunked, and its end is the sign of a whole reply.
        self.raw_headers = [
            (b"content-type", media_type.encode()),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            (b"x-turn-id", turn_id.encode()),
        ]
        self._first = first
        self._rest = rest
        self._sse = sse
        # Sent first: how soon an EventSource that lost the stream connects again.
        self._preamble = f"retry: {retry_ms}\n\n".encode() if sse and retry_ms else b""

    async def _events(self) -> AsyncIterator[TurnEvent]:
        yield self._first
        async for event in self._rest:
            yield event

    def _frame(self, event: TurnEvent) -> bytes:
        if not self._sse:
            return b"" if event.reasoning else event.token.encode()  # the answer only
        if event.reasoning:
            return sse("reasoning", {"reasoning": event.token}, event.seq)
        if event.done:
            reply = event.message.content if event.message else ""
            status = event.status.value if event.status else "COMPLETE"
            done = sse("done", {"response": reply, "status": status}, event.seq)
            calls = event.message.tool_calls if event.message else ()
            if calls:
                # Without an id: a client that resumes after the last token gets it again.
                listed = [asdict(call) for call in calls]
                return sse("tool_calls", {"tool_calls": listed}) + done
            return done
        return sse("token", {"token": event.token}, event.seq)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream until the end, or until the client goes away (the turn goes on without
        it; this reader stops at once rather than at the turn's end)."""
        streaming = asyncio.ensure_future(self._stream(send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({streaming, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, gone):
                task.cancel()
            await asyncio.wait({streaming, gone})
            aclose = getattr(self._rest, "aclose", None)
            if aclose is not None:
                await aclose()
        if streaming.done() and not streaming.cancelled():
            streaming.result()

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if self._preamble:
            await send({"type": "http.response.body", "body": self._preamble, "more_body": True})
        try:
            async for event in self._events():
                frame = self._frame(event)
                if frame:
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
        except ChatError as error:
            if not self._sse:
                return  # no terminator: the client sees the reply is incomplete
            frame = sse("error", {"code": error.code, "message": error.message})
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        except OSError:
            return  # the client went away; the turn goes on without it
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone away (bounded: one message per receive)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def sse(event: str, data: Mapping[str, object], seq: int | None = None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
