"""The stream writer: one task a process writes the new tokens of every turn it runs to
their Redis Streams, all in one pipeline a tick, and watches for stops asked for in
Redis (a write answers it; a turn with no new tokens is looked at every
STOP_POLL_SECONDS).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass

from resolvers.services.metrics import timed
from resolvers.services.turn_store import TurnStore
from resolvers.services.turnlog import LiveTurn

logger = logging.getLogger(__name__)

# The running turns' new tokens go to their Redis Streams in one pipeline per tick of
# FLUSH_SECONDS; a turn is written at most once per interval, which starts at
# FLUSH_SECONDS and grows with its number of writes, to at most MAX_FLUSH_SECONDS, so even
# an hour-long reply stays well under the stream's cap.
FLUSH_SECONDS = 0.1
MAX_FLUSH_SECONDS = 1.0
FLUSHES_PER_STEP = 500
# How often a running turn that has no new tokens looks for a stop asked in Redis.
STOP_POLL_SECONDS = 0.25


@dataclass(slots=True)
class Written:
    """Where a running turn's stream stands."""

    flushed: int = 0  # tokens known to be in the stream
    writes: int = 0
    next_write: float = 0.0
    next_look: float = 0.0

    def pending(self, live: LiveTurn) -> tuple[int, list[str]]:
        """The tokens not yet written: the first one's seq, and the tokens."""
        return self.flushed + 1, live.tokens[self.flushed :]


class StreamWriter:
    """Writes the new tokens of every turn this process runs to their streams, all in one
    pipeline per tick, and watches for stops asked in Redis (a write answers it; a turn
    with no new tokens is looked at every STOP_POLL_SECONDS). One task for the process,
    running while turns do, whatever their number."""

    def __init__(self, store: TurnStore) -> None:
        self._store = store
        self._turns: dict[LiveTurn, Written] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, live: LiveTurn) -> Written:
        now = asyncio.get_running_loop().time()
        written = Written(next_write=now, next_look=now + STOP_POLL_SECONDS)
        self._turns[live] = written
        if self._task is None or self._task.done():
            # The process's task, not the request's that happened to start it: its log
            # lines carry no request id.
            self._task = asyncio.create_task(self._loop(), context=contextvars.Context())
        return written

    def remove(self, live: LiveTurn) -> None:
        """No more writes for `live` (its end writes what is left). A write already on
        its way may still land: its entry is then a duplicate the readers skip, or a
        late one Redis refuses (its id is below the end's)."""
        self._turns.pop(live, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._turns:
            await asyncio.sleep(FLUSH_SECONDS)
            now = loop.time()
            due: list[tuple[LiveTurn, Written, int, list[str]]] = []
            for live, written in self._turns.items():
                first, tokens = written.pending(live)
                if tokens and now < written.next_write:
                    tokens = []
                if tokens or now >= written.next_look:
                    due.append((live, written, first, tokens))
            if not due:
                continue
            batch = [(live.session_id, live.turn_id, first, new) for live, _, first, new in due]
            try:
                answers = await timed("flush", self._store.flush_turns(batch))
            except Exception as exc:
                # Kept for the next tick (or the turn's end, which writes what is left).
                logger.warning("could not write running turns to Redis: %s", type(exc).__name__)
                continue
            now = loop.time()
            for (live, written, _, tokens), (stored, stop) in zip(due, answers, strict=True):
                if tokens and stored:
                    written.flushed += len(tokens)
                    written.writes += 1
                    step = 1 + written.writes // FLUSHES_PER_STEP
                    written.next_write = now + min(FLUSH_SECONDS * step, MAX_FLUSH_SECONDS)
                written.next_look = now + STOP_POLL_SECONDS
                # 1: a stop was asked for; 2: the session was deleted (its commit then
                # finds it gone, and nothing is written for it again).
                if stop:
                    live.request_stop()
