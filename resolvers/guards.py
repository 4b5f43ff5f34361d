"""ASGI guards in front of both APIs: per-address rate limits, WebSocket frame size,
and a last line that turns any unexpected error into a one-line log and a bare 500.
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resolvers.errors import RateLimited, as_chat_error
from resolvers.limits import RateLimiter

logger = logging.getLogger(__name__)

# Paths counted by the per-address limit: the APIs, not the page, docs or probes.
_LIMITED_PREFIXES = ("/graphql", "/new_session", "/chat", "/sessions", "/session/")


def client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


class ErrorShield:
    """Innermost catch-all: no stack trace reaches a client or the log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            error = as_chat_error(exc)
            # One line, no traceback (it can name internal paths); details at DEBUG.
            logger.error(  # noqa: TRY400
                "unexpected %s on %s %s",
                type(exc).__name__,
                scope.get("method"),
                scope.get("path"),
            )
            logger.debug("details", exc_info=exc)
            if started:
                return  # the connection ends without the body's end: visibly incomplete
            status, detail = (503, error.message) if error else (500, "internal error")
            await _send_json(send, status, {"detail": detail})


class RequestLimits:
    """Per-address rate limit on the API paths, and the WebSocket message size limit."""

    def __init__(self, app: ASGIApp, *, ws_max_bytes: int) -> None:
        self.app = app
        self.ws_max_bytes = ws_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or not scope["path"].startswith(_LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None)
        limiter: RateLimiter | None = services.limiter if services else None
        try:
            if limiter is not None:
                await limiter.check_address(client_address(scope))
        except RateLimited as limited:
            await self._refuse(scope, send, limited)
            return
        except Exception as exc:
            # Fail open: the request itself reports a Redis outage properly.
            logger.warning("rate limit check skipped: %s", type(exc).__name__)
        if kind == "websocket":
            receive = self._limited_receive(receive, send)
        await self.app(scope, receive, send)

    def _limited_receive(self, receive: Receive, send: Send) -> Receive:
        limit = self.ws_max_bytes

        async def checked() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                size = len(message.get("bytes") or b"") + len(message.get("text") or "")
                if size > limit:
                    await send(
                        {"type": "websocket.close", "code": 1009, "reason": "message too big"}
                    )
                    return {"type": "websocket.disconnect", "code": 1009}
            return message

        return checked

    async def _refuse(self, scope: Scope, send: Send, limited: RateLimited) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "rate limited"})
            return
        headers = [(b"retry-after", str(limited.retry_after).encode())]
        if scope["path"].startswith("/graphql"):
            body: dict[str, object] = {
                "data": None,
                "errors": [
                    {
                        "message": limited.message,
                        "extensions": {"code": limited.code, "retryAfter": limited.retry_after},
                    }
                ],
            }
        else:
            body = {"detail": limited.message}
        await _send_json(send, 429, body, headers)


async def _send_json(
    send: Send,
    status: int,
    body: dict[str, object],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
