"""Exact and all-or-nothing, from outside: the defects a review reproduced against a
running server, each against the real app, Redis and the fake provider (the script-level
cases are in test_scripts.py).

Figures are printed on lines starting with `[exact]` (shown with `pytest -s`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from redis.asyncio import Redis

from resolvers.services import scripts
from resolvers.services.keys import messages_key, meta_key
from tests.support import AppServer, FakeGroq, RedisServer, error_codes, gql, new_session
from tests.support.redis_proxy import RedisProxy
from tests.support.turns import history_of

pytestmark = pytest.mark.slow

JSON_REPLY = {"accept": "application/json"}
USAGE = "query($s: ID!) { session(id: $s) { messageCount usage { inputTokens outputTokens } } }"


def figure(text: str, **values: object) -> None:
    print(f"[exact] {text}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@pytest.fixture
async def redis_of() -> AsyncIterator[Callable[[AppServer], Redis]]:
    clients: list[Redis] = []

    def make(app: AppServer) -> Redis:
        client = Redis.from_url(app.env["REDIS_URL"], decode_responses=True)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def chat(http: httpx.AsyncClient, session_id: str, message: str) -> httpx.Response:
    return await http.post(
        "/chat", json={"session_id": session_id, "message": message}, headers=JSON_REPLY
    )


# -- 1. a count past int64 -------------------------------------------------------------


async def test_a_count_past_int64_stores_each_turn_once_and_reports_it_stored(
    make_app: Callable[..., AppServer], redis_of: Callable[[AppServer], Redis]
) -> None:
    app = make_app()
    redis = redis_of(app)
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
        assert (await chat(http, session_id, "first")).status_code == 200
        await redis.hset(meta_key(session_id), "input_tokens", "9" * 20)
        statuses = [(await chat(http, session_id, f"next {k}")).status_code for k in range(3)]
        history = await history_of(http, session_id)
        usage = (await gql(http, USAGE, s=session_id))["data"]["session"]  # type: ignore[index]
    assert statuses == [200, 200, 200]
    assert [t["input"] for t in history] == ["first", "next 0", "next 1", "next 2"]
    assert usage["messageCount"] == 8
    assert 0 < usage["usage"]["inputTokens"] < 2**31


# -- 2. a commit whose answer is lost while Redis is unreachable ---------------------------


async def test_a_commit_whose_answer_is_lost_is_confirmed_before_the_client_hears(
    make_app: Callable[..., AppServer], redis_server: RedisServer, fresh_db: Callable[[], str]
) -> None:
    """The commit runs, its reply is lost, and Redis refuses connections for 2.5 s (past
    redis-py's quick retries). The client hears "stored" once Redis answers, followers
    hear the same, and the client's retry with the same turn id stores nothing twice."""
    database = int(fresh_db().rsplit("/", 1)[1])
    commit_sha = hashlib.sha1(scripts.source("commit_turn").encode()).hexdigest()  # noqa: S324
    async with RedisProxy(redis_server.port) as proxy:
        app = make_app(redis_url=f"{proxy.url[:-2]}/{database}")
        async with httpx.AsyncClient(base_url=app.url, timeout=60) as http:
            session_id = await new_session(http)
            assert (await chat(http, session_id, "warm")).status_code == 200  # scripts loaded
            turn_id = str(uuid.uuid4())
            body = {"session_id": session_id, "message": "!delay=0.3 a b c", "turn_id": turn_id}
            reply = asyncio.ensure_future(http.post("/chat", json=body, headers=JSON_REPLY))
            await asyncio.sleep(0.3)  # the turn runs
            lost_at = await proxy.lose_reply_then_go_down(commit_sha.encode(), 2.5)
            response = await reply
            answered_after = time.monotonic() - lost_at
            again = await http.post("/chat", json=body, headers=JSON_REPLY)
            history = await history_of(http, session_id)
    figure("a stored turn's answer with Redis unreachable 2.5 s", seconds=f"{answered_after:.2f}")
    assert proxy.replies_lost == 1
    assert response.status_code == 200, response.text
    assert response.json()["response"] == "[n=4] !delay=0.3 a b c"
    assert again.status_code == 200 and again.json() == response.json()
    assert [t["input"] for t in history] == ["warm", "!delay=0.3 a b c"]


# -- 3. a session's TTL shorter than a reply ------------------------------------------------


async def test_a_running_turn_keeps_its_session_alive_past_its_ttl(
    make_app: Callable[..., AppServer],
) -> None:
    app = make_app(SESSION_TTL_SECONDS="2", TURN_LOCK_SECONDS="3")
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
        assert (await chat(http, session_id, "earlier")).status_code == 200
        # A reply of 5 s: twice the TTL.
        long = await chat(http, session_id, "!delay=0.5 !tokens=10 long")
        history = await history_of(http, session_id)
    assert long.status_code == 200, long.text
    assert [t["input"] for t in history] == ["earlier", "!delay=0.5 !tokens=10 long"]


# -- 4. a summary of messages rewound meanwhile ----------------------------------------------


async def test_no_rewound_message_reaches_the_model_again_through_a_summary(
    make_app: Callable[..., AppServer],
    fake_groq: FakeGroq,
    redis_of: Callable[[AppServer], Redis],
) -> None:
    """The summary of trimmed history is asked for after a turn (the model takes 2 s to
    answer it); meanwhile the messages it summarizes are rewound and the list grows
    back past them. The late summary is not kept, and the model never receives the
    rewound text again."""
    app = make_app(HISTORY_MAX_TOKENS="300", HISTORY_SUMMARY="true")
    redis = redis_of(app)
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
        # The summary request's last message is the transcript: its directives pause it.
        texts = ["!first_delay=2 kept " + "w " * 60, "reply " + "w " * 60]
        texts += ["REWOUNDSECRET " + "w " * 60 for _ in range(8)]
        for i, text in enumerate(texts):
            kind = "human" if i % 2 == 0 else "ai"
            await redis.lpush(
                messages_key(session_id), json.dumps({"type": kind, "data": {"content": text}})
            )
        assert (await chat(http, session_id, "now")).status_code == 200
        messages = await gql(
            http, "query($s: ID!) { session(id: $s) { messages { id } } }", s=session_id
        )
        third = messages["data"]["session"]["messages"][2]["id"]  # type: ignore[index]
        rewind = "mutation($s: ID!, $m: ID!) { rewind(sessionId: $s, messageId: $m) { id } }"
        assert "errors" not in await gql(http, rewind, s=session_id, m=third)
        for i in range(12):  # another program appends: the list grows back past them
            kind = "human" if i % 2 == 0 else "ai"
            content = "later " + "w " * 60
            await redis.lpush(
                messages_key(session_id), json.dumps({"type": kind, "data": {"content": content}})
            )
        fake_groq.reset()
        await asyncio.sleep(2.5)  # the summary's answer comes, late
        assert (await chat(http, session_id, "check")).status_code == 200
        recent = fake_groq.requests()["recent"]
    assert isinstance(recent, list) and recent
    sent = json.dumps(recent)
    assert "REWOUNDSECRET" not in sent


async def test_a_stale_summary_is_never_sent(
    make_app: Callable[..., AppServer],
    fake_groq: FakeGroq,
    redis_of: Callable[[AppServer], Redis],
) -> None:
    """A summary kept in the list that summarized messages rewound since (stale) stays
    in the window: it is not sent to the model, as a system message or otherwise."""
    app = make_app(HISTORY_SUMMARY="true")
    redis = redis_of(app)
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
        for text in ("one", "two", "three"):
            assert (await chat(http, session_id, text)).status_code == 200
        summary = json.dumps({"type": "system", "data": {"content": "STALESUMMARY of one two"}})
        length = await redis.llen(messages_key(session_id))
        await redis.lpush(messages_key(session_id), summary)
        await redis.hset(
            meta_key(session_id),
            mapping={"summary_at": length, "summary_covers": 3, "summary_stale": "1"},
        )
        fake_groq.reset()
        assert (await chat(http, session_id, "next")).status_code == 200
        body = fake_groq.requests()["last"]
    assert isinstance(body, dict)
    assert "STALESUMMARY" not in json.dumps(body["messages"])


# -- 5. a provider that keeps the stream open after [DONE] ----------------------------------


@pytest.mark.parametrize("fast", ["true", "false"])
async def test_a_reply_ends_at_done_even_when_the_provider_keeps_the_stream_open(
    make_app: Callable[..., AppServer], fast: str
) -> None:
    app = make_app(LLM_TIMEOUT_SECONDS="1", LLM_FAST_STREAM=fast)
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
        began = time.monotonic()
        response = await chat(http, session_id, "!hold_after_done=5 whole")
        took = time.monotonic() - began
        history = await history_of(http, session_id)
    figure("reply whose provider holds the stream 5 s after [DONE]", fast=fast, s=f"{took:.2f}")
    assert response.status_code == 200, response.text
    assert response.json()["response"] == "[n=2] !hold_after_done=5 whole"
    assert history == [{"input": "!hold_after_done=5 whole", "output": response.json()["response"]}]


# -- 7. a regenerate stopped before its first token -----------------------------------------


async def test_a_regenerate_stopped_before_its_first_token_keeps_the_old_reply(
    make_app: Callable[..., AppServer],
) -> None:
    from tests.support.ws_client import graphql_socket

    app = make_app()
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
        first = await chat(http, session_id, "!first_delay=3 question")
        old = first.json()["response"]
        async with graphql_socket(app.ws_url) as ws:
            op = await ws.start(
                "subscription($s: ID!) { regenerate(sessionId: $s) "
                "{ token done status message { content status } } }",
                s=session_id,
            )
            await asyncio.sleep(0.5)  # the model has not answered yet
            stopped = await gql(http, "mutation($s: ID!) { stopTurn(sessionId: $s) }", s=session_id)
            got = await ws.collect(op)
        history = await history_of(http, session_id)
    assert stopped["data"] == {"stopTurn": True}
    end = got.events[-1]
    assert end["done"] and end["status"] == "STOPPED"
    assert end["message"] == {"content": old, "status": "COMPLETE"}
    assert history == [{"input": "!first_delay=3 question", "output": old}]


# -- 15. a delete leaves nothing behind ---------------------------------------------------


async def test_deleting_a_session_deletes_every_key_kept_for_it(
    make_app: Callable[..., AppServer], redis_of: Callable[[AppServer], Redis]
) -> None:
    app = make_app()
    redis = redis_of(app)
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
        turn_ids = [str(uuid.uuid4()) for _ in range(3)]
        for k, turn_id in enumerate(turn_ids):
            body = {"session_id": session_id, "message": f"PRIVATE{k}", "turn_id": turn_id}
            assert (await http.post("/chat", json=body, headers=JSON_REPLY)).status_code == 200
        assert (await http.delete(f"/session/{session_id}")).status_code == 204
    left = [key async for key in redis.scan_iter(count=1000) if session_id in key]
    left += [key for t in turn_ids async for key in redis.scan_iter(match=f"*{t}*")]
    texts = []
    async for key in redis.scan_iter(count=1000):
        if await redis.type(key) == "stream":
            for _, fields in await redis.xrange(key) or []:
                texts += [str(v) for v in (fields or {}).values() if "PRIVATE" in str(v)]
    assert left == [] and texts == []


# -- 16. usage after another program clears the list --------------------------------------


async def test_usage_is_what_the_list_holds_after_an_outside_clear(
    make_app: Callable[..., AppServer], redis_of: Callable[[AppServer], Redis]
) -> None:
    from langchain_community.chat_message_histories import RedisChatMessageHistory

    app = make_app()
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
        assert (await chat(http, session_id, "counted")).status_code == 200
        before = (await gql(http, USAGE, s=session_id))["data"]["session"]  # type: ignore[index]
        outside = RedisChatMessageHistory(session_id, url=app.env["REDIS_URL"])
        await asyncio.to_thread(outside.clear)
        after = (await gql(http, USAGE, s=session_id))["data"]["session"]  # type: ignore[index]
        await asyncio.to_thread(outside.add_user_message, "written elsewhere")
        appended = (await gql(http, USAGE, s=session_id))["data"]["session"]  # type: ignore[index]
    assert before["usage"]["outputTokens"] > 0
    assert after == {"messageCount": 0, "usage": {"inputTokens": 0, "outputTokens": 0}}
    assert appended == {"messageCount": 1, "usage": {"inputTokens": 0, "outputTokens": 0}}


# -- 8, 9. what one request may start and store -----------------------------------------

CREATE_MANY = (
    "mutation($p: String) {"
    + "".join(f" s{k}: createSession(input: {{systemPrompt: $p}}) {{ id }}" for k in range(30))
    + " }"
)


def send_many(session_ids: list[str]) -> str:
    return (
        "mutation {"
        + "".join(
            f' m{k}: sendMessage(sessionId: "{sid}", message: "aliased {k}") {{ content }}'
            for k, sid in enumerate(session_ids)
        )
        + " }"
    )


async def test_every_aliased_turn_counts_against_the_callers_limit(
    make_app: Callable[..., AppServer], fake_groq: FakeGroq
) -> None:
    """30 sendMessage aliases over 30 sessions (made by 30 aliases) in one request, with
    USER_TURNS_PER_MINUTE=5: five turns run, the rest are refused RATE_LIMITED."""
    app = make_app(RATE_LIMIT_EXEMPT="", USER_TURNS_PER_MINUTE="5")
    async with httpx.AsyncClient(base_url=app.url, timeout=60) as http:
        made = await gql(http, CREATE_MANY)
        data = made["data"]
        assert isinstance(data, dict)
        ids = [v["id"] for v in data.values()]
        before = fake_groq.requests()["count"]
        sent = await gql(http, send_many(ids))
        ran = int(str(fake_groq.requests()["count"])) - int(str(before))
    # sendMessage is non-null: the first refused turn makes the whole result null.
    codes = set(error_codes(sent))
    figure("turns run by one request of 30 aliases, limit 5", ran=ran)
    assert ran == 5
    assert codes == {"RATE_LIMITED"}


async def test_what_anonymous_callers_store_is_bounded(
    make_app: Callable[..., AppServer], redis_of: Callable[[AppServer], Redis]
) -> None:
    """The review's case: 10 requests of 30 createSession aliases sharing one 32,000-
    character system prompt grew Redis by 10 MB. Now the sessions an address makes a
    minute (USER_SESSIONS_PER_MINUTE, 30) and holds (USER_MAX_SESSIONS) bound it."""
    app = make_app(RATE_LIMIT_EXEMPT="", USER_MAX_SESSIONS="40")
    redis = redis_of(app)
    prompt = "p" * 32_000
    before = int((await redis.info("memory"))["used_memory"])
    codes: set[str] = set()
    async with httpx.AsyncClient(base_url=app.url, timeout=60) as http:
        for _ in range(10):
            body = await gql(http, CREATE_MANY, p=prompt)
            codes |= set(error_codes(body))
    grown = int((await redis.info("memory"))["used_memory"]) - before
    created = await redis.zcard("sessions:index")
    figure("Redis growth from 10 requests of 30 aliases", created=created, MB=f"{grown / 1e6:.2f}")
    assert created == 30 and codes == {"RATE_LIMITED"}
    assert grown < 2_000_000


async def test_the_sessions_a_user_holds_are_bounded_and_a_delete_frees_one(
    make_app: Callable[..., AppServer],
) -> None:
    app = make_app(USER_MAX_SESSIONS="3")
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        token = (await http.post("/guest")).json()["token"]
        headers = {"authorization": f"Bearer {token}"}
        made = [await http.post("/new_session", headers=headers) for _ in range(4)]
        statuses = [r.status_code for r in made]
        assert statuses == [200, 200, 200, 429]
        assert "Retry-After" not in made[3].headers
        first = made[0].json()["session_id"]
        assert (await http.delete(f"/session/{first}", headers=headers)).status_code == 204
        again = await http.post("/new_session", headers=headers)
        body = await gql(http, "mutation { createSession { id } }", headers=headers)
    assert again.status_code == 200
    assert error_codes(body) == ["QUOTA_EXCEEDED"]


# -- 10. history reads nothing for a caller who may not read it ----------------------------


async def test_history_of_another_users_session_reads_none_of_it(
    make_app: Callable[..., AppServer], tmp_path: object
) -> None:
    from pathlib import Path

    from tests.support import start_redis, stop

    assert isinstance(tmp_path, Path)
    server = start_redis(tmp_path / "own-redis")
    try:
        app = make_app(redis_url=server.url())
        redis = Redis.from_url(server.url(), decode_responses=True)
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
            owner = {"authorization": f"Bearer {(await http.post('/guest')).json()['token']}"}
            other = {"authorization": f"Bearer {(await http.post('/guest')).json()['token']}"}
            session_id = (await http.post("/new_session", headers=owner)).json()["session_id"]
            for k in range(4):
                await http.post(
                    "/chat",
                    json={"session_id": session_id, "message": f"{k} " + "w " * 50_000},
                    headers=owner,
                )
            await redis.config_resetstat()
            refused = [
                (await http.get(f"/session/{session_id}/history", headers=other)).status_code,
                (await http.get(f"/session/{session_id}/history", headers=other)).status_code,
            ]
            ranges = (await redis.info("commandstats")).get("cmdstat_lrange", {"calls": 0})
            allowed = await http.get(f"/session/{session_id}/history", headers=owner)
            after = (await redis.info("commandstats")).get("cmdstat_lrange", {"calls": 0})
        await redis.aclose()
    finally:
        stop(server.process)
    assert refused == [404, 404]
    assert ranges["calls"] == 0
    assert allowed.status_code == 200 and after["calls"] >= 1


# -- 11. persisted documents: valid ones only, and counted -----------------------------------


async def test_a_persisted_query_is_kept_only_once_it_validates_and_as_counted(
    make_app: Callable[..., AppServer],
) -> None:
    app = make_app(RATE_LIMIT_EXEMPT="", APQ_REGISTRATIONS_PER_MINUTE="3")

    def persisted(document: str, *, send: bool) -> dict[str, object]:
        digest = hashlib.sha256(document.encode()).hexdigest()
        body: dict[str, object] = {
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}
        }
        if send:
            body["query"] = document
        return body

    async def known(http: httpx.AsyncClient, document: str) -> bool:
        body = (await http.post("/graphql", json=persisted(document, send=False))).json()
        codes = [e["extensions"]["code"] for e in body.get("errors", [])]
        return "PERSISTED_QUERY_NOT_FOUND" not in codes

    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        invalid = "{ noSuchField }"
        await http.post("/graphql", json=persisted(invalid, send=True))
        assert not await known(http, invalid)
        documents = [f"query Q{k} {{ viewer {{ isAdmin }} }}" for k in range(5)]
        for document in documents:
            sent = await http.post("/graphql", json=persisted(document, send=True))
            assert sent.json()["data"] == {"viewer": {"isAdmin": False}}
        kept = [await known(http, d) for d in documents]
    assert kept == [True, True, True, False, False]


# -- 12. open sockets of one address ----------------------------------------------------------


async def test_the_sockets_one_address_holds_open_are_bounded(
    make_app: Callable[..., AppServer],
) -> None:
    import websockets

    from tests.support.ws_client import graphql_socket

    app = make_app(RATE_LIMIT_EXEMPT="", WS_MAX_PER_ADDRESS="3")
    async with graphql_socket(app.ws_url), graphql_socket(app.ws_url), graphql_socket(app.ws_url):
        with pytest.raises(websockets.InvalidStatus):
            async with graphql_socket(app.ws_url):
                pass
    async with graphql_socket(app.ws_url) as ws:  # closed ones leave room
        assert ws.ws.state.name == "OPEN"


# -- 13. odd requests ---------------------------------------------------------------------


async def test_json_nested_past_the_parser_is_refused_not_a_500(app: AppServer) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        statuses = {
            path: (
                await http.post(path, content=deep, headers={"content-type": "application/json"})
            ).status_code
            for path in ("/chat", "/new_session", "/graphql", "/admin/import")
        }
        wrapped = '{"query": ' + deep + "}"
        graphql = await http.post(
            "/graphql", content=wrapped, headers={"content-type": "application/json"}
        )
    assert statuses["/chat"] == statuses["/new_session"] == 422
    assert statuses["/graphql"] == graphql.status_code == 400
    assert statuses["/admin/import"] == 401  # the admin's token first
    import websockets

    from tests.support.ws_client import graphql_socket

    async with graphql_socket(app.ws_url) as ws:
        await ws.ws.send(deep)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    # The protocol's answer to a message that is not JSON it takes, not a crash (1011).
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
