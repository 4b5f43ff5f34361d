"""Each Redis script on its own, against what another program may leave in its keys.

A script is a transaction Redis never rolls back: an error halfway leaves every write
before it in place. So each one must read and check everything before its first write:
whatever it finds (a count that is not a number or does not fit 64 bits, a key of
another type, an element that is not JSON), it does its whole work or changes nothing,
and it never stops halfway with a Redis error.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage, message_to_dict
from redis.asyncio import Redis
from redis.typing import EncodableT

from resolvers.services import scripts
from resolvers.services.conversation import Conversations
from resolvers.services.errors import DataConflict
from resolvers.services.history import ToolCall, encode, reply_message, stamped
from resolvers.services.identity import Identity
from resolvers.services.keys import (
    INDEX_KEY,
    active_turn_key,
    kids_key,
    lock_key,
    messages_key,
    meta_key,
    session_tag,
    share_key,
    shares_key,
    tree_key,
    turn_ids_key,
    turn_stream_key,
)
from resolvers.services.scripts import Script, outcome_of
from resolvers.services.shares import ShareStore
from resolvers.services.stores import Stores
from resolvers.services.turn_store import TurnStart
from resolvers.services.usage import Usage
from tests.support.snapshot import snapshot
from tests.support.stores import stores_on

# Values another program may leave where a count, a time or a position belongs.
HOSTILE_NUMBERS = [
    "abc",
    "",
    "3.5",
    "-7",
    "1e400",
    "99999999999999999999",  # past int64: HINCRBY fails on it
    "9223372036854775807",  # int64's largest: HINCRBY of 1 overflows
    "9" * 400,
    "0x10",
    " 7",
    "nan",
]
# Elements another program may leave in a session's list.
HOSTILE_ELEMENTS = [
    "not json",
    '{"type": 5}',
    "[" * 3000 + "]" * 3000,
    json.dumps({"type": "ai", "data": "text"}),
    json.dumps(
        {
            "type": "ai",
            "data": {
                "content": "x",
                "additional_kwargs": {"message_id": "0.x"},
                "usage_metadata": {"input_tokens": 1e300, "output_tokens": -5},
            },
        }
    ),
    json.dumps(
        {
            "type": "ai",
            "data": {
                "content": "x",
                "additional_kwargs": {"message_id": "0.y"},
                "usage_metadata": {"input_tokens": "12", "output_tokens": 2.5},
            },
        }
    ),
]
# Replies with tool calls and tool results of any shape.
HOSTILE_ELEMENTS += [
    json.dumps({"type": "ai", "data": {"content": "", "tool_calls": "call"}}),
    json.dumps(
        {
            "type": "ai",
            "data": {
                "content": "",
                "tool_calls": [{"id": 5, "name": [], "args": "{"}, "x"],
                "invalid_tool_calls": {"a": 1},
                "additional_kwargs": {"reasoning_content": ["r"]},
            },
        }
    ),
    json.dumps({"type": "tool", "data": {"content": 5, "tool_call_id": {"x": 1}}}),
]
MAX_COUNT = 2**31 - 1


@pytest.fixture
async def raw(db_url: str) -> AsyncIterator[Redis]:
    """The same database without decoding (DUMP gives bytes)."""
    client = Redis.from_url(db_url)
    yield client
    await client.aclose()


def reply(text: str, tokens_in: int, tokens_out: int) -> str:
    message = AIMessage(
        content=text,
        usage_metadata={
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        },
    )
    return encode(stamped(message, _now(), identifier=f"1.{uuid.uuid4().hex[:8]}"))


def _now() -> datetime:
    return datetime.now(UTC)


async def commit(store: Stores, session_id: str, start: TurnStart, n: int = 1) -> int:
    return await store.turns.commit_turn(
        session_id,
        start.token,
        asked=[json.dumps(message_to_dict(HumanMessage(content=f"q{n}")))],
        reply_json=reply(f"a{n}", 10 * n, n),
        first_message=f"q{n}",
        turn_id=start.turn_id,
        pending=(1, ["a"]),
        usage=Usage(input_tokens=10 * n, output_tokens=n),
    )


def counted(elements: Sequence[str | bytes]) -> tuple[int, int]:
    """The usage the stored elements hold, as the server counts it."""
    tokens_in = tokens_out = 0
    for raw in elements:
        try:
            data = json.loads(raw)
            fields = data["data"]
            assert isinstance(fields["additional_kwargs"]["message_id"], str)
            counts = fields["usage_metadata"]
            a, b = counts["input_tokens"], counts["output_tokens"]
        except (ValueError, KeyError, TypeError, AssertionError, RecursionError):
            continue
        if all(
            isinstance(v, int | float) and v == int(v) and 0 <= v <= MAX_COUNT for v in (a, b)
        ) and not any(isinstance(v, bool) for v in (a, b)):
            tokens_in, tokens_out = tokens_in + int(a), tokens_out + int(b)
    return tokens_in, tokens_out


# -- the files -------------------------------------------------------------------------


@pytest.mark.parametrize("name", scripts.names())
def test_each_script_declares_every_key_and_argument_it_uses(name: str) -> None:
    body = scripts.source(name)
    interface = scripts.interface(name)
    for kind, declared in (("KEYS", interface.keys), ("ARGV", interface.args)):
        used = {int(n) for n in re.findall(rf"{kind}\[(\d+)\]", body)}
        assert used <= set(range(1, len(declared) + 1)), f"{kind} used but not declared"
        assert used == set(range(1, len(declared) + 1)), f"{kind} declared but not used"
    assert interface.returns is None or len(interface.returns) >= 1
    assert "RETURNS" in (scripts.FOLDER / f"{name}.lua").read_text()


@pytest.mark.parametrize("name", scripts.names())
async def test_each_script_compiles_on_redis(db: Redis, name: str) -> None:
    assert re.fullmatch(r"[0-9a-f]{40}", await db.script_load(scripts.source(name)))


def test_includes_are_resolved_once_and_in_order() -> None:
    body = scripts.source("commit_turn")
    assert body.count("local function whole(") == 1
    assert body.index("local function whole(") < body.index("local function counted(")
    assert "INCLUDE" not in body.split("-- INCLUDE")[0]  # fragments come first


async def test_a_script_refuses_names_its_header_does_not_declare(db: Redis) -> None:
    script = Script(db, "release_lock")
    with pytest.raises(TypeError, match="takes no key"):
        await script(keys={"lock": "a", "active": "b", "other": "c"}, args={"token": "t"})
    with pytest.raises(TypeError, match="needs the argument"):
        await script(keys={"lock": "a", "active": "b"}, args={})


# -- commit_turn -----------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
@pytest.mark.parametrize("field", ["input_tokens", "output_tokens", "epoch", "list_mark"])
async def test_commit_stores_once_whatever_the_counts_hold(
    db: Redis, field: str, value: str
) -> None:
    """The review's case: a count past int64 made the commit fail after it had written
    the turn, and every retry stored it again. Now the turn is stored once, its usage is
    the sum over the stored replies, and a retry stores nothing more."""
    store = stores_on(db)
    session = await store.sessions.create()
    first = await store.turns.begin_turn(session.id)
    assert await commit(store, session.id, first) == 1
    await db.hset(meta_key(session.id), field, value)
    start = await store.turns.begin_turn(session.id)
    assert await commit(store, session.id, start, 2) == 1
    assert await commit(store, session.id, start, 2) == 1  # a retry: stored once
    elements = await db.lrange(messages_key(session.id), 0, -1)
    assert len(elements) == 4
    info = await store.sessions.require(session.id)
    assert (info.usage.input_tokens, info.usage.output_tokens) == counted(elements) == (30, 3)


@pytest.mark.parametrize("element", HOSTILE_ELEMENTS)
async def test_commit_counts_only_what_it_can_read(db: Redis, element: str) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    await db.lpush(messages_key(session.id), element)
    await db.hdel(meta_key(session.id), "list_mark")  # as another program left it
    await db.hset(meta_key(session.id), "input_tokens", "x")
    start = await store.turns.begin_turn(session.id)
    assert await commit(store, session.id, start) == 1
    elements = await db.lrange(messages_key(session.id), 0, -1)
    info = await store.sessions.require(session.id)
    usage = (info.usage.input_tokens, info.usage.output_tokens)
    assert usage == counted(elements)
    assert all(0 <= n <= MAX_COUNT for n in usage)


@pytest.mark.parametrize(
    ("key", "kind"),
    [("meta", "string"), ("messages", "hash"), ("stream", "list"), ("turn_ids", "string")],
)
async def test_commit_changes_nothing_when_a_key_holds_another_type(
    db: Redis, raw: Redis, key: str, kind: str
) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    name = {
        "meta": meta_key(session.id),
        "messages": messages_key(session.id),
        "stream": turn_stream_key(session.id, start.turn_id),
        "turn_ids": turn_ids_key(session.id),
    }[key]
    await db.delete(name)
    if kind == "string":
        await db.set(name, "planted")
    elif kind == "hash":
        await db.hset(name, "planted", "1")
    else:
        await db.rpush(name, "planted")
    before = await snapshot(raw)
    with pytest.raises(DataConflict):
        await commit(store, session.id, start)
    assert await snapshot(raw) == before


@pytest.mark.parametrize("asked", ["not json", '{"a": 1}', "[1]", '["q", null]', "7"])
async def test_commit_changes_nothing_when_what_it_adds_is_not_a_list_of_elements(
    db: Redis, raw: Redis, asked: str
) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    state = {"token": start.token, "turn_id": start.turn_id, "session_id": session.id}
    keys = plausible_keys("commit_turn", state)
    args = {**plausible_args("commit_turn", state), "asked": asked}
    script = Script(db, "commit_turn")
    before = await snapshot(raw)
    with pytest.raises(DataConflict):
        outcome_of(await script(keys=keys, args=args))
    assert await snapshot(raw) == before


async def test_commit_changes_nothing_when_the_index_is_another_type(db: Redis, raw: Redis) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    await db.delete(INDEX_KEY)
    await db.set(INDEX_KEY, "planted")
    before = await snapshot(raw)
    with pytest.raises(DataConflict):
        await commit(store, session.id, start)
    assert await snapshot(raw) == before


# -- begin_turn, rewind, summaries -----------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
async def test_begin_reads_a_hostile_summary_place_as_no_summary(db: Redis, value: str) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    await commit(store, session.id, start)
    await db.hset(meta_key(session.id), mapping={"summary_at": value, "summary_covers": value})
    start = await store.turns.begin_turn(session.id)
    assert start.summary is None
    assert [m.content for m in start.window] == ["q1", "a1"]
    await store.turns.release_lock(session.id, start.token)


@pytest.mark.parametrize(("key", "kind"), [("meta", "string"), ("messages", "hash")])
async def test_begin_changes_nothing_when_a_key_holds_another_type(
    db: Redis, raw: Redis, key: str, kind: str
) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    name = meta_key(session.id) if key == "meta" else messages_key(session.id)
    await db.delete(name)
    if kind == "string":
        await db.set(name, "planted")
    else:
        await db.hset(name, "planted", "1")
    before = await snapshot(raw)
    with pytest.raises(DataConflict):
        await store.turns.begin_turn(session.id)
    assert await snapshot(raw) == before


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
async def test_rewind_leaves_exact_usage_whatever_the_counts_held(db: Redis, value: str) -> None:
    from resolvers.services.conversation import Conversations

    store = stores_on(db)
    conversations = Conversations(db, store.sessions)
    session = await store.sessions.create()
    for n in (1, 2):
        start = await store.turns.begin_turn(session.id)
        await commit(store, session.id, start, n)
    await db.hset(meta_key(session.id), mapping={"input_tokens": value, "epoch": value})
    messages = await store.sessions.messages(session.id)
    await conversations.rewind(session.id, messages[2].id)
    info = await store.sessions.require(session.id)
    elements = await db.lrange(messages_key(session.id), 0, -1)
    assert len(elements) == 2
    assert (info.usage.input_tokens, info.usage.output_tokens) == counted(elements) == (10, 1)


async def test_a_rewind_never_subtracts_usage_that_was_never_added(db: Redis) -> None:
    """An element another program wrote with usage this server never added (or a count
    it lost) takes the session's usage below zero nowhere."""
    from resolvers.services.conversation import Conversations

    store = stores_on(db)
    conversations = Conversations(db, store.sessions)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    await commit(store, session.id, start)
    await db.hset(meta_key(session.id), mapping={"input_tokens": 0, "output_tokens": 0})
    messages = await store.sessions.messages(session.id)
    await conversations.rewind(session.id, messages[0].id)
    info = await store.sessions.require(session.id)
    assert (info.usage.input_tokens, info.usage.output_tokens) == (0, 0)


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
async def test_a_summary_is_never_kept_over_hostile_state(db: Redis, value: str) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    for n in (1, 2):
        start = await store.turns.begin_turn(session.id)
        await commit(store, session.id, start, n)
    await db.hset(
        meta_key(session.id),
        mapping={"epoch": value, "summary_at": value, "summary_covers": value},
    )
    state = await store.summaries.summary_state(session.id)
    element = encode(stamped(AIMessage(content="s"), _now()))
    kept = await store.summaries.store_summary(
        session.id,
        text_json=element,
        covers=1,
        at=state.at,
        epoch=state.epoch,
        position=state.length if state.at is None else state.at,
    )
    # Kept only where the state reads as numbers: never an error.
    assert kept in (True, False)
    assert await db.llen(messages_key(session.id)) in (4, 5)


# -- the stream scripts ----------------------------------------------------------------


async def test_a_summary_never_comes_between_calls_and_their_results(db: Redis) -> None:
    """A new summary is pushed as the newest element: not while the path ends with a
    reply whose tool calls wait (their results must follow it); once answered, it is."""
    store = stores_on(db)
    session = await store.sessions.create()
    calls = [ToolCall(id="c1", name="look", arguments="{}")]
    for asking in (True, False):
        await db.lpush(messages_key(session.id), encode(reply_message("", tool_calls=calls)))
        if not asking:
            await db.lpush(
                messages_key(session.id), encode(ToolMessage(content="r", tool_call_id="c1"))
            )
        info = await db.hgetall(meta_key(session.id))
        length = await db.llen(messages_key(session.id))
        await db.hset(meta_key(session.id), "list_mark", await list_mark(db, session.id))
        kept = await Script(db, "summarize")(
            keys={
                "messages": messages_key(session.id),
                "meta": meta_key(session.id),
                "lock": lock_key(session.id),
            },
            args={
                "summary": json.dumps({"type": "system", "data": {"content": "s"}}),
                "covers": 0,
                "at": -1,
                "epoch": info.get("epoch", "0"),
                "position": length,
            },
        )
        assert kept == (0 if asking else 1)


async def list_mark(db: Redis, session_id: str) -> str:
    """The mark a list written here gets, as the server computes it."""
    length = await db.llen(messages_key(session_id))
    newest = await db.lindex(messages_key(session_id), 0) or ""
    raw = newest if isinstance(newest, bytes) else newest.encode()
    return f"{length}:{hashlib.sha1(raw).hexdigest()}"  # noqa: S324


async def test_a_flush_for_a_deleted_session_writes_nothing(db: Redis) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    assert await store.sessions.delete(session.id)
    [(written, stop)] = await store.turns.flush_turns([(session.id, start.turn_id, 1, ["a", "b"])])
    assert (written, stop) == (False, 2)
    assert await db.exists(turn_stream_key(session.id, start.turn_id)) == 0


async def test_a_flush_written_twice_keeps_one_entry(db: Redis) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    batch = [(session.id, start.turn_id, 1, ["a", "b"])]
    assert await store.turns.flush_turns(batch) == [(True, 0)]
    assert await store.turns.flush_turns(batch) == [(True, 0)]  # a retry: already there
    assert await db.xlen(turn_stream_key(session.id, start.turn_id)) == 1
    await store.turns.release_lock(session.id, start.token)


@pytest.mark.parametrize("kind", ["string", "list"])
async def test_stream_scripts_change_nothing_on_a_stream_of_another_type(
    db: Redis, raw: Redis, kind: str
) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    stream = turn_stream_key(session.id, start.turn_id)
    await db.delete(stream)
    if kind == "string":
        await db.set(stream, "planted")
    else:
        await db.rpush(stream, "planted")
    before = await snapshot(raw)
    assert await store.turns.flush_turns([(session.id, start.turn_id, 1, ["a"])]) == [(False, 0)]
    with pytest.raises(DataConflict):
        await store.turns.abandon_turn(
            session.id, start.token, turn_id=start.turn_id, pending=(1, ["a"]), code="X"
        )
    assert await snapshot(raw) == before


async def test_an_abandoned_turn_of_a_deleted_session_leaves_no_stream(db: Redis) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    assert await store.sessions.delete(session.id)
    ended = await store.turns.abandon_turn(
        session.id, start.token, turn_id=start.turn_id, pending=(1, ["secret"]), code="X"
    )
    assert ended == 2
    assert await db.keys(f"*{session.id}*") == []


# -- delete, adopt, reads, documents ---------------------------------------------------


async def test_delete_leaves_nothing_of_the_session(db: Redis) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    for n in (1, 2):
        start = await store.turns.begin_turn(session.id, turn_id=str(uuid.uuid4()))
        await store.turns.flush_turns([(session.id, start.turn_id, 1, ["a"])])
        await commit(store, session.id, start, n)
    running = await store.turns.begin_turn(session.id)
    await store.turns.flush_turns([(session.id, running.turn_id, 1, ["private"])])
    assert await store.sessions.delete(session.id)
    left = [k for k in await db.keys("*") if session.id in k]
    assert left == []
    assert await db.zscore(INDEX_KEY, session.id) is None
    assert [k for k in await db.keys("turns:*")] == []


@pytest.mark.parametrize("kind", ["meta", "turn_ids", "active", "index"])
async def test_delete_changes_nothing_when_a_key_holds_another_type(
    db: Redis, raw: Redis, kind: str
) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    name = {
        "meta": meta_key(session.id),
        "turn_ids": turn_ids_key(session.id),
        "active": active_turn_key(session.id),
        "index": INDEX_KEY,
    }[kind]
    if kind == "meta":
        await db.delete(name)
        await db.rpush(messages_key(session.id), "x")  # the session still exists
    else:
        await db.delete(name)
    await db.set(name, "planted")
    before = await snapshot(raw)
    if kind == "meta":
        with pytest.raises(DataConflict):
            await store.sessions.delete(session.id)
    else:
        with pytest.raises(DataConflict):
            await store.sessions.delete(session.id)
    assert await snapshot(raw) == before


@pytest.mark.parametrize("element", HOSTILE_ELEMENTS)
async def test_adoption_counts_what_it_can_read(db: Redis, element: str) -> None:
    store = stores_on(db)
    session_id = str(uuid.uuid4())
    await db.lpush(messages_key(session_id), element)
    info = await store.sessions.get(session_id)
    assert info is not None
    assert (info.usage.input_tokens, info.usage.output_tokens) == counted([element])


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
async def test_reads_never_fail_on_hostile_metadata(db: Redis, value: str) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    await commit(store, session.id, start)
    await db.hset(
        meta_key(session.id),
        mapping={
            "created_at": value,
            "updated_at": value,
            "input_tokens": value,
            "output_tokens": value,
            "list_mark": value,
        },
    )
    info = await store.sessions.require(session.id)
    assert (info.usage.input_tokens, info.usage.output_tokens) == (10, 1)
    page = await store.sessions.page(first=10, after=None)
    assert [s.usage.input_tokens for s in page.sessions] == [10]
    assert len(await store.sessions.messages(session.id)) == 2


async def test_an_outside_clear_leaves_no_usage_and_no_summary(db: Redis) -> None:
    """Another LangChain program clears the list (RedisChatMessageHistory.clear()): the
    usage is the sum over what the list now holds, and no summary position points
    past it."""
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    await commit(store, session.id, start)
    await db.hset(meta_key(session.id), mapping={"summary_at": 0, "summary_covers": 0})
    await db.delete(messages_key(session.id))
    info = await store.sessions.require(session.id)
    assert (info.message_count, info.usage.input_tokens, info.usage.output_tokens) == (0, 0, 0)
    # ... and appends again: still only what the list holds.
    await db.lpush(messages_key(session.id), json.dumps(message_to_dict(HumanMessage("hi"))))
    info = await store.sessions.require(session.id)
    assert (info.message_count, info.usage.input_tokens) == (1, 0)
    start = await store.turns.begin_turn(session.id)
    assert start.summary is None
    assert await commit(store, session.id, start, 2) == 1
    info = await store.sessions.require(session.id)
    assert (info.usage.input_tokens, info.usage.output_tokens) == (20, 2)
    state = await store.summaries.summary_state(session.id)
    assert state.at is None


async def test_keeping_a_document_changes_nothing_on_an_index_of_another_type(
    db: Redis, raw: Redis
) -> None:
    from resolvers.services.persisted import PersistedQueries, query_hash

    await db.set("{apq}:index", "planted")
    before = await snapshot(raw)
    queries = PersistedQueries(db)
    document = "{ viewer { id } }"
    assert await queries.put(query_hash(document), document) is False
    assert await snapshot(raw) == before


async def test_a_lock_held_by_another_turn_is_neither_renewed_nor_released(
    db: Redis, raw: Redis
) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    start = await store.turns.begin_turn(session.id)
    await db.set(lock_key(session.id), "someone-else")
    before = await snapshot(raw)
    assert await store.turns.renew_lock(session.id, start.token, start.turn_id) is False
    await store.turns.release_lock(session.id, start.token)
    assert await snapshot(raw) == before


@pytest.mark.parametrize("name", scripts.names())
def test_no_script_shadows_a_function_of_its_includes(name: str) -> None:
    """A `local place = ...` in a script that includes `place` broke the call at run time
    (Lua only finds out when the line runs): names are checked here."""
    body = (scripts.FOLDER / f"{name}.lua").read_text()
    included = set(re.findall(r"local function (\w+)", scripts.source(name))) - set(
        re.findall(r"local function (\w+)", body)
    )
    assigned = set(re.findall(r"local ([\w, ]+)=", body))
    names = {n.strip() for group in assigned for n in group.split(",")}
    assert not names & included, f"{name}.lua shadows {sorted(names & included)}"


# -- the conversation list: flags, shares, titles ----------------------------------------


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
async def test_pinning_files_a_session_whatever_its_activity_holds(db: Redis, value: str) -> None:
    store = stores_on(db)
    session = await store.sessions.create(owner="u")
    await db.hset(meta_key(session.id), "updated_at", value)
    talk = Conversations(db, store.sessions)
    changed = await talk.update(
        session.id, title=None, system_prompt=None, who=Identity(user_id="u"), pinned=True
    )
    assert changed.pinned
    assert await db.zscore("sessions:pinned:u", session.id) is not None


@pytest.mark.parametrize("kind", ["owner_index", "archived_index", "pinned_index"])
async def test_a_change_of_flags_changes_nothing_when_an_index_is_another_type(
    db: Redis, raw: Redis, kind: str
) -> None:
    store = stores_on(db)
    session = await store.sessions.create(owner="u")
    name = {"owner_index": "sessions:owner:u", "archived_index": "sessions:archived:u",
            "pinned_index": "sessions:pinned:u"}[kind]  # fmt: skip
    await db.delete(name)
    await db.set(name, "planted")
    before = await snapshot(raw)
    with pytest.raises(DataConflict):
        await Conversations(db, store.sessions).update(
            session.id, title=None, system_prompt=None, who=Identity(user_id="u"), archived=True
        )
    assert await snapshot(raw) == before


@pytest.mark.parametrize("element", HOSTILE_ELEMENTS)
async def test_a_share_copies_a_hostile_list_and_shows_what_reads(db: Redis, element: str) -> None:
    store = stores_on(db)
    shares = ShareStore(db, store.sessions)
    session = await store.sessions.create()
    await db.lpush(messages_key(session.id), element)
    made = await shares.create(session.id)
    shown = await shares.snapshot(made.id)
    assert shown.messages == await store.sessions.messages(session.id)


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
async def test_a_share_is_refused_past_a_hostile_most(db: Redis, value: str) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    script = Script(db, "share_session")
    keys = {
        "meta": meta_key(session.id), "messages": messages_key(session.id),
        "shares": shares_key(session.id), "share": share_key(session.id, "s" * 32),
    }  # fmt: skip
    args: dict[str, EncodableT] = {"admin": "0", "user": "", "share_id": "s" * 32,
                                   "session_id": session.id, "now": 1, "most": value}  # fmt: skip
    result = await script(keys=keys, args=args)
    assert result["outcome"] == -2  # nothing kept: not a number of shares
    assert await db.exists(share_key(session.id, "s" * 32)) == 0


async def test_a_share_another_program_rewrote_reads_as_what_it_holds(db: Redis) -> None:
    store = stores_on(db)
    shares = ShareStore(db, store.sessions)
    session = await store.sessions.create()
    made = await shares.create(session.id)
    for value in ("not json", "{}", "[1, 2]", '"x"', "[" * 3000 + "]" * 3000):
        await db.hset(share_key(session.id, made.id), "messages", value)
        assert (await shares.snapshot(made.id)).messages == []
    await db.hset(share_key(session.id, made.id), "created_at", "abc")
    assert (await shares.snapshot(made.id)).created_at.year == 1970


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
@pytest.mark.parametrize("field", ["input_tokens", "output_tokens", "list_mark"])
async def test_a_title_counts_usage_whatever_the_counts_hold(
    db: Redis, field: str, value: str
) -> None:
    store = stores_on(db)
    session = await store.sessions.create()
    first = await store.turns.begin_turn(session.id)
    await commit(store, session.id, first)
    await db.hset(meta_key(session.id), field, value)
    script = Script(db, "name_session")
    keys = {"meta": meta_key(session.id), "messages": messages_key(session.id)}
    for tokens in (value, "5"):
        named = await script(
            keys=keys, args={"title": "T", "input_tokens": tokens, "output_tokens": tokens}
        )
        assert named == 1
    info = await store.sessions.require(session.id)
    assert info.title == "T"
    for count in (info.usage.input_tokens, info.usage.output_tokens):
        assert 0 <= count <= MAX_COUNT


# -- every script, every key of another type ------------------------------------------


def plausible_args(name: str, state: dict[str, str]) -> dict[str, EncodableT]:
    """Arguments a caller would pass, by their names in the script's header."""
    now = int(time.time() * 1_000_000)
    values: dict[str, EncodableT] = {
        "token": state["token"], "turn_id": state["turn_id"], "session_id": state["session_id"],
        "now": now, "now_ms": now // 1000, "lock_ms": 20_000, "keep_ms": 300_000,
        "alive_s": 0, "window": 40, "ttl": 0, "admin": "0", "user": "u", "first": 1,
        "last": 1, "tokens": '["a"]', "end_seq": 2, "done_seq": 2, "status": "COMPLETE",
        "code": "X", "message": "m", "reply": "", "cap": 10_000,
        "asked": json.dumps([json.dumps(message_to_dict(HumanMessage(content="q")))]),
        "reply_json": json.dumps(message_to_dict(AIMessage(content="a"))),
        "title": "", "input_tokens": "1", "output_tokens": "1", "fork_at": -1,
        "fork_id": "", "first_id": "9.abcdef01", "mode": "", "fields": "", "newest": -1,
        "position": -1, "id": "",
        "summary": json.dumps({"type": "system", "data": {"content": "s"}}), "covers": 0,
        "at": -1, "epoch": 0, "changes": "[]", "old": "u", "new": "v", "hash": "0" * 64,
        "document": "{ a }",
        "most": 10, "prefix": "{apq}:doc:", "most_held": 10, "per_minute": 10,
        "window_s": 120, "tag": session_tag(state["session_id"]), "extra": "",
        "turn_prefix": "turns:", "owner_prefix": "sessions:owner:", "prompt": "p",
        "archived_prefix": "sessions:archived:", "pinned_prefix": "sessions:pinned:",
        "share_prefix": "shares:", "pinned": "1", "archived": "1",
        "share_id": "s" * 32,
    }  # fmt: skip
    if name == "keep_document":
        values["ttl"] = 60  # a document's life: at least a second
    declared = scripts.interface(name).args
    return {arg: values[arg] for arg in declared}


def plausible_keys(name: str, state: dict[str, str]) -> dict[str, str]:
    session_id, turn_id = state["session_id"], state["turn_id"]
    values = {
        "messages": messages_key(session_id), "meta": meta_key(session_id),
        "lock": lock_key(session_id), "active": active_turn_key(session_id),
        "stream": turn_stream_key(session_id, turn_id), "turn_ids": turn_ids_key(session_id),
        "turn_session": f"turns:{turn_id}", "index": INDEX_KEY,
        "owner_index": "sessions:owner:u", "held": "{limits:user:u}:held",
        "archived_index": "sessions:archived:u", "pinned_index": "sessions:pinned:u",
        "shares": shares_key(session_id), "share": share_key(session_id, "s" * 32),
        "pointer": "shares:" + "s" * 32,
        "made": "{limits:user:u}:sessions:1", "document": "{apq}:doc:" + "0" * 64,
        "tree": tree_key(session_id), "kids": kids_key(session_id),
    }  # fmt: skip
    return {key: values[key] for key in scripts.interface(name).keys}


KEY_CASES = [
    (name, key)
    for name in scripts.names()
    for key in scripts.interface(name).keys
    if key != "index" or name != "keep_document"
] + [("keep_document", "index")]


@pytest.mark.parametrize(("name", "key"), KEY_CASES, ids=[f"{n}-{k}" for n, k in KEY_CASES])
async def test_a_script_stops_at_no_error_whatever_type_a_key_holds(
    db: Redis, raw: Redis, name: str, key: str
) -> None:
    """Every key of every script, left holding another type by another program: the
    script answers without a Redis error (an error after a write would leave it half
    done), and when it says so (`-9`), it changed nothing."""
    store = stores_on(db)
    session = await store.sessions.create(owner="u")
    first = await store.turns.begin_turn(session.id, who=Identity(user_id="u"))
    await commit(store, session.id, first)
    start = await store.turns.begin_turn(session.id, who=Identity(user_id="u"))
    state = {"session_id": session.id, "turn_id": start.turn_id, "token": start.token}
    await store.turns.flush_turns([(session.id, start.turn_id, 1, ["a"])])
    keys = plausible_keys(name, state)
    planted = keys[key]
    kind = await db.type(planted)
    await db.delete(planted)
    if kind == "string":
        await db.hset(planted, "planted", "1")
    else:
        await db.set(planted, "planted")
    before = await snapshot(raw)
    script = Script(db, name)
    result = await script(keys=keys, args=plausible_args(name, state))  # no ResponseError
    outcome = result["outcome"] if isinstance(result, dict) and "outcome" in result else result
    if outcome == -9 or outcome == [-9]:
        assert await snapshot(raw) == before
