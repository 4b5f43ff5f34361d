"""Pure logic, in-process: no server, no Redis, no model (the fast tier's core)."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from redis.crc import key_slot

from resolvers.context import bearer_token
from resolvers.rest_streams import stream_mode
from resolvers.services.errors import BadInput, ModelFailed
from resolvers.services.groq_fast import _sse_data
from resolvers.services.index import decode_cursor, encode_cursor
from resolvers.services.keys import (
    active_turn_key,
    lock_key,
    messages_key,
    meta_key,
    session_tag,
    turn_rate_key,
    turn_stream_key,
)
from resolvers.services.turnlog import BACKLOG_TO_MERGE, LiveTurn, TurnEvent
from resolvers.services.validation import (
    check_length,
    check_session_id,
    check_text,
    check_turn_id,
)


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
    assert stream_mode(accept) == mode


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
    keys = [
        meta_key(session_id),
        lock_key(session_id),
        turn_rate_key(session_id, 7),
        active_turn_key(session_id),
        turn_stream_key(session_id, str(uuid.uuid4())),
    ]
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


def test_turn_ids_are_uuids_of_any_version_kept_in_lower_case() -> None:
    v7 = "0192f4c2-7b1e-7c3a-9d2e-3f4a5b6c7d8e"
    assert check_turn_id(v7.upper()) == v7
    assert check_turn_id(str(uuid.uuid4())) is not None
    for bad in ("", "turn-1", v7 + "0", v7.replace("-", ""), f"{v7}\n", " " + v7):
        with pytest.raises(BadInput):
            check_turn_id(bad)


def _done(turn: LiveTurn) -> TurnEvent:
    return TurnEvent(token="", done=True, turn_id=turn.turn_id, seq=turn.end_seq)


def _turn(*tokens: str, end: bool = True) -> LiveTurn:
    turn = LiveTurn(str(uuid.uuid4()), str(uuid.uuid4()))
    for token in tokens:
        turn.push(token)
    if end:
        turn.finish(_done(turn))
    return turn


async def _collect(turn: LiveTurn, min_gap: float = 0.0, after: int = 0) -> list[TurnEvent]:
    return [event async for event in turn.events(after=after, min_gap=min_gap)]


async def test_a_reader_that_keeps_up_gets_every_token_as_its_own_event() -> None:
    events = await _collect(_turn("a", "b", "c"))
    assert [e.token for e in events] == ["a", "b", "c", ""]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert events[-1].done


async def test_a_reader_that_falls_behind_gets_the_backlog_merged() -> None:
    """One that resumes after a known point with many tokens waiting."""
    tokens = [f"t{i} " for i in range(BACKLOG_TO_MERGE * 3)]
    events = await _collect(_turn(*tokens), after=1)
    assert "".join(e.token for e in events) == "".join(tokens[1:])
    assert len(events) < len(tokens)
    # A merged event carries the number of the last token in it.
    assert events[-2].seq == len(tokens)
    assert events[-1].done
    assert events[-1].seq == len(tokens) + 1


async def test_a_join_replays_one_token_an_event_then_follows() -> None:
    """A reader from the start gets what was there one token an event (seq 1, 2, ...),
    so a client that skips each event whose seq it has seen shows every token once."""
    tokens = [f"t{i} " for i in range(BACKLOG_TO_MERGE * 3)]
    turn = _turn(*tokens)
    events = await _collect(turn)
    assert [e.seq for e in events] == list(range(1, len(tokens) + 2))
    assert [e.token for e in events[:-1]] == tokens
    # The recipe, after a first connection saw 1-10 (some merged) and a second joins.
    shown, last = "".join(tokens[:10]), 10
    for event in events[:-1]:
        if event.seq > last:
            shown, last = shown + event.token, event.seq
    assert shown == "".join(tokens)


async def test_a_reader_resumes_after_the_last_event_it_saw() -> None:
    turn = _turn("a", "b", "c", "d")
    assert [e.token for e in await _collect(turn, after=2)] == ["c", "d", ""]
    assert [e.done for e in await _collect(turn, after=4)] == [True]
    assert await _collect(turn, after=5) == []  # the end seen: nothing more
    with pytest.raises(BadInput, match="beyond"):
        await _collect(turn, after=6)
    with pytest.raises(BadInput, match="negative"):
        await _collect(turn, after=-1)


async def test_every_reader_gets_every_event_whenever_it_joins() -> None:
    turn = _turn("a", end=False)
    early = asyncio.create_task(_collect(turn))
    await asyncio.sleep(0)
    turn.push("b")
    late = asyncio.create_task(_collect(turn, after=1))
    await asyncio.sleep(0)
    turn.push("c")
    turn.finish(_done(turn))
    first, second = await asyncio.wait_for(asyncio.gather(early, late), 5)
    assert [e.token for e in first] == ["a", "b", "c", ""]
    assert [(e.token, e.seq) for e in second] == [("b", 2), ("c", 3), ("", 4)]


async def test_with_a_minimum_gap_the_first_token_is_never_held() -> None:
    turn = _turn("first", end=False)
    reader = turn.events(min_gap=10.0)
    first = await asyncio.wait_for(anext(reader), 1.0)  # a bound on a hang, not on speed
    assert first.token == "first"
    turn.push(" second")
    turn.finish(_done(turn))  # the end is never held either: it cuts the 10 s hold short

    async def rest() -> list[str]:
        return [event.token async for event in reader]

    assert await asyncio.wait_for(rest(), 2.0) == [" second", ""]  # a bound on a hang


async def test_an_error_ends_the_stream_with_its_code() -> None:
    turn = _turn("partial", end=False)
    turn.finish(ModelFailed("the model failed"))
    reader = turn.events()
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


def test_tokens_in_a_query_string_are_hidden_in_access_logs() -> None:
    import logging

    from resolvers.middleware import RedactQueryTokens

    path = "/session/s/turns/t/events?after=2&access_token=eyJ.secret.sig&x=1"
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", 200), None,
    )  # fmt: skip
    assert RedactQueryTokens().filter(record)
    line = record.getMessage()
    assert "secret" not in line
    assert "access_token=[hidden]&x=1" in line and "after=2" in line


@pytest.mark.parametrize(
    "name", ["access_token", "access%5Ftoken", "%61ccess_token", "ACCESS_TOKEN", "access%5ftoken"]
)
def test_a_token_is_hidden_however_its_name_is_encoded(name: str) -> None:
    from urllib.parse import parse_qsl

    from resolvers.middleware import redact_query

    path = f"/session/s/turns/t/events?{name}=eyJ.secret.sig&after=2"
    # The name reads as the token's to the server (Starlette decodes it so).
    assert parse_qsl(path.partition("?")[2])[0][0].lower() == "access_token"
    hidden = redact_query(path)
    assert "secret" not in hidden and hidden.endswith(f"?{name}=[hidden]&after=2")


def test_the_quick_token_estimate_is_langchains_approximate_count() -> None:
    """The context's fast path counts without building messages; LangChain's
    `count_tokens_approximately` must agree, or a release changed it."""
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
    )
    from langchain_core.messages.utils import count_tokens_approximately

    from resolvers.services.history import Role, StoredMessage, ToolCall
    from resolvers.services.window import estimate

    kinds: dict[Role, Callable[[str], BaseMessage]] = {
        Role.USER: HumanMessage,
        Role.ASSISTANT: AIMessage,
        Role.SYSTEM: SystemMessage,
        Role.TOOL: lambda content: ToolMessage(content=content, tool_call_id=""),
    }
    for role in Role:
        for text in ("", "a", "four", "hello world", "é" * 33, "x" * 4001):
            stored = StoredMessage(role=role, content=text, created_at=None)
            assert estimate(stored) == count_tokens_approximately([kinds[role](text)])
    # A reply's calls and a result's call id count as LangChain counts them.
    call = ToolCall(id="call_1", name="add", arguments='{"a": 1, "b": 22}')
    asking = StoredMessage(role=Role.ASSISTANT, content="", created_at=None, tool_calls=(call,))
    lc_call = {"name": "add", "args": {"a": 1, "b": 22}, "id": "call_1"}
    assert estimate(asking) == count_tokens_approximately(
        [AIMessage(content="", tool_calls=[lc_call])]
    )
    assert estimate(asking) > estimate(StoredMessage(Role.ASSISTANT, "", None))
    result = StoredMessage(role=Role.TOOL, content="23", created_at=None, tool_call_id="call_1")
    assert estimate(result) == count_tokens_approximately(
        [ToolMessage(content="23", tool_call_id="call_1")]
    )


class _Blocks(httpx.AsyncByteStream):
    def __init__(self, blocks: list[bytes]) -> None:
        self.blocks = blocks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for block in self.blocks:
            yield block


async def test_sse_data_is_split_off_the_bytes_wherever_the_reads_end() -> None:
    body = (
        b': keep-alive\r\n\r\nevent: message\r\ndata: {"a": 1}\r\n\r\n'
        b'data:{"b":"\xc3\xa9"}\n\nid: 7\ndata: [DONE]\n\n'
    )
    want = [b'{"a": 1}', b'{"b":"\xc3\xa9"}', b"[DONE]"]

    async def split(blocks: list[bytes]) -> list[list[bytes]]:
        response = httpx.Response(200, stream=_Blocks(blocks))
        return [found async for found in _sse_data(response, read_interval=0)]

    for cut in range(len(body) + 1):
        for blocks in ([body[:cut], body[cut:]], [bytes([b]) for b in body]):
            assert [data for found in await split(blocks) for data in found] == want, cut
    # One read that holds every event: one list.
    assert await split([body]) == [want]
    assert await split([b'data: {"c": 2}']) == [[b'{"c": 2}']]


async def test_reads_of_a_fast_stream_are_paced_and_the_first_is_not() -> None:
    waits: list[float] = []
    got: list[tuple[int, list[bytes]]] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)  # recorded, not slept: the pacing asked for, exactly

    blocks = [f"data: {n}\n\n".encode() for n in range(6)]
    response = httpx.Response(200, stream=_Blocks(blocks))
    async for found in _sse_data(response, read_interval=3600.0, sleep=sleep):
        got.append((len(waits), found))
    # Six reads ready at once: the first read's data goes out before any wait, and so
    # does the second's (a read waits only when the one before came within the
    # interval); after that each read waits the rest of the interval, never longer.
    assert [n for n, _ in got] == [0, 0, 1, 2, 3, 4]
    assert [data for _, found in got for data in found] == [str(n).encode() for n in range(6)]
    assert len(waits) == 5 and all(0 < wait <= 3600.0 for wait in waits), waits


def test_no_route_has_a_dependency_that_runs_in_the_thread_pool() -> None:
    """A plain `def` dependency costs every request a hand-off to a thread and back."""
    from fastapi.dependencies.models import Dependant
    from fastapi.routing import APIRoute

    from main import create_app
    from resolvers.services.settings import Settings

    def calls(dependant: Dependant) -> Iterator[object]:
        for sub in dependant.dependencies:
            yield sub.call
            yield from calls(sub)

    def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
        for route in routes:
            if isinstance(route, APIRoute):
                yield route
            included = getattr(route, "original_router", None)  # FastAPI's include_router
            if included is not None:
                yield from api_routes(included.routes)

    routes = list(api_routes(create_app(Settings()).routes))
    assert len(routes) >= 10, [route.path for route in routes]
    sync = {
        f"{route.path}: {getattr(call, '__name__', call)}"
        for route in routes
        for call in calls(route.dependant)
        if call is not None and not inspect.iscoroutinefunction(call)
    }
    assert not sync, sync
