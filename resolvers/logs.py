"""The process's log lines: plain text or one JSON object a line (LOG_FORMAT), each with
the id of the request (and so of the turn) it belongs to.

A request's id is its `X-Request-ID` when that is a sane token, else one made here; the
`RequestIds` middleware sets it for everything the request runs, including the turn it
starts (asyncio tasks inherit it) and the access-log line, and echoes it in the response.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# "-" outside any request (start, stop, the process's own tasks).
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIds:
    """Gives each HTTP request and WebSocket connection its id: the client's
    `X-Request-ID` if it is 1-128 characters of letters, digits and `._:/+=@-`, else a
    new one; echoed in the response's `X-Request-ID` (HTTP, and the WebSocket's accept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        rid = given if given is not None and _ACCEPTED_ID.fullmatch(given) else new_request_id()
        token = request_id.set(rid)
        echoed = (b"x-request-id", rid.encode())

        async def sending(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = [h for h in message.get("headers", []) if h[0].lower() != echoed[0]]
                message = {**message, "headers": [*headers, echoed]}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            request_id.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (`%(request_id)s`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id; an access-log
    line also has its parts (client, method, path, status); an exception its type and
    text (tracebacks stay out of the log)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id.get()),
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, _, status = args
            line |= {"client": client, "method": method, "path": path, "status": status}
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            line["error"] = f"{type(error).__name__}: {error}"
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str, fmt: str) -> None:
    """The root logger's handler, and uvicorn's own, in `fmt` ("text" or "json"), each
    line with its request id."""
    formatter: logging.Formatter = (
        JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    root.setLevel(level)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(formatter)
            if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
                handler.addFilter(RequestIdFilter())
