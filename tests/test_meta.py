"""The session record is declared once (`resolvers/services/meta.py`): whatever the stores
write is declared, whatever the export writes the import takes, and a round trip is
exact."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from redis.asyncio import Redis

from resolvers.services import meta
from resolvers.services.conversation import Conversations
from resolvers.services.history import encode, stamped
from resolvers.services.identity import Identity
from resolvers.services.keys import meta_key
from resolvers.services.sessions import SessionInfo
from resolvers.services.stores import Stores
from resolvers.services.transfer import Transfer
from resolvers.services.usage import Usage
from tests.support.stores import stores_on


@pytest.fixture
async def target(fresh_db: Callable[[], str]) -> AsyncIterator[Redis]:
    client = Redis.from_url(fresh_db(), decode_responses=True)
    yield client
    await client.aclose()


async def a_session_with_everything(stores: Stores, redis: Redis) -> str:
    """A session as the server leaves it after turns, a summary, a rewind, a pin and
    the archive: every field it writes."""
    from datetime import UTC, datetime

    session = await stores.sessions.create(title="all of it", owner="someone")
    for n in range(3):
        start = await stores.turns.begin_turn(session.id, who=_owner())
        reply = AIMessage(
            content=f"a{n}",
            usage_metadata={"input_tokens": n, "output_tokens": 1, "total_tokens": n + 1},
        )
        now = datetime.now(UTC)
        await stores.turns.commit_turn(
            session.id,
            start.token,
            asked=[encode(stamped(HumanMessage(content=f"q{n}"), now, identifier=f"{2 * n}.u"))],
            reply_json=encode(stamped(reply, now, identifier=f"{2 * n + 1}.r")),
            first_message=f"q{n}",
            turn_id=start.turn_id,
            usage=Usage(input_tokens=n, output_tokens=1),
        )
    state = await stores.summaries.summary_state(session.id)
    summary = json.dumps(
        {
            "type": "system",
            "data": {
                "content": "the summary",
                "additional_kwargs": {"message_id": f"{state.length}.s"},
            },
        }
    )
    assert await stores.summaries.store_summary(
        session.id,
        text_json=summary,
        covers=1,
        at=None,
        epoch=state.epoch,
        position=state.length,
    )
    messages = await stores.sessions.messages(session.id, who=_owner())
    talk = Conversations(redis, stores.sessions)
    await talk.rewind(session.id, messages[-1].id, who=_owner())
    await talk.update(
        session.id, title=None, system_prompt=None, who=_owner(), pinned=True, archived=True
    )
    return session.id


def _owner() -> Identity:
    return Identity(user_id="someone")


async def test_every_field_the_stores_write_is_declared(db: Redis) -> None:
    stores = stores_on(db)
    session_id = await a_session_with_everything(stores, db)
    written = set(await db.hkeys(meta_key(session_id)))
    assert written <= set(meta.BY_NAME), f"undeclared: {written - set(meta.BY_NAME)}"
    # ... and each value is one its declaration allows.
    for name, value in (await db.hgetall(meta_key(session_id))).items():
        meta.check_value(str(name), str(value))


async def test_what_the_export_writes_the_import_takes_and_a_round_trip_is_exact(
    db: Redis, target: Redis
) -> None:
    session_id = await a_session_with_everything(stores_on(db), db)
    exported = [line async for line in Transfer(db).export([session_id])]
    assert len(exported) == 1
    record = json.loads(exported[0])
    assert set(record["meta"]) <= meta.EXPORTED
    done = await Transfer(target).import_lines(exported)
    assert (done.written, done.skipped) == (1, 0)
    again = [line async for line in Transfer(target).export([session_id])]
    assert again == exported
    # What the import derives equals what the server had.
    derived = [f.name for f in meta.FIELDS if f.derived]
    source = await db.hmget(meta_key(session_id), derived)
    assert await target.hmget(meta_key(session_id), derived) == source
    # The flags came along, and file the session in the owner's archive there too.
    assert await target.zscore("sessions:archived:someone", session_id) is not None
    assert await target.zscore("sessions:owner:someone", session_id) is None
    listed_source = await stores_on(db).sessions.require(session_id, who=_owner())
    listed_target = await stores_on(target).sessions.require(session_id, who=_owner())
    assert listed_target == listed_source


def test_session_info_shows_every_listed_field() -> None:
    shown_as = {
        "title": "title",
        "created_at": "created_at",
        "updated_at": "updated_at",
        "owner": "owner_id",
        "input_tokens": "usage",
        "output_tokens": "usage",
        "pinned": "pinned",
        "archived": "archived",
    }
    assert set(meta.LISTED) == set(shown_as)
    attributes = {f.name for f in dataclasses.fields(SessionInfo)}
    assert set(shown_as.values()) <= attributes


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("input_tokens", "-1"),
        ("input_tokens", str(2**31)),
        ("created_at", "1e6"),
        ("summary_covers", "-2"),
        ("list_mark", "x"),
        ("owner", ""),
        ("pinned", "0"),
        ("archived", "yes"),
    ],
)
def test_a_value_its_field_does_not_allow_is_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        meta.check_value(str(name), str(value))
