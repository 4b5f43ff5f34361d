"""Durable turns: a re-subscribe joins instead of running a message twice, any process
replays and follows a turn, any process stops it, and a dead process's turn ends clearly.

Real processes on one real Redis, over real WebSockets and HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from resolvers.services.keys import messages_key
from tests.support import AppServer, FakeGroq, error_codes, gql, new_session
from tests.support.turns import (
    CHAT_TURN,
    EVENT,
    FOLLOW,
    STOP,
    assert_numbered,
    by_seq,
    history_of,
    read_events,
    requests_made,
    streams_gone,
    written_outside,
)
from tests.support.ws_client import Received, graphql_socket

pytestmark = pytest.mark.slow

MESSAGES = """
query($s: ID!) {
  session(id: $s) { messageCount activeTurn { turnId message startedAt }
    messages { id turnId status role content } }
}
"""


@pytest.fixture(scope="module")
def pair(make_app: Callable[..., AppServer], fresh_db: Callable[[], str]) -> list[AppServer]:
    """Two processes of the server on one Redis; short locks, so a dead one shows soon."""
    url = fresh_db()
    settings = {"TURN_LOCK_SECONDS": "2", "RATE_LIMIT_TURNS_PER_MINUTE": "0"}
    return [make_app(redis_url=url, **settings), make_app(redis_url=url, **settings)]


@pytest.fixture
async def http(pair: list[AppServer]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pair[0].url, timeout=30) as client:
        yield client


@pytest.mark.parametrize("directive", ["", "!delay=0.05 "], ids=["fast", "slow"])
async def test_a_client_cut_mid_reply_resubscribes_with_its_turn_id_and_joins(
    pair: list[AppServer], http: httpx.AsyncClient, fake_groq: FakeGroq, directive: str
) -> None:
    session_id = await new_session(http)
    turn_id = str(uuid.uuid4())
    message = f"{directive}!tokens=30 join me"
    before = requests_made(fake_groq)
    async with graphql_socket(pair[0].ws_url) as ws:
        first = await read_events(
            ws, await ws.start(CHAT_TURN, s=session_id, m=message, t=turn_id), 5
        )
    # What graphql-ws does after a lost connection: the same operation again.
    async with graphql_socket(pair[0].ws_url) as ws:
        again = await ws.collect(await ws.start(CHAT_TURN, s=session_id, m=message, t=turn_id))
    assert not again.errors
    assert_numbered(again.events)
    done = again.events[-1]
    assert done["done"] and done["status"] == "COMPLETE" and done["turnId"] == turn_id
    reply = done["message"]["content"]
    assert again.text == reply  # the join replays from the first event
    assert by_seq(first, again.events) == reply  # and a client keeping seq sees each once
    assert requests_made(fake_groq) == before + 1  # the model ran once
    assert await history_of(http, session_id) == [{"input": message, "output": reply}]


async def test_two_racing_subscribes_with_one_turn_id_run_the_model_once(
    pair: list[AppServer], http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(http)
    turn_id = str(uuid.uuid4())
    before = requests_made(fake_groq)

    async def subscribe(app: AppServer) -> Received:
        async with graphql_socket(app.ws_url) as ws:
            op = await ws.start(CHAT_TURN, s=session_id, m="!delay=0.01 race", t=turn_id)
            return await ws.collect(op)

    results = await asyncio.gather(*(subscribe(app) for app in pair + pair))
    replies = {r.events[-1]["message"]["content"] for r in results}
    assert all(not r.errors for r in results), [r.errors for r in results]
    assert len(replies) == 1
    assert all(r.text == next(iter(replies)) for r in results)
    assert requests_made(fake_groq) == before + 1
    assert len(await history_of(http, session_id)) == 1


async def test_a_reconnect_to_another_process_resumes_after_the_last_seq(
    pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    turn_id = str(uuid.uuid4())
    async with graphql_socket(pair[0].ws_url) as ws:
        op = await ws.start(CHAT_TURN, s=session_id, m="!delay=0.05 !tokens=30 resume", t=turn_id)
        first = await read_events(ws, op, 5)
    last_seen = first[-1]["seq"]
    async with graphql_socket(pair[1].ws_url) as ws:
        rest = await ws.collect(await ws.start(FOLLOW, s=session_id, t=turn_id, a=last_seen))
    assert not rest.errors, rest.errors
    assert_numbered(rest.events)
    assert rest.events[0]["seq"] > last_seen
    reply = rest.events[-1]["message"]["content"]
    assert "".join(e["token"] for e in first) + rest.text == reply
    # Following the running turn without naming it, from the start, on the other process.
    async with graphql_socket(pair[1].ws_url) as ws:
        whole = await ws.collect(await ws.start(FOLLOW, s=session_id, t=turn_id))
    assert whole.text == reply


async def test_the_active_turn_is_shown_and_followed_without_its_id(
    pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    async with graphql_socket(pair[0].ws_url) as ws:
        op = await ws.start(CHAT_TURN, s=session_id, m="!delay=0.05 !tokens=60 active")
        first = await read_events(ws, op, 1)
        body = await gql(http, MESSAGES, s=session_id)
        active = body["data"]["session"]["activeTurn"]  # type: ignore[index]
        assert active["turnId"] == first[0]["turnId"]
        assert active["message"] == "!delay=0.05 !tokens=60 active"
        async with graphql_socket(pair[1].ws_url) as other:
            followed = await other.collect(await other.start(FOLLOW, s=session_id))
        assert followed.events[-1]["done"]
    body = await gql(http, MESSAGES, s=session_id)
    session = body["data"]["session"]  # type: ignore[index]
    assert session["activeTurn"] is None
    user, reply = session["messages"]
    assert user["turnId"] == reply["turnId"] == first[0]["turnId"]
    assert user["id"] != reply["id"]
    assert reply["status"] == "COMPLETE"
    assert reply["content"] == followed.events[-1]["message"]["content"]
    assert reply["id"] == followed.events[-1]["message"]["id"]


async def test_stop_from_another_process_cuts_the_provider_and_stores_the_partial_reply(
    pair: list[AppServer], http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(http)
    gone = streams_gone(fake_groq)
    async with graphql_socket(pair[0].ws_url) as ws:
        op = await ws.start(CHAT_TURN, s=session_id, m="!delay=0.1 !tokens=200 stop me")
        first = await read_events(ws, op, 3)
        async with httpx.AsyncClient(base_url=pair[1].url, timeout=30) as other:
            stopped = await gql(other, STOP, s=session_id, t=first[0]["turnId"])
        assert stopped["data"] == {"stopTurn": True}
        rest = await ws.collect(op)
    assert not rest.errors
    done = rest.events[-1]
    assert done["done"] and done["status"] == "STOPPED"
    partial = "".join(e["token"] for e in first) + rest.text
    assert done["message"]["content"] == partial
    assert done["message"]["status"] == "STOPPED"
    assert 3 <= len(first) + len(rest.events) - 1 < 200
    for _ in range(100):  # the provider sees its client go (bounded wait)
        if streams_gone(fake_groq) > gone:
            break
        await asyncio.sleep(0.05)
    assert streams_gone(fake_groq) > gone
    body = await gql(http, MESSAGES, s=session_id)
    messages = body["data"]["session"]["messages"]  # type: ignore[index]
    assert [m["status"] for m in messages] == ["COMPLETE", "STOPPED"]
    assert messages[1]["content"] == partial
    # Nothing runs now: a second stop says so, and the session takes a new turn at once.
    again = await gql(http, STOP, s=session_id, t=first[0]["turnId"])
    assert again["data"] == {"stopTurn": False}
    assert (await gql(http, STOP, s=session_id))["data"] == {"stopTurn": False}
    reply = await http.post("/chat", json={"session_id": session_id, "message": "next"})
    assert reply.status_code == 200


async def test_a_killed_process_ends_its_followers_with_a_clear_failure(
    make_app: Callable[..., AppServer], fresh_db: Callable[[], str]
) -> None:
    url = fresh_db()
    runner = make_app(redis_url=url, TURN_LOCK_SECONDS="2")
    follower = make_app(redis_url=url, TURN_LOCK_SECONDS="2")
    async with httpx.AsyncClient(base_url=follower.url, timeout=30) as http:
        session_id = await new_session(http)
        async with graphql_socket(runner.ws_url) as ws:
            op = await ws.start(CHAT_TURN, s=session_id, m="!delay=0.2 !tokens=500 doomed")
            first = await read_events(ws, op, 2)
            async with graphql_socket(follower.ws_url) as other:
                follow = await other.start(FOLLOW, s=session_id, t=first[0]["turnId"])
                await asyncio.sleep(0.3)
                runner.stop(signal.SIGKILL)
                ended = await other.collect(follow)
        assert ended.codes == ["UNAVAILABLE"]
        assert ended.errors[0]["extensions"]["status"] == "FAILED"
        assert "stopped before the reply was stored" in ended.errors[0]["message"]
        assert await history_of(http, session_id) == []
        # The follower wrote the end the dead process could not: the same id replays it.
        async with graphql_socket(follower.ws_url) as ws:
            again = await ws.collect(
                await ws.start(CHAT_TURN, s=session_id, m="doomed", t=first[0]["turnId"])
            )
        assert again.codes == ["UNAVAILABLE"]
        assert "new turn id" in again.errors[0]["message"]
        assert (await gql(http, MESSAGES, s=session_id))["data"]["session"]["activeTurn"] is None  # type: ignore[index]


async def test_a_turn_is_replayed_after_it_ended_and_forgotten_after_the_replay_time(
    make_app: Callable[..., AppServer],
) -> None:
    app = make_app(TURN_REPLAY_SECONDS="1")
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
        turn_id = str(uuid.uuid4())
        async with graphql_socket(app.ws_url) as ws:
            ran = await ws.collect(await ws.start(CHAT_TURN, s=session_id, m="a b", t=turn_id))
            replay = await ws.collect(await ws.start(FOLLOW, s=session_id, t=turn_id))
            assert replay.events == ran.events
            tail = await ws.collect(await ws.start(FOLLOW, s=session_id, t=turn_id, a=2))
            assert [e["seq"] for e in tail.events] == [e["seq"] for e in ran.events][2:]
            codes: list[str] = []
            for _ in range(40):  # bounded: the replay time is 1 s
                await asyncio.sleep(0.1)
                got = await ws.collect(await ws.start(FOLLOW, s=session_id, t=turn_id))
                codes = got.codes
                if codes:
                    break
            assert codes == ["NOT_FOUND"]
        # Once forgotten, the same id runs anew: it is a new turn.
        assert len(await history_of(http, session_id)) == 1


async def test_bad_turn_input_is_refused_and_changes_nothing(
    pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    other_session = await new_session(http)
    turn_id = str(uuid.uuid4())
    async with graphql_socket(pair[0].ws_url) as ws:
        done = await ws.collect(await ws.start(CHAT_TURN, s=session_id, m="first", t=turn_id))
        assert not done.errors
        end_seq = done.events[-1]["seq"]
        cases: list[tuple[str, dict[str, Any], str]] = [
            (CHAT_TURN, {"s": session_id, "m": "x", "t": "not-a-uuid"}, "BAD_USER_INPUT"),
            (CHAT_TURN, {"s": other_session, "m": "x", "t": turn_id}, "BAD_USER_INPUT"),
            (FOLLOW, {"s": session_id, "t": "1234"}, "BAD_USER_INPUT"),
            (FOLLOW, {"s": session_id, "t": str(uuid.uuid4())}, "NOT_FOUND"),
            (FOLLOW, {"s": session_id}, "NOT_FOUND"),  # nothing running
            (FOLLOW, {"s": session_id, "t": turn_id, "a": -1}, "BAD_USER_INPUT"),
            (FOLLOW, {"s": session_id, "t": turn_id, "a": end_seq + 1}, "BAD_USER_INPUT"),
            (FOLLOW, {"s": other_session, "t": turn_id}, "NOT_FOUND"),
        ]
        for document, variables, code in cases:
            got = await ws.collect(await ws.start(document, **variables))
            assert got.codes == [code], (variables, got.errors)
            assert not got.events
    assert error_codes(await gql(http, STOP, s=session_id, t="nope")) == ["BAD_USER_INPUT"]
    assert error_codes(await gql(http, STOP, s=session_id, t=str(uuid.uuid4()))) == ["NOT_FOUND"]
    assert (await gql(http, STOP, s=session_id, t=turn_id))["data"] == {"stopTurn": False}
    assert len(await history_of(http, session_id)) == 1
    assert await history_of(http, other_session) == []


async def test_rest_joins_by_turn_id_numbers_events_and_resumes_and_stops(
    pair: list[AppServer], http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(http)
    turn_id = str(uuid.uuid4())
    body = {"session_id": session_id, "message": "!delay=0.02 rest turn", "turn_id": turn_id}
    sse = {"accept": "text/event-stream"}
    before = requests_made(fake_groq)
    first = await http.post("/chat", json=body, headers=sse)
    assert first.headers["x-turn-id"] == turn_id
    again = await http.post("/chat", json=body, headers={"accept": "application/json"})
    assert again.headers["x-turn-id"] == turn_id
    reply = again.json()["response"]
    assert requests_made(fake_groq) == before + 1
    blocks = [b for b in first.text.strip().split("\n\n")]
    assert len(blocks) >= 3
    events = f"/session/{session_id}/turns/{turn_id}/events"
    async with httpx.AsyncClient(base_url=pair[1].url, timeout=30) as other:
        resumed = await other.get(events, headers={"last-event-id": "2"})
        assert resumed.status_code == 200
        # After a `retry:` hint (how soon EventSource reconnects), the events after #2.
        assert resumed.text == "retry: 1000\n\n" + "\n\n".join(blocks[2:]) + "\n\n"
        assert (await other.get(events, params={"after": "2"})).text == resumed.text
        assert (
            await other.get(events, headers={"last-event-id": str(len(blocks))})
        ).status_code == 204
        assert (await other.get(events, headers={"last-event-id": "x"})).status_code == 400
        assert (await other.get(events, headers={"last-event-id": "999"})).status_code == 400
        unknown = f"/session/{session_id}/turns/{uuid.uuid4()}/events"
        assert (await other.get(unknown)).status_code == 404
        assert (await other.get(f"/session/{session_id}/turns/nope/events")).status_code == 400
    done = json.loads(blocks[-1].split("data: ", 1)[1])
    assert done == {"response": reply, "status": "COMPLETE"}
    # Stop over REST, from the other process, while a reply streams.
    async with httpx.AsyncClient(base_url=pair[1].url, timeout=30) as other:
        async with http.stream(
            "POST",
            "/chat",
            json={"session_id": session_id, "message": "!delay=0.1 !tokens=100 long"},
            headers=sse,
        ) as streaming:
            lines = streaming.aiter_lines()
            async for line in lines:
                if line.startswith("event: token"):
                    break
            stopped = await other.post(f"/session/{session_id}/stop", json={})
            assert stopped.json() == {"stopped": True}
            rest = [line async for line in lines]
        assert any('"status": "STOPPED"' in line for line in rest)
        assert (await other.post(f"/session/{session_id}/stop")).json() == {"stopped": False}


async def test_messages_of_other_programs_get_ids_from_their_position(
    pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    await http.post("/chat", json={"session_id": session_id, "message": "ours"})
    redis = Redis.from_url(pair[0].env["REDIS_URL"], decode_responses=True)
    foreign = {"type": "human", "data": {"content": "theirs", "additional_kwargs": {}}}
    await redis.lpush(messages_key(session_id), json.dumps(foreign))
    await redis.aclose()
    body = await gql(http, MESSAGES, s=session_id)
    messages = body["data"]["session"]["messages"]  # type: ignore[index]
    assert [m["content"] for m in messages] == ["ours", "[n=2] ours", "theirs"]
    assert messages[2]["id"] == "2" and messages[2]["turnId"] is None
    assert messages[0]["id"].startswith("0.") and messages[1]["id"].startswith("1.")
    assert len({m["id"] for m in messages}) == 3
    # The same ids on every read, and on the last-N read.
    again = await gql(http, MESSAGES, s=session_id)
    assert again == body


async def test_an_owned_sessions_turn_is_followed_with_the_token_in_the_query(
    pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    """EventSource sends no headers: the events route takes `?access_token=` too."""
    alice = (await http.post("/guest")).json()["token"]
    bob = (await http.post("/guest")).json()["token"]
    as_alice = {"authorization": f"Bearer {alice}"}
    session_id = (await http.post("/new_session", headers=as_alice)).json()["session_id"]
    chat = {"session_id": session_id, "message": "mine"}
    done = await http.post("/chat", json=chat, headers=as_alice)
    events = f"/session/{session_id}/turns/{done.headers['x-turn-id']}/events"
    assert (await http.get(events)).status_code == 404  # anonymous: not theirs
    assert (await http.get(events, params={"access_token": bob})).status_code == 404
    assert (await http.get(events, params={"access_token": "x.y.z"})).status_code == 401
    mine = await http.get(events, params={"access_token": alice})
    assert mine.status_code == 200
    assert mine.text.endswith('"status": "COMPLETE"}\n\n')
    assert mine.text == (await http.get(events, headers=as_alice)).text


async def test_a_turn_waiting_for_its_first_token_is_stopped_from_another_process(
    pair: list[AppServer], http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    """No token flows, so nothing is written: the running process looks for the stop."""
    session_id = await new_session(http)
    turn_id = str(uuid.uuid4())
    gone = streams_gone(fake_groq)
    async with graphql_socket(pair[0].ws_url) as ws:
        op = await ws.start(CHAT_TURN, s=session_id, m="!first_delay=30 silent", t=turn_id)
        async with httpx.AsyncClient(base_url=pair[1].url, timeout=30) as other:
            stopped = {"stopTurn": False}
            for _ in range(50):  # until the turn has begun (bounded)
                body = await gql(other, STOP, s=session_id, t=turn_id)
                if body.get("data"):
                    stopped = body["data"]  # type: ignore[assignment]
                    break
                await asyncio.sleep(0.05)
        assert stopped == {"stopTurn": True}
        got = await ws.collect(op)
    assert [e["done"] for e in got.events] == [True]
    assert got.events[0]["status"] == "STOPPED"
    assert got.events[0]["message"]["content"] == ""
    for _ in range(100):
        if streams_gone(fake_groq) > gone:
            break
        await asyncio.sleep(0.05)
    assert streams_gone(fake_groq) > gone
    stored = await history_of(http, session_id)
    assert stored == [{"input": "!first_delay=30 silent", "output": ""}]


REGENERATE = f"""
subscription($s: ID!, $t: ID) {{ regenerate(sessionId: $s, turnId: $t) {{ {EVENT} }} }}
"""


async def test_regenerate_replaces_the_last_reply_and_sends_what_the_turn_sent(
    pair: list[AppServer], http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(http)
    await http.post("/chat", json={"session_id": session_id, "message": "first"})
    await http.post("/chat", json={"session_id": session_id, "message": "regen me"})
    before = await gql(http, MESSAGES, s=session_id)
    old = before["data"]["session"]["messages"]  # type: ignore[index]
    sent_then = fake_groq.requests()["last"]
    count = requests_made(fake_groq)
    turn_id = str(uuid.uuid4())
    async with graphql_socket(pair[1].ws_url) as ws:
        got = await ws.collect(await ws.start(REGENERATE, s=session_id, t=turn_id))
    assert not got.errors, got.errors
    done = got.events[-1]
    assert done["done"] and done["turnId"] == turn_id and done["status"] == "COMPLETE"
    assert requests_made(fake_groq) == count + 1
    assert fake_groq.requests()["last"] == sent_then  # the same prompt, the old reply left out
    after = (await gql(http, MESSAGES, s=session_id))["data"]["session"]["messages"]  # type: ignore[index]
    assert [m["content"] for m in after] == [m["content"] for m in old]
    assert after[:3] == old[:3]  # everything before the reply is as it was
    assert after[3]["id"] == done["message"]["id"] != old[3]["id"]
    assert after[3]["id"].split(".")[0] == old[3]["id"].split(".")[0] == "3"
    assert after[3]["turnId"] == turn_id
    assert len(await history_of(http, session_id)) == 2


async def test_a_failed_regenerate_keeps_the_old_reply(
    pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    await written_outside(
        pair[0].env["REDIS_URL"], session_id, ("human", "!cut=2 a b c d"), ("ai", "the kept reply")
    )
    async with graphql_socket(pair[0].ws_url) as ws:
        got = await ws.collect(await ws.start(REGENERATE, s=session_id))
    assert got.codes == ["LLM_ERROR"]
    assert await history_of(http, session_id) == [
        {"input": "!cut=2 a b c d", "output": "the kept reply"}
    ]


async def test_regenerate_needs_a_reply_to_replace_and_a_free_session(
    pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    empty = await new_session(http)
    asked = await new_session(http)
    await written_outside(pair[0].env["REDIS_URL"], asked, ("human", "no reply yet"))
    running = await new_session(http)
    await http.post("/chat", json={"session_id": running, "message": "one"})
    async with graphql_socket(pair[0].ws_url) as ws:
        for session_id in (empty, asked):
            got = await ws.collect(await ws.start(REGENERATE, s=session_id))
            assert got.codes == ["BAD_USER_INPUT"], session_id
        op = await ws.start(CHAT_TURN, s=running, m="!delay=0.05 !tokens=40 busy")
        await read_events(ws, op, 1)
        async with graphql_socket(pair[1].ws_url) as other:
            raced = await other.collect(await other.start(REGENERATE, s=running))
        assert raced.codes == ["SESSION_BUSY"]
        rest = await ws.collect(op)
        assert rest.events[-1]["done"]
    assert len(await history_of(http, running)) == 2


async def test_a_regenerate_is_followed_and_stopped_from_another_process(
    pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    await written_outside(
        pair[0].env["REDIS_URL"],
        session_id,
        ("human", "!delay=0.1 !tokens=100 slow"),
        ("ai", "old"),
    )
    turn_id = str(uuid.uuid4())
    async with graphql_socket(pair[0].ws_url) as ws:
        op = await ws.start(REGENERATE, s=session_id, t=turn_id)
        first = await read_events(ws, op, 3)
        async with graphql_socket(pair[1].ws_url) as other:
            follow = await other.start(FOLLOW, s=session_id, t=turn_id, a=first[-1]["seq"])
            stopped = await gql(http, STOP, s=session_id, t=turn_id)
            assert stopped["data"] == {"stopTurn": True}
            followed = await other.collect(follow)
        rest = await ws.collect(op)
    assert followed.events[-1] == rest.events[-1]
    partial = rest.events[-1]["message"]["content"]
    assert partial.startswith("".join(e["token"] for e in first))
    messages = (await gql(http, MESSAGES, s=session_id))["data"]["session"]["messages"]  # type: ignore[index]
    assert [(m["content"], m["status"]) for m in messages] == [
        ("!delay=0.1 !tokens=100 slow", "COMPLETE"),
        (partial, "STOPPED"),
    ]


async def test_rewind_on_another_process_is_refused_while_a_turn_runs(
    pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    await http.post("/chat", json={"session_id": session_id, "message": "kept"})
    first = (await gql(http, MESSAGES, s=session_id))["data"]["session"]["messages"][0]  # type: ignore[index]
    rewind = "mutation($s: ID!, $m: ID!) { rewind(sessionId: $s, messageId: $m) { id } }"
    async with graphql_socket(pair[0].ws_url) as ws:
        op = await ws.start(CHAT_TURN, s=session_id, m="!delay=0.05 !tokens=40 running")
        await read_events(ws, op, 1)
        async with httpx.AsyncClient(base_url=pair[1].url, timeout=30) as other:
            refused = await gql(other, rewind, s=session_id, m=first["id"])
        assert error_codes(refused) == ["SESSION_BUSY"]
        rest = await ws.collect(op)
        assert rest.events[-1]["done"]
    assert len(await history_of(http, session_id)) == 2
    # Once the turn is stored, the same rewind goes through (from either process).
    async with httpx.AsyncClient(base_url=pair[1].url, timeout=30) as other:
        assert error_codes(await gql(other, rewind, s=session_id, m=first["id"])) == []
    assert await history_of(http, session_id) == []
