"""The conversation's tree in Redis (`scripts/_tree.lua`), on one Redis and on the
cluster: edits and regenerations add siblings, switches move whole paths, a rewind
forgets a subtree, the usage counts every branch, and nothing is left of a deleted one.

Turns are begun and committed through the store as the turn runner does, with replies
written here, so each test states exactly what each branch holds."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from redis.asyncio import Redis, RedisCluster

from resolvers.services.conversation import Conversations
from resolvers.services.errors import BadInput, SessionBusy
from resolvers.services.history import StoredMessage, encode, message_id, stamped
from resolvers.services.keys import kids_key, tree_key
from resolvers.services.stores import Stores
from resolvers.services.turn_store import TurnStart
from resolvers.services.usage import Usage
from tests.support.stores import stores_on

pytestmark = pytest.mark.usefixtures("backend_db")


def conversations(store: Stores, redis: Redis | RedisCluster) -> Conversations:
    return Conversations(redis, store.sessions)


async def turn(
    store: Stores,
    session_id: str,
    text: str,
    reply: str,
    *,
    mode: str = "",
    at: str | None = None,
    tokens: int = 1,
) -> TurnStart:
    """One turn begun and committed as the runner does it: a new message, an edit of
    `at`, or a regenerate of `at`."""
    start = await store.turns.begin_turn(session_id, message=text, mode=mode, at=at)
    place = start.length if start.fork_at is None else start.fork_at
    regenerating = mode == "regenerate"
    user_id = message_id(place, secrets.token_hex(4))
    reply_id = message_id(place if regenerating else place + 1, secrets.token_hex(4))
    at_time = datetime.now(UTC)
    asked = (
        []
        if regenerating
        else [encode(stamped(HumanMessage(content=text), at_time, identifier=user_id))]
    )
    reply_json = encode(
        stamped(
            AIMessage(
                content=reply,
                usage_metadata={
                    "input_tokens": 10 * tokens,
                    "output_tokens": tokens,
                    "total_tokens": 11 * tokens,
                },
            ),
            at_time,
            identifier=reply_id,
            parent_id=start.parent if regenerating else user_id,
        )
    )
    outcome = await store.turns.commit_turn(
        session_id,
        start.token,
        asked=asked,
        reply_json=reply_json,
        first_message="" if regenerating else text,
        turn_id=start.turn_id,
        pending=(1, []),
        usage=Usage(input_tokens=10 * tokens, output_tokens=tokens),
        fork_at=start.fork_at,
        fork_id=start.fork_id,
        first_id=reply_id if regenerating else user_id,
    )
    assert outcome == 1
    return start


async def path(store: Stores, session_id: str) -> list[StoredMessage]:
    return await store.sessions.messages(session_id)


def texts(messages: list[StoredMessage]) -> list[str]:
    return [m.content for m in messages]


async def test_an_edit_keeps_the_old_branch_and_a_switch_brings_it_back(
    backend_db: Redis | RedisCluster,
) -> None:
    store = stores_on(backend_db)
    talk = conversations(store, backend_db)
    session = await store.sessions.create()
    for k in (1, 2, 3):
        await turn(store, session.id, f"q{k}", f"a{k}")
    old = await path(store, session.id)
    assert texts(old) == ["q1", "a1", "q2", "a2", "q3", "a3"]
    # Parents follow the path.
    assert [m.parent_id for m in old] == [None, *[m.id for m in old[:-1]]]

    start = await turn(store, session.id, "q2 edited", "b2", mode="edit", at=old[2].id)
    assert [m.content for m in start.window] == ["q1", "a1"]  # what the model was sent
    new = await path(store, session.id)
    assert texts(new) == ["q1", "a1", "q2 edited", "b2"]
    assert new[:2] == old[:2]
    assert new[2].parent_id == old[1].id and new[3].parent_id == new[2].id
    siblings = await talk.siblings(session.id, [old[1].id])
    assert siblings == {old[1].id: [old[2].id, new[2].id]}

    # A turn on the new branch, then back to the old one: its whole path returns.
    await turn(store, session.id, "q3'", "b3")
    await talk.switch_branch(session.id, old[2].id)
    assert await path(store, session.id) == old
    # ... and forward again, down the newest descendants of the edit.
    await talk.switch_branch(session.id, new[2].id)
    assert texts(await path(store, session.id)) == ["q1", "a1", "q2 edited", "b2", "q3'", "b3"]

    # The usage counts the replies of every branch: 3 + 1 (b2) + 1 (b3).
    info = await store.sessions.require(session.id)
    assert (info.usage.input_tokens, info.usage.output_tokens) == (50, 5)
    assert info.message_count == 6


async def test_regenerating_three_times_gives_four_siblings_and_the_old_stay_reachable(
    backend_db: Redis | RedisCluster,
) -> None:
    store = stores_on(backend_db)
    talk = conversations(store, backend_db)
    session = await store.sessions.create()
    await turn(store, session.id, "q1", "a1")
    await turn(store, session.id, "q2", "r0")
    replies = [(await path(store, session.id))[3]]
    for k in (1, 2, 3):
        await turn(store, session.id, "", f"r{k}", mode="regenerate")
        replies.append((await path(store, session.id))[3])
    assert [r.content for r in replies] == ["r0", "r1", "r2", "r3"]
    parent = replies[0].parent_id
    assert parent is not None
    assert await talk.siblings(session.id, [parent]) == {parent: [r.id for r in replies]}
    # A middle reply regenerated by id: its sibling, and the rest of the path leaves.
    first_reply = (await path(store, session.id))[1]
    start = await turn(store, session.id, "", "a1'", mode="regenerate", at=first_reply.id)
    assert [m.content for m in start.window] == []  # below q1: nothing
    assert texts(await path(store, session.id)) == ["q1", "a1'"]
    await talk.switch_branch(session.id, replies[1].id)
    assert texts(await path(store, session.id)) == ["q1", "a1", "q2", "r1"]


async def test_a_rewind_forgets_the_subtree_and_its_usage(
    backend_db: Redis | RedisCluster,
) -> None:
    store = stores_on(backend_db)
    talk = conversations(store, backend_db)
    session = await store.sessions.create()
    await turn(store, session.id, "q1", "a1")
    await turn(store, session.id, "q2", "a2")
    q2 = (await path(store, session.id))[2]
    await turn(store, session.id, "q2b", "a2b", mode="edit", at=q2.id)
    await turn(store, session.id, "q3b", "a3b")
    await turn(store, session.id, "", "a3b'", mode="regenerate")
    assert (await store.sessions.require(session.id)).usage.output_tokens == 5
    q2b = (await path(store, session.id))[2]
    await talk.rewind(session.id, q2b.id)
    assert texts(await path(store, session.id)) == ["q1", "a1"]
    # q2's branch is its sibling, not below it: kept, and reachable.
    a1 = (await path(store, session.id))[1]
    assert await talk.siblings(session.id, [a1.id]) == {a1.id: [q2.id]}
    assert (await store.sessions.require(session.id)).usage.output_tokens == 2
    tree = await backend_db.hgetall(tree_key(session.id))
    # (By content: a random id may hold "a3b" as hex digits.)
    gone = [f'"content": "{text}"' for text in ("q3b", "a3b", "q2b", "a3b'")]
    assert not any(text in v for v in tree.values() for text in gone)
    assert any('"content": "a2"' in v for v in tree.values())  # the kept branch, found so
    await talk.switch_branch(session.id, q2.id)
    assert texts(await path(store, session.id)) == ["q1", "a1", "q2", "a2"]
    # Rewinding the first message forgets the whole tree.
    await talk.rewind(session.id, (await path(store, session.id))[0].id)
    assert await backend_db.exists(tree_key(session.id), kids_key(session.id)) == 0
    assert (await store.sessions.require(session.id)).usage.output_tokens == 0


async def test_branch_operations_are_refused_while_a_turn_runs_and_for_unknown_ids(
    backend_db: Redis | RedisCluster,
) -> None:
    store = stores_on(backend_db)
    talk = conversations(store, backend_db)
    session = await store.sessions.create()
    await turn(store, session.id, "q1", "a1")
    q1, a1 = await path(store, session.id)
    with pytest.raises(BadInput):
        await talk.switch_branch(session.id, "7.deadbeef")
    with pytest.raises(BadInput):
        await store.turns.begin_turn(session.id, message="x", mode="edit", at=a1.id)
    with pytest.raises(BadInput):
        await store.turns.begin_turn(session.id, mode="regenerate", at=q1.id)
    with pytest.raises(BadInput):
        await store.turns.begin_turn(session.id, message="x", mode="edit", at="0.nothere")
    running = await store.turns.begin_turn(session.id, message="q2")
    with pytest.raises(SessionBusy):
        await talk.switch_branch(session.id, q1.id)
    with pytest.raises(SessionBusy):
        await store.turns.begin_turn(session.id, message="x", mode="edit", at=q1.id)
    await store.turns.release_lock(session.id, running.token)


async def test_deleting_a_session_deletes_its_branches(
    backend_db: Redis | RedisCluster,
) -> None:
    store = stores_on(backend_db)
    session = await store.sessions.create()
    await turn(store, session.id, "q1", "a1")
    await turn(store, session.id, "", "a1'", mode="regenerate")
    assert await backend_db.exists(tree_key(session.id), kids_key(session.id)) == 2
    assert await store.sessions.delete(session.id)
    assert await backend_db.exists(tree_key(session.id), kids_key(session.id)) == 0


async def test_hostile_tree_values_are_read_as_no_branch(
    backend_db: Redis | RedisCluster,
) -> None:
    """Values another program left in the tree's hashes: never a Redis error, never a
    write of half a switch."""
    store = stores_on(backend_db)
    talk = conversations(store, backend_db)
    session = await store.sessions.create()
    await turn(store, session.id, "q1", "a1")
    await turn(store, session.id, "", "a1'", mode="regenerate")
    q1, new = await path(store, session.id)
    old_id = json.loads(str(await backend_db.hget(kids_key(session.id), q1.id)))[0]
    for value in ("", "x", "99999999999999999999:abc", "3:ab", "{}", "[1,2]", '{"a":1}'):
        await backend_db.hset(tree_key(session.id), old_id, value)
        with pytest.raises(BadInput):
            await talk.switch_branch(session.id, old_id)
        assert await path(store, session.id) == [q1, new]
    for value in ("", "x", "[]", "[1]", '{"a":"b"}', "[[]]"):
        await backend_db.hset(kids_key(session.id), q1.id, value)
        assert await talk.siblings(session.id, [q1.id]) == {}
        await talk.switch_branch(session.id, q1.id)  # the path stays as it is
        assert await path(store, session.id) == [q1, new]


# -- what a review found: each a reproduction, kept --------------------------------------


def outside(text: str, kind: str = "human") -> str:
    """An element as another LangChain program writes it: no id of its own."""
    return json.dumps({"type": kind, "data": {"content": text}})


async def summarize(store: Stores, session_id: str, text: str) -> bool:
    """What the summarizer keeps once the model answered: a summary with its own id."""
    state = await store.summaries.summary_state(session_id)
    position = state.length if state.at is None else state.at
    element = json.dumps(
        {
            "type": "system",
            "data": {
                "content": text,
                "additional_kwargs": {"summary_covers": 1, "message_id": f"{position}.5a"},
            },
        }
    )
    return await store.summaries.store_summary(
        session_id, text_json=element, covers=1, at=state.at, epoch=state.epoch, position=position
    )


async def test_other_programs_messages_get_ids_before_they_leave_the_path(
    backend_db: Redis | RedisCluster,
) -> None:
    """Their id is their position, which a message of another branch takes too: moved
    off the path as such, a later switch joined two branches and lost messages."""
    store = stores_on(backend_db)
    talk = conversations(store, backend_db)
    session = await store.sessions.create()
    key = f"message_store:{session.id}"
    for text, kind in (("h0", "human"), ("a1", "ai"), ("h2", "human"), ("a3", "ai")):
        await backend_db.lpush(key, outside(text, kind))
    await turn(store, session.id, "h2 edited", "b3", mode="edit", at="2")
    old_h2 = [m for m in await path(store, session.id)][:2]
    assert texts(await path(store, session.id)) == ["h0", "a1", "h2 edited", "b3"]
    for text, kind in (("L4", "human"), ("L5", "ai")):
        await backend_db.lpush(key, outside(text, kind))
    siblings = await talk.siblings(session.id, [old_h2[1].id])
    [stamped_h2, edit] = siblings[old_h2[1].id]
    assert stamped_h2.startswith("2.") and stamped_h2 != "2"
    await talk.switch_branch(session.id, stamped_h2)
    assert texts(await path(store, session.id)) == ["h0", "a1", "h2", "a3"]
    for text, kind in (("NEW4", "human"), ("NEW5", "ai")):
        await backend_db.lpush(key, outside(text, kind))
    await turn(store, session.id, "q6", "a7")
    await talk.switch_branch(session.id, edit)
    assert texts(await path(store, session.id)) == ["h0", "a1", "h2 edited", "b3", "L4", "L5"]
    await talk.switch_branch(session.id, stamped_h2)
    assert texts(await path(store, session.id)) == [
        "h0", "a1", "h2", "a3", "NEW4", "NEW5", "q6", "a7",
    ]  # fmt: skip
    tree = await backend_db.hgetall(tree_key(session.id))
    assert all("." in message_id for message_id in tree)


async def test_a_cycle_of_parents_is_refused_at_once(backend_db: Redis | RedisCluster) -> None:
    store = stores_on(backend_db)
    talk = conversations(store, backend_db)
    session = await store.sessions.create()
    await turn(store, session.id, "q1", "a1")
    element = outside("looped")
    await backend_db.hset(
        tree_key(session.id),
        mapping={
            "3.a": f"3:3.b{element}",
            "3.b": f"3:3.a{element}",
            "999999999999.c": f"3:3.a{element}",
        },
    )
    for target in ("3.a", "999999999999.c"):
        with pytest.raises(BadInput):
            await talk.switch_branch(session.id, target)
    assert texts(await path(store, session.id)) == ["q1", "a1"]


async def test_a_switch_at_the_first_message_keeps_the_sessions_life(
    backend_db: Redis | RedisCluster,
) -> None:
    """The list is made anew: without the session's life it outlived its metadata, and
    an ownerless leftover list is anyone's to read."""
    store = stores_on(backend_db, ttl=600)
    talk = conversations(store, backend_db)
    session = await store.sessions.create()
    await turn(store, session.id, "q1", "a1")
    first = (await path(store, session.id))[0]
    await turn(store, session.id, "q1 again", "b1", mode="edit", at=first.id)
    await talk.switch_branch(session.id, first.id)
    for key in (f"message_store:{session.id}", tree_key(session.id), kids_key(session.id)):
        assert 0 < await backend_db.ttl(key) <= 600, key


async def test_a_usage_count_that_is_not_a_number_keeps_the_branches(
    backend_db: Redis | RedisCluster,
) -> None:
    store = stores_on(backend_db)
    talk = conversations(store, backend_db)
    session = await store.sessions.create()
    await turn(store, session.id, "q1", "a1")
    await turn(store, session.id, "", "a1'", mode="regenerate", tokens=2)
    old = json.loads(
        str(await backend_db.hget(kids_key(session.id), (await path(store, session.id))[0].id))
    )[0]
    await backend_db.hset(f"{{message_store:{session.id}}}:meta", "input_tokens", "n/a")
    await turn(store, session.id, "q2", "a2", tokens=3)
    assert await backend_db.hexists(tree_key(session.id), old)
    # Counted anew over the path and the branches: 1 + 2 + 3 replies' worth.
    info = await store.sessions.require(session.id)
    assert (info.usage.input_tokens, info.usage.output_tokens) == (60, 6)
    await talk.switch_branch(session.id, old)
    assert texts(await path(store, session.id)) == ["q1", "a1"]


async def test_an_edit_sends_no_summary_of_the_branch_it_replaces(
    backend_db: Redis | RedisCluster,
) -> None:
    store = stores_on(backend_db)
    session = await store.sessions.create()
    await turn(store, session.id, "my name is Bob", "hi Bob")
    assert await summarize(store, session.id, "SUMMARY: the user is Bob")
    await turn(store, session.id, "q2", "a2")
    first = (await path(store, session.id))[0]
    start = await store.turns.begin_turn(
        session.id, message="my name is Alice", mode="edit", at=first.id
    )
    assert start.summary is None and start.window == []
    await store.turns.release_lock(session.id, start.token)


async def test_a_message_appended_after_a_rewind_stays_one_of_the_siblings(
    backend_db: Redis | RedisCluster,
) -> None:
    """A summary pushed onto a path whose end has children off it: moved off later, it
    is listed with them, and a rewind above it forgets it with its usage."""
    store = stores_on(backend_db)
    talk = conversations(store, backend_db)
    session = await store.sessions.create()
    await turn(store, session.id, "q1", "a1")
    await turn(store, session.id, "q2", "a2")
    _, a1, q2, _ = await path(store, session.id)
    await turn(store, session.id, "q2 edited", "b2", mode="edit", at=q2.id)
    await talk.rewind(session.id, (await path(store, session.id))[2].id)
    assert await summarize(store, session.id, "SUMMARY")
    await turn(store, session.id, "q3", "a3", tokens=100)
    await talk.switch_branch(session.id, q2.id)
    listed = (await talk.siblings(session.id, [a1.id]))[a1.id]
    assert listed[0] == q2.id and len(listed) == 2 and listed[1].startswith("2.")
    await talk.rewind(session.id, a1.id)
    assert await backend_db.hlen(tree_key(session.id)) == 0
    info = await store.sessions.require(session.id)
    assert (info.usage.input_tokens, info.usage.output_tokens) == (0, 0)
