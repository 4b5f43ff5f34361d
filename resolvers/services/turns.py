"""One turn: lock the session, stream the model's reply, store the turn when complete.

The model is driven by a task of its own, not by the client's request: a client that
goes away stops reading, and the turn still completes and is stored. Whatever ends a
turn early (model failure, timeout, Redis failure, shutdown) leaves the history as it
was and the lock released; `stop` ends it early on purpose, storing what came so far.

Every turn is durable: its events go to a Redis Stream in the session's slot as they
come (batched), so any process can replay and follow it (`follow`), and a client that
subscribes again with the same turn id joins it instead of running the message twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from resolvers.services import metrics, spans
from resolvers.services.errors import (
    BadInput,
    ChatError,
    ModelFailed,
    NotFound,
    SessionBusy,
    StoreUnavailable,
    client_error,
)
from resolvers.services.following import TurnFollower
from resolvers.services.history import (
    CANCELLED,
    Role,
    StoredMessage,
    ToolCall,
    TurnStatus,
    arguments_of,
    arguments_text,
    calls_answered_at_end,
    decode,
    encode,
    message_id,
    pending_calls,
    reaches_a_reply,
    reply_message,
    stamped,
    valid_text,
)
from resolvers.services.identity import ANONYMOUS, Identity
from resolvers.services.limits import RateLimiter
from resolvers.services.metrics import timed
from resolvers.services.model import ChatModel
from resolvers.services.sessions import SessionStore
from resolvers.services.stream_writer import StreamWriter, Written
from resolvers.services.summaries import Summarizer
from resolvers.services.titles import Titler
from resolvers.services.tools import (
    MAX_CALL_ID_CHARS,
    ToolResult,
    check_results,
    check_tools,
    match_results,
)
from resolvers.services.turn_store import TurnStart, TurnStore
from resolvers.services.turnlog import BACKLOG_TO_MERGE, LiveTurn, TurnEvent, TurnFailed
from resolvers.services.usage import ReplyReport, Usage
from resolvers.services.validation import check_session_id, check_text, check_turn_id
from resolvers.services.window import ContextPlan, is_context_too_long, plan_context

# The prompt of a turn for a budget of history tokens.
PromptFor = Callable[[int], list[BaseMessage]]


@dataclass(frozen=True, slots=True)
class Ask:
    """What a turn asks the model: the user's message, or (with `results`) the tools'
    results for the calls of the last reply; and the client's tools, bound for the
    reply (OpenAI's format, checked)."""

    message: str = ""
    tools: tuple[dict[str, Any], ...] = ()
    results: tuple[ToolResult, ...] | None = None
    # Who asks (the path's end is read as them when the window does not reach it).
    who: Identity = ANONYMOUS


__all__ = ["BACKLOG_TO_MERGE", "LiveTurn", "TurnEvent", "TurnFailed", "TurnRunner"]

T = TypeVar("T")

logger = logging.getLogger(__name__)


# Of the time a stopping server has (SHUTDOWN_TIMEOUT_SECONDS), the share running turns
# may still run: the rest is for storing them and closing the connections.
SHUTDOWN_TURN_SHARE = 0.8


class TurnRunner:
    """Starts turns and keeps them running until stored, whoever is listening; follows
    and stops turns run by any process."""

    def __init__(
        self,
        store: TurnStore,
        sessions: SessionStore,
        model: ChatModel,
        *,
        limiter: RateLimiter | None = None,
        max_message_chars: int,
        llm_timeout: float,
        turn_timeout: float,
        lock_seconds: float,
        stream_min_gap: float = 0.0,
        follow_connections: int = 50,
        history_tokens: int = 8000,
        summarizer: Summarizer | None = None,
        titler: Titler | None = None,
    ) -> None:
        self._store = store
        self._sessions = sessions
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
        # Turns this process runs; those of other processes are the follower's mirrors.
        self._running: dict[tuple[str, str], LiveTurn] = {}
        self._follower = TurnFollower(
            store,
            sessions,
            running=self._running.get,
            min_gap=stream_min_gap,
            connections=follow_connections,
        )
        self._writer = StreamWriter(store)
        self._history_tokens = history_tokens
        self._summarizer = summarizer
        self._titler = titler
        self._closing: asyncio.Task[None] | None = None

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
        turn_id: str | None = None,
        regenerate: bool = False,
        edit: bool = False,
        at: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        results: Sequence[Mapping[str, Any]] | None = None,
    ) -> LiveTurn:
        """Validate, take the session's lock, and start the model; errors raise here.
        With `regenerate`, the turn runs the user message of the reply `at` (the last
        reply when None) again (`message` unused), and its reply is stored beside that
        one, on a new branch. With `edit`, `message` is stored beside the user message
        `at`, on a new branch, and answered.

        `client` is the caller's address, for the per-session rate limit. With a
        `turn_id` that is already a turn of the session (running, or ended and still
        kept), the result is that turn, from its first event: the message is not run
        again.

        `tools` (name, description, parameters) are bound to the model for this reply;
        with `results` (tool_call_id, content), the turn answers the pending tool calls
        of the last reply, each exactly once (`message` unused), and the model replies.
        """
        check_session_id(session_id)
        checked = check_tools(tools)
        answers = None
        if results is not None:
            answers = check_results(results, self._max_chars)
        elif not regenerate:
            self.check_message(message)
        ask = Ask(message=message, tools=checked, results=answers, who=who)
        try:
            if turn_id is not None:
                turn_id = check_turn_id(turn_id)
            if self._limiter is not None and self._limiter.counts_turns(who, client):
                # Only a session the caller may use counts, so nobody can use up (or
                # learn of) another user's session by its turn limit.
                await self._sessions.check_usable(session_id, who=who)
                # Joining a turn runs nothing: only a new turn counts.
                if turn_id is None or not await self._store.turn_exists(session_id, turn_id):
                    await self._limiter.check_turn(session_id, client, who)
            begin = asyncio.ensure_future(
                timed(
                    "begin",
                    self._store.begin_turn(
                        session_id,
                        who=who,
                        turn_id=turn_id,
                        message=message,
                        mode="regenerate" if regenerate else "edit" if edit else "",
                        at=at,
                    ),
                )
            )
            try:
                start = await asyncio.shield(begin)
            except asyncio.CancelledError:
                # The caller went away (a closed socket) mid-start. A client that goes
                # away does not stop a turn: once the lock is taken, the turn runs, and a
                # client that comes back with the same turn id joins it.
                begin.add_done_callback(lambda done: self._run_orphan(session_id, ask, done))
                raise
            if start.joined:
                return await self._follower.live(session_id, start.turn_id)
            if answers is not None:
                await self._check_answers(session_id, start, ask)
        except Exception as exc:
            raise _client_error(exc) from exc
        return self._launch(session_id, ask, start)

    async def _check_answers(self, session_id: str, start: TurnStart, ask: Ask) -> None:
        """Results must answer the calls pending at the path's end, as read with the lock
        taken: if not, the turn ends (its id says so) with nothing stored."""
        try:
            end = await self._path_end(session_id, start, ask.who)
            match_results(pending_calls(end), ask.results or ())
        except BadInput as wrong:
            await self._store.abandon_turn(
                session_id,
                start.token,
                turn_id=start.turn_id,
                pending=(1, []),
                code=wrong.code,
                message=wrong.message,
            )
            raise

    async def _path_end(
        self, session_id: str, start: TurnStart, who: Identity
    ) -> list[StoredMessage]:
        """The path's newest messages, enough to tell the tool calls pending at its end:
        the window read with the lock, unless it stops short of the last reply (a small
        HISTORY_WINDOW under many results); then read (the lock is held: it is the
        same path)."""
        window = start.window
        if start.fork_at is not None or reaches_a_reply(window):
            return window
        if len(window) >= start.length - start.skip:
            return window  # the whole path
        return await self._sessions.path_end(session_id, who=who)

    def _launch(self, session_id: str, ask: Ask, start: TurnStart) -> LiveTurn:
        live = LiveTurn(session_id, start.turn_id, min_gap=self._min_gap)
        self._running[(session_id, start.turn_id)] = live
        task = asyncio.create_task(self._run(live, ask, start))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return live

    def _run_orphan(self, session_id: str, ask: Ask, begin: asyncio.Future[TurnStart]) -> None:
        if begin.cancelled() or begin.exception() is not None:
            return
        start = begin.result()
        if not start.joined:
            # Results that do not answer the pending calls fail there, nothing stored.
            self._launch(session_id, ask, start)

    async def follow(
        self,
        session_id: str,
        turn_id: str | None = None,
        *,
        who: Identity = ANONYMOUS,
        after: int = 0,
    ) -> LiveTurn:
        """The turn `turn_id` of the session (the running one when None), from any
        process: NotFound when there is no such turn, or it has expired. `after` is
        checked here (the reader's first event comes after it)."""
        check_session_id(session_id)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise BadInput("after must be a whole number, not negative")
        try:
            return await self._follower.turn(session_id, turn_id, who)
        except Exception as exc:
            raise _client_error(exc) from exc

    async def stop(
        self, session_id: str, turn_id: str | None = None, *, who: Identity = ANONYMOUS
    ) -> bool:
        """Stop the running turn (only if it is `turn_id`, when given), whichever process
        runs it: the reply so far is stored as STOPPED. False when nothing was running."""
        check_session_id(session_id)
        try:
            stopped = await self._store.stop_turn(session_id, turn_id, who=who)
        except Exception as exc:
            raise _client_error(exc) from exc
        if stopped is None:
            return False
        live = self._running.get((session_id, stopped))
        if live is not None:
            live.request_stop()  # ours: at once, not at the next look at Redis
        return True

    def shutdown(self, seconds: float) -> None:
        """A SIGTERM came: end everything this process serves within `seconds`, so the
        server's own wait for open responses (REST streams, subscriptions) ends in time.
        Followers of other processes' turns end now (their clients follow again
        elsewhere); running turns may finish for most of the time, then are stopped and
        stored with what they have (their readers get the done event)."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(seconds))

    async def _close(self, seconds: float) -> None:
        self._follower.cancel()
        if self._tasks:
            logger.info("stopping: %d turn(s) running, %.0f s to end", len(self._tasks), seconds)
            await asyncio.wait(set(self._tasks), timeout=seconds * SHUTDOWN_TURN_SHARE)
        for live in list(self._running.values()):
            live.request_stop()

    async def drain(self, seconds: float) -> None:
        """Let running turns finish (and be stored) for up to `seconds`."""
        self._follower.cancel()
        try:
            await self._drain(seconds)
        finally:
            await self._writer.close()
            if self._summarizer is not None:
                await self._summarizer.close()
            if self._titler is not None:
                await self._titler.close()

    async def _drain(self, seconds: float) -> None:
        if not self._tasks:
            return
        logger.info("waiting for %d running turn(s) to finish", len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _run(self, live: LiveTurn, ask: Ask, start: TurnStart) -> None:
        session_id, turn_id = live.session_id, live.turn_id
        live.began = asyncio.get_running_loop().time()
        span = spans.start(
            "chat.turn",
            {
                "chat.session_id": session_id,
                "chat.turn_id": turn_id,
                "chat.model": self._model.name,
            },
        )
        ended: TurnEvent | None = None
        error: ChatError | None = None
        renewer = asyncio.create_task(self._keep_lock(session_id, start.token, turn_id))
        written = self._writer.add(live)
        asked = decode(start.asked) if start.asked is not None else None
        try:
            end = await self._path_end(live.session_id, start, ask.who)
            plan = _TurnPlan(start, ask, asked.content if asked is not None else None, end)
            report = ReplyReport()
            status = await self._stream_reply(
                live,
                lambda budget: plan.prompt(budget, self._summarizer is not None),
                report,
                ask.tools,
            )
            self._writer.remove(live)
            if start.replaces is not None and not live.tokens and status is TurnStatus.STOPPED:
                # A regenerate stopped before its first token: the old reply stays.
                ended = await self._keep_old_reply(live, start, written)
            else:
                ended = await self._store_turn(live, start, plan, status, report, written)
            live.finish(ended)
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
            stored = ended is not None and ended.status is not None
            outcome = ended.status.value if stored and ended and ended.status else None
            outcome = outcome or (error.code if error else "FAILED")
            with contextlib.suppress(Exception):  # never in the way of the turn's end
                metrics.TURNS.labels(outcome).inc()
                metrics.TURN_SECONDS.observe(asyncio.get_running_loop().time() - live.began)
                spans.finish(
                    span,
                    {"chat.outcome": outcome, "chat.tokens": len(live.tokens)},
                    error=None if stored else outcome,
                )
            try:
                self._writer.remove(live)
                if ended is None:
                    with contextlib.suppress(Exception):
                        failure = error or ModelFailed("the turn was not stored")
                        await self._store.abandon_turn(
                            session_id,
                            start.token,
                            turn_id=turn_id,
                            pending=written.pending(live),
                            code=failure.code,
                            message=failure.message,
                        )
            finally:
                # Told once the lock is free (a client that retries at once finds the
                # session free), and told even if the release itself is cancelled.
                if error is not None:
                    live.finish(TurnFailed(error.code, error.message, turn_id=turn_id))
                if self._running.get((session_id, turn_id)) is live:
                    del self._running[(session_id, turn_id)]

    async def _store_turn(
        self,
        live: LiveTurn,
        start: TurnStart,
        plan: _TurnPlan,
        status: TurnStatus,
        report: ReplyReport,
        written: Written,
    ) -> TurnEvent:
        """Store the turn (the user message and the reply, or a regenerated reply beside
        the old one) and end its stream, in one step: its done event."""
        session_id, turn_id = live.session_id, live.turn_id
        reply = live.answer()
        reasoning = live.reasoning()
        # A stopped reply's calls may be cut short: only a whole reply asks for any.
        calls = _calls(report) if status is TurnStatus.COMPLETE else ()
        # The message is COMPLETE (Message.status); the turn's end says REQUIRES_ACTION.
        ended = TurnStatus.REQUIRES_ACTION if calls else status
        reply_at = datetime.now(UTC)
        # A branch's first message takes the depth of the one it goes beside; the turn's
        # messages follow one another, the reply last.
        place = start.length if start.fork_at is None else start.fork_at
        asked: list[str] = []
        parent = start.parent
        first_id = ""
        for offset, message in enumerate(plan.new_messages()):
            identifier = message_id(place + offset, secrets.token_hex(4))
            first_id = first_id or identifier
            asked.append(
                encode(
                    stamped(
                        message,
                        plan.asked_at,
                        identifier=identifier,
                        turn_id=turn_id,
                        parent_id=parent,
                    )
                )
            )
            parent = identifier
        reply_id = message_id(place + len(asked), secrets.token_hex(4))
        reply_json = encode(
            stamped(
                _reply_message(reply, report.usage, reasoning, calls),
                reply_at,
                identifier=reply_id,
                turn_id=turn_id,
                status=status,
                parent_id=parent,
                finish_reason=report.finish_reason,
            )
        )
        first_id = first_id or reply_id  # a regenerate adds its reply alone

        async def attempt() -> int:
            return await self._store.commit_turn(
                session_id,
                start.token,
                asked=asked,
                reply_json=reply_json,
                first_message=plan.user_message,
                owner=start.owner,
                turn_id=turn_id,
                pending=written.pending(live),
                status=ended.value,
                usage=report.usage,
                fork_at=start.fork_at,
                fork_id=start.fork_id,
                first_id=first_id,
            )

        commit = asyncio.ensure_future(timed("commit", _confirmed(attempt)))
        try:
            outcome = await asyncio.shield(commit)
        except asyncio.CancelledError:
            # A shutdown cut the wait: the write goes on, and its outcome is what the
            # followers are told (a stored turn reported as lost would be sent again).
            outcome = await commit
        _check_commit(outcome)
        if self._summarizer is not None and plan.planned:
            # Off the turn's path: the reply is out before a summary is asked for.
            oldest = plan.planned[0].oldest_sent  # the full budget's: what turns send
            self._summarizer.want(session_id, (plan.earlier if oldest is None else oldest) - 1)
        if (
            self._titler is not None
            and ended in (TurnStatus.COMPLETE, TurnStatus.REQUIRES_ACTION)
            and plan.user_message
            and start.length == 0
        ):
            # The session's first turn: named off the turn's path, the reply goes out now.
            self._titler.want(session_id, message=plan.user_message, reply=reply)
        done = StoredMessage(
            role=Role.ASSISTANT,
            content=reply,
            created_at=reply_at,
            id=reply_id,
            parent_id=parent or None,
            turn_id=turn_id,
            status=status,
            usage=report.usage,
            finish_reason=report.finish_reason,
            reasoning=reasoning or None,
            tool_calls=calls,
        )
        return TurnEvent(
            token="", done=True, message=done, turn_id=turn_id, seq=live.end_seq, status=ended
        )

    async def _keep_old_reply(
        self, live: LiveTurn, start: TurnStart, written: Written
    ) -> TurnEvent:
        """End a regenerate stopped before its first token: nothing stored, the old reply
        stays; its done event (STOPPED) carries that reply."""
        assert start.replaces is not None
        await self._store.abandon_turn(
            live.session_id,
            start.token,
            turn_id=live.turn_id,
            pending=written.pending(live),
            kept_reply=start.replaces,
        )
        assert start.fork_at is not None
        kept = decode(start.replaces, start.fork_at, parent_id=start.parent or None)
        return TurnEvent(
            token="",
            done=True,
            message=kept,
            turn_id=live.turn_id,
            seq=live.end_seq,
            status=TurnStatus.STOPPED,
        )

    async def _stream_reply(
        self,
        live: LiveTurn,
        prompt_for: PromptFor,
        report: ReplyReport,
        tools: Sequence[dict[str, Any]] = (),
    ) -> TurnStatus:
        """Relay the model's reply into the turn until it ends or a stop is asked for.

        The relay runs in a task of its own, which a stop cancels: that closes the
        provider's stream, ending its HTTP request. A cancellation of this turn itself (a
        shutdown) cancels the relay too, and goes on as one.
        """
        if live.stop_requested:
            return TurnStatus.STOPPED
        relay = asyncio.create_task(self._relay(live, prompt_for, report, tools))
        live.on_stop(relay.cancel)
        try:
            await relay
        except asyncio.CancelledError:
            this = asyncio.current_task()
            if live.stop_requested and (this is None or this.cancelling() == 0):
                return TurnStatus.STOPPED
            raise
        finally:
            live.on_stop(None)
        return TurnStatus.COMPLETE

    async def _relay(
        self,
        live: LiveTurn,
        prompt_for: PromptFor,
        report: ReplyReport,
        tools: Sequence[dict[str, Any]],
    ) -> None:
        """Relay the model's pieces into the turn; the prompt is `prompt_for(budget)`,
        the budget the history's tokens. A provider that answers the context is too long
        (before any token) is asked once more with half the budget."""
        loop = asyncio.get_running_loop()
        # One bound on the whole reply, the retry included.
        turn_end = loop.time() + self._turn_timeout if self._turn_timeout else math.inf
        budget = self._history_tokens
        for attempt in range(2):
            try:
                await self._relay_once(live, prompt_for(budget), report, turn_end, tools)
            except ModelFailed as failure:
                if attempt or live.tokens or not is_context_too_long(failure):
                    raise
                budget //= 2
                logger.warning("the provider found the context too long; retrying with half")
                continue
            return

    async def _relay_once(
        self,
        live: LiveTurn,
        prompt: list[BaseMessage],
        report: ReplyReport,
        turn_end: float,
        tools: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Relay the model's pieces into the turn.

        One deadline, moved after every piece: the first piece may take the first-token
        wait, each later one `LLM_TIMEOUT_SECONDS`, and none may pass the turn's end. It
        bounds the wait as the client sees it: the provider SDK's own retries and a stream
        held open by keep-alive comments that carry no token all count against it.
        """
        loop = asyncio.get_running_loop()
        wait = self._first_timeout
        stream = self._model.stream(prompt, report, tools)
        try:
            async with asyncio.timeout_at(min(loop.time() + wait, turn_end)) as deadline:
                moved = -math.inf
                async for pieces in stream:
                    if pieces:  # (empty: tool call pieces, which move the deadline too)
                        if not live.tokens and live.began is not None:
                            metrics.FIRST_TOKEN.observe(loop.time() - live.began)
                        live.extend(pieces)
                        metrics.TOKENS.inc(len(pieces))
                    now = loop.time()
                    if now - moved >= _DEADLINE_SLACK:
                        # Moved at most once per slack (a timer's cancel and re-arm per
                        # piece is a twentieth of a relayed token's CPU), set a slack
                        # later: every piece still has its whole wait, at most a slack more.
                        wait = self._timeout
                        deadline.reschedule(min(now + wait + _DEADLINE_SLACK, turn_end))
                        moved = now
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
                await stream.aclose()

    async def _keep_lock(self, session_id: str, token: str, turn_id: str) -> None:
        while True:
            await asyncio.sleep(self._renew_every)
            try:
                if not await self._store.renew_lock(session_id, token, turn_id):
                    return
            except Exception:
                logger.warning("could not renew the lock of session %s", session_id)


class _TurnPlan:
    """What a turn sends the model: the history window cut to a budget, after the
    summary, then what the turn asks (see `new_messages`); every plan made is kept (a
    retry with half the budget makes a second)."""

    def __init__(
        self,
        start: TurnStart,
        ask: Ask,
        regenerated: str | None,
        end: Sequence[StoredMessage],
    ) -> None:
        self.start = start
        self.regenerating = regenerated is not None
        self.asked_at = datetime.now(UTC)
        # Messages before the turn's (from a branch's start on, all left out).
        self.earlier = start.length - start.skip
        self.planned: list[ContextPlan] = []
        # The user's message the turn stores ('' for none: a regenerate, tools' results).
        self.user_message = ""
        # What the turn adds before its reply: the tools' results, in the order of their
        # calls; or the user's message, after a "cancelled" result for each call left
        # pending at the path's end (an edit moves those off the path instead).
        self._results: list[tuple[str, str, str]] = []
        self._message = ask.message if regenerated is None else regenerated
        if ask.results is not None:
            pending = pending_calls(end)
            names = {call.id: call.name for call in pending}
            for result in match_results(pending, ask.results):
                self._results.append(
                    (result.tool_call_id, names[result.tool_call_id], result.content)
                )
            self._message = ""
        elif not self.regenerating:
            self.user_message = ask.message
            if start.fork_at is None:
                self._results = [(c.id, c.name, CANCELLED) for c in pending_calls(end)]
        # The reply whose calls the results answer goes with them, whatever the budget:
        # the turn's own results, or (a regenerate of the reply after them) the path's.
        after_results = regenerated is None and start.replaces is not None
        self._keep = calls_answered_at_end(end) if self._results or after_results else []

    def new_messages(self) -> list[BaseMessage]:
        """The messages the turn stores before its reply (new objects at each call)."""
        made: list[BaseMessage] = [
            ToolMessage(content=content, tool_call_id=call_id, name=name or None)
            for call_id, name, content in self._results
        ]
        if self.user_message:
            made.append(HumanMessage(content=self.user_message))
        return made

    def prompt(self, budget: int, summaries: bool) -> list[BaseMessage]:
        start = self.start
        plan = plan_context(
            start.system_prompt,
            start.window,
            total=self.earlier,
            max_tokens=budget,
            summary=start.summary if summaries else None,
            keep=self._keep,
        )
        self.planned.append(plan)
        asked = self.new_messages()
        if self.regenerating:
            asked = [HumanMessage(content=self._message)]
        return plan.prompt(start.system_prompt, *asked)


# How late past its wait a model's silence may be noticed (see `_relay_once`).
_DEADLINE_SLACK = 0.1


def _reply_message(
    text: str, usage: Usage | None, reasoning: str = "", calls: Sequence[ToolCall] = ()
) -> BaseMessage:
    """The reply as LangChain keeps it: the provider's counts in `usage_metadata`, the
    reasoning and the tool calls where LangChain puts them."""
    message = reply_message(text, reasoning=reasoning, tool_calls=calls)
    if usage is not None:
        message.usage_metadata = UsageMetadata(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.input_tokens + usage.output_tokens,
        )
    return message


def _calls(report: ReplyReport) -> tuple[ToolCall, ...]:
    """The tool calls the reply asks for, each with an id of its own (a provider that
    gives none, or one twice, gets one made here)."""
    calls: list[ToolCall] = []
    seen: set[str] = set()
    for call_id, name, arguments in report.tool_calls():
        call_id = valid_text(call_id)
        if not call_id or call_id in seen or len(call_id) > MAX_CALL_ID_CHARS:
            call_id = "call_" + secrets.token_hex(12)
        seen.add(call_id)
        # As it reads back once stored (LangChain keeps the arguments as an object), as
        # text that encodes to UTF-8 (the model's JSON may escape a lone surrogate).
        args = arguments_of(arguments)
        text = arguments_text(args) if args is not None else valid_text(arguments)
        calls.append(ToolCall(id=call_id, name=valid_text(name), arguments=text))
    return tuple(calls)


# How long a commit whose answer was lost (Redis unreachable, or late) is asked again
# before the client is told it cannot be known whether the turn was stored.
COMMIT_CONFIRM_SECONDS = 60.0


async def _confirmed(attempt: Callable[[], Awaitable[int]]) -> int:
    """The outcome of a commit, found out even when its answer is lost: the same call is
    made again (it stores nothing twice, and answers "stored" when an earlier try
    stored the turn) until Redis answers. A turn is never reported failed when it was
    stored, nor stored when it is reported failed."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + COMMIT_CONFIRM_SECONDS
    pause = 0.05
    while True:
        try:
            return await attempt()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if loop.time() + pause > give_up:
                raise StoreUnavailable(
                    f"Redis did not answer for {COMMIT_CONFIRM_SECONDS:g} s: it is not known "
                    "whether the reply was stored; read the session's history before "
                    "sending the message again"
                ) from exc
            logger.warning("the answer to a commit was lost (%s): asking again", type(exc).__name__)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)


def _check_commit(outcome: int) -> None:
    if outcome == 0:
        raise NotFound("the session was deleted while the reply streamed")
    if outcome == -3:
        raise SessionBusy("the last reply changed while it was regenerated; nothing stored")
    if outcome < 0:
        raise SessionBusy("the session's lock expired before the reply was stored")


def _describe(exc: BaseException) -> str:
    """A short, secret-free description of a provider error."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    return f"{name} (HTTP {status})" if status else name


def _client_error(exc: BaseException) -> ChatError:
    return client_error(exc, "in a turn")
