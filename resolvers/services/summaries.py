"""Summaries of trimmed history (`HISTORY_SUMMARY=true`): when a turn leaves earlier
messages out of its context, the model summarizes them, after the turn and off its path
(the reply never waits for a summary), into one `SYSTEM` message kept in the session's
list in LangChain's layout. Later turns send it first; it is rewritten in its place as
more is trimmed.

The summary's element carries a `message_id` of its own, as every message this server
writes (a branch moves it off the path with the messages around it): its position, which
never moves while it is on the path (it is written as the newest message only while no
turn runs, and refreshed in place, keeping its id), and a nonce.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from redis.asyncio import Redis, RedisCluster

from resolvers.services.history import (
    MESSAGE_ID,
    Role,
    StoredMessage,
    decode_newest_first,
    encode,
    message_id,
)
from resolvers.services.keys import lock_key, messages_key, meta_key
from resolvers.services.model import ChatModel
from resolvers.services.scripts import Script

# Who said a message, as a summary's transcript names them.
_SPEAKERS = {Role.USER: "User", Role.ASSISTANT: "Assistant", Role.TOOL: "Tool", Role.SYSTEM: ""}

logger = logging.getLogger(__name__)

INSTRUCTIONS = (
    "You keep a running summary of a conversation between a user and an assistant, for "
    "the assistant to remember what was said before. Merge the summary so far with the "
    "new part of the conversation. Keep names, facts, numbers, decisions and open "
    "questions; drop pleasantries. Write only the summary, in under 200 words."
)
# Bounds on one refresh: the messages read, each message's length, the summary kept.
MAX_MESSAGES = 200
MAX_CHARS_EACH = 2000
MAX_SUMMARY_CHARS = 4000
# What one request may send of the conversation (about 6,000 tokens at 4 characters a
# token): within any provider's context, and the same request is not retried each turn.
MAX_TRANSCRIPT_CHARS = 24_000
COVERS = "summary_covers"


@dataclass(frozen=True, slots=True)
class SummaryState:
    at: int | None  # the summary's position, None when there is none
    covers: int  # the last position it covers (-1: none)
    length: int  # the list's length
    stale: bool  # a rewind took back what it covers
    epoch: int  # moved by whatever takes messages back


class SummaryStore:
    """Where a session's summary is, the messages it summarizes, and keeping a new one
    (`scripts/summarize.lua`)."""

    def __init__(self, redis: Redis | RedisCluster) -> None:
        self._redis = redis
        self._summarize = Script(redis, "summarize")

    async def summary_state(self, session_id: str) -> SummaryState:
        """Where the session's summary is and what it covers, the list's length, and
        the session's epoch (moved by whatever takes messages back)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(
                meta_key(session_id), ["summary_at", "summary_covers", "summary_stale", "epoch"]
            )
            pipe.llen(messages_key(session_id))
            (at, covers, stale, epoch), length = await pipe.execute()
        return SummaryState(
            at=_whole(at),
            covers=_whole(covers, -1),
            length=int(length),
            stale=stale is not None,
            epoch=_whole(epoch, 0),
        )

    async def messages_between(self, session_id: str, first: int, last: int) -> list[StoredMessage]:
        """Messages at positions `first` to `last` (from the oldest), oldest first. The
        indexes count from the list's oldest end, which messages added meanwhile (at
        the newest end) do not move."""
        if last < first:
            return []
        raw = await self._redis.lrange(messages_key(session_id), -(last + 1), -(first + 1))
        return decode_newest_first(raw, last + 1)

    async def store_summary(
        self,
        session_id: str,
        *,
        text_json: str,
        covers: int,
        at: int | None,
        epoch: int,
        position: int,
    ) -> bool:
        """Keep a summary in the list: in the place of the old one (`at`), or as the newest
        message when there is none yet (only while no turn runs, whose new messages'
        positions it would move). Only while the session's epoch is still `epoch`: a
        summary of messages taken back since is never kept. Whether it was kept."""
        result = await self._summarize(
            keys={
                "messages": messages_key(session_id),
                "meta": meta_key(session_id),
                "lock": lock_key(session_id),
            },
            args={
                "summary": text_json,
                "covers": covers,
                "at": -1 if at is None else at,
                "epoch": epoch,
                "position": position,
            },
        )
        return bool(int(result))


def _whole(value: Any, default: int | None = None) -> Any:
    """A whole number another program may have left as anything: the default if not."""
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


class Summarizer:
    """Refreshes sessions' summaries in the background, one at a time per session."""

    def __init__(self, store: SummaryStore, model: ChatModel, *, timeout: float) -> None:
        self._store = store
        self._model = model
        self._timeout = timeout
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def want(self, session_id: str, upto: int) -> None:
        """Make sure the summary covers the messages up to position `upto`, soon."""
        if upto < 0 or session_id in self._busy:
            return
        self._busy.add(session_id)
        task = asyncio.create_task(self._refresh(session_id, upto))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _refresh(self, session_id: str, upto: int) -> None:
        try:
            state = await self._store.summary_state(session_id)
            at, covers, length, stale = state.at, state.covers, state.length, state.stale
            if stale:
                covers = -1  # a rewind took back what it covered: summarize anew
            if upto <= covers or upto >= length:
                return
            first = max(covers + 1, upto - MAX_MESSAGES + 1)
            new = await self._store.messages_between(session_id, first, upto)
            old = "(none yet)"
            # Its id: the one it has (refreshed in place), or a new one at the list's end.
            identifier = message_id(length if at is None else at, secrets.token_hex(4))
            if at is not None:
                kept = await self._store.messages_between(session_id, at, at)
                if kept and kept[0].role is Role.SYSTEM:
                    if not stale:
                        old = kept[0].content
                    if kept[0].id != str(at):
                        identifier = kept[0].id
            lines: list[str] = []
            size = 0
            for m in reversed(new):  # the newest first, within MAX_TRANSCRIPT_CHARS
                if m.role is Role.SYSTEM:
                    continue
                line = f"{_SPEAKERS[m.role]}: " + m.content[:MAX_CHARS_EACH]
                if m.tool_calls:
                    line += " [calls " + ", ".join(call.name for call in m.tool_calls) + "]"
                size += len(line)
                if size > MAX_TRANSCRIPT_CHARS and lines:
                    break
                lines.insert(0, line)
            if not lines:
                return
            asked = HumanMessage(
                content=f"Summary so far:\n{old}\n\nNew part of the conversation:\n"
                + "\n".join(lines)
            )
            async with asyncio.timeout(self._timeout):
                reply = await self._model.text([SystemMessage(INSTRUCTIONS), asked])
            text = reply.strip()[:MAX_SUMMARY_CHARS]
            if not text:
                return
            extra = {COVERS: upto, MESSAGE_ID: identifier}
            element = encode(SystemMessage(content=text, additional_kwargs=extra))
            if not await self._store.store_summary(
                session_id,
                text_json=element,
                covers=upto,
                at=at,
                epoch=state.epoch,
                position=length if at is None else at,
            ):
                logger.info("summary of session %s left for a later turn", session_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("summary of session %s failed: %s", session_id, type(exc).__name__)
        finally:
            self._busy.discard(session_id)
