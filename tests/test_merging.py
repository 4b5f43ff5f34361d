"""Streamed events under the default setting (STREAM_MIN_INTERVAL_MS unset: 40 ms).

Tokens that come sooner than 40 ms after the last event go out together in the next;
the first token is never held, each event is numbered as the last token it carries, the
done event carries exactly the tokens streamed, and a reader resumes after any number
it saw. (The other tests run with every token its own event: tests/support/servers.py.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import AppServer, FakeGroq, new_session
from tests.support.servers import app_env
from tests.support.turns import CHAT_TURN, FOLLOW
from tests.support.ws_client import Received, graphql_socket

INTERVAL = 0.040  # the documented default


@pytest.fixture(scope="module")
def default_app(
    start_app: type[AppServer], shared_redis_url: str, fake_groq: FakeGroq
) -> Iterator[AppServer]:
    server = start_app(env=app_env(shared_redis_url, fake_groq, STREAM_MIN_INTERVAL_MS="")).start()
    yield server
    server.stop()


async def chat(app: AppServer, message: str) -> tuple[str, Received]:
    """A new session, and what a `chat` on it delivered."""
    async with httpx.AsyncClient(base_url=app.url) as http:
        session_id = await new_session(http)
    async with graphql_socket(app.ws_url) as ws:
        got = await ws.collect(await ws.start(CHAT_TURN, s=session_id, m=message))
    return session_id, got


async def test_fast_tokens_go_out_together_and_the_done_event_carries_them_all(
    default_app: AppServer,
) -> None:
    began = time.monotonic()
    _, got = await chat(default_app, "!tokens=199 !delay=0.002 fast")
    elapsed = time.monotonic() - began
    assert got.completed and not got.errors, got.errors
    *tokens, done = got.events
    assert done["done"] and done["status"] == "COMPLETE"
    text = "".join(e["token"] for e in tokens)
    assert text == done["message"]["content"]
    assert text.endswith(" t198")
    seqs = [e["seq"] for e in tokens]
    # 200 pieces ([n=N] and t0..t198), numbered as the model sent them; the done is 201.
    assert seqs == sorted(set(seqs)) and seqs[-1] == 200 and done["seq"] == 201
    # Merged: events at least 40 ms apart as the server sent them, so no more of them
    # than the time the client waited allows (and far fewer than the pieces).
    assert len(tokens) <= elapsed / INTERVAL + 2, (len(tokens), elapsed)
    assert len(tokens) < 100, len(tokens)


async def test_the_first_token_is_not_held_for_the_next(default_app: AppServer) -> None:
    _, got = await chat(default_app, "!tokens=2 !delay=0.4 slow")
    # Pieces 0.4 s apart: each its own event, the first sent before the second came.
    assert [e["seq"] for e in got.events] == [1, 2, 3, 4]
    assert [e["token"] for e in got.events[:-1]][1:] == [" t0", " t1"]


async def test_a_reader_resumes_after_a_merged_event(default_app: AppServer) -> None:
    session_id, got = await chat(default_app, "!tokens=149 !delay=0.004 resume")
    *tokens, done = got.events
    merged = [e for e in tokens if e["seq"] > 1 and len(e["token"].split()) > 1]
    assert merged, [e["seq"] for e in tokens]
    cut = merged[0]
    before = "".join(e["token"] for e in tokens if e["seq"] <= cut["seq"])
    async with graphql_socket(default_app.ws_url) as ws:
        op = await ws.start(FOLLOW, s=session_id, t=done["turnId"], a=cut["seq"])
        rest = await ws.collect(op)
    assert rest.completed and not rest.errors, rest.errors
    *after, end = rest.events
    assert after[0]["seq"] > cut["seq"]
    assert before + "".join(e["token"] for e in after) == done["message"]["content"]
    assert end["done"] and end["seq"] == done["seq"]
