"""Titles by the model (`TITLE_AUTO=true`): after a session's first complete turn, the
model names the conversation, after the turn and off its path (the reply never waits
for it).

The turn's commit gives a session with no title the start of its first message, marked
as the server's (`title_auto`); `scripts/name_session.lua` replaces only such a title, so
a user's title, set before or while the model thinks, is never replaced. The request's
tokens count in the session's usage. The `offline` model names nothing: its sessions
keep the first message's start.
"""

from __future__ import annotations

import asyncio
import logging
import re

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from redis.asyncio import Redis, RedisCluster

from resolvers.services.history import Reasoning
from resolvers.services.keys import messages_key, meta_key
from resolvers.services.model import ChatModel
from resolvers.services.scripts import Script
from resolvers.services.usage import ReplyReport

logger = logging.getLogger(__name__)

MAX_TITLE_CHARS = 60
INSTRUCTIONS = (
    "You name conversations for a list of chats. Reply with a short title for the "
    "conversation below, in its language, of at most six words: the title alone, on one "
    "line, with no quotes and no full stop."
)
# What the request sends of the turn: the start of the message and of the reply.
MAX_CHARS_EACH = 1000
# Most model requests for titles running at once in this process; past it a title is
# left as the first message's start (a burst of new sessions never queues requests).
MAX_RUNNING = 16

# Past this much of an answer the request is closed (its tokens then go uncounted).
MAX_ANSWER_CHARS = 4000

# Quotes of many languages, and Markdown's emphasis and heading marks.
_QUOTES = "\"'`*_#\u00ab\u00bb\u201c\u201d\u201e\u2018\u2019\u201a\u2039\u203a\u300c\u300d"
_PREFIX = re.compile(r"^(title|titre|titel|título)\s*:\s*", re.IGNORECASE)


def clean_title(text: str) -> str:
    """The model's answer as a title: its first line that says something, without the
    quotes, the markup and the label models add, on one line, at most 60 characters
    (cut at a word when one ends near the limit). '' when nothing is left."""
    for line in text.splitlines():
        line = _PREFIX.sub("", " ".join(line.split())).strip(_QUOTES + " ")
        line = line.rstrip(".").strip(_QUOTES + " ")
        if line:
            break
    else:
        return ""
    if len(line) > MAX_TITLE_CHARS:
        cut = line[:MAX_TITLE_CHARS]
        space = cut.rfind(" ")
        line = (cut[:space] if space >= MAX_TITLE_CHARS // 2 else cut).rstrip(" ,;:-")
    return "".join(c for c in line if c.isprintable())


class Titler:
    """Names sessions in the background, at most one request per session at a time."""

    def __init__(self, redis: Redis | RedisCluster, model: ChatModel, *, timeout: float) -> None:
        self._redis = redis
        self._model = model
        self._timeout = timeout
        self._name = Script(redis, "name_session")
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def want(self, session_id: str, *, message: str, reply: str) -> None:
        """Name the session after its first turn (`message` and `reply`), soon."""
        if session_id in self._busy or len(self._busy) >= MAX_RUNNING:
            return
        self._busy.add(session_id)
        task = asyncio.create_task(self._title(session_id, message, reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _title(self, session_id: str, message: str, reply: str) -> None:
        try:
            # A title of the user's (given at creation) is kept: no request at all.
            if await self._redis.hget(meta_key(session_id), "title_auto") != "1":
                return
            report = ReplyReport()
            async with asyncio.timeout(self._timeout):
                answer = await self._ask(_prompt(message, reply), report)
            title = clean_title(answer)
            if not title:
                return
            usage = report.usage
            named = await self._name(
                keys={"meta": meta_key(session_id), "messages": messages_key(session_id)},
                args={
                    "title": title,
                    "input_tokens": "" if usage is None else usage.input_tokens,
                    "output_tokens": "" if usage is None else usage.output_tokens,
                },
            )
            if not int(named):
                logger.info(
                    "title of session %s kept: the user's, or the session is gone", session_id
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("title of session %s failed: %s", session_id, type(exc).__name__)
        finally:
            self._busy.discard(session_id)

    async def _ask(self, prompt: list[BaseMessage], report: ReplyReport) -> str:
        pieces: list[str] = []
        stream = self._model.stream(prompt, report)
        try:
            async for batch in stream:
                pieces.extend(piece for piece in batch if type(piece) is not Reasoning)
                if sum(map(len, pieces)) > MAX_ANSWER_CHARS:
                    break  # rambling: the title is in the first line, if anywhere
        finally:
            await stream.aclose()
        return "".join(pieces)


def _prompt(message: str, reply: str) -> list[BaseMessage]:
    conversation = f"User: {message[:MAX_CHARS_EACH]}\n\nAssistant: {reply[:MAX_CHARS_EACH]}"
    return [SystemMessage(INSTRUCTIONS), HumanMessage(content=conversation)]
