"""The session store: metadata, the activity index, paging, locks, commits, adoption."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, message_to_dict
from redis.asyncio import Redis

from resolvers.services.errors import BadInput, NotFound, SessionBusy
from resolvers.services.keys import INDEX_KEY, lock_key, messages_key, meta_key
from resolvers.services.stores import Stores
from resolvers.services.turn_store import TurnStart
from resolvers.services.validation import check_session_id
from tests.support.stores import PROMPT, stores_on


@pytest.fixture
def db(backend_db: Redis) -> Redis:
    """Every test here runs on one Redis and on the 3-primary cluster (`backend_db`)."""
    return backend_db


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "nope",
        "../../etc",
        "*",
        # Fixed values: every test worker must collect the same parameters.
        "C55790C0-26A3-4892-A11B-24CF0B66DFDD",
        "435a8f38-f250-11f1-9043-02fc00000001",  # a UUID1
        "{555cd06c-a73a-423b-bba8-052ccf349434}",
        "593288b206424e32a00a6ef4463fda40",
        "99382dd6-848f-4384-b462-7e802b7e90af\n",
    ],
)
def test_only_canonical_uuid4_is_a_session_id(bad: str) -> None:
    with pytest.raises(BadInput):
        check_session_id(bad)


async def test_create_stores_metadata_and_lists_the_new_session_first(db: Redis) -> None:
    store = stores_on(db)
    first = await store.sessions.create(title="one")
    second = await store.sessions.create()
    assert second.system_prompt == PROMPT and second.title is None
    page = await store.sessions.ids(limit=None, cursor=None)
    assert page.ids == [second.id, first.id]
    assert (await store.sessions.require(first.id)).title == "one"


async def test_get_of_unknown_session_is_none(db: Redis) -> None:
    assert await stores_on(db).sessions.get(str(uuid.uuid4())) is None


async def test_keyset_paging_visits_every_session_once(db: Redis) -> None:
    store = stores_on(db)
    created = [(await store.sessions.create()).id for _ in range(7)]
    seen, cursor = [], None
    for _ in range(10):
        page = await store.sessions.ids(limit=3, cursor=cursor)
        seen += page.ids
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(created))


async def test_paging_with_equal_scores_keeps_every_session(db: Redis) -> None:
    store = stores_on(db)
    ids = sorted(str(uuid.uuid4()) for _ in range(5))
    await db.zadd(INDEX_KEY, dict.fromkeys(ids, 1000))
    for session_id in ids:
        await db.hset(meta_key(session_id), mapping={"created_at": 1, "updated_at": 1})
    seen, after = [], None
    for _ in range(10):
        page = await store.sessions.page(first=2, after=after)
        seen += [s.id for s in page.sessions]
        if not page.has_next:
            break
        after = page.cursors[-1]
    assert seen == list(reversed(ids))
    assert page.total == 5


async def test_bad_cursor_and_bad_sizes_are_bad_input(db: Redis) -> None:
    store = stores_on(db)
    with pytest.raises(BadInput):
        await store.sessions.ids(limit=2, cursor="garbage")
    with pytest.raises(BadInput):
        await store.sessions.ids(limit=0, cursor=None)
    with pytest.raises(BadInput):
        await store.sessions.page(first=-1, after=None)


async def test_a_second_turn_is_busy_until_the_first_ends(db: Redis) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    with pytest.raises(SessionBusy):
        await store.turns.begin_turn(session.id)
    await store.turns.release_lock(session.id, start.token)
    again = await store.turns.begin_turn(session.id)
    await store.turns.release_lock(session.id, again.token)


async def test_turn_on_unknown_session_is_not_found_and_leaves_no_lock(db: Redis) -> None:
    session_id = str(uuid.uuid4())
    with pytest.raises(NotFound):
        await stores_on(db).turns.begin_turn(session_id)
    assert await db.exists(lock_key(session_id)) == 0


async def test_the_lock_expires_when_its_holder_dies(db: Redis) -> None:
    store = stores_on(db, lock=1)
    session = await store.sessions.create()
    await store.turns.begin_turn(session.id)  # never released, as after a crash
    await asyncio.sleep(1.2)
    start = await store.turns.begin_turn(session.id)
    await store.turns.release_lock(session.id, start.token)


async def test_begin_turn_reads_exactly_the_last_window_messages(db: Redis) -> None:
    store = stores_on(db, window=3)
    session = await store.sessions.create(system_prompt="custom")
    for i in range(4):
        start = await store.turns.begin_turn(session.id)
        await commit(store, session.id, start, f"q{i}", f"a{i}")
    start = await store.turns.begin_turn(session.id)
    assert start.system_prompt == "custom"
    assert [m.content for m in start.window] == ["a2", "q3", "a3"]
    await store.turns.release_lock(session.id, start.token)


async def commit(store: Stores, session_id: str, start: TurnStart | str, q: str, a: str) -> int:
    """Commit the turn `start` began (a bare token: one no turn holds)."""
    token, turn_id = (
        (start, str(uuid.uuid4())) if isinstance(start, str) else (start.token, start.turn_id)
    )
    return await store.turns.commit_turn(
        session_id,
        token,
        asked=[json.dumps(message_to_dict(HumanMessage(content=q)))],
        reply_json=json.dumps(message_to_dict(AIMessageChunk(content=a))),
        first_message=q,
        turn_id=turn_id,
    )


async def test_commit_is_atomic_idempotent_and_moves_the_session_first(db: Redis) -> None:
    store = stores_on(db)
    older = await store.sessions.create()
    newer = await store.sessions.create()
    start = await store.turns.begin_turn(older.id)
    assert await commit(store, older.id, start, "hello  world", "hi") == 1
    # A retried commit of the same turn (say after a dropped connection) stores nothing twice.
    assert await commit(store, older.id, start, "hello  world", "hi") == 1
    assert await db.llen(messages_key(older.id)) == 2
    info = await store.sessions.require(older.id)
    assert info.message_count == 2 and info.title == "hello world"
    assert info.updated_at > info.created_at
    assert (await store.sessions.ids(limit=None, cursor=None)).ids == [older.id, newer.id]
    assert await db.exists(lock_key(older.id)) == 0


async def test_commit_after_the_lock_was_lost_stores_nothing(db: Redis) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    await store.turns.begin_turn(session.id)
    assert await commit(store, session.id, "someone-else", "q", "a") == -1
    assert await db.llen(messages_key(session.id)) == 0


async def test_commit_to_a_deleted_session_stores_nothing(db: Redis) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    assert await store.sessions.delete(session.id)
    assert await commit(store, session.id, start, "q", "a") == 0
    assert await db.exists(messages_key(session.id), meta_key(session.id)) == 0


async def test_delete_removes_every_key_and_the_index_entry(db: Redis) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    await commit(store, session.id, start, "q", "a")
    assert await store.sessions.delete(session.id) is True
    assert await store.sessions.delete(session.id) is False
    assert await db.exists(messages_key(session.id), meta_key(session.id)) == 0
    assert await db.zscore(INDEX_KEY, session.id) is None


async def test_idle_sessions_expire_whole(db: Redis) -> None:
    store = stores_on(db, ttl=1)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    await commit(store, session.id, start, "q", "a")
    assert 0 < await db.ttl(messages_key(session.id)) <= 1
    await asyncio.sleep(2.1)
    assert await store.sessions.get(session.id) is None
    assert (await store.sessions.ids(limit=None, cursor=None)).ids == []
    assert await db.zscore(INDEX_KEY, session.id) is None


async def test_orphan_message_lists_are_adopted_in_batches(db: Redis) -> None:
    store = stores_on(db)
    orphans = [str(uuid.uuid4()) for _ in range(25)]
    for session_id in orphans:
        await db.lpush(
            messages_key(session_id),
            json.dumps(message_to_dict(HumanMessage(content="q"))),
            json.dumps(message_to_dict(AIMessageChunk(content="a"))),
        )
    await db.lpush("message_store:not-a-uuid", "x")
    assert await store.adoption.orphans(batch=10, pause=0) == 25
    assert await store.adoption.orphans(batch=10, pause=0) == 0
    listed = (await store.sessions.ids(limit=None, cursor=None)).ids
    assert sorted(listed) == sorted(orphans)
    info = await store.sessions.require(orphans[0])
    assert info.message_count == 2 and info.system_prompt == PROMPT
    assert [t.output for t in await store.sessions.exchanges(orphans[0])] == ["a"]


async def test_an_orphan_is_adopted_on_first_use(db: Redis) -> None:
    store = stores_on(db)
    session_id = str(uuid.uuid4())
    await db.lpush(messages_key(session_id), json.dumps(message_to_dict(HumanMessage(content="q"))))
    start = await store.turns.begin_turn(session_id)
    await store.turns.release_lock(session_id, start.token)
    assert (await store.sessions.require(session_id)).message_count == 1


async def test_starting_a_turn_renews_the_sessions_ttl(db: Redis) -> None:
    store = stores_on(db, ttl=2)
    session = await store.sessions.create()
    await asyncio.sleep(1.2)
    start = await store.turns.begin_turn(session.id)
    assert await db.pttl(meta_key(session.id)) > 1500
    await store.turns.release_lock(session.id, start.token)


async def test_adopted_sessions_get_the_ttl_too(db: Redis) -> None:
    store = stores_on(db, ttl=30)
    session_id = str(uuid.uuid4())
    await db.lpush(messages_key(session_id), json.dumps(message_to_dict(HumanMessage(content="q"))))
    assert await store.adoption.orphans(batch=10, pause=0) == 1
    assert 0 < await db.ttl(meta_key(session_id)) <= 30
    assert 0 < await db.ttl(messages_key(session_id)) <= 30


async def test_a_running_turn_keeps_its_session_alive_and_listed(db: Redis) -> None:
    """SESSION_TTL_SECONDS counts from the end of the last turn: while one runs, the
    session's keys live a lock's life past the TTL (renewed with the lock), and a
    listing keeps every session that exists, however old its last activity."""
    store = stores_on(db, ttl=100, lock=20)
    session = await store.sessions.create()
    await db.expire(meta_key(session.id), 50)  # as if the session had idled 50 s
    start = await store.turns.begin_turn(session.id)
    assert await db.ttl(meta_key(session.id)) > 100
    # A refused start (busy) is no activity: it moves no expiry.
    await db.expire(meta_key(session.id), 50)
    with pytest.raises(SessionBusy):
        await store.turns.begin_turn(session.id)
    assert await db.ttl(meta_key(session.id)) <= 50
    assert await store.turns.renew_lock(session.id, start.token, start.turn_id)
    assert await db.ttl(meta_key(session.id)) > 100
    # A score older than the TTL (an import, a long turn): listed while it exists.
    await db.zadd(INDEX_KEY, {session.id: 1})
    assert (await store.sessions.ids(limit=None, cursor=None)).ids == [session.id]
    assert await commit(store, session.id, start, "q", "a") == 1
    assert 90 < await db.ttl(meta_key(session.id)) <= 100
    assert 90 < await db.ttl(messages_key(session.id)) <= 100
    # Gone (expired) sessions leave the index at the next listing.
    await db.delete(meta_key(session.id), messages_key(session.id))
    await db.zadd(INDEX_KEY, {session.id: 1})
    assert (await store.sessions.ids(limit=None, cursor=None)).ids == []


async def test_message_count_is_what_the_list_holds_after_outside_writes(db: Redis) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    await store.turns.commit_turn(
        session.id,
        start.token,
        asked=[_human("q")],
        reply_json=_human("a"),
        first_message="q",
        turn_id=start.turn_id,
    )
    for text in ("one", "two", "three"):  # another LangChain program appends
        await db.lpush(messages_key(session.id), _human(text))
    assert (await store.sessions.require(session.id)).message_count == 5
    page = await store.sessions.page(first=10, after=None)
    assert [s.message_count for s in page.sessions] == [5]
    await db.delete(messages_key(session.id))  # ... or clears the history
    assert (await store.sessions.require(session.id)).message_count == 0


def _human(text: str) -> str:
    return json.dumps(message_to_dict(HumanMessage(content=text)))
