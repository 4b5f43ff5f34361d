"""The chat model: any provider `init_chat_model` knows, or the built-in offline one."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
from httpx_aiohttp import HttpxAiohttpClient
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langsmith.utils import tracing_is_enabled

from resolvers.services import metrics
from resolvers.services.errors import ModelFailed
from resolvers.services.groq_fast import groq_stream, is_groq
from resolvers.services.history import REASONING, Reasoning
from resolvers.services.settings import OFFLINE_MODEL
from resolvers.services.usage import ReplyReport

logger = logging.getLogger(__name__)

OFFLINE_REPLY = (
    "No LLM provider is configured, so this reply comes from the built-in offline model. "
    "To talk to a real model, set `GROQ_API_KEY` (Groq's `llama-3.1-8b-instant` is then "
    "used), or set `LLM_MODEL` to `provider:model`, for example `openai:gpt-4o-mini` with "
    "`OPENAI_API_KEY` (and `OPENAI_BASE_URL` for any OpenAI-compatible server) or "
    "`ollama:llama3.2`, then restart the server."
)


def _pieces(text: str) -> list[str]:
    """Word-sized pieces that join back to `text` exactly."""
    return re.findall(r"\s*\S+", text)


class OfflineChatModel(BaseChatModel):
    """Streams a fixed reply saying that no provider is configured and how to set one."""

    token_delay: float = 0.02

    @property
    def _llm_type(self) -> str:
        return OFFLINE_MODEL

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=OFFLINE_REPLY))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for piece in _pieces(OFFLINE_REPLY):
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in offline_chunks(messages, kwargs.get("tools") or ()):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            yield ChatGenerationChunk(message=chunk)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """The client's tools, for the markers that call one (see `offline_chunks`)."""
        return self.bind(tools=list(tools), **kwargs)


_REASON_RE = re.compile(r"!reason=(\d{1,3})\b")
_CALL_RE = re.compile(r"!call=([A-Za-z0-9_-]{1,64})(\{\S*\})?")


def offline_chunks(messages: Sequence[BaseMessage], tools: Sequence[Any]) -> list[AIMessageChunk]:
    """The offline model's reply, with two markers a user message may carry to try the
    rich turns without a provider: `!reason=K` streams K pieces of reasoning first, and
    `!call=NAME{"json":"arguments"}` calls the bound tool NAME (arguments streamed in
    pieces, as providers do). After tools' results, it answers with what they said."""
    last = messages[-1] if messages else None
    if last is not None and last.type == "tool":
        results: list[str] = []
        for message in reversed(messages):
            if message.type != "tool":
                break
            results.insert(0, message.text)
        return [
            AIMessageChunk(content=p) for p in _pieces("The tools answered: " + "; ".join(results))
        ]
    text = last.text if last is not None and last.type == "human" else ""
    chunks: list[AIMessageChunk] = []
    reason = _REASON_RE.search(text)
    for n in range(int(reason.group(1)) if reason else 0):
        chunks.append(AIMessageChunk(content="", additional_kwargs={REASONING: f" thought {n}"}))
    names = {_tool_name(tool) for tool in tools}
    calls = [m for m in _CALL_RE.finditer(text) if m.group(1) in names]
    reply = secrets.token_hex(4)  # call ids unique in a conversation, as providers' are
    for index, call in enumerate(calls):
        arguments = call.group(2) or "{}"
        pieces = [arguments[i : i + 8] for i in range(0, len(arguments), 8)]
        for n, piece in enumerate(pieces):
            first = n == 0
            chunks.append(
                AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {
                            "name": call.group(1) if first else None,
                            "args": piece,
                            "id": f"call_{reply}_{index}" if first else None,
                            "index": index,
                        }
                    ],
                )
            )
    if not calls:
        chunks += [AIMessageChunk(content=p) for p in _pieces(OFFLINE_REPLY)]
    return chunks


def _tool_name(tool: Any) -> str:
    function = tool.get("function") if isinstance(tool, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else ""


class ChatModel:
    """The configured model, reduced to what a turn needs: a stream of text pieces.

    Each shard is the primary and then its fallbacks: a later one is tried only when the
    one before it failed before its first token (as LangChain's `with_fallbacks` does
    for streams); once a reply has begun, a failure ends it. Replies take the shards in
    turn; each shard has an HTTP pool of its own (see `build_model`).
    """

    def __init__(
        self,
        shards: Sequence[Sequence[BaseChatModel]],
        name: str,
        *,
        fast: bool = True,
        pools: Sequence[httpx.AsyncClient] = (),
        first_token_wait: float = 60.0,
    ) -> None:
        self._shards = [list(models) for models in shards]
        self.first_token_wait = first_token_wait
        self.name = name
        self.attempts = len(self._shards[0])
        self._fast = fast
        self._pools = list(pools)
        self._next = itertools.cycle(range(len(self._shards)))

    async def aclose(self) -> None:
        """Close the HTTP connections to the provider."""
        for pool in self._pools:
            await pool.aclose()

    async def stream(
        self,
        messages: Sequence[BaseMessage],
        report: ReplyReport | None = None,
        tools: Sequence[dict[str, Any]] = (),
    ) -> AsyncGenerator[list[str], None]:
        """The reply's pieces, in batches (the pieces that came together: one read of the
        provider's stream), as valid text (a lone surrogate becomes U+FFFD); a batch is
        empty only when the read brought tool call pieces alone (a sign of life: the
        calls themselves go to `report`).

        Each model gets `first_token_wait` seconds for its first piece, its SDK's own
        retries included; past it, or on a failure, the next model is tried. `report`
        gets the provider's own token counts and finish reason, when it sends them, and
        the tool calls the model asks for (of `tools`, in OpenAI's format, bound for this
        reply); reasoning comes as `Reasoning` pieces among the answer's.
        """
        report = report if report is not None else ReplyReport()
        models = self._shards[next(self._next)]
        last = len(models) - 1
        for index, model in enumerate(models):
            batches = _valid_text(self._stream_one(model, messages, report, tools))
            try:
                async with asyncio.timeout(self.first_token_wait):
                    first = await anext(batches)
            except StopAsyncIteration:
                return
            except Exception as exc:
                await batches.aclose()
                failure: Exception = exc
                if isinstance(exc, TimeoutError):
                    failure = ModelFailed(
                        f"the model sent nothing for {self.first_token_wait:g} seconds"
                    )
                if index == last:
                    raise failure from None
                metrics.FALLBACKS.inc()
                logger.warning(
                    "model %d failed before its first token (%s); trying the next",
                    index,
                    type(exc).__name__,
                )
                continue
            try:
                yield first
                async for batch in batches:
                    yield batch
            finally:
                await batches.aclose()
            return

    async def text(self, messages: Sequence[BaseMessage]) -> str:
        """The whole reply's answer (its reasoning left out)."""
        async with contextlib.aclosing(self.stream(messages)) as batches:
            return "".join(
                [
                    piece
                    async for batch in batches
                    for piece in batch
                    if type(piece) is not Reasoning
                ]
            )

    def _stream_one(
        self,
        model: BaseChatModel,
        messages: Sequence[BaseMessage],
        report: ReplyReport,
        tools: Sequence[dict[str, Any]],
    ) -> AsyncIterator[list[str]]:
        # While LangChain's tracing is on (LANGSMITH_TRACING=true), the fast path steps
        # aside: LangChain's own `astream` makes the run, with its callbacks.
        if self._fast and is_groq(model) and not tracing_is_enabled():
            return groq_stream(model, messages, report, tools)
        return _langchain_stream(model, messages, report, tools)


async def _valid_text(batches: AsyncIterator[list[str]]) -> AsyncGenerator[list[str], None]:
    """`batches` as text that encodes to UTF-8: a surrogate pair split between two
    pieces is joined, a lone surrogate becomes U+FFFD (as the provider's JSON may carry).
    Empty pieces, and batches left empty, are dropped; an empty batch (tool call pieces
    only) goes through."""
    held = ""
    try:
        async for batch in batches:
            valid: list[str] = []
            for piece in batch:
                text = held + piece if held else piece
                held = ""
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    if "\ud800" <= text[-1] <= "\udbff":
                        held, text = text[-1], text[:-1]  # its pair may start the next piece
                    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
                if type(piece) is Reasoning and type(text) is not Reasoning:
                    text = Reasoning(text)  # the kind goes with the piece
                if text:
                    valid.append(text)
            if valid or not batch:
                yield valid
    finally:
        await batches.aclose()  # type: ignore[attr-defined]
    if held:
        yield ["\ufffd"]


# Once a reply is whole (its finish reason and counts came), how long its stream may
# take to end: a provider or proxy that holds the connection open after the end (the
# SDKs read on to `[DONE]` and past it) must not turn a whole reply into a timeout.
AFTER_FINISH_SECONDS = 0.5


async def _langchain_stream(
    model: BaseChatModel,
    messages: Sequence[BaseMessage],
    report: ReplyReport,
    tools: Sequence[dict[str, Any]] = (),
) -> AsyncIterator[list[str]]:
    runnable: Any = model.bind_tools(list(tools)) if tools else model
    chunks = aiter(runnable.astream(list(messages)))
    try:
        while True:
            try:
                if report.finish_reason is not None and report.usage is not None:
                    chunk = await asyncio.wait_for(anext(chunks), AFTER_FINISH_SECONDS)
                else:
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                return  # whole already: the rest of the stream is not waited for
            usage = getattr(chunk, "usage_metadata", None)
            if usage:
                report.add_usage(usage.get("input_tokens", 0), usage.get("output_tokens", 0))
            reason = chunk.response_metadata.get("finish_reason")
            if isinstance(reason, str) and reason:
                report.finish_reason = reason
            calls = getattr(chunk, "tool_call_chunks", None) or ()
            for call in calls:
                report.add_call(
                    call.get("index"), call.get("id"), call.get("name"), call.get("args")
                )
            pieces = _reasoning_of(chunk)
            text = chunk.text
            if text:
                pieces.append(text)
            if pieces or calls:
                yield pieces  # empty for call pieces alone: the reply is alive
    finally:
        await chunks.aclose()


def _reasoning_of(chunk: Any) -> list[str]:
    """The reasoning a LangChain chunk carries, as providers' classes put it: in
    `additional_kwargs["reasoning_content"]` (Groq, DeepSeek, xAI, ...), or as content
    blocks of type `reasoning` or `thinking` (OpenAI's Responses API, Anthropic)."""
    found: list[str] = []
    kept = chunk.additional_kwargs.get(REASONING) if chunk.additional_kwargs else None
    if isinstance(kept, str) and kept:
        found.append(Reasoning(kept))
    if isinstance(chunk.content, list):
        for block in chunk.content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            text = block.get(kind) if kind in ("reasoning", "thinking") else None
            if isinstance(text, str) and text:
                found.append(Reasoning(text))
    return found


# Providers whose LangChain class takes `timeout` and `max_retries` (the SDK's own
# request timeout and its retries of connection errors, 408, 409, 429 and 5xx,
# honouring Retry-After); others keep their defaults.
_TAKES_TIMEOUT_AND_RETRIES = {
    "anthropic",
    "azure_openai",
    "deepseek",
    "fireworks",
    "groq",
    "mistralai",
    "openai",
    "together",
    "xai",
}


# Providers whose LangChain class reports usage in a stream only when asked.
_STREAMS_USAGE_ON_REQUEST = {"openai", "azure_openai"}


# Connections per HTTP pool: httpcore's pool bookkeeping grows with its size squared.
_SHARD_CONNECTIONS = 64

# Providers whose LangChain class takes `http_async_client`.
_TAKES_HTTP_CLIENT = {"groq", "openai", "azure_openai"}


def takes_reasoning_format(name: str) -> bool:
    """Whether Groq takes `reasoning_format` for the model `groq:<model>`: its models
    that reason, but not OpenAI's gpt-oss (which sends its reasoning apart unasked, and
    refuses the parameter); any other model refuses it."""
    provider, _, model = name.partition(":")
    model = model.lower()
    return provider == "groq" and any(mark in model for mark in _REASONING_MODELS)


# Groq's models that reason and take `reasoning_format` (names contain one of these).
_REASONING_MODELS = ("qwen3", "qwq", "deepseek-r1", "r1-distill")


def _chat_model(
    name: str,
    *,
    timeout: float,
    max_retries: int,
    offline_token_delay: float,
    http: httpx.AsyncClient,
    reasoning_format: str = "",
) -> BaseChatModel:
    if name == OFFLINE_MODEL:
        return OfflineChatModel(token_delay=offline_token_delay)
    from langchain.chat_models import init_chat_model

    provider = name.partition(":")[0]
    options: dict[str, Any] = {}
    if provider in _TAKES_TIMEOUT_AND_RETRIES:
        options = {"timeout": timeout, "max_retries": max_retries}
    if provider in _TAKES_HTTP_CLIENT:
        options["http_async_client"] = http
    if provider in _STREAMS_USAGE_ON_REQUEST:
        options["stream_usage"] = True  # the token counts, in the stream's last chunk
    if reasoning_format and takes_reasoning_format(name):
        options["reasoning_format"] = reasoning_format
    try:
        model = init_chat_model(name, **options)
    except (ImportError, AttributeError) as exc:
        # AttributeError: a fallback that langchain-community no longer provides.
        package = "langchain-" + provider.replace("_", "-")
        raise RuntimeError(
            f"LLM_MODEL={name} needs the LangChain integration package: pip install {package}"
        ) from exc
    except Exception as exc:
        # ValueError for an unknown provider; the provider's own error for a missing key.
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise RuntimeError(f"LLM_MODEL={name} cannot be used: {reason}") from exc
    if not isinstance(model, BaseChatModel):
        raise RuntimeError(f"LLM_MODEL={name} did not give a chat model")  # noqa: TRY004
    return model


def build_model(
    name: str,
    *,
    fallback: str | None = None,
    timeout: float = 60.0,
    max_retries: int = 2,
    max_connections: int = 1000,
    offline_token_delay: float = 0.02,
    fast: bool = True,
    reasoning_format: str = "",
) -> ChatModel:
    """The model named `provider:model` (or `offline`), with an optional fallback that
    takes over when the primary fails before its first token; errors surface at start.

    Provider connections come from pools sized for a server: the SDKs' default pool
    allows 100 connections (the 101st concurrent reply would wait for one to end), and
    httpcore scans its whole pool on every request and release, which grows with the
    square of the replies in flight. So the connections are split over shards of at
    most `_SHARD_CONNECTIONS`, each its own pool and its own client of the same model.
    """
    shard_count = max(1, math.ceil(max_connections / _SHARD_CONNECTIONS))
    per_shard = math.ceil(max_connections / shard_count)
    # The SDKs' own aiohttp transport (`groq[aiohttp]`): the same httpx API, with a read
    # of the stream about half the CPU of httpcore's (docs/performance.md).
    pools: list[httpx.AsyncClient] = [
        HttpxAiohttpClient(
            limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        )
        for _ in range(shard_count)
    ]
    shards = []
    # (Pools that never opened a connection need no closing if the start fails here.)
    for pool in pools:
        make = functools.partial(
            _chat_model,
            timeout=timeout,
            max_retries=max_retries,
            offline_token_delay=offline_token_delay,
            http=pool,
            reasoning_format=reasoning_format,
        )
        models = [make(name)]
        if fallback:
            try:
                models.append(make(fallback))
            except RuntimeError as exc:
                message = str(exc).replace("LLM_MODEL=", "LLM_FALLBACK_MODEL=")
                raise RuntimeError(message) from exc
        shards.append(models)
        if not any(_uses_http(model) for model in models):
            pools = pools[:1]
            break  # the model makes no requests through these pools: one shard is enough
    return ChatModel(shards, name, fast=fast, pools=pools, first_token_wait=timeout)


def _uses_http(model: BaseChatModel) -> bool:
    return not isinstance(model, OfflineChatModel)
