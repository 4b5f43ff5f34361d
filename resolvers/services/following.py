"""Following a turn from any process: the turn this process runs, or a mirror filled
from the turn's Redis Stream, one reader task per turn however many subscribers follow
it here. A turn whose process died (its lock gone, no end written) is ended by the first
follower that notices, for every follower anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from resolvers.services.errors import NotFound, StoreUnavailable, client_error
from resolvers.services.history import TurnStatus, decode
from resolvers.services.identity import Identity
from resolvers.services.sessions import SessionStore
from resolvers.services.turn_store import TokenEntry, TurnEnd, TurnStore
from resolvers.services.turnlog import LiveTurn, TurnEvent, TurnFailed
from resolvers.services.validation import check_turn_id

# How long a follower's blocking stream read waits before it checks the turn is alive.
FOLLOW_BLOCK_MS = 1000
# How often a followed turn is looked at when every blocking connection is taken.
LOOK_SECONDS = 0.25


class TurnFollower:
    """The mirrors of turns other processes run, followed from their streams."""

    def __init__(
        self,
        store: TurnStore,
        sessions: SessionStore,
        *,
        running: Callable[[tuple[str, str]], LiveTurn | None],
        min_gap: float,
        connections: int,
    ) -> None:
        self._store = store
        self._sessions = sessions
        # The turns this process runs (the runner's), by (session id, turn id).
        self._running = running
        self._min_gap = min_gap
        self._mirrors: dict[tuple[str, str], LiveTurn] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Blocking reads of followed turns at once: the follow pool's size.
        self._slots = asyncio.Semaphore(connections)

    async def turn(self, session_id: str, turn_id: str | None, who: Identity) -> LiveTurn:
        """The turn named (the running one when None), once `who` may use the session."""
        return await self.live(session_id, await self._which(session_id, turn_id, who))

    def cancel(self) -> None:
        """The process stops: every mirror ends (its subscribers follow again elsewhere)."""
        for task in list(self._tasks):
            task.cancel()

    async def _which(self, session_id: str, turn_id: str | None, who: Identity) -> str:
        """The turn id to follow, once `who` may use the session."""
        if turn_id is not None:
            turn_id = check_turn_id(turn_id)
            await self._sessions.check_usable(session_id, who=who)
            return turn_id
        active = await self._store.active_turn(session_id, who=who)
        if active is None:
            raise NotFound("no turn is running on this session")
        return active.turn_id

    async def live(self, session_id: str, turn_id: str) -> LiveTurn:
        """The turn's events in this process: the running turn, or a mirror of it."""
        key = (session_id, turn_id)
        live = self._running(key) or self._mirrors.get(key)
        if live is not None:
            return live
        rows = await self._store.turn_entries(session_id, turn_id, 0)
        if not rows and not await self._store.turn_running(session_id, turn_id):
            raise NotFound("no turn with that id on this session (or it has expired)")
        live = self._mirrors.get(key)  # another subscriber may have made it meanwhile
        if live is not None:
            return live
        live = LiveTurn(session_id, turn_id, min_gap=self._min_gap)
        apply_entries(live, rows)
        if not live.ended:
            self._mirrors[key] = live
            task = asyncio.create_task(self._mirror(live))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return live

    async def _mirror(self, live: LiveTurn) -> None:
        """Follow a turn another process runs, from its stream, until it ends; a turn
        whose process died (its lock gone, no end written) is ended here as failed."""
        session_id, turn_id = live.session_id, live.turn_id
        try:
            while not live.ended:
                entries = await self._read_on(live)
                if entries:
                    apply_entries(live, entries)
                    continue
                if await self._store.turn_running(session_id, turn_id):
                    continue
                # Ended meanwhile (its end written after the read began), or died.
                apply_entries(live, await self._store.turn_entries(session_id, turn_id, live.seq))
                if not live.ended:
                    await self._end_orphan(live)
        except asyncio.CancelledError:
            # The turn goes on elsewhere: its followers follow it again on another process.
            live.finish(
                StoreUnavailable(
                    "this server process is shutting down; follow the turn again "
                    "(turn with after: the last seq seen)"
                )
            )
            raise
        except Exception as exc:
            live.finish(client_error(exc, "following a turn"))
        finally:
            if self._mirrors.get((session_id, turn_id)) is live:
                del self._mirrors[(session_id, turn_id)]

    async def _read_on(self, live: LiveTurn) -> list[TokenEntry | TurnEnd]:
        """The next entries of a followed turn: a blocking read while a connection of the
        follow pool is free, else a look now and a short pause (never an error)."""
        session_id, turn_id = live.session_id, live.turn_id
        if self._slots.locked():
            entries = await self._store.turn_entries(session_id, turn_id, live.seq)
            if not entries:
                await asyncio.sleep(LOOK_SECONDS)
            return entries
        async with self._slots:
            return await self._store.turn_entries(
                session_id, turn_id, live.seq, block_ms=FOLLOW_BLOCK_MS
            )

    async def _end_orphan(self, live: LiveTurn) -> None:
        """End, for every follower anywhere, a turn whose process died: nobody else will."""
        failure = TurnFailed(
            "UNAVAILABLE",
            "the server process running this turn stopped before the reply was stored; "
            "send the message again, with a new turn id",
            turn_id=live.turn_id,
        )
        ended = 0
        with contextlib.suppress(Exception):  # if not written, the next follower looks again
            ended = await self._store.abandon_turn(
                live.session_id,
                "",  # no lock to free: it has expired
                turn_id=live.turn_id,
                pending=(live.seq + 1, []),
                code=failure.code,
                message=failure.message,
            )
        if ended == 2:
            failure = TurnFailed(
                "NOT_FOUND",
                "the session was deleted while the reply streamed",
                turn_id=live.turn_id,
            )
        # What was written first (this end, or one that came meanwhile) is the end.
        apply_entries(live, await self._store.turn_entries(live.session_id, live.turn_id, live.seq))
        live.finish(failure)


def apply_entries(live: LiveTurn, entries: list[TokenEntry | TurnEnd]) -> None:
    """Add stream entries to a followed turn, each token once (entries may overlap when
    a write was retried)."""
    for entry in entries:
        if live.ended:
            return
        have = len(live.tokens)
        if isinstance(entry, TokenEntry):
            if entry.seq <= have:
                continue
            # Entries dropped by the stream's cap leave a gap: keep the numbering.
            gap = [""] * max(0, entry.first - have - 1)
            live.extend(gap + entry.tokens[max(0, have + 1 - entry.first) :])
            continue
        live.extend([""] * max(0, entry.seq - have - 1))
        if entry.status == TurnStatus.FAILED.value:
            reason = entry.message or "the turn failed"
            live.finish(TurnFailed(entry.code or "LLM_ERROR", reason, turn_id=live.turn_id))
            return
        live.finish(
            TurnEvent(
                token="",
                done=True,
                message=decode(entry.reply_json or "", entry.seq),
                turn_id=live.turn_id,
                seq=live.end_seq,
                status=TurnStatus(entry.status),
            )
        )
