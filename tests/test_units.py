"""Pure logic, in-process: no server, no Redis, no model (the fast tier's core)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.crc import key_slot

from resolvers.context import bearer_token
from resolvers.rest import _stream_mode
from resolvers.services.errors import BadInput, ModelFailed
from resolvers.services.keys import (
    lock_key,
    messages_key,
    meta_key,
    session_tag,
    turn_rate_key,
)
from resolvers.services.sessions import decode_cursor, encode_cursor
from resolvers.services.turns import BACKLOG_TO_MERGE, TurnEvent, TurnStream
from resolvers.services.validation import check_length, check_session_id, check_text


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("BEARER abc", "abc"),
        ("Basic abc", None),
        ("", None),
        (None, None),
        ("Bearer", ""),
    ],
)
def test_bearer_tokens_are_read_from_the_authorization_header(
    header: str | None, token: str | None
) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    ("accept", "mode"),
    [
        (None, "text"),
        ("text/plain", "text"),
        ("text/event-stream", "sse"),
        ("application/json", "json"),
        ("application/json, text/plain", "text"),
        ("text/html, text/event-stream;q=0.9", "sse"),
        ("*/*", "text"),
    ],
)
def test_the_chat_stream_mode_follows_accept(accept: str | None, mode: str) -> None:
    assert _stream_mode(accept) == mode


def test_cursors_round_trip_and_bad_ones_are_bad_input() -> None:
    session_id = str(uuid.uuid4())
    assert decode_cursor(encode_cursor(1_700_000_000_123_456, session_id)) == (
        1_700_000_000_123_456,
        session_id,
    )
    for bad in ("", "nope", encode_cursor(1, "not-a-uuid"), "%%%"):
        with pytest.raises(BadInput):
            decode_cursor(bad)


def test_every_key_of_a_session_hashes_to_the_slot_of_its_list() -> None:
    session_id = str(uuid.uuid4())
    assert messages_key(session_id) == f"message_store:{session_id}"  # LangChain's name
    keys = [meta_key(session_id), lock_key(session_id), turn_rate_key(session_id, 7)]
    assert all(key.startswith(session_tag(session_id)) for key in keys)
    assert {key_slot(k.encode()) for k in [messages_key(session_id), *keys]} == {
        key_slot(messages_key(session_id).encode())
    }


def test_input_checks() -> None:
    session_id = str(uuid.uuid4())
    assert check_session_id(session_id) == session_id
    with pytest.raises(BadInput):
        check_session_id(session_id.upper())
    with pytest.raises(BadInput):
        check_text("a\ud800b", "message")
    with pytest.raises(BadInput, match="longer than 3"):
        check_length("abcd", 3, "title")


async def _collect(stream: TurnStream, min_gap: float = 0.0) -> list[TurnEvent]:
    return [event async for event in stream.events(min_gap=min_gap)]


async def test_a_reader_that_keeps_up_gets_every_token_as_its_own_event() -> None:
    stream = TurnStream()
    for token in ("a", "b", "c"):
        stream.push(TurnEvent(token=token))
    stream.push(TurnEvent(token="", done=True))
    events = await _collect(stream)
    assert [e.token for e in events] == ["a", "b", "c", ""]
    assert events[-1].done


async def test_a_reader_that_falls_behind_gets_the_backlog_merged() -> None:
    stream = TurnStream()
    tokens = [f"t{i} " for i in range(BACKLOG_TO_MERGE * 3)]
    for token in tokens:
        stream.push(TurnEvent(token=token))
    stream.push(TurnEvent(token="", done=True))
    events = await _collect(stream)
    assert "".join(e.token for e in events) == "".join(tokens)
    assert len(events) < len(tokens)
    assert events[-1].done


async def test_with_a_minimum_gap_the_first_token_is_never_held() -> None:
    stream = TurnStream()
    stream.push(TurnEvent(token="first"))
    reader = stream.events(min_gap=10.0)
    first = await asyncio.wait_for(anext(reader), 1.0)  # a bound on a hang, not on speed
    assert first.token == "first"
    stream.push(TurnEvent(token=" second"))
    stream.push(TurnEvent(token="", done=True))  # the end is never held either
    assert [event.token async for event in reader] == [" second", ""]


async def test_an_error_ends_the_stream_with_its_code() -> None:
    stream = TurnStream()
    stream.push(TurnEvent(token="partial"))
    stream.push(ModelFailed("the model failed"))
    reader = stream.events()
    assert (await anext(reader)).token == "partial"
    with pytest.raises(ModelFailed):
        await anext(reader)


def test_keys_of_an_identity_provider_come_over_https_or_loopback() -> None:
    from pydantic import ValidationError

    from resolvers.services.settings import Settings

    for fine in ("https://login.example.com/jwks", "http://127.0.0.1:9000/jwks"):
        assert Settings(auth_jwks_url=fine).auth_jwks_url == fine
    with pytest.raises(ValidationError, match="AUTH_JWKS_URL"):
        Settings(auth_jwks_url="http://login.example.com/jwks")
