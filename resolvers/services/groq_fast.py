"""The Groq fast path: ChatGroq's own request, its server-sent events read directly.

This module touches private members of `langchain-groq` and the `groq` SDK
(`ChatGroq._create_message_dicts`, `AsyncGroq._client.post` with `stream_cls`), pinned
by the lock file; `tests/test_models.py` fails loudly when a release changes them, and
`LLM_FAST_STREAM=false` is the way round it (LangChain's own `astream`).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx
import orjson
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from resolvers.services.history import Reasoning
from resolvers.services.usage import ReplyReport


def is_groq(model: BaseChatModel) -> bool:
    return type(model).__name__ == "ChatGroq" and hasattr(model, "async_client")


_GROQ_CHAT_PATH = "/openai/v1/chat/completions"


class ProviderStreamError(Exception):
    """The provider reported an error inside its stream."""


async def groq_stream(
    model: Any,
    messages: Sequence[BaseMessage],
    report: ReplyReport,
    tools: Sequence[dict[str, Any]] = (),
) -> AsyncIterator[list[str]]:
    """`ChatGroq`'s own request (its message conversion, parameters, client, retries and
    timeout), with the server-sent events read straight off the response; Groq's own
    token counts (`x_groq.usage`) and finish reason go to `report`.

    What it skips is per-chunk work a turn does not use: the SDK building a pydantic
    object for every chunk, and LangChain's chunk objects and callbacks. That is most of
    the CPU a streamed token costs (FACTS: about 0.3 ms a token, against 0.05 ms here).

    Reasoning (`delta.reasoning`, Groq's `reasoning_format: parsed`) comes as `Reasoning`
    pieces among the answer's; the client's `tools` go in the request as ChatGroq's
    `bind_tools` puts them, and the calls the model streams are assembled in `report`.
    """
    message_dicts, params = model._create_message_dicts(list(messages), None)
    if tools:
        params["tools"] = list(tools)
    # The SDK's client.post: its auth, base URL, timeout and retries of failed requests,
    # but not `create`'s recursive transform of the parameters (about 0.1 ms a message,
    # 4 ms for a 40-message window), which plain dicts from ChatGroq do not need.
    client = model.async_client._client
    response: httpx.Response = await client.post(
        _GROQ_CHAT_PATH,
        cast_to=httpx.Response,
        body={"messages": message_dicts, **params, "stream": True},
        options={"timeout": _stream_timeout(client.timeout)},
        stream=True,
        stream_cls=None,
    )
    try:
        finished = False
        async for lines in _sse_data(response):
            texts: list[str] = []
            calling = False
            failure: Exception | None = None
            for data in lines:
                if data == b"[DONE]":
                    finished = True
                    break
                try:
                    chunk = _loads(data)
                except ValueError as exc:
                    failure = exc
                    break
                if "error" in chunk:
                    message = chunk["error"].get("message", "stream error")
                    failure = ProviderStreamError(str(message))
                    break
                choices = chunk.get("choices")
                if choices:
                    choice = choices[0]
                    delta = choice.get("delta") or {}
                    reasoning = delta.get("reasoning")
                    if reasoning and isinstance(reasoning, str):
                        texts.append(Reasoning(reasoning))
                    text = delta.get("content")
                    if text:
                        texts.append(text)
                    calls = delta.get("tool_calls")
                    if calls:
                        calling = True
                        try:
                            _add_calls(report, calls)
                        except ValueError as exc:
                            failure = ProviderStreamError(str(exc))
                            break
                    if choice.get("finish_reason"):
                        report.finish_reason = str(choice["finish_reason"])
                usage = (chunk.get("x_groq") or {}).get("usage") or chunk.get("usage")
                if isinstance(usage, dict):
                    report.add_usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
            if texts or calling:
                # What came before a failure in the same read goes out first; a read of
                # tool call pieces alone is an empty batch: the reply is alive.
                yield texts
            if failure is not None:
                raise failure
            if finished:
                # The reply is whole at [DONE]: a provider (or a proxy) that keeps the
                # connection open after it must not turn a complete reply into a timeout.
                break
    finally:
        await response.aclose()
    if not finished:
        raise ProviderStreamError("the stream ended without its [DONE] event")


def _add_calls(report: ReplyReport, calls: Any) -> None:
    """Tool call pieces of one chunk (OpenAI's shape) into `report`."""
    if not isinstance(calls, list):
        return
    for call in calls:
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments")
        if arguments == "null":
            arguments = "{}"  # Groq's word for a call without arguments
        report.add_call(call.get("index"), call.get("id"), function.get("name"), arguments)


def _stream_timeout(timeout: Any) -> Any:
    """The SDK's timeout without its bound on each read of the body: the turn's own
    deadline bounds the wait for every token (LLM_TIMEOUT_SECONDS), and a read bound
    costs the transport a timer moved on every chunk it receives."""
    if isinstance(timeout, int | float):
        return httpx.Timeout(timeout, read=None)
    if isinstance(timeout, httpx.Timeout):
        return httpx.Timeout(
            connect=timeout.connect, read=None, write=timeout.write, pool=timeout.pool
        )
    return timeout


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson refuses a lone surrogate's escape (`"\\ud800"`), which providers send
        # and json reads; the reply's text path makes it U+FFFD.
        return json.loads(data)


# An SSE line longer than this without its end is not a provider's event.
_MAX_LINE_BYTES = 1_048_576

# Reads of one stream are at least this far apart (the first is at once). A provider
# sends a token every 1-3 ms; read one at a time, each costs a wake-up of the loop and
# a pass through the HTTP layers, which is most of a relayed token's CPU. Read every
# 20 ms, one read carries 6-20 of them (measured: 5 µs a token less than every 10 ms at
# 16 replies of 500 tokens/s); the tokens wait less than the 40 ms a streamed event
# waits anyway (STREAM_MIN_INTERVAL_MS), and a stream slower than one token in 20 ms is
# read as each token comes. The end may wait up to 20 ms too.
READ_INTERVAL = 0.02


async def _sse_data(
    response: httpx.Response,
    read_interval: float = READ_INTERVAL,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[list[bytes]]:
    """The `data:` fields of the response's server-sent events, as bytes, split straight
    off the body, a list per read: a read that holds several events costs one split and
    one pass up the stream's layers, and nothing is decoded to text (comments, `event:`
    and `id:` lines are skipped). Lines end in LF or CRLF, as every provider sends them."""
    loop = asyncio.get_running_loop()
    last_read = -math.inf
    rest = b""
    async for block in response.aiter_bytes():
        if rest:
            block = rest + block
        lines = block.split(b"\n")
        rest = lines.pop()
        if len(rest) > _MAX_LINE_BYTES:
            raise ProviderStreamError("the provider sent a line of more than 1 MiB")
        found = [line[5:].strip() for line in lines if line.startswith(b"data:")]
        if found:
            yield found
        now = loop.time()
        if now - last_read < read_interval:
            await sleep(last_read + read_interval - now)
            now = loop.time()
        last_read = now
    if rest.startswith(b"data:"):
        yield [rest[5:].strip()]
