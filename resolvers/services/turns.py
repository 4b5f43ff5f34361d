"""One turn: lock the session, stream the model's reply, store the turn when complete.

The model is driven by a task of its own, not by the client's request: a client that
goes away stops reading, and the turn still completes and is stored. Whatever ends a
turn early (model failure, timeout, Redis failure, shutdown) leaves the history as it
was and the lock released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from resolvers.services.errors import (
    BadInput,
    ChatError,
    ModelFailed,
    NotFound,
    SessionBusy,
    client_error,
)
from resolvers.services.history import Role, StoredMessage, as_langchain, encode, stamped
from resolvers.services.identity import ANONYMOUS, Identity
from resolvers.services.limits import RateLimiter
from resolvers.services.model import ChatModel
from resolvers.services.sessions import SessionStore, TurnStart
from resolvers.services.validation import check_session_id, check_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """A piece of the reply; the last event has `done` and the stored reply."""

    token: str
    done: bool = False
    message: StoredMessage | None = None


# Events waiting for a reader before the tokens among them are merged into one.
BACKLOG_TO_MERGE = 16


class TurnStream:
    """A running turn as its client sees it: a stream of events, or one error."""

    def __init__(self, min_gap: float = 0.0) -> None:
        self._queue: asyncio.Queue[TurnEvent | ChatError] = asyncio.Queue()
        self._min_gap = min_gap

    def push(self, item: TurnEvent | ChatError) -> None:
        self._queue.put_nowait(item)

    async def events(self, min_gap: float | None = None) -> AsyncIterator[TurnEvent]:
        """Token events, then one done event; raises the turn's error instead.

        A reader that keeps up gets every token as its own event. Once it falls behind
        (`BACKLOG_TO_MERGE` events waiting: a loaded socket, a slow client), the waiting
        tokens go out merged in one event instead. With `min_gap`, tokens that come
        within `min_gap` seconds of the last event wait (never longer than that) to go
        out together: a model streaming hundreds of tokens a second then costs a client
        a few dozen events a second. The first token and the end of the reply are never
        held back.
        """
        queue = self._queue
        loop = asyncio.get_running_loop()
        min_gap = self._min_gap if min_gap is None else min_gap
        last_sent = -math.inf
        pending: TurnEvent | ChatError | None = None
        while True:
            item = pending if pending is not None else await queue.get()
            pending = None
            if isinstance(item, ChatError):
                raise item
            if not item.done:
                pieces = [item.token]
                if queue.qsize() >= BACKLOG_TO_MERGE:
                    pending = self._take_queued(pieces)
                hold = last_sent + min_gap - loop.time()
                while pending is None and hold > 0:
                    try:
                        async with asyncio.timeout(hold):
                            following = await queue.get()
                    except TimeoutError:
                        break
                    if isinstance(following, TurnEvent) and not following.done:
                        pieces.append(following.token)
                        pending = self._take_queued(pieces)
                    else:
                        pending = following
                    hold = last_sent + min_gap - loop.time()
                if len(pieces) > 1:
                    item = TurnEvent(token="".join(pieces))
            yield item
            if item.done:
                return
            last_sent = loop.time()

    def _take_queued(self, pieces: list[str]) -> TurnEvent | ChatError | None:
        """Append the tokens already queued; the first other item, if one came."""
        queue = self._queue
        while not queue.empty():
            following = queue.get_nowait()
            if isinstance(following, TurnEvent) and not following.done:
                pieces.append(following.token)
            else:
                return following
        return None

    async def reply(self) -> StoredMessage:
        """Wait for the whole turn; the stored reply."""
        async for event in self.events(min_gap=0.0):
            if event.done and event.message is not None:
                return event.message
        raise ModelFailed("the turn ended without a reply")


class TurnRunner:
    """Starts turns and keeps them running until stored, whoever is listening."""

    def __init__(
        self,
        store: SessionStore,
        model: ChatModel,
        *,
        limiter: RateLimiter | None = None,
        max_message_chars: int,
        llm_timeout: float,
        turn_timeout: float,
        lock_seconds: float,
        stream_min_gap: float = 0.0,
    ) -> None:
        self._store = store
        self._model = model
        self._limiter = limiter
        self._max_chars = max_message_chars
        self._timeout = llm_timeout
        # Each model tried before the first token (primary, fallback) gets the full wait.
        self._first_timeout = llm_timeout * model.attempts
        self._turn_timeout = turn_timeout
        self._min_gap = stream_min_gap
        self._renew_every = lock_seconds / 3
        self._tasks: set[asyncio.Task[None]] = set()

    def check_message(self, message: str) -> str:
        if not isinstance(message, str) or not message.strip():
            raise BadInput("message must not be empty")
        if len(message) > self._max_chars:
            raise BadInput(f"message is longer than {self._max_chars} characters")
        return check_text(message, "message")

    async def start(
        self,
        *,
        session_id: str,
        message: str,
        client: str | None = None,
        who: Identity = ANONYMOUS,
    ) -> TurnStream:
        """Validate, take the session's lock, and start the model; errors raise here.

        `client` is the caller's address, for the per-session rate limit.
        """
        check_session_id(session_id)
        self.check_message(message)
        try:
            if self._limiter is not None and not self._limiter.exempt(client):
                # Only a session the caller may use counts, so nobody can use up (or
                # learn of) another user's session by its turn limit.
                await self._store.check_usable(session_id, who=who)
                await self._limiter.check_turn(session_id, client)
            begin = asyncio.ensure_future(self._store.begin_turn(session_id, who=who))
            try:
                start = await asyncio.shield(begin)
            except asyncio.CancelledError:
                # The caller went away (a closed socket) mid-start: once the lock is
                # taken, nobody would run the turn or release it, so give it back.
                begin.add_done_callback(lambda done: self._give_back(session_id, done))
                raise
        except Exception as exc:
            raise _client_error(exc) from exc
        turn = TurnStream(self._min_gap)
        task = asyncio.create_task(self._run(turn, session_id, message, start))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return turn

    def _give_back(self, session_id: str, begin: asyncio.Future[TurnStart]) -> None:
        if begin.cancelled() or begin.exception() is not None:
            return
        release = asyncio.ensure_future(self._release_quietly(session_id, begin.result().token))
        self._tasks.add(release)
        release.add_done_callback(self._tasks.discard)

    async def _release_quietly(self, session_id: str, token: str) -> None:
        # If Redis is down the lock simply expires; nobody waits on this to report it.
        with contextlib.suppress(Exception):
            await self._store.release_lock(session_id, token)

    async def drain(self, seconds: float) -> None:
        """Let running turns finish (and be stored) for up to `seconds`."""
        if not self._tasks:
            return
        logger.info("waiting for %d running turn(s) to finish", len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _run(self, turn: TurnStream, session_id: str, message: str, start: TurnStart) -> None:
        committed = False
        error: ChatError | None = None
        renewer = asyncio.create_task(self._keep_lock(session_id, start.token))
        try:
            user_at = datetime.now(UTC)
            prompt: list[BaseMessage] = [SystemMessage(content=start.system_prompt)]
            prompt += as_langchain(start.window)
            prompt.append(HumanMessage(content=message))
            reply = await self._stream_reply(turn, prompt)
            reply_at = datetime.now(UTC)
            outcome = await self._store.commit_turn(
                session_id,
                start.token,
                user_json=encode(stamped(HumanMessage(content=message), user_at)),
                reply_json=encode(stamped(AIMessage(content=reply), reply_at)),
                first_message=message,
                owner=start.owner,
            )
            committed = True
            _check_commit(outcome)
            stored = StoredMessage(role=Role.ASSISTANT, content=reply, created_at=reply_at)
            turn.push(TurnEvent(token="", done=True, message=stored))
        except asyncio.CancelledError:
            error = ModelFailed("the server is shutting down; the turn was not stored")
            raise
        except Exception as exc:
            error = _client_error(exc)
            if error.code == "INTERNAL":
                logger.exception("turn failed on session %s", session_id)
            else:
                logger.warning("turn failed on session %s: %s", session_id, error.code)
        finally:
            renewer.cancel()
            try:
                if not committed:
                    with contextlib.suppress(Exception):
                        await self._store.release_lock(session_id, start.token)
            finally:
                # Told once the lock is free (a client that retries at once finds the
                # session free), and told even if the release itself is cancelled.
                if error is not None:
                    turn.push(error)

    async def _stream_reply(self, turn: TurnStream, prompt: list[BaseMessage]) -> str:
        """Relay the model's pieces into the turn; the whole reply.

        One deadline, moved after every piece: the first piece may take the first-token
        wait, each later one `LLM_TIMEOUT_SECONDS`, and none may pass the turn's end. It
        bounds the wait as the client sees it: the provider SDK's own retries and a stream
        held open by keep-alive comments that carry no token all count against it.
        """
        loop = asyncio.get_running_loop()
        turn_end = loop.time() + self._turn_timeout if self._turn_timeout else math.inf
        parts: list[str] = []
        wait = self._first_timeout
        stream = self._model.stream(prompt)
        try:
            async with asyncio.timeout_at(min(loop.time() + wait, turn_end)) as deadline:
                async for piece in stream:
                    parts.append(piece)
                    turn.push(TurnEvent(token=piece))
                    wait = self._timeout
                    deadline.reschedule(min(loop.time() + wait, turn_end))
        except TimeoutError:
            if loop.time() >= turn_end:
                raise ModelFailed(
                    f"the reply took longer than {self._turn_timeout:g} seconds"
                ) from None
            raise ModelFailed(f"the model sent nothing for {wait:g} seconds") from None
        except ChatError:
            raise
        except Exception as exc:
            raise ModelFailed(f"the model provider failed: {_describe(exc)}") from exc
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
        return "".join(parts)

    async def _keep_lock(self, session_id: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._renew_every)
            try:
                if not await self._store.renew_lock(session_id, token):
                    return
            except Exception:
                logger.warning("could not renew the lock of session %s", session_id)


def _check_commit(outcome: int) -> None:
    if outcome == 0:
        raise NotFound("the session was deleted while the reply streamed")
    if outcome < 0:
        raise SessionBusy("the session's lock expired before the reply was stored")


def _describe(exc: BaseException) -> str:
    """A short, secret-free description of a provider error."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    return f"{name} (HTTP {status})" if status else name


def _client_error(exc: BaseException) -> ChatError:
    return client_error(exc, "in a turn")
