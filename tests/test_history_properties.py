"""Stateful property tests of the history and the session store, on the real Redis.

Two independent clients (as two server processes would have) drive one Redis database
of their own (db 7, flushed for every example) through any interleaving of operations,
and every step is checked against a plain in-memory model.

redis.asyncio clients belong to the event loop they were used on, and hypothesis runs
rules as plain functions: each example gets an event loop of its own, its clients are
made and closed on it, and every call goes through `run_until_complete`.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from redis.asyncio import Redis

from resolvers.services.errors import BadInput, NotFound, SessionBusy
from resolvers.services.history import RedisChatHistory, Role, encode, stamped
from resolvers.services.index import MAX_PAGE
from resolvers.services.keys import INDEX_KEY, messages_key, meta_key
from resolvers.services.storage import make_client
from tests.support import RedisServer
from tests.support.fuzzing import UNICODE, FuzzStats
from tests.support.machines import AsyncMachine
from tests.support.stores import stores_on

pytestmark = pytest.mark.fuzz

T = TypeVar("T")

MACHINE_SETTINGS = settings(
    max_examples=50,
    stateful_step_count=50,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def fuzz_db(fresh_db: Callable[[], str]) -> str:
    """The stores' own database: the machines create and delete sessions by the thousand."""
    return fresh_db()


# -- RedisChatHistory --------------------------------------------------------------------

KINDS: dict[str, type[BaseMessage]] = {
    "human": HumanMessage,
    "ai": AIMessage,
    "chunk": AIMessageChunk,  # how the documented REST app stores streamed replies
    "system": SystemMessage,
}
ROLE_OF_KIND = {
    "human": Role.USER,
    "ai": Role.ASSISTANT,
    "chunk": Role.ASSISTANT,
    "system": Role.SYSTEM,
}
READ_BACK_AS = {"human": HumanMessage, "ai": AIMessage, "chunk": AIMessage, "system": SystemMessage}


@dataclass(frozen=True)
class Item:
    """One message of the model: what was written, and when it says it was made."""

    kind: str
    content: str
    at: datetime | None

    def message(self) -> BaseMessage:
        message = KINDS[self.kind](content=self.content)
        return stamped(message, self.at) if self.at is not None else message


stamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
items = st.builds(
    Item,
    kind=st.sampled_from(sorted(KINDS)),
    content=st.text(UNICODE, max_size=20),
    at=st.one_of(st.none(), stamps),
)
batches = st.lists(items, min_size=0, max_size=4)
lasts = st.one_of(st.none(), st.integers(min_value=-3, max_value=12))


class HistoryMachine(AsyncMachine):
    """Appends, clears and reads of one session's history by two independent clients."""

    name = "history state machine"

    def __init__(self) -> None:
        super().__init__()
        session_id = str(uuid.uuid4())
        redis_a = self.client(app_like=True)
        redis_b = self.client(app_like=False)
        self.run(redis_a.flushdb())
        self.histories = [
            RedisChatHistory(redis_a, session_id),
            RedisChatHistory(redis_b, session_id),
        ]
        self.model: list[Item] = []

    def check_stored(self, got: list[Any], expected: list[Item]) -> None:
        assert [(m.role, m.content, m.created_at) for m in got] == [
            (ROLE_OF_KIND[i.kind], i.content, i.at) for i in expected
        ]

    @rule(who=st.integers(0, 1), batch=batches)
    def append(self, who: int, batch: list[Item]) -> None:
        self.step("append")
        self.run(self.histories[who].aadd_messages([i.message() for i in batch]))
        self.model += batch

    @rule(who=st.integers(0, 1))
    def clear(self, who: int) -> None:
        self.step("clear")
        self.run(self.histories[who].aclear())
        self.model = []

    @rule(who=st.integers(0, 1), last=lasts)
    def read_stored(self, who: int, last: int | None) -> None:
        self.step("aget_stored")
        got = self.run(self.histories[who].aget_stored(last=last))
        if last is None:
            expected = self.model
        elif last <= 0:
            expected = []
        else:
            expected = self.model[-last:]
        self.check_stored(got, expected)

    @rule(who=st.integers(0, 1))
    def read_messages(self, who: int) -> None:
        self.step("aget_messages")
        got = self.run(self.histories[who].aget_messages())
        assert [(type(m), m.content) for m in got] == [
            (READ_BACK_AS[i.kind], i.content) for i in self.model
        ]

    @rule(first=batches.filter(bool), second=batches.filter(bool))
    def append_concurrently(self, first: list[Item], second: list[Item]) -> None:
        """Both clients at once: each batch lands whole, one after the other."""
        self.step("concurrent appends")
        a, b = self.histories

        async def both() -> None:
            await asyncio.gather(
                a.aadd_messages([i.message() for i in first]),
                b.aadd_messages([i.message() for i in second]),
            )

        self.run(both())
        got = self.run(a.aget_stored())
        outcomes = [self.model + first + second, self.model + second + first]
        for outcome in outcomes:
            try:
                self.check_stored(got, outcome)
            except AssertionError:
                continue
            self.model = outcome
            return
        raise AssertionError(f"batches interleaved or lost: {got}")

    @rule(batch=batches.filter(bool), last=lasts)
    def read_while_appending(self, batch: list[Item], last: int | None) -> None:
        """A read racing an append sees all of the batch or none of it."""
        self.step("read racing an append")
        a, b = self.histories

        async def both() -> list[Any]:
            got, _ = await asyncio.gather(
                a.aget_stored(last=None), b.aadd_messages([i.message() for i in batch])
            )
            return got

        got = self.run(both())
        before, after = self.model, self.model + batch
        assert len(got) in {len(before), len(after)}
        self.check_stored(got, before if len(got) == len(before) else after)
        self.model = after

    @rule(batch=batches.filter(bool))
    def clear_while_appending(self, batch: list[Item]) -> None:
        """A clear racing an append: the batch is either wiped or all that is left."""
        self.step("clear racing an append")
        a, b = self.histories

        async def both() -> None:
            await asyncio.gather(a.aclear(), b.aadd_messages([i.message() for i in batch]))

        self.run(both())
        got = self.run(b.aget_stored())
        assert len(got) in {0, len(batch)}
        self.model = [] if not got else list(batch)
        self.check_stored(got, self.model)

    @invariant()
    def same_list_for_both_clients(self) -> None:
        a, b = self.histories
        got_a = self.run(a.aget_stored())
        self.check_stored(got_a, self.model)
        got_b = self.run(b.aget_stored())
        self.check_stored(got_b, self.model)


def test_history_matches_a_list_under_two_clients(
    fuzz_db: str, redis_server: RedisServer, stats: FuzzStats
) -> None:
    HistoryMachine.redis_url = fuzz_db
    HistoryMachine.stats = stats
    run_state_machine_as_test(HistoryMachine, settings=MACHINE_SETTINGS)
    # The run must have exercised what it is about (a guard against a dull seed).
    for what in ("append", "clear", "aget_stored", "concurrent appends", "read racing an append"):
        assert stats.cases(HistoryMachine.name, what) >= 20, what


# -- SessionStore ---------------------------------------------------------------------------


@dataclass
class Model:
    """What a session should look like."""

    exists: bool = True
    turns: list[tuple[str, str]] = field(default_factory=list)
    lock: str | None = None  # the token of the running turn
    last_turn: str | None = None  # the token of the last stored turn
    stored: set[str] = field(default_factory=set)  # the tokens of every stored turn
    activity: int = 0  # order of last activity (create or stored turn)
    title: str | None = None


@dataclass
class Walk:
    """A keyset walk over the index, one page per step, other steps in between."""

    api: str  # "page" (GraphQL sessions) or "ids" (REST /sessions?limit=)
    size: int
    cursor: str | None = None
    seen: list[str] = field(default_factory=list)
    at_start: list[str] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    pages: int = 0


class SessionMachine(AsyncMachine):
    """create / begin_turn / commit_turn / release_lock / delete / paging, by two stores."""

    name = "session store state machine"

    def __init__(self) -> None:
        super().__init__()
        self.stores = [
            # Locks longer than any example: they end by rule only.
            stores_on(self.client(app_like=True), window=4, lock=120)
            for _ in range(2)
        ]
        self.redis = self.clients[0]
        self.run(self.redis.flushdb())
        self.model: dict[str, Model] = {}
        self.clock = 0
        self.spent_tokens: list[str] = []  # released, lost or already committed tokens
        self.turn_ids: dict[str, str] = {}  # each begun turn's token -> its turn id
        self.walk: Walk | None = None

    # -- helpers

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def live(self) -> list[str]:
        return [sid for sid, m in self.model.items() if m.exists]

    def expected_order(self) -> list[str]:
        return sorted(self.live(), key=lambda sid: self.model[sid].activity, reverse=True)

    def touch(self, session_id: str) -> None:
        if self.walk is not None:
            self.walk.touched.add(session_id)

    def pick(self, data: st.DataObject, *, live_only: bool = False) -> str:
        """A session, in creation order; mostly a live one, sometimes a deleted one."""
        live = self.live()
        if live and (live_only or data.draw(st.sampled_from([True, True, True, False]))):
            return data.draw(st.sampled_from(live), label="session")
        return data.draw(st.sampled_from(list(self.model)), label="session")

    # -- rules

    @initialize(count=st.integers(0, 3))
    def some_sessions(self, count: int) -> None:
        for _ in range(count):
            self.create(0, None)

    @precondition(lambda self: len(self.live()) < 6 and len(self.model) < 40)
    @rule(
        who=st.integers(0, 1),
        title=st.one_of(
            st.none(), st.text(UNICODE, max_size=8), st.text(UNICODE, min_size=201, max_size=203)
        ),
    )
    def create(self, who: int, title: str | None) -> None:
        if title is not None and len(title) > 200:
            self.step("create (title too long)")
            with pytest.raises(BadInput):
                self.run(self.stores[who].sessions.create(title=title))
            return
        self.step("create")
        info = self.run(self.stores[who].sessions.create(title=title))
        assert info.message_count == 0 and info.title == (title or None)
        assert info.id not in self.model
        self.model[info.id] = Model(activity=self.tick(), title=title or None)

    @precondition(lambda self: any(m.exists and m.lock is None for m in self.model.values()))
    @rule(first=st.integers(0, 1), then=st.integers(0, 1), data=st.data())
    def whole_turn(self, first: int, then: int, data: st.DataObject) -> None:
        """A turn begun by one store and committed by the other (or the same)."""
        free = [s for s, m in self.model.items() if m.exists and m.lock is None]
        session_id = data.draw(st.sampled_from(free), label="session")
        self.step("whole turn")
        start = self.run(self.stores[first].turns.begin_turn(session_id))
        self.turn_ids[start.token] = start.turn_id
        self.model[session_id].lock = start.token
        self.commit_running(then, session_id)

    @precondition(lambda self: bool(self.model))
    @rule(who=st.integers(0, 1), data=st.data())
    def begin_turn(self, who: int, data: st.DataObject) -> None:
        """On a free session it starts; on a locked one SessionBusy; on a deleted one NotFound."""
        free = [s for s, m in self.model.items() if m.exists and m.lock is None]
        other = [s for s in self.model if s not in free]
        wanted = data.draw(st.sampled_from(["free", "free", "other"]), label="which")
        session_id = data.draw(
            st.sampled_from(free if (wanted == "free" and free) or not other else other),
            label="session",
        )
        model = self.model[session_id]
        if not model.exists:
            self.step("begin_turn (deleted)")
            with pytest.raises(NotFound):
                self.run(self.stores[who].turns.begin_turn(session_id))
        elif model.lock is not None:
            self.step("begin_turn (busy)")
            with pytest.raises(SessionBusy):
                self.run(self.stores[who].turns.begin_turn(session_id))
        else:
            self.step("begin_turn")
            start = self.run(self.stores[who].turns.begin_turn(session_id))
            self.turn_ids[start.token] = start.turn_id
            window = [m.content for m in start.window]
            flat = [text for turn in model.turns for text in turn]
            assert window == flat[-4:]
            model.lock = start.token

    @precondition(lambda self: bool(self.model))
    @rule(who=st.integers(0, 1), data=st.data())
    def commit_turn(self, who: int, data: st.DataObject) -> None:
        """The running turn is stored once (nothing when the session is gone); a retry of
        the stored turn is recognised (1); any other token stores nothing (-1)."""
        running = [s for s, m in self.model.items() if m.lock]
        if running and data.draw(st.sampled_from([True, True, True, False]), label="running"):
            self.commit_running(who, data.draw(st.sampled_from(running), label="session"))
            return
        session_id = self.pick(data)
        model = self.model[session_id]
        candidates = [*self.spent_tokens[-5:], secrets.token_hex(16)]
        if model.last_turn:
            candidates += [model.last_turn] * 2
        token = data.draw(st.sampled_from(candidates), label="token")
        if token == model.lock:
            self.commit_running(who, session_id)
            return
        result = self.commit(who, session_id, token, "stale question", "stale answer")
        if not model.exists:
            # Whoever holds the token: the session is gone, and nothing is stored.
            self.step("commit_turn (deleted session)")
            assert result == 0
        elif token in model.stored:
            # A retry of a stored turn's commit (its answer lost) learns it was stored.
            self.step("commit_turn (retried)")
            assert result == 1
        else:
            self.step("commit_turn (lock not held)")
            assert result == -1

    def commit_running(self, who: int, session_id: str) -> None:
        model = self.model[session_id]
        token = model.lock
        assert token is not None
        n = len(model.turns)
        question, answer = f"q{n} {session_id[:4]}", f"a{n}"
        result = self.commit(who, session_id, token, question, answer)
        model.lock = None
        self.spent_tokens.append(token)
        if model.exists:
            self.step("commit_turn")
            assert result == 1
            model.turns.append((question, answer))
            model.last_turn = token
            model.stored.add(token)
            model.activity = self.tick()
            self.touch(session_id)
        else:
            self.step("commit_turn (after delete)")
            assert result == 0
            assert not self.run(self.redis.exists(messages_key(session_id), meta_key(session_id)))
            assert self.run(self.redis.zscore(INDEX_KEY, session_id)) is None

    @precondition(lambda self: bool(self.model))
    @rule(who=st.integers(0, 1), data=st.data(), own=st.booleans())
    def release_lock(self, who: int, data: st.DataObject, own: bool) -> None:
        """Releasing with the running turn's token frees the session; any other does not."""
        running = [s for s, m in self.model.items() if m.lock]
        session_id = (
            data.draw(st.sampled_from(running), label="session") if running else self.pick(data)
        )
        model = self.model[session_id]
        token = model.lock if own and model.lock else secrets.token_hex(16)
        self.step("release_lock" if token == model.lock else "release_lock (not the holder)")
        self.run(self.stores[who].turns.release_lock(session_id, token))
        if token == model.lock:
            self.spent_tokens.append(token)
            model.lock = None

    @precondition(lambda self: bool(self.model))
    @rule(who=st.integers(0, 1), data=st.data())
    def delete(self, who: int, data: st.DataObject) -> None:
        session_id = self.pick(data)
        model = self.model[session_id]
        self.step("delete" if model.exists else "delete (again)")
        assert self.run(self.stores[who].sessions.delete(session_id)) is model.exists
        model.exists = False
        self.touch(session_id)

    @rule(who=st.integers(0, 1), size=st.integers(-1, 4), api=st.sampled_from(["page", "ids"]))
    def walk_all_pages(self, who: int, size: int, api: str) -> None:
        """With nothing changing in between, the pages visit every session once, in order."""
        if size <= 0:
            self.step("page size <= 0")
            if api == "page" and size == 0:
                page = self.run(self.stores[who].sessions.page(first=0, after=None))
                assert page.sessions == []
                return
            store = self.stores[who]
            call = (
                store.sessions.page(first=size, after=None)
                if api == "page"
                else store.sessions.ids(limit=size, cursor=None)
            )
            with pytest.raises(BadInput):
                self.run(call)
            return
        self.step(f"walk ({api})")
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(len(self.model) + 2):  # bounded: every page but the last is full
            ids, cursor, total = self.page(who, api, size, cursor)
            assert len(ids) <= size
            if total is not None:
                assert total == len(self.live())
            seen += ids
            if cursor is None:
                break
        assert cursor is None, "paging did not end"
        assert seen == self.expected_order()

    @rule(who=st.integers(0, 1), size=st.integers(1, 3), api=st.sampled_from(["page", "ids"]))
    def walk_one_page(self, who: int, size: int, api: str) -> None:
        """Pages read between other operations (a walk starts when none is under way):
        never a session twice, and every session that existed when the walk began and
        was not touched since is visited."""
        if self.walk is None:
            self.step("walk started")
            self.walk = Walk(api=api, size=size, at_start=self.expected_order())
        walk = self.walk
        self.step("walk step")
        ids, walk.cursor, _ = self.page(who, walk.api, walk.size, walk.cursor)
        walk.seen += ids
        walk.pages += 1
        assert len(walk.seen) == len(set(walk.seen)), f"visited twice: {walk.seen}"
        if walk.cursor is None or walk.pages > 40:
            assert walk.cursor is None, "paging did not end"
            missing = [s for s in walk.at_start if s not in walk.touched and s not in walk.seen]
            assert not missing, f"skipped: {missing}"
            self.walk = None

    # -- invariants

    @invariant()
    def index_is_most_recent_activity_first(self) -> None:
        page = self.run(self.stores[1].sessions.ids(limit=None, cursor=None))
        assert page.ids == self.expected_order()

    @invariant()
    def counts_are_twice_the_stored_turns(self) -> None:
        for session_id, model in self.model.items():
            info = self.run(self.stores[0].sessions.get(session_id))
            if not model.exists:
                assert info is None, "a deleted session came back"
                continue
            assert info is not None
            assert info.message_count == 2 * len(model.turns)
            assert info.title == (model.title or (model.turns[0][0][:60] if model.turns else None))
            turns = self.run(self.stores[1].sessions.exchanges(session_id))
            assert [(t.input, t.output) for t in turns] == model.turns

    # -- calls

    def commit(self, who: int, session_id: str, token: str, question: str, answer: str) -> int:
        now = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=self.clock)
        result: int = self.run(
            self.stores[who].turns.commit_turn(
                session_id,
                token,
                asked=[encode(stamped(HumanMessage(content=question), now))],
                reply_json=encode(stamped(AIMessage(content=answer), now)),
                first_message=question,
                turn_id=self.turn_ids.get(token, str(uuid.uuid4())),
            )
        )
        return result

    def page(
        self, who: int, api: str, size: int, cursor: str | None
    ) -> tuple[list[str], str | None, int | None]:
        store = self.stores[who]
        if api == "ids":
            got = self.run(store.sessions.ids(limit=size, cursor=cursor))
            return got.ids, got.next_cursor, None
        page = self.run(store.sessions.page(first=size, after=cursor))
        assert len(page.cursors) == len(page.sessions)
        end = page.cursors[-1] if page.cursors and page.has_next else None
        return [s.id for s in page.sessions], end, page.total


def test_session_store_matches_its_model(
    fuzz_db: str, redis_server: RedisServer, stats: FuzzStats
) -> None:
    SessionMachine.redis_url = fuzz_db
    SessionMachine.stats = stats
    run_state_machine_as_test(SessionMachine, settings=MACHINE_SETTINGS)
    # The run must have exercised what it is about (a guard against a dull seed).
    for what in ("commit_turn", "whole turn", "begin_turn (busy)", "walk step", "delete"):
        assert stats.cases(SessionMachine.name, what) >= 20, what


def test_page_sizes_beyond_the_cap_are_cut(fuzz_db: str, redis_server: RedisServer) -> None:
    """A plain check the machine cannot reach cheaply: MAX_PAGE bounds a page."""

    async def check() -> None:
        redis = make_client(fuzz_db, max_connections=2)
        assert isinstance(redis, Redis)  # a single-node URL, not a cluster
        try:
            await redis.flushdb()
            store = stores_on(redis, window=0, lock=5)
            await redis.zadd(INDEX_KEY, {str(uuid.uuid4()): i for i in range(MAX_PAGE + 5)})
            page = await store.sessions.ids(limit=MAX_PAGE * 10, cursor=None)
            assert len(page.ids) == MAX_PAGE and page.next_cursor is not None
            await redis.flushdb()
        finally:
            await redis.aclose()
            await redis.connection_pool.disconnect()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(check())
    finally:
        loop.close()
