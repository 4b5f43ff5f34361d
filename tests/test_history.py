"""The history store: LangChain's Redis layout, async I/O, and two-way compatibility."""

from __future__ import annotations

import json
import uuid

from langchain_community.chat_message_histories import RedisChatMessageHistory
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from redis.asyncio import Redis

from resolvers.services.history import Exchange, RedisChatHistory, Role, StoredMessage, exchanges
from resolvers.services.keys import lock_key, messages_key, meta_key
from tests.support import RedisServer


def sid() -> str:
    return str(uuid.uuid4())


async def test_messages_are_stored_newest_first_as_message_to_dict_json(redis: Redis) -> None:
    history = RedisChatHistory(redis, sid())
    await history.aadd_messages([HumanMessage(content="q"), AIMessage(content="a")])
    raw = await redis.lrange(f"message_store:{history.session_id}", 0, -1)
    assert [json.loads(item)["type"] for item in raw] == ["ai", "human"]
    assert json.loads(raw[1])["data"]["content"] == "q"
    await history.aclear()


async def test_aget_messages_returns_oldest_first(redis: Redis) -> None:
    history = RedisChatHistory(redis, sid())
    await history.aadd_messages([HumanMessage(content="1"), AIMessage(content="2")])
    await history.aadd_messages([HumanMessage(content="3")])
    assert [m.content for m in await history.aget_messages()] == ["1", "2", "3"]
    await history.aclear()
    assert await history.aget_messages() == []


async def test_aget_stored_reads_only_the_last_n(redis: Redis) -> None:
    history = RedisChatHistory(redis, sid())
    await history.aadd_messages([HumanMessage(content=str(i)) for i in range(10)])
    last = await history.aget_stored(3)
    assert [m.content for m in last] == ["7", "8", "9"]
    assert await history.aget_stored(0) == []
    await history.aclear()


async def test_history_written_by_langchain_community_reads_back_here(
    redis: Redis, redis_server: RedisServer
) -> None:
    session_id = sid()
    theirs = RedisChatMessageHistory(session_id, url=redis_server.url())
    theirs.add_messages([HumanMessage(content="hello"), AIMessageChunk(content="hi!")])
    ours = RedisChatHistory(redis, session_id)
    stored = await ours.aget_stored()
    assert [(m.role, m.content) for m in stored] == [(Role.USER, "hello"), (Role.ASSISTANT, "hi!")]
    theirs.redis_client.close()
    await ours.aclear()


async def test_history_written_here_reads_back_in_langchain_community(
    redis: Redis, redis_server: RedisServer
) -> None:
    session_id = sid()
    ours = RedisChatHistory(redis, session_id)
    await ours.aadd_messages([HumanMessage(content="q"), AIMessage(content="a")])
    theirs = RedisChatMessageHistory(session_id, url=redis_server.url())
    assert [(type(m), m.content) for m in theirs.messages] == [
        (HumanMessage, "q"),
        (AIMessage, "a"),
    ]
    theirs.redis_client.close()
    await ours.aclear()


async def test_unreadable_elements_are_skipped(redis: Redis) -> None:
    history = RedisChatHistory(redis, sid())
    await redis.lpush(history.key, json.dumps({"type": "human", "data": {"content": "ok"}}))
    await redis.lpush(history.key, "not json")
    stored = await history.aget_stored()
    assert [m.content for m in stored] == ["ok"]
    await history.aclear()


async def test_system_messages_are_kept_as_system_role(redis: Redis) -> None:
    history = RedisChatHistory(redis, sid())
    await history.aadd_messages([SystemMessage(content="summary")])
    [stored] = await history.aget_stored()
    assert stored.role is Role.SYSTEM
    await history.aclear()


def test_every_key_of_a_session_shares_the_message_lists_hash_slot() -> None:
    session_id = sid()
    tag = f"message_store:{session_id}"
    assert messages_key(session_id) == tag
    for key in (meta_key(session_id), lock_key(session_id)):
        assert key.startswith("{" + tag + "}")


def test_exchanges_pairs_each_user_message_with_its_reply() -> None:
    def msg(role: Role, text: str) -> StoredMessage:
        return StoredMessage(role=role, content=text, created_at=None)

    messages = [
        msg(Role.SYSTEM, "summary"),
        msg(Role.USER, "a"),
        msg(Role.ASSISTANT, "b"),
        msg(Role.USER, "c"),
        msg(Role.ASSISTANT, "d"),
    ]
    assert exchanges(messages) == [Exchange("a", "b"), Exchange("c", "d")]


async def test_content_blocks_are_read_as_their_text(redis: Redis) -> None:
    history = RedisChatHistory(redis, sid())
    blocks = [{"type": "text", "text": "part one"}, {"type": "text", "text": " and two"}]
    await history.aadd_messages([AIMessage(content=blocks)])  # type: ignore[arg-type]
    [stored] = await history.aget_stored()
    assert (stored.role, stored.content) == (Role.ASSISTANT, "part one and two")
    await history.aclear()
