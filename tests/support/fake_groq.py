"""A fake of Groq's OpenAI-compatible chat API, for tests (starlette + uvicorn + stdlib only).

Point the real ``langchain_groq.ChatGroq`` at it with ``GROQ_API_BASE=http://127.0.0.1:<port>``
(or ``base_url=``); the groq SDK then calls ``POST {base}/openai/v1/chat/completions``.

Reply: ``[n=N] w1 w2 ...`` -- N is the number of messages in the request (system included), the
words are those of the last ``"user"`` message (string content, or the ``"text"`` parts of a list).
Whitespace runs collapse to single spaces and the text is stripped (``"[n=N]"`` alone if empty).
Pieces: ``"[n=N]"``, then ``" w"`` for each word; they join to the reply text.

Streaming (``"stream": true``) is shaped like Groq's: one role chunk (``delta`` =
``{"role": "assistant", "content": ""}``, with ``x_groq.id``), one content chunk per piece, a last
chunk (empty ``delta``, ``finish_reason: "stop"``, ``x_groq.usage``), then ``data: [DONE]``.
Otherwise a ``chat.completion`` JSON with ``usage``.

Directives, read from the last user message (they stay in the echoed text; values are plain
numbers, the last occurrence wins, anything not matching is ordinary text):

- ``!status=CODE``: answer at once with that status (400-599, else a 400) and an OpenAI-style
  error body ``{"error": {"message", "type", "code"}}``.
- ``!retry_after=S``: with ``!status=429``, header ``retry-after: S`` (default ``0``).
- ``!cut=K``: stream the role chunk and K content chunks (all, if fewer), then drop the
  connection (no last chunk, no ``[DONE]``).
  Non-streaming: headers with the full Content-Length, half the body, then drop.
- ``!delay=S``: content chunk i goes out (i + 1) * S seconds (float) after the role chunk:
  one every S seconds, paced on a schedule rather than by a sleep per chunk.
- ``!first_delay=S``: sleep S seconds after the 200 headers, before the first (role) chunk.
  Non-streaming: first_delay + delay * pieces is slept before the response is sent.
- ``!hang``: never send response headers; wait until the client goes away.
- ``!tokens=K``: the words are replaced by K pieces ``" t0"``, ``" t1"``, ... ``" t{K-1}"``.
- ``!fail_times=K``: with ``!status=CODE``, only the first K requests carrying this exact
  last user message fail; later ones succeed (for retries).
- ``!fail_model=NAME``: answer 500 when the request's ``model`` is NAME (for fallbacks).
- ``!keepalive_after=K``: stream the role chunk and K content chunks, then only SSE comment
  lines (``: keep-alive``) every 0.1 s until the client goes away (a provider that holds a
  stream open without tokens; K=0 sends none before the first token).
- ``!context=N``: answer 400 ``context_length_exceeded`` (as Groq does) when the request's
  messages hold more than N words in all (a model's context window).
- ``!hold_after_done=S``: after ``[DONE]``, keep the connection open S seconds more (SSE
  comment lines every 0.1 s), as a provider or a proxy that does not close it.
- ``!lone_surrogate``: the first content piece carries a lone UTF-16 surrogate (``\\ud800``,
  escaped in the JSON as providers do).
- ``!reason=K``: K reasoning chunks (``delta.reasoning`` = ``" r0"``, ``" r1"``, ..., as Groq sends
  with ``reasoning_format: "parsed"``) before the content; with ``!interleave`` they alternate
  with the content pieces (r0, piece 0, r1, piece 1, ...) until used up.
- ``!call=NAME{JSON}`` (repeatable; the JSON without spaces, ``{}`` when left out): when the
  request offers a tool NAME (``tools``), the reply calls it instead of answering: per call a
  first chunk with ``index``, ``id`` (``call_<request>_<index>``), ``type`` and the name, then the
  arguments in pieces of 5 characters; the last chunk has ``finish_reason: "tool_calls"``.
  ``!rounds=R``: it calls again until the request holds R assistant messages with calls after
  the last user message (default 1). A request that ends with tool results and has had its
  rounds answers ``[n=N] <tool_call_id>=<content> ...`` from those results.

Dropping the connection: the body iterator raises, uvicorn closes the transport mid-body (that
log record is filtered out), so httpx raises ``httpx.RemoteProtocolError``.

Control: ``GET /requests`` -> ``{"count": <chat requests>, "last": <last JSON body>,
"open": <streams in flight>, "max_open": <most in flight at once>, "gone": <streams whose client
went away before their end>, "recent": <the last 20 JSON bodies, oldest first>}``;
``POST /reset`` zeroes them. Run:
``python tests/support/fake_groq.py`` prints ``READY <port>``; on SIGTERM/SIGINT it exits 0 at
once (a hanging request gets a 503, a sleeping stream is dropped).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_INT = r"\d+"
_NUM = r"\d+(?:\.\d+)?"
_DIRECTIVE_RE = re.compile(
    rf"!(?:(status|cut|tokens|fail_times|keepalive_after|context)=({_INT})|(retry_after|first_delay|delay|hold_after_done)=({_NUM}))"
)
_FAIL_MODEL_RE = re.compile(r"!fail_model=([\w.:-]+)")
_HANG_RE = re.compile(r"!hang(?![\w=])")
_SURROGATE_RE = re.compile(r"!lone_surrogate(?![\w=])")
_REASON_RE = re.compile(r"!reason=(\d+)")
_INTERLEAVE_RE = re.compile(r"!interleave(?![\w=])")
_CALL_RE = re.compile(r"!call=([A-Za-z0-9_-]+)(\{\S*\})?")
_ROUNDS_RE = re.compile(r"!rounds=(\d+)")

_ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "bad_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("tokens", "rate_limit_exceeded"),
    503: ("internal_server_error", "service_unavailable"),
}


class _Cut(Exception):
    """Raised inside a response body to make uvicorn drop the connection."""


def _is_cut(exc: BaseException | None) -> bool:
    if isinstance(exc, _Cut):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cut(e) for e in exc.exceptions)
    return False


class _HideCuts(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" record for deliberate cuts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_cut(record.exc_info[1]))


@dataclass
class Directives:
    status: int | None = None
    retry_after: str = "0"
    cut: int | None = None
    delay: float = 0.0
    first_delay: float = 0.0
    hang: bool = False
    tokens: int | None = None
    fail_times: int | None = None
    fail_model: str | None = None
    keepalive_after: int | None = None
    hold_after_done: float = 0.0
    lone_surrogate: bool = False
    context: int | None = None
    reason: int = 0
    interleave: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)
    rounds: int = 1


def parse_directives(text: str) -> Directives:
    d = Directives(
        hang=bool(_HANG_RE.search(text)), lone_surrogate=bool(_SURROGATE_RE.search(text))
    )
    reason = _REASON_RE.findall(text)
    d.reason = int(reason[-1]) if reason else 0
    d.interleave = bool(_INTERLEAVE_RE.search(text))
    d.calls = [(name, arguments or "{}") for name, arguments in _CALL_RE.findall(text)]
    rounds = _ROUNDS_RE.findall(text)
    d.rounds = int(rounds[-1]) if rounds else 1
    fail_model = _FAIL_MODEL_RE.findall(text)
    d.fail_model = fail_model[-1] if fail_model else None
    for int_name, int_value, num_name, num_value in _DIRECTIVE_RE.findall(text):
        if int_name:
            setattr(d, int_name, int(int_value))
        elif num_name == "retry_after":
            d.retry_after = num_value
        else:
            setattr(d, num_name, float(num_value))
    return d


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _messages(body: Any) -> list[Any]:
    messages = body.get("messages") if isinstance(body, dict) else None
    return messages if isinstance(messages, list) else []


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _tool_names(body: Any) -> set[str]:
    tools = body.get("tools") if isinstance(body, dict) else None
    names = set()
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def _since_user(messages: list[Any]) -> list[Any]:
    """The messages after the last user message."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "user":
            return messages[index + 1 :]
    return list(messages)


def _tool_results(messages: list[Any]) -> list[Any]:
    """The tool messages the request ends with."""
    found: list[Any] = []
    for message in reversed(messages):
        if not (isinstance(message, dict) and message.get("role") == "tool"):
            break
        found.insert(0, message)
    return found


def reply_pieces(n_messages: int, text: str, d: Directives) -> list[str]:
    words = [f"t{i}" for i in range(d.tokens)] if d.tokens is not None else text.split()
    first = f"[n={n_messages}]" + ("\ud800" if d.lone_surrogate else "")
    return [first] + [f" {w}" for w in words]


def _error_response(status: int, message: str, retry_after: str | None = None) -> JSONResponse:
    kind, code = _ERROR_TYPES.get(status, ("internal_server_error", "internal_server_error"))
    headers = {"retry-after": retry_after} if retry_after is not None else None
    body = {"error": {"message": message, "type": kind, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


@dataclass
class FakeGroqState:
    count: int = 0
    last: Any = None
    # The last bodies received, newest last (a bounded window).
    recent: list[Any] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    open: int = 0
    max_open: int = 0
    gone: int = 0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


class _Completion:
    """One chat request: builds the chunks / body, with its directives applied."""

    def __init__(self, state: FakeGroqState, body: dict[str, Any]) -> None:
        self.state = state
        messages = _messages(body)
        text = _last_user_text(messages)
        self.directives = parse_directives(text)
        self.pieces = reply_pieces(len(messages), text, self.directives)
        # Tool calls to make, or tools' results to answer from.
        offered = _tool_names(body)
        self.calls = [(n, a) for n, a in self.directives.calls if n in offered]
        since = _since_user(messages)
        rounds = sum(1 for m in since if isinstance(m, dict) and m.get("tool_calls"))
        if rounds >= self.directives.rounds:
            self.calls = []
        results = _tool_results(messages)
        if results and not self.calls:
            said = " ".join(
                f"{m.get('tool_call_id')}={_content_text(m.get('content'))}" for m in results
            )
            self.pieces = [f"[n={len(messages)}]"] + [f" {w}" for w in said.split()]
        self.model = str(body.get("model", "fake"))
        self.id = f"chatcmpl-fake{state.count}"
        self.request_id = f"req_fake{state.count}"
        self.created = int(time.time())
        prompt_words = sum(
            len(_content_text(m.get("content")).split()) for m in messages if isinstance(m, dict)
        )
        prompt_tokens = prompt_words + len(messages)
        self.usage = {
            "queue_time": 0.001,
            "prompt_tokens": prompt_tokens,
            "prompt_time": 0.001,
            "completion_tokens": len(self.pieces),
            "completion_time": 0.001,
            "total_tokens": prompt_tokens + len(self.pieces),
            "total_time": 0.002,
        }

    def _chunk(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        x_groq: dict[str, Any] | None = None,
    ) -> bytes:
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if x_groq is not None:
            payload["x_groq"] = x_groq
        return _sse(payload)

    async def _pause(self, seconds: float) -> None:
        """Sleeps; aborts the response if the server is shutting down meanwhile."""
        if seconds <= 0:
            if self.state.stopping.is_set():
                raise _Cut
            return
        # A plain sleep (wait_for makes a task per call, which the benchmark's fan-out of
        # thousands of pauses a second would pay for on the load generator's CPU).
        await asyncio.sleep(seconds)
        if self.state.stopping.is_set():
            raise _Cut

    async def stream(self) -> AsyncIterator[bytes]:
        state = self.state
        state.open += 1
        state.max_open = max(state.max_open, state.open)
        finished = False
        try:
            async for chunk in self._chunks():
                yield chunk
            finished = True
        finally:
            state.open -= 1
            if not finished:
                state.gone += 1

    async def _chunks(self) -> AsyncIterator[bytes]:
        d = self.directives
        await self._pause(d.first_delay)
        yield self._chunk({"role": "assistant", "content": ""}, x_groq={"id": self.request_id})
        # Paced on a schedule (piece i is due i + 1 delays after the first chunk), so a
        # reply of N pieces takes N delays, not N delays plus N sleeps' overshoot.
        loop = asyncio.get_running_loop()
        began = loop.time()
        reasoning = [f" r{i}" for i in range(d.reason)]
        deltas: list[dict[str, Any]] = []
        if not d.interleave:
            deltas += [{"reasoning": r} for r in reasoning]
            reasoning = []
        if self.calls:
            deltas += self._call_deltas()
        else:
            for piece in self.pieces:
                if reasoning:
                    deltas.append({"reasoning": reasoning.pop(0)})
                deltas.append({"content": piece})
        for i, delta in enumerate(deltas):
            if d.cut is not None and i >= d.cut:
                raise _Cut
            if d.keepalive_after is not None and i >= d.keepalive_after:
                break
            if d.delay > 0:
                await self._pause(max(0.0, began + (i + 1) * d.delay - loop.time()))
            yield self._chunk(delta)
        if d.keepalive_after is not None:
            # Bounded: 10 minutes of comments at most, or until the client goes away.
            for _ in range(6000):
                await self._pause(0.1)
                yield b": keep-alive\n\n"
            raise _Cut
        if d.cut is not None:
            raise _Cut
        reason = "tool_calls" if self.calls else "stop"
        yield self._chunk({}, reason, x_groq={"id": self.request_id, "usage": self.usage})
        yield b"data: [DONE]\n\n"
        # Bounded by the directive: a connection held open after the end.
        for _ in range(int(d.hold_after_done * 10)):
            await self._pause(0.1)
            yield b": still here\n\n"

    def _call_deltas(self) -> list[dict[str, Any]]:
        """The calls as Groq streams them: a first piece naming each, then its arguments."""
        deltas: list[dict[str, Any]] = []
        for index, (name, arguments) in enumerate(self.calls):
            first = {
                "index": index,
                "id": f"call_{self.state.count}_{index}",
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            deltas.append({"role": "assistant", "content": None, "tool_calls": [first]})
            for at in range(0, len(arguments), 5):
                piece = {"index": index, "function": {"arguments": arguments[at : at + 5]}}
                deltas.append({"tool_calls": [piece]})
        return deltas

    def body(self) -> bytes:
        completion = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self.pieces)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self.usage,
            "system_fingerprint": "fp_fake",
            "x_groq": {"id": self.request_id},
        }
        return json.dumps(completion).encode()


async def _partial(body: bytes) -> AsyncIterator[bytes]:
    yield body[: len(body) // 2]
    raise _Cut


async def _idle(request: Request, state: FakeGroqState, seconds: float | None) -> bool:
    """Waits `seconds` (None: forever); False if the client left or the server stops first."""

    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    waiters = {asyncio.ensure_future(client_gone()), asyncio.ensure_future(state.stopping.wait())}
    try:
        done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return not done


def create_app(state: FakeGroqState | None = None) -> Starlette:
    st = state if state is not None else FakeGroqState()

    async def chat_completions(request: Request) -> Response:
        st.count += 1
        st.last = None
        try:
            st.last = body = await request.json()
            st.recent = [*st.recent[-19:], body]
        except ValueError:
            return _error_response(400, "fake_groq: request body is not JSON")
        if not isinstance(body, dict):
            return _error_response(400, "fake_groq: request body is not a JSON object")
        completion = _Completion(st, body)
        d = completion.directives
        if d.fail_model is not None and body.get("model") == d.fail_model:
            return _error_response(500, f"fake_groq: model {d.fail_model} fails on purpose")
        if d.context is not None:
            words = sum(
                len(_content_text(m.get("content")).split())
                for m in _messages(body)
                if isinstance(m, dict)
            )
            if words > d.context:
                error = {
                    "message": "Please reduce the length of the messages or completion.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
                return JSONResponse({"error": error}, status_code=400)
        if d.status is not None and d.fail_times is not None:
            key = _last_user_text(_messages(body))
            st.failures[key] = st.failures.get(key, 0) + 1
            if st.failures[key] > d.fail_times:
                d.status = None
        if d.status is not None:
            if not 400 <= d.status <= 599:
                return _error_response(400, f"fake_groq: !status={d.status} is not in 400-599")
            retry_after = d.retry_after if d.status == 429 else None
            return _error_response(d.status, f"fake_groq: simulated HTTP {d.status}", retry_after)
        if d.hang:
            await _idle(request, st, None)
            return _error_response(503, "fake_groq: shutting down")
        if body.get("stream"):
            return StreamingResponse(
                completion.stream(),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-request-id": completion.request_id},
            )
        wait = d.first_delay + d.delay * len(completion.pieces)
        if wait > 0 and not await _idle(request, st, wait):
            return _error_response(503, "fake_groq: client gone or shutting down")
        payload = completion.body()
        if d.cut is not None:
            return StreamingResponse(
                _partial(payload),
                media_type="application/json",
                headers={"content-length": str(len(payload))},
            )
        return Response(payload, media_type="application/json")

    async def requests(request: Request) -> Response:
        return JSONResponse(
            {
                "count": st.count,
                "last": st.last,
                "recent": st.recent,
                "open": st.open,
                "max_open": st.max_open,
                "gone": st.gone,
            }
        )

    async def reset(request: Request) -> Response:
        st.count = 0
        st.last = None
        st.recent = []
        st.max_open = st.open
        st.gone = 0
        return JSONResponse({"count": 0, "last": None})

    app = Starlette(
        routes=[
            Route("/openai/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/requests", requests, methods=["GET"]),
            Route("/reset", reset, methods=["POST"]),
        ]
    )
    app.state.fake_groq = st
    return app


class _Server(uvicorn.Server):
    """Prints READY once listening; tells in-flight fake responses to stop on SIGINT/SIGTERM."""

    def __init__(self, config: uvicorn.Config, state: FakeGroqState, port: int) -> None:
        super().__init__(config)
        self._state = state
        self._port = port
        self._loop = asyncio.get_running_loop()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(f"READY {self._port}", flush=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._state.stopping.set)


async def serve() -> None:
    state = FakeGroqState()
    # Naming IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for
    # sockets whose proto says TCP, and without it Nagle holds each response's body about
    # 40 ms behind its headers on a kept-alive connection. Accepted sockets inherit it too.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(state),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    logging.getLogger("uvicorn.error").addFilter(_HideCuts())
    server = _Server(config, state, port)

    # uvicorn swaps in its own handlers while serving, then restores these and re-raises the
    # signal it caught: these make that a no-op (and cover a signal arriving before it starts).
    def stop(sig: int, frame: FrameType | None) -> None:
        server.handle_exit(sig, frame)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    await server.serve(sockets=[sock])


if __name__ == "__main__":
    asyncio.run(serve())
