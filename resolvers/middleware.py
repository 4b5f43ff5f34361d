"""ASGI guards in front of both APIs: who the client is (forwarded headers only from
trusted proxies), which `Host` names are served, request and WebSocket frame sizes,
per-address rate limits (every GraphQL operation sent over a WebSocket counted), and a
last line that turns any unexpected error into a one-line log and a bare 500.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterable
from urllib.parse import unquote_plus

from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resolvers.services import metrics
from resolvers.services.errors import RateLimited, client_error
from resolvers.services.limits import RateLimiter

logger = logging.getLogger(__name__)

# Host names served, by default, on a connection that arrives on a loopback address: a
# page on another name reaching it (DNS rebinding) is refused.
LOOPBACK_HOSTS = ("localhost", "*.localhost", "127.0.0.1", "[::1]")

# The client address given to requests whose X-Forwarded-For came through a proxy this
# server does not trust: never exempt from limits, and one bucket for all of them.
UNTRUSTED_FORWARDER = "untrusted-forwarder"

# Asked by probes and scrapers, by address: no Host check, no rate limit.
_PROBES = ("/healthz", "/readyz", "/metrics")

# GraphQL messages that start an operation, in both WebSocket subprotocols.
_OPERATION_STARTS = ("subscribe", "start")


class RequestTooLarge(HTTPException):
    """A request body past MAX_REQUEST_BYTES (raised while it is read, so never whole)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class TrustedProxies:
    """Addresses whose X-Forwarded-For is believed (FORWARDED_ALLOW_IPS)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.any = False
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            if entry == "*":
                self.any = True
            else:
                self._networks.append(ipaddress.ip_network(entry, strict=False))

    def __bool__(self) -> bool:
        return self.any or bool(self._networks)


class ClientAddress:
    """Outermost: a client address that no header can forge.

    uvicorn rewrites the client from X-Forwarded-For when the peer is one it trusts,
    127.0.0.1 and ::1 unless FORWARDED_ALLOW_IPS says otherwise; the original peer is
    lost by then. So unless FORWARDED_ALLOW_IPS names proxies (uvicorn reads the same
    variable, so both then agree), a request whose client is one of its own
    X-Forwarded-For entries came through a proxy nobody configured: it gets one shared,
    never-exempt address instead of the one its header chose.
    """

    def __init__(self, app: ASGIApp, *, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self.trusted:
            client = scope.get("client")
            forwarded = [v for k, v in scope["headers"] if k == b"x-forwarded-for"]
            if client and forwarded and _named_in(str(client[0]), forwarded):
                scope["client"] = (UNTRUSTED_FORWARDER, 0)
        await self.app(scope, receive, send)


def _named_in(host: str, forwarded: list[bytes]) -> bool:
    """Whether `host` is one of the X-Forwarded-For entries (bare, host:port or [v6]:port)."""
    for entry in b",".join(forwarded).decode("latin-1").split(","):
        entry = entry.strip()
        if entry == host or entry.startswith((f"{host}:", f"[{host}]")):
            return True
    return False


class AllowedHosts:
    """Serves only the `Host` names of ALLOWED_HOSTS (Starlette's TrustedHostMiddleware).

    Unset, a connection that arrives on a loopback address must name a loopback host;
    others are served whatever their `Host`. A refused WebSocket gets the same plain
    400 as HTTP, as the handshake's answer. The probes answer whatever the `Host` (an
    orchestrator asks by address), and tell nothing about sessions.
    """

    def __init__(self, app: ASGIApp, *, allowed: list[str]) -> None:
        self.app = app
        self.configured = (
            TrustedHostMiddleware(app, allowed_hosts=allowed, www_redirect=False)
            if allowed
            else None
        )
        self.loopback = TrustedHostMiddleware(
            app, allowed_hosts=list(LOOPBACK_HOSTS), www_redirect=False
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        guard = self.configured or (self.loopback if _arrived_on_loopback(scope) else None)
        if guard is None or scope["path"] in _PROBES:
            await self.app(scope, receive, send)
            return
        await guard(scope, receive, send)


def _arrived_on_loopback(scope: Scope) -> bool:
    server = scope.get("server")
    if not server:
        return False
    try:
        return ipaddress.ip_address(str(server[0])).is_loopback
    except ValueError:
        return False  # a unix socket: only a local proxy reaches it


class BodyLimit:
    """413 for a body past MAX_REQUEST_BYTES, before it is read whole; 414 for a URL."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        if len(scope.get("query_string", b"")) > limit:
            await _send_json(send, 414, {"detail": f"the URL is longer than {limit} bytes"})
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await _send_json(send, 413, {"detail": RequestTooLarge(limit).detail})
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLarge(limit)
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracking_send)
        except RequestTooLarge as exc:
            if not started:
                await _send_json(send, 413, {"detail": exc.detail})


# Paths counted by the per-address limit: the APIs, not the page, docs or probes.
_LIMITED_PREFIXES = (
    "/graphql",
    "/new_session",
    "/chat",
    "/sessions",
    "/session/",
    "/guest",
    "/me/",
    "/admin/",
)


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
        except RequestTooLarge:
            raise  # BodyLimit answers it
        except Exception as exc:
            error = client_error(exc, f"on {scope.get('method')} {scope.get('path')}")
            if started:
                return  # the connection ends without the body's end: visibly incomplete
            status = 500 if error.code == "INTERNAL" else 503
            detail = error.message
            await _send_json(send, status, {"detail": detail})


class RequestLimits:
    """Per-address rate limit on the API paths, counting each GraphQL operation sent
    over a WebSocket as a request; the WebSocket message size limit, in bytes; and the
    most WebSockets one address holds open in this process (an exempt address none)."""

    def __init__(self, app: ASGIApp, *, ws_max_bytes: int, ws_per_address: int = 50) -> None:
        self.app = app
        self.ws_max_bytes = ws_max_bytes
        self.ws_per_address = ws_per_address
        self._open: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or not scope["path"].startswith(_LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None)
        limiter: RateLimiter | None = services.limiter if services else None
        address = client_address(scope)
        if not await self._allowed(limiter, address, scope, send):
            return
        if kind == "websocket":
            counted = limiter is not None and not limiter.exempt(address)
            key = str(address)
            if counted and self._open.get(key, 0) >= self.ws_per_address:
                metrics.RATE_LIMITED.labels("websockets").inc()
                await send({"type": "websocket.close", "code": 1008, "reason": "too many sockets"})
                return
            if counted:
                self._open[key] = self._open.get(key, 0) + 1
            receive, send = self._websocket(receive, send, limiter, address)
            metrics.WEBSOCKETS.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                metrics.WEBSOCKETS.dec()
                if counted:
                    left = self._open.get(key, 1) - 1
                    if left > 0:
                        self._open[key] = left
                    else:
                        self._open.pop(key, None)
            return
        await self.app(scope, receive, send)

    async def _allowed(
        self, limiter: RateLimiter | None, address: str | None, scope: Scope, send: Send
    ) -> bool:
        try:
            if limiter is not None:
                await limiter.check_address(address)
        except RateLimited as limited:
            await self._refuse(scope, send, limited)
            return False
        except Exception as exc:
            # Fail open: the request itself reports a Redis outage properly.
            logger.warning("rate limit check skipped: %s", type(exc).__name__)
        return True

    def _websocket(
        self, receive: Receive, send: Send, limiter: RateLimiter | None, address: str | None
    ) -> tuple[Receive, Send]:
        limit = self.ws_max_bytes
        protocol: str | None = None

        async def sending(message: Message) -> None:
            nonlocal protocol
            if message["type"] == "websocket.accept":
                protocol = message.get("subprotocol")
            await send(message)

        async def checked() -> Message:
            # Bounded by the socket: each pass consumes one message the client sent.
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return message
                text = message.get("text")
                data = message.get("bytes") or b""
                if text is not None:
                    # Characters are at most 4 bytes: count bytes only when it can matter.
                    size = len(text) if len(text) * 4 <= limit else _utf8_size(text)
                else:
                    size = len(data)
                if size > limit:
                    await send(
                        {"type": "websocket.close", "code": 1009, "reason": "message too big"}
                    )
                    return {"type": "websocket.disconnect", "code": 1009}
                refused = await self._operation_refused(limiter, address, text or data)
                if refused is None:
                    return message
                operation_id, limited = refused
                await send(_operation_error(protocol, operation_id, limited))

        return checked, sending

    async def _operation_refused(
        self, limiter: RateLimiter | None, address: str | None, frame: str | bytes
    ) -> tuple[object, RateLimited] | None:
        """The id and error when `frame` starts an operation past the address's limit."""
        if limiter is None or limiter.exempt(address):
            return None
        try:
            parsed = json.loads(frame)
        except (ValueError, RecursionError):
            return None  # the protocol handler answers malformed frames
        if not isinstance(parsed, dict) or parsed.get("type") not in _OPERATION_STARTS:
            return None
        try:
            await limiter.check_address(address)
        except RateLimited as limited:
            return parsed.get("id"), limited
        except Exception as exc:
            logger.warning("rate limit check skipped: %s", type(exc).__name__)
        return None

    async def _refuse(self, scope: Scope, send: Send, limited: RateLimited) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "rate limited"})
            return
        headers = []
        if limited.retry_after is not None:
            headers.append((b"retry-after", str(limited.retry_after).encode()))
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


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _operation_error(protocol: str | None, operation_id: object, limited: RateLimited) -> Message:
    error = {
        "message": limited.message,
        "extensions": {"code": limited.code, "retryAfter": limited.retry_after},
    }
    # graphql-transport-ws sends a list of errors; the legacy graphql-ws one error.
    payload: object = error if protocol == "graphql-ws" else [error]
    frame = {"type": "error", "id": operation_id, "payload": payload}
    return {"type": "websocket.send", "text": json.dumps(frame)}


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


# Query parameters whose values are never logged, as their names read once decoded.
_SECRET_PARAMETERS = frozenset({"access_token"})


def redact_query(path: str) -> str:
    """`path` with the value of every secret query parameter hidden. Names are compared
    as the server reads them (percent-decoded, `+` a space, any case): `access%5Ftoken`
    and `%61ccess_token` name the token too."""
    head, mark, query = path.partition("?")
    if not mark:
        return path
    parts = query.split("&")
    for index, part in enumerate(parts):
        name, equals, _ = part.partition("=")
        if equals and unquote_plus(name).strip().lower() in _SECRET_PARAMETERS:
            parts[index] = f"{name}=[hidden]"
    return f"{head}?{'&'.join(parts)}"


class RedactQueryTokens(logging.Filter):
    """Hides `?access_token=` values (the turn events route takes one, for EventSource)
    in access-log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, str) and "?" in arg for arg in record.args
        ):
            record.args = tuple(
                redact_query(arg) if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True
