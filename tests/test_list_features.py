"""The conversation list in the stores: pins and the archive (the owner's indexes, kept
by one rule), share links (snapshots in the session's slot), and the title the model
gives (only in place of the server's own). Each runs on one Redis and on the cluster."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from redis.asyncio import Redis, RedisCluster
from redis.typing import EncodableT, FieldT

from resolvers.services.conversation import Conversations
from resolvers.services.errors import BadInput, NotFound
from resolvers.services.history import encode, stamped
from resolvers.services.identity import Identity
from resolvers.services.index import Listing, index_key
from resolvers.services.keys import (
    INDEX_KEY,
    archived_index_key,
    meta_key,
    owner_index_key,
    pinned_index_key,
    share_pointer_key,
)
from resolvers.services.scripts import Script
from resolvers.services.shares import MAX_SHARES, ShareStore
from resolvers.services.stores import Stores
from resolvers.services.titles import clean_title
from resolvers.services.usage import Usage
from tests.support.stores import stores_on

ALICE = Identity(user_id="alice")
BOB = Identity(user_id="bob")


@pytest.fixture
def db(backend_db: Redis | RedisCluster) -> Redis | RedisCluster:
    return backend_db


@pytest.fixture
async def one(db_url: str) -> AsyncIterator[Redis]:
    """One Redis only: for what reads its command counts, or seeds in one pipeline."""
    client = Redis.from_url(db_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def turn(stores: Stores, session_id: str, n: int, who: Identity = ALICE) -> None:
    start = await stores.turns.begin_turn(session_id, who=who)
    now = datetime.now(UTC)
    reply = AIMessage(
        content=f"**a{n}**",
        usage_metadata={"input_tokens": 10, "output_tokens": 2, "total_tokens": 12},
    )
    assert (
        await stores.turns.commit_turn(
            session_id,
            start.token,
            asked=[
                encode(stamped(HumanMessage(content=f"q{n}"), now, identifier=f"{start.length}.u"))
            ],
            reply_json=encode(stamped(reply, now, identifier=f"{start.length + 1}.r")),
            first_message=f"question number {n}",
            owner=start.owner,
            turn_id=start.turn_id,
            usage=Usage(input_tokens=10, output_tokens=2),
        )
        == 1
    )


async def listed(stores: Stores, owner: str, listing: Listing) -> list[str]:
    page = await stores.sessions.page(first=1000, after=None, owner=owner, listing=listing)
    return [s.id for s in page.sessions]


# -- pins and the archive ----------------------------------------------------------------


async def test_pins_and_archive_round_trip_and_move_between_the_owners_indexes(
    db: Redis | RedisCluster,
) -> None:
    stores = stores_on(db)
    talk = Conversations(db, stores.sessions)
    plain = await stores.sessions.create(owner="alice")
    pinned = await stores.sessions.create(owner="alice", pinned=True)
    archived = await stores.sessions.create(owner="alice", archived=True)
    assert (pinned.pinned, pinned.archived, archived.archived) == (True, False, True)
    assert await listed(stores, "alice", "main") == [pinned.id, plain.id]
    assert await listed(stores, "alice", "pinned") == [pinned.id]
    assert await listed(stores, "alice", "archived") == [archived.id]

    changed = await talk.update(plain.id, title=None, system_prompt=None, who=ALICE, pinned=True)
    assert changed.pinned and not changed.archived
    await talk.update(pinned.id, title=None, system_prompt=None, who=ALICE, archived=True)
    await talk.update(archived.id, title=None, system_prompt=None, who=ALICE, archived=False)
    assert await listed(stores, "alice", "main") == [archived.id, plain.id]
    assert await listed(stores, "alice", "pinned") == [plain.id]
    # Archived, it keeps its pin (shown again when it comes back), but lists only there.
    again = await stores.sessions.require(pinned.id, who=ALICE)
    assert again.pinned and again.archived
    assert await listed(stores, "alice", "archived") == [pinned.id]
    # Everyone's index keeps every session.
    every = await stores.sessions.page(first=10, after=None)
    assert {s.id for s in every.sessions} == {plain.id, pinned.id, archived.id}
    # Pinning moves nothing in time: the order is still by activity.
    assert (await stores.sessions.require(plain.id, who=ALICE)).updated_at == plain.updated_at


async def test_a_turn_keeps_an_archived_session_in_the_archive(db: Redis | RedisCluster) -> None:
    stores = stores_on(db)
    talk = Conversations(db, stores.sessions)
    old = await stores.sessions.create(owner="alice", pinned=True)
    newer = await stores.sessions.create(owner="alice")
    await talk.update(old.id, title=None, system_prompt=None, who=ALICE, archived=True)
    await turn(stores, old.id, 1)
    assert await listed(stores, "alice", "main") == [newer.id]
    assert await listed(stores, "alice", "archived") == [old.id]
    assert await listed(stores, "alice", "pinned") == []
    await talk.update(old.id, title=None, system_prompt=None, who=ALICE, archived=False)
    # Back, first: its turn was the latest activity; and pinned again.
    assert await listed(stores, "alice", "main") == [old.id, newer.id]
    assert await listed(stores, "alice", "pinned") == [old.id]
    score = await db.zscore(pinned_index_key("alice"), old.id)
    assert score == await db.zscore(INDEX_KEY, old.id)


async def test_only_the_owner_or_an_admin_pins(db: Redis | RedisCluster) -> None:
    stores = stores_on(db)
    talk = Conversations(db, stores.sessions)
    session = await stores.sessions.create(owner="alice")
    with pytest.raises(NotFound):
        await talk.update(session.id, title=None, system_prompt=None, who=BOB, pinned=True)
    admin = Identity(user_id=None, is_admin=True)
    await talk.update(session.id, title=None, system_prompt=None, who=admin, archived=True)
    assert await listed(stores, "alice", "archived") == [session.id]


async def test_delete_leaves_no_entry_in_any_index(db: Redis | RedisCluster) -> None:
    stores = stores_on(db)
    talk = Conversations(db, stores.sessions)
    session = await stores.sessions.create(owner="alice", pinned=True)
    await talk.update(session.id, title=None, system_prompt=None, who=ALICE, archived=True)
    await talk.update(session.id, title=None, system_prompt=None, who=ALICE, archived=False)
    assert await stores.sessions.delete(session.id, who=ALICE)
    for index in (
        INDEX_KEY,
        owner_index_key("alice"),
        archived_index_key("alice"),
        pinned_index_key("alice"),
    ):
        assert await db.zscore(index, session.id) is None, index


async def test_moving_an_owner_moves_every_index(one: Redis) -> None:
    db = one
    stores = stores_on(db)
    plain = await stores.sessions.create(owner="old")
    pinned = await stores.sessions.create(owner="old", pinned=True)
    archived = await stores.sessions.create(owner="old", archived=True)
    assert await stores.sessions.move_owner("old", "new") == 3
    assert await listed(stores, "new", "main") == [pinned.id, plain.id]
    assert await listed(stores, "new", "pinned") == [pinned.id]
    assert await listed(stores, "new", "archived") == [archived.id]
    for listing in ("main", "pinned", "archived"):
        assert await db.zcard(index_key("old", listing)) == 0


async def test_a_listing_skips_an_entry_its_flags_no_longer_list(one: Redis) -> None:
    """A cluster's index write racing a change of flags can leave an entry behind: the
    listing reads the flags with the session anyway, and leaves it out."""
    stores = stores_on(one)
    session = await stores.sessions.create(owner="alice", archived=True)
    await one.zadd(owner_index_key("alice"), {session.id: 1})  # the stray entry
    assert await listed(stores, "alice", "main") == []


@pytest.mark.slow  # 10,000 sessions written
async def test_keyset_pages_over_ten_thousand_sessions_hold_each_listing(one: Redis) -> None:
    """10,000 sessions of one owner, every 7th archived and every 5th pinned: each
    listing, walked page by page, is exactly its sessions in order, and a page reads
    as many commands as a listing without pins or archive."""
    db = one
    stores = stores_on(db)
    now = time.time_ns() // 1000
    expected: dict[Listing, list[str]] = {"main": [], "archived": [], "pinned": []}
    async with db.pipeline(transaction=False) as pipe:
        for i in range(10_000):
            sid = str(uuid.uuid4())
            archived, pinned = i % 7 == 0, i % 5 == 0
            meta: dict[FieldT, EncodableT] = {
                "created_at": now - i, "updated_at": now - i, "system_prompt": "p",
                "title": f"session {i}", "owner": "alice",
            }  # fmt: skip
            meta |= {"archived": "1"} if archived else {}
            meta |= {"pinned": "1"} if pinned else {}
            pipe.hset(meta_key(sid), mapping=meta)
            stores.index.queue_place(pipe, sid, now - i, "alice", pinned=pinned, archived=archived)
            expected["archived" if archived else "main"].append(sid)
            if pinned and not archived:
                expected["pinned"].append(sid)
        await pipe.execute()
    for listing, ids in expected.items():
        seen: list[str] = []
        after = None
        for _ in range(100):
            page = await stores.sessions.page(
                first=250, after=after, owner="alice", listing=listing
            )
            assert page.total == len(ids)
            seen += [s.id for s in page.sessions]
            if not page.has_next:
                break
            after = page.end_cursor
        assert seen == ids, listing
    # Every listing reads a page the same way: the same commands, as many of each.
    costs = {}
    for listing in expected:
        before = await _commands(db)
        await stores.sessions.page(first=50, after=None, owner="alice", listing=listing)
        costs[listing] = _delta(before, await _commands(db))
    assert costs["main"] == costs["archived"] == costs["pinned"], costs


async def _commands(db: Redis) -> dict[str, int]:
    stats = await db.info("commandstats")
    return {name: int(value["calls"]) for name, value in stats.items()}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    changed = {name: calls - before.get(name, 0) for name, calls in after.items()}
    return {name: calls for name, calls in changed.items() if calls and "info" not in name}


# -- share links -----------------------------------------------------------------------


async def test_a_share_is_a_copy_later_turns_do_not_change(db: Redis | RedisCluster) -> None:
    stores = stores_on(db)
    shares = ShareStore(db, stores.sessions)
    session = await stores.sessions.create(owner="alice", title="Trip")
    await turn(stores, session.id, 1)
    made = await shares.create(session.id, who=ALICE)
    assert len(made.id) == 32
    await turn(stores, session.id, 2)
    await Conversations(db, stores.sessions).update(
        session.id, title="Renamed", system_prompt=None, who=ALICE
    )
    shown = await shares.snapshot(made.id)
    assert shown.title == "Trip"
    assert [(m.role.value, m.content) for m in shown.messages] == [
        ("USER", "q1"),
        ("ASSISTANT", "**a1**"),
    ]
    assert [s.id for s in await shares.shares(session.id, who=ALICE)] == [made.id]


async def test_an_empty_session_shares_an_empty_conversation(db: Redis | RedisCluster) -> None:
    stores = stores_on(db)
    shares = ShareStore(db, stores.sessions)
    session = await stores.sessions.create(owner="alice")
    shown = await shares.snapshot((await shares.create(session.id, who=ALICE)).id)
    assert shown.messages == [] and shown.title is None


async def test_only_the_owner_or_an_admin_shares_lists_and_revokes(
    db: Redis | RedisCluster,
) -> None:
    stores = stores_on(db)
    shares = ShareStore(db, stores.sessions)
    session = await stores.sessions.create(owner="alice")
    with pytest.raises(NotFound):
        await shares.create(session.id, who=BOB)
    made = await shares.create(session.id, who=ALICE)
    with pytest.raises(NotFound):
        await shares.shares(session.id, who=BOB)
    with pytest.raises(NotFound):
        await shares.revoke(made.id, who=BOB)
    await shares.snapshot(made.id)  # still there
    assert await shares.revoke(made.id, who=Identity(user_id=None, is_admin=True))
    with pytest.raises(NotFound):
        await shares.snapshot(made.id)
    with pytest.raises(NotFound):
        await shares.revoke(made.id, who=ALICE)  # once only
    assert await db.get(share_pointer_key(made.id)) is None


async def test_a_share_id_alone_cannot_revoke_a_share_of_an_ownerless_session(
    db: Redis | RedisCluster,
) -> None:
    stores = stores_on(db)
    shares = ShareStore(db, stores.sessions)
    session = await stores.sessions.create()  # anonymous: whoever holds its id uses it
    made = await shares.create(session.id)
    assert [s.id for s in await shares.shares(session.id)] == [made.id]
    with pytest.raises(NotFound):
        await shares.revoke(made.id)  # a reader of the link holds just as much
    await shares.snapshot(made.id)
    assert await shares.revoke(made.id, who=Identity(user_id=None, is_admin=True))


async def test_deleting_the_session_deletes_its_shares(db: Redis | RedisCluster) -> None:
    stores = stores_on(db)
    shares = ShareStore(db, stores.sessions)
    session = await stores.sessions.create(owner="alice")
    await turn(stores, session.id, 1)
    made = [await shares.create(session.id, who=ALICE) for _ in range(3)]
    assert await stores.sessions.delete(session.id, who=ALICE)
    for share in made:
        with pytest.raises(NotFound):
            await shares.snapshot(share.id)
        assert await db.get(share_pointer_key(share.id)) is None
    left = [k async for k in db.scan_iter(match=f"*{session.id}*")]
    assert left == []


async def test_an_expired_sessions_shares_go_with_its_listing_entry(
    db: Redis | RedisCluster,
) -> None:
    stores = stores_on(db, ttl=60)
    shares = ShareStore(db, stores.sessions)
    session = await stores.sessions.create(owner="alice")
    made = await shares.create(session.id, who=ALICE)
    # The TTL runs out: the session's keys expire, its entries stay until a listing.
    await db.delete(meta_key(session.id), f"message_store:{session.id}")
    with pytest.raises(NotFound):
        await shares.snapshot(made.id)  # at once
    await db.zadd(owner_index_key("alice"), {session.id: 1})
    assert await listed(stores, "alice", "main") == []
    assert await db.get(share_pointer_key(made.id)) is None
    assert [k async for k in db.scan_iter(match=f"*{session.id}*")] == []


async def test_a_session_keeps_a_bounded_number_of_shares(db: Redis | RedisCluster) -> None:
    stores = stores_on(db)
    shares = ShareStore(db, stores.sessions)
    session = await stores.sessions.create(owner="alice")
    made = [await shares.create(session.id, who=ALICE) for _ in range(MAX_SHARES)]
    with pytest.raises(BadInput, match="at most"):
        await shares.create(session.id, who=ALICE)
    await shares.revoke(made[0].id, who=ALICE)
    await shares.create(session.id, who=ALICE)


@pytest.mark.parametrize(
    "share_id", ["", "x", "../../etc", "*", "a" * 31, "a" * 33, "a" * 31 + "\n", "é" * 32]
)
async def test_a_share_id_not_of_this_servers_form_is_bad_input(
    db: Redis | RedisCluster, share_id: str
) -> None:
    shares = ShareStore(db, stores_on(db).sessions)
    with pytest.raises(BadInput):
        await shares.snapshot(share_id)
    with pytest.raises(BadInput):
        await shares.revoke(share_id, who=ALICE)


async def test_a_pointer_another_program_left_is_not_found(one: Redis) -> None:
    db = one
    shares = ShareStore(db, stores_on(db).sessions)
    for value in ("not a session", str(uuid.uuid4())):
        await db.set(share_pointer_key("a" * 32), value)
        with pytest.raises(NotFound):
            await shares.snapshot("a" * 32)
    await db.delete(share_pointer_key("a" * 32))
    await db.hset(share_pointer_key("a" * 32), "x", "1")
    with pytest.raises(NotFound):
        await shares.snapshot("a" * 32)


# -- titles ------------------------------------------------------------------------------


async def test_the_commit_marks_its_title_as_the_servers(db: Redis | RedisCluster) -> None:
    stores = stores_on(db)
    untitled = await stores.sessions.create(owner="alice")
    titled = await stores.sessions.create(owner="alice", title="Mine")
    await turn(stores, untitled.id, 1)
    await turn(stores, titled.id, 1)
    assert await db.hmget(meta_key(untitled.id), ["title", "title_auto"]) == [
        "question number 1",
        "1",
    ]
    assert await db.hmget(meta_key(titled.id), ["title", "title_auto"]) == ["Mine", None]


async def test_the_models_title_replaces_only_the_servers(db: Redis | RedisCluster) -> None:
    stores = stores_on(db)
    name = Script(db, "name_session")
    session = await stores.sessions.create(owner="alice")
    await turn(stores, session.id, 1)
    keys = {"meta": meta_key(session.id), "messages": f"message_store:{session.id}"}
    args = {"title": "Numbered questions", "input_tokens": "7", "output_tokens": "3"}
    assert await name(keys=keys, args=args) == 1
    found = await stores.sessions.require(session.id, who=ALICE)
    assert found.title == "Numbered questions"
    assert (found.usage.input_tokens, found.usage.output_tokens) == (17, 5)  # counted
    # A user's title is never replaced, nor is its usage touched then.
    await Conversations(db, stores.sessions).update(
        session.id, title="Chosen", system_prompt=None, who=ALICE
    )
    assert await name(keys=keys, args={**args, "title": "Other"}) == 0
    after = await stores.sessions.require(session.id, who=ALICE)
    assert after.title == "Chosen" and after.usage == found.usage


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ('"Planning a trip to Rome"', "Planning a trip to Rome"),
        ("Title: **Quick sort in Python**.", "Quick sort in Python"),
        ("\n\n  \u00abBonjour\u00bb  \nand more lines", "Bonjour"),
        ("word " * 30, "word word word word word word word word word word word word"),
        ("x" * 100, "x" * 60),
        ("\u201c\u201d", ""),
        ("tab\there\u0007bell", "tab herebell"),
    ],
)
def test_a_models_answer_becomes_a_title_of_one_short_line(answer: str, title: str) -> None:
    assert clean_title(answer) == title
    assert len(clean_title(answer)) <= 60
