"""The chat model: any provider `init_chat_model` knows, or the built-in offline one."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable

from resolvers.config import OFFLINE_MODEL

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
        for piece in _pieces(OFFLINE_REPLY):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))


class ChatModel:
    """The configured model, reduced to what a turn needs: a stream of text pieces."""

    def __init__(self, model: Runnable[Any, Any], name: str, *, attempts: int = 1) -> None:
        self._model = model
        self.name = name
        # Models tried in turn before the first token (the primary and its fallbacks).
        self.attempts = attempts

    async def stream(self, messages: Sequence[BaseMessage]) -> AsyncIterator[str]:
        async for chunk in self._model.astream(list(messages)):
            text = chunk.text
            if text:
                yield text


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


def _chat_model(
    name: str, *, timeout: float, max_retries: int, offline_token_delay: float
) -> BaseChatModel:
    if name == OFFLINE_MODEL:
        return OfflineChatModel(token_delay=offline_token_delay)
    from langchain.chat_models import init_chat_model

    provider = name.partition(":")[0]
    options: dict[str, Any] = {}
    if provider in _TAKES_TIMEOUT_AND_RETRIES:
        options = {"timeout": timeout, "max_retries": max_retries}
    try:
        model = init_chat_model(name, **options)
    except (ImportError, AttributeError) as exc:
        # AttributeError: a fallback that langchain-community no longer provides.
        package = "langchain-" + provider.replace("_", "-")
        raise RuntimeError(
            f"LLM_MODEL={name} needs the LangChain integration package: pip install {package}"
        ) from exc
    except ValueError as exc:
        reason = str(exc).splitlines()[0]
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
    offline_token_delay: float = 0.02,
) -> ChatModel:
    """The model named `provider:model` (or `offline`), with an optional fallback that
    takes over when the primary fails before its first token; errors surface at start."""
    make = functools.partial(
        _chat_model,
        timeout=timeout,
        max_retries=max_retries,
        offline_token_delay=offline_token_delay,
    )
    primary = make(name)
    if not fallback:
        return ChatModel(primary, name)
    try:
        backup = make(fallback)
    except RuntimeError as exc:
        raise RuntimeError(str(exc).replace("LLM_MODEL=", "LLM_FALLBACK_MODEL=")) from exc
    return ChatModel(primary.with_fallbacks([backup]), name, attempts=2)
