"""A turn's events as one process holds them: numbered, kept, read by any number of readers.

The task running a turn appends the model's tokens to its `LiveTurn`; a process that
follows a turn another process runs fills one from the turn's Redis Stream. Either way
token `n` of the reply is event `n`, and the end (the done event, or the error) is the
event after the last token, so a reader anywhere resumes after the last number it saw.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from resolvers.services.errors import BadInput, ChatError, ModelFailed
from resolvers.services.history import Reasoning, StoredMessage, TurnStatus


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """Tokens of the reply (`seq` the last one's number); or the end: `done`, with the
    stored reply and the status."""

    token: str
    done: bool = False
    message: StoredMessage | None = None
    turn_id: str = ""
    seq: int = 0
    status: TurnStatus | None = None
    # `token` is a piece of the model's reasoning, not of its answer.
    reasoning: bool = False


class TurnFailed(ChatError):
    """The turn ended without being stored: the error its followers get. The code is the
    one the turn failed with (LLM_ERROR, ...)."""

    def __init__(self, code: str, message: str, *, turn_id: str) -> None:
        super().__init__(message)
        self.code = code
        self.turn_id = turn_id


# Tokens waiting for a reader before they go out merged in one event.
BACKLOG_TO_MERGE = 16


class LiveTurn:
    """The events of one turn in this process; any number of readers, each at its own
    place. Appending costs the same with one reader or a hundred."""

    def __init__(self, session_id: str, turn_id: str, *, min_gap: float = 0.0) -> None:
        self.session_id = session_id
        self.turn_id = turn_id
        self.tokens: list[str] = []
        self.end: TurnEvent | ChatError | None = None
        # Set when a stop is asked for (here, or seen in Redis by the turn's flusher).
        self.stop_requested = False
        self._on_stop: Callable[[], object] | None = None
        self._min_gap = min_gap
        # When the turn began (loop time), in the process that runs it.
        self.began: float | None = None
        self._waiters: list[asyncio.Future[None]] = []
        # Readers holding tokens back (min_gap) wait for the end only, not every token.
        self._end_waiters: list[asyncio.Future[None]] = []

    @property
    def ended(self) -> bool:
        return self.end is not None

    @property
    def seq(self) -> int:
        """The number of the last token here."""
        return len(self.tokens)

    @property
    def end_seq(self) -> int:
        """The number the end event has (or will have)."""
        return len(self.tokens) + 1

    def request_stop(self) -> None:
        """Ask the turn to stop; whoever relays the model hears of it at once."""
        if not self.stop_requested:
            self.stop_requested = True
            if self._on_stop is not None:
                self._on_stop()

    def on_stop(self, callback: Callable[[], object] | None) -> None:
        """Call `callback` when a stop is asked for (None: no longer)."""
        self._on_stop = callback

    def push(self, token: str) -> None:
        self.tokens.append(token)
        self._wake()

    def extend(self, tokens: list[str]) -> None:
        self.tokens.extend(tokens)
        self._wake()

    def finish(self, end: TurnEvent | ChatError) -> None:
        if self.end is None:
            self.end = end
            self._wake()
            _wake(self._end_waiters)
            self._end_waiters = []

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        _wake(waiters)

    async def changed(self, within: float | None = None) -> None:
        """Wait for the next token or the end (at most `within` seconds)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if within is None:
            await waiter
            return
        await _at_most(waiter, within)

    async def _ended_within(self, within: float) -> None:
        """Wait `within` seconds, or less if the turn ends meanwhile."""
        waiter = asyncio.get_running_loop().create_future()
        self._end_waiters.append(waiter)
        try:
            await _at_most(waiter, within)
        finally:
            if waiter in self._end_waiters:
                self._end_waiters.remove(waiter)

    async def events(
        self, after: int = 0, min_gap: float | None = None
    ) -> AsyncIterator[TurnEvent]:
        """The events after number `after`: tokens, then the done event; the turn's
        error is raised instead of the done event.

        A reader from the start (`after` 0: a client joining a turn it may have seen
        part of) gets the tokens there when it came one an event, numbered 1, 2, 3, ...:
        the recipe "skip an event whose seq is not above the last one seen" then shows
        every token once across a dropped connection. After that, a reader that keeps up
        gets every token as its own event; one that falls behind (`BACKLOG_TO_MERGE`
        tokens waiting: a loaded socket, a slow client) gets the waiting tokens merged in
        one event, numbered as the last of them. With `min_gap`, tokens that come within
        `min_gap` seconds of the last event wait (never longer) to go out together. The
        first token and the end are never held back.
        """
        if after < 0:
            raise BadInput("after must not be negative")
        loop = asyncio.get_running_loop()
        min_gap = self._min_gap if min_gap is None else min_gap
        position = after
        last_sent = -math.inf
        tokens = self.tokens
        # The replay of a join: one token an event, at once.
        replay_until = len(tokens) if after == 0 else 0
        while position < replay_until:
            position += 1
            piece = tokens[position - 1]
            yield TurnEvent(
                token=piece,
                turn_id=self.turn_id,
                seq=position,
                reasoning=type(piece) is Reasoning,
            )
        while True:
            available = len(tokens)
            if position < available:
                hold = last_sent + min_gap - loop.time()
                if hold > 0 and self.end is None:
                    # One timer per event, however many tokens come meanwhile.
                    await self._ended_within(hold)
                available = len(tokens)
                reasoning = type(tokens[position]) is Reasoning
                if available - position >= BACKLOG_TO_MERGE or min_gap > 0:
                    # Merged with the pieces after it of the same kind (reasoning apart
                    # from answer).
                    until = _same_kind_until(tokens, position, available, reasoning)
                    text = "".join(tokens[position:until])
                    position = until
                else:
                    text = tokens[position]
                    position += 1
                yield TurnEvent(token=text, turn_id=self.turn_id, seq=position, reasoning=reasoning)
                last_sent = loop.time()
                continue
            end = self.end
            if end is None:
                await self.changed()
                continue
            if position > available + 1:
                raise BadInput(f"after is beyond the turn's last event ({available + 1})")
            if position == available + 1:
                return  # the reader has seen the end already
            if isinstance(end, ChatError):
                raise end
            yield end
            return

    def answer(self) -> str:
        """The reply's answer text so far (its reasoning left out)."""
        return "".join([t for t in self.tokens if type(t) is not Reasoning])

    def reasoning(self) -> str:
        """The reply's reasoning so far."""
        return "".join([t for t in self.tokens if type(t) is Reasoning])

    async def reply(self) -> StoredMessage:
        """Wait for the end; the stored reply."""
        async for event in self.events(after=len(self.tokens), min_gap=0.0):
            if event.done and event.message is not None:
                return event.message
        raise ModelFailed("the turn ended without a reply")


def _same_kind_until(tokens: list[str], start: int, end: int, reasoning: bool) -> int:
    """Where the run of pieces of one kind (reasoning, or answer) from `start` ends, at
    most `end`; a plain reply's pieces are all of one kind, found in one pass."""
    for index in range(start + 1, end):
        if (type(tokens[index]) is Reasoning) is not reasoning:
            return index
    return end


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


async def _at_most(waiter: asyncio.Future[None], seconds: float) -> None:
    """Wait for `waiter`, for at most `seconds`."""
    timer = asyncio.get_running_loop().call_later(seconds, _wake, [waiter])
    try:
        await waiter
    finally:
        timer.cancel()
