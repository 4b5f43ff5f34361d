"""The app on a 3-master Redis Cluster (REDIS_CLUSTER=true): turns, history, listing,
and durable turns joined, resumed, stopped and replayed across two processes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode

from resolvers.services.keys import (
    INDEX_KEY,
    lock_key,
    messages_key,
    meta_key,
    turn_session_key,
    turn_stream_key,
)
from tests.support import (
    LOOPBACK,
    AppServer,
    FakeGroq,
    RedisServer,
    app_env,
    error_codes,
    gql,
    new_session,
)
from tests.support.turns import (
    CHAT_TURN,
    FOLLOW,
    STOP,
    assert_numbered,
    history_of,
    read_events,
    requests_made,
)
from tests.support.ws_client import graphql_socket

pytestmark = pytest.mark.cluster

MESSAGES = """
query($s: ID!) {
  session(id: $s) { activeTurn { turnId } messages { id turnId status role content } }
}
"""


@pytest.fixture(scope="module")
def cluster_app(
    start_app: type[AppServer], cluster: list[RedisServer], fake_groq: FakeGroq
) -> AppServer:
    env = app_env(cluster[1].url(), fake_groq, REDIS_CLUSTER="true")
    return start_app(env=env).start()


@pytest.fixture(scope="module")
def cluster_pair(
    cluster_app: AppServer,
    start_app: type[AppServer],
    cluster: list[RedisServer],
    fake_groq: FakeGroq,
) -> list[AppServer]:
    """The app and a second process of it on the same cluster, seeded from another node."""
    env = app_env(cluster[2].url(), fake_groq, REDIS_CLUSTER="true")
    return [cluster_app, start_app(env=env).start()]


@pytest.fixture
async def http(cluster_app: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster_app.url, timeout=30) as client:
        yield client


@pytest.fixture
async def direct(cluster: list[RedisServer]) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(host=LOOPBACK, port=cluster[0].port, decode_responses=True)
    yield client
    await client.aclose()


async def test_turns_and_history_on_the_cluster(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http, title="on a cluster")
    for text in ("one", "two", "three"):
        reply = await http.post("/chat", json={"session_id": session_id, "message": text})
        assert reply.status_code == 200
    history = (await http.get(f"/session/{session_id}/history")).json()["history"]
    assert history == [
        {"input": "one", "output": "[n=2] one"},
        {"input": "two", "output": "[n=4] two"},
        {"input": "three", "output": "[n=6] three"},
    ]
    body = await gql(
        http, "query($id: ID!) { session(id: $id) { messageCount title } }", id=session_id
    )
    assert body["data"] == {"session": {"messageCount": 6, "title": "on a cluster"}}


async def test_a_sessions_keys_share_one_hash_slot(
    http: httpx.AsyncClient, direct: RedisCluster
) -> None:
    session_id = await new_session(http)
    slots = {
        await direct.cluster_keyslot(key)
        for key in (messages_key(session_id), meta_key(session_id), lock_key(session_id))
    }
    assert len(slots) == 1


async def test_listing_and_paging_across_the_cluster(
    http: httpx.AsyncClient, direct: RedisCluster
) -> None:
    created = [await new_session(http) for _ in range(12)]
    slots = {await direct.cluster_keyslot(meta_key(s)) for s in created}
    assert len(slots) > 3, "sessions should spread over the cluster"
    everything = (await http.get("/sessions")).json()["sessions"]
    assert everything[:12] == list(reversed(created))
    seen, cursor = [], None
    for _ in range(len(everything)):
        page = (
            await http.get(
                "/sessions", params={"limit": "5"} | ({"cursor": cursor} if cursor else {})
            )
        ).json()
        seen += page["sessions"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    first = await gql(http, "{ sessions(first: 3) { totalCount edges { node { id } } } }")
    edges = first["data"]["sessions"]["edges"]  # type: ignore[index]
    assert [e["node"]["id"] for e in edges] == list(reversed(created))[:3]


async def test_a_turn_moves_its_session_first_on_the_cluster(http: httpx.AsyncClient) -> None:
    older, newer = await new_session(http), await new_session(http)
    await http.post("/chat", json={"session_id": older, "message": "bump"})
    assert (await http.get("/sessions")).json()["sessions"][:2] == [older, newer]


async def test_busy_and_delete_on_the_cluster(http: httpx.AsyncClient) -> None:
    session_id = await new_session(http)
    body = {"session_id": session_id, "message": "!delay=0.2 a b c"}
    async with http.stream("POST", "/chat", json=body) as running:
        assert running.status_code == 200
        busy = await http.post("/chat", json={"session_id": session_id, "message": "x"})
        assert busy.status_code == 409
        await running.aread()
    assert (await http.delete(f"/session/{session_id}")).status_code == 204
    assert session_id not in (await http.get("/sessions")).json()["sessions"]
    assert (await http.get(f"/session/{session_id}/history")).status_code == 404


async def test_langchain_histories_on_the_cluster_are_adopted(
    make_app: Callable[..., AppServer],
    start_app: type[AppServer],
    cluster: list[RedisServer],
    fake_groq: FakeGroq,
    direct: RedisCluster,
) -> None:
    orphans = [str(uuid.uuid4()) for _ in range(6)]
    for session_id in orphans:
        await direct.lpush(
            messages_key(session_id),
            json.dumps({"type": "human", "data": {"content": "old question", "type": "human"}}),
            json.dumps(
                {
                    "type": "AIMessageChunk",
                    "data": {"content": "old answer", "type": "AIMessageChunk"},
                }
            ),
        )
    server = make_app(redis_url=cluster[2].url(), REDIS_CLUSTER="true")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for _ in range(50):
            listed = set((await client.get("/sessions")).json()["sessions"])
            if set(orphans) <= listed:
                break
            await asyncio.sleep(0.1)
        assert set(orphans) <= listed
        history = (await client.get(f"/session/{orphans[0]}/history")).json()["history"]
        assert history == [{"input": "old question", "output": "old answer"}]
    server.stop()


async def test_a_stored_turn_is_reported_stored_when_the_index_write_fails(
    http: httpx.AsyncClient, direct: RedisCluster, cluster: list[RedisServer]
) -> None:
    await direct.initialize()

    def primary_of(key: str) -> ClusterNode:
        node = direct.get_node_from_key(key)
        assert node is not None
        return node

    index_node = primary_of(INDEX_KEY)
    session_id = ""
    for _ in range(50):  # a session whose keys live on another primary than the index
        session_id = await new_session(http)
        if primary_of(messages_key(session_id)).name != index_node.name:
            break
    assert primary_of(messages_key(session_id)).name != index_node.name
    listed_at = await direct.zscore(INDEX_KEY, session_id)
    node = next(n for n in cluster if n.port == index_node.port)
    # The index's primary refuses writes (out of memory) while the turn is stored.
    admin = Redis.from_url(node.url(), decode_responses=True)
    try:
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", "1")
        reply = await http.post("/chat", json={"session_id": session_id, "message": "kept"})
        assert reply.status_code == 200
        assert reply.text == "[n=2] kept"
        assert await direct.zscore(INDEX_KEY, session_id) == listed_at  # not written yet
    finally:
        await admin.config_set("maxmemory", "0")
        await admin.aclose()
    history = (await http.get(f"/session/{session_id}/history")).json()["history"]
    assert history == [{"input": "kept", "output": "[n=2] kept"}]
    for _ in range(100):  # the repair runs every second
        score = await direct.zscore(INDEX_KEY, session_id)
        if score is not None and listed_at is not None and score > listed_at:
            break
        await asyncio.sleep(0.1)
    assert (await http.get("/sessions")).json()["sessions"][0] == session_id


async def test_owned_sessions_and_my_listing_on_the_cluster(http: httpx.AsyncClient) -> None:
    token = (await http.post("/guest")).json()["token"]
    other = (await http.post("/guest")).json()["token"]
    mine = {"authorization": f"Bearer {token}"}
    created = []
    for title in ("one", "two", "three"):
        response = await http.post("/new_session", json={"title": title}, headers=mine)
        created.append(response.json()["session_id"])
    reply = await http.post("/chat", json={"session_id": created[0], "message": "up"}, headers=mine)
    assert reply.status_code == 200
    listed = (await http.get("/me/sessions", headers=mine)).json()["sessions"]
    assert listed == [created[0], created[2], created[1]]
    theirs = {"authorization": f"Bearer {other}"}
    assert (await http.get(f"/session/{created[0]}/history", headers=theirs)).status_code == 404
    assert (await http.get("/me/sessions", headers=theirs)).json()["sessions"] == []
    assert (await http.delete(f"/session/{created[1]}", headers=mine)).status_code == 204
    assert created[1] not in (await http.get("/me/sessions", headers=mine)).json()["sessions"]


# Durable turns on the cluster: two processes of the app, each started from another node.


@pytest.mark.parametrize("rejoin", [0, 1], ids=["same-process", "other-process"])
async def test_a_cut_chat_resubscribed_with_its_turn_id_joins_on_the_cluster(
    cluster_pair: list[AppServer], http: httpx.AsyncClient, fake_groq: FakeGroq, rejoin: int
) -> None:
    session_id = await new_session(http)
    turn_id = str(uuid.uuid4())
    message = "!delay=0.05 !tokens=30 join me"
    before = requests_made(fake_groq)
    async with graphql_socket(cluster_pair[0].ws_url) as ws:
        op = await ws.start(CHAT_TURN, s=session_id, m=message, t=turn_id)
        first = await read_events(ws, op, 5)
    assert [e["turnId"] for e in first] == [turn_id] * 5
    # The same operation again after the lost connection, as graphql-ws sends it.
    async with graphql_socket(cluster_pair[rejoin].ws_url) as ws:
        again = await ws.collect(await ws.start(CHAT_TURN, s=session_id, m=message, t=turn_id))
    assert not again.errors, again.errors
    assert_numbered(again.events)
    done = again.events[-1]
    assert done["done"] and done["status"] == "COMPLETE" and done["turnId"] == turn_id
    reply = done["message"]["content"]
    assert again.text == reply  # the join replays from the first event
    assert reply == "[n=2]" + "".join(f" t{i}" for i in range(30))
    assert requests_made(fake_groq) == before + 1  # the model ran once
    assert await history_of(http, session_id) == [{"input": message, "output": reply}]
    body = await gql(http, MESSAGES, s=session_id)
    session = body["data"]["session"]  # type: ignore[index]
    assert session["activeTurn"] is None
    assert [(m["role"], m["turnId"], m["status"]) for m in session["messages"]] == [
        ("USER", turn_id, "COMPLETE"),
        ("ASSISTANT", turn_id, "COMPLETE"),
    ]
    assert session["messages"][1]["id"] == done["message"]["id"]


async def test_a_reconnect_to_the_other_process_resumes_after_the_last_seq_on_the_cluster(
    cluster_pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    turn_id = str(uuid.uuid4())
    async with graphql_socket(cluster_pair[0].ws_url) as ws:
        op = await ws.start(CHAT_TURN, s=session_id, m="!delay=0.05 !tokens=30 resume", t=turn_id)
        first = await read_events(ws, op, 5)
    assert_numbered(first)
    last_seen = first[-1]["seq"]
    async with graphql_socket(cluster_pair[1].ws_url) as ws:
        rest = await ws.collect(await ws.start(FOLLOW, s=session_id, t=turn_id, a=last_seen))
    assert not rest.errors, rest.errors
    assert_numbered(rest.events)
    assert rest.events[0]["seq"] > last_seen
    assert {e["turnId"] for e in rest.events} == {turn_id}
    done = rest.events[-1]
    assert done["done"] and done["status"] == "COMPLETE"
    reply = done["message"]["content"]
    assert "".join(e["token"] for e in first) + rest.text == reply
    assert reply == "[n=2]" + "".join(f" t{i}" for i in range(30))
    assert await history_of(http, session_id) == [
        {"input": "!delay=0.05 !tokens=30 resume", "output": reply}
    ]


async def test_stop_sent_to_the_other_process_stops_the_turn_on_the_cluster(
    cluster_pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    async with graphql_socket(cluster_pair[0].ws_url) as ws:
        op = await ws.start(CHAT_TURN, s=session_id, m="!delay=0.1 !tokens=200 stop me")
        first = await read_events(ws, op, 3)
        turn_id = first[0]["turnId"]
        async with httpx.AsyncClient(base_url=cluster_pair[1].url, timeout=30) as other:
            stopped = await gql(other, STOP, s=session_id, t=turn_id)
            assert stopped["data"] == {"stopTurn": True}, stopped
            rest = await ws.collect(op)
            assert not rest.errors, rest.errors
            done = rest.events[-1]
            assert done["done"] and done["status"] == "STOPPED" and done["turnId"] == turn_id
            partial = "".join(e["token"] for e in first) + rest.text
            assert done["message"]["content"] == partial
            assert done["message"]["status"] == "STOPPED"
            assert 3 <= len(first) + len(rest.events) - 1 < 201
            body = await gql(other, MESSAGES, s=session_id)
            session = body["data"]["session"]  # type: ignore[index]
            assert session["activeTurn"] is None
            assert [(m["role"], m["status"]) for m in session["messages"]] == [
                ("USER", "COMPLETE"),
                ("ASSISTANT", "STOPPED"),
            ]
            assert session["messages"][1]["content"] == partial
            # Nothing runs now, as either process sees it.
            assert (await gql(other, STOP, s=session_id, t=turn_id))["data"] == {"stopTurn": False}
            # The stopped turn replays from the other process, ending STOPPED.
            async with graphql_socket(cluster_pair[1].ws_url) as follower:
                replay = await follower.collect(
                    await follower.start(FOLLOW, s=session_id, t=turn_id)
                )
            assert not replay.errors, replay.errors
            assert replay.text == partial
            assert replay.events[-1]["status"] == "STOPPED"
    assert (await gql(http, STOP, s=session_id))["data"] == {"stopTurn": False}
    reply = await http.post("/chat", json={"session_id": session_id, "message": "next"})
    assert reply.status_code == 200


async def test_a_turn_id_of_one_session_is_refused_on_another_on_the_cluster(
    cluster_pair: list[AppServer],
    http: httpx.AsyncClient,
    direct: RedisCluster,
    fake_groq: FakeGroq,
) -> None:
    await direct.initialize()

    def primary(key: str) -> str:
        node = direct.get_node_from_key(key)
        assert node is not None
        return str(node.name)

    session_id, other_session = await new_session(http), await new_session(http)
    turn_id = str(uuid.uuid4())
    for _ in range(50):  # an id whose claim key lives on another primary than the session
        if primary(turn_session_key(turn_id)) != primary(messages_key(session_id)):
            break
        turn_id = str(uuid.uuid4())
    assert primary(turn_session_key(turn_id)) != primary(messages_key(session_id))
    async with graphql_socket(cluster_pair[0].ws_url) as ws:
        op = await ws.start(CHAT_TURN, s=session_id, m="!delay=0.05 !tokens=20 mine", t=turn_id)
        first = await read_events(ws, op, 1)
        assert first[0]["turnId"] == turn_id
        assert await direct.get(turn_session_key(turn_id)) == session_id
        before = requests_made(fake_groq)
        # While the turn runs, and after it ended: on either process, GraphQL and REST.
        async with graphql_socket(cluster_pair[1].ws_url) as other:
            running = await other.collect(
                await other.start(CHAT_TURN, s=other_session, m="theirs", t=turn_id)
            )
        assert running.codes == ["BAD_USER_INPUT"], running.errors
        assert not running.events
        rest = await ws.collect(op)
        assert not rest.errors and rest.events[-1]["status"] == "COMPLETE"
    for app in cluster_pair:
        async with graphql_socket(app.ws_url) as other:
            ended = await other.collect(
                await other.start(CHAT_TURN, s=other_session, m="theirs", t=turn_id)
            )
        assert ended.codes == ["BAD_USER_INPUT"], ended.errors
        assert not ended.events
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
            refused = await client.post(
                "/chat", json={"session_id": other_session, "message": "x", "turn_id": turn_id}
            )
        assert refused.status_code == 400, refused.text
    assert requests_made(fake_groq) == before  # nothing ran for the refused ones
    assert await direct.get(turn_session_key(turn_id)) == session_id
    assert not await direct.exists(turn_stream_key(other_session, turn_id))
    assert await history_of(http, other_session) == []
    assert len(await history_of(http, session_id)) == 1
    body = await gql(http, MESSAGES, s=other_session)
    assert body["data"]["session"]["activeTurn"] is None  # type: ignore[index]
    # The other session is free, and the id still joins its own session.
    fresh = await http.post("/chat", json={"session_id": other_session, "message": "free"})
    assert fresh.status_code == 200 and fresh.text == "[n=2] free"
    async with graphql_socket(cluster_pair[1].ws_url) as ws:
        joined = await ws.collect(await ws.start(CHAT_TURN, s=session_id, m="again", t=turn_id))
    assert not joined.errors and joined.events[-1]["turnId"] == turn_id
    assert requests_made(fake_groq) == before + 1  # only the free session's turn ran
    assert error_codes(await gql(http, STOP, s=other_session, t=turn_id)) == ["NOT_FOUND"]


async def test_an_ended_turn_replays_the_same_events_from_the_other_process_on_the_cluster(
    cluster_pair: list[AppServer], http: httpx.AsyncClient
) -> None:
    session_id = await new_session(http)
    turn_id = str(uuid.uuid4())
    # Fewer tokens than a reader's backlog merges: one event per token, both ways.
    message = "!delay=0.02 !tokens=10 replay"
    async with graphql_socket(cluster_pair[0].ws_url) as ws:
        ran = await ws.collect(await ws.start(CHAT_TURN, s=session_id, m=message, t=turn_id))
    assert not ran.errors, ran.errors
    assert [e["seq"] for e in ran.events] == list(range(1, 13))
    async with graphql_socket(cluster_pair[1].ws_url) as ws:
        replay = await ws.collect(await ws.start(FOLLOW, s=session_id, t=turn_id))
        tail = await ws.collect(await ws.start(FOLLOW, s=session_id, t=turn_id, a=4))
        past = await ws.collect(await ws.start(FOLLOW, s=session_id, t=turn_id, a=13))
    assert not replay.errors and not tail.errors, (replay.errors, tail.errors)
    assert replay.events == ran.events
    assert tail.events == ran.events[4:]
    assert past.codes == ["BAD_USER_INPUT"]
    async with graphql_socket(cluster_pair[0].ws_url) as ws:
        home = await ws.collect(await ws.start(FOLLOW, s=session_id, t=turn_id))
    assert home.events == ran.events


async def test_branches_on_the_cluster(
    cluster_pair: list[AppServer], http: httpx.AsyncClient, direct: RedisCluster
) -> None:
    """An edit on one process, a switch on the other: the tree's keys sit in the
    session's slot, and each branch keeps its own replies."""
    session_id = await new_session(http)
    for text in ("one", "two"):
        await http.post("/chat", json={"session_id": session_id, "message": text})
    fields = "id content branch branches siblingIds"
    query = f"query($s: ID!) {{ session(id: $s) {{ messages {{ {fields} }} }} }}"
    old = (await gql(http, query, s=session_id))["data"]["session"]["messages"]  # type: ignore[index]
    edit = (
        "subscription($s: ID!, $m: ID!) { edit(sessionId: $s, messageId: $m, "
        'message: "two, edited") { done } }'
    )
    async with graphql_socket(cluster_pair[1].ws_url) as ws:
        got = await ws.collect(await ws.start(edit, s=session_id, m=old[2]["id"]))
    assert not got.errors and got.events[-1]["done"]
    keys = [key async for key in direct.scan_iter(match=f"*{{message_store:{session_id}}}:*")]
    assert {k.rsplit(":", 1)[1] for k in keys} >= {"tree", "kids", "meta"}
    slots = {await direct.cluster_keyslot(k) for k in [*keys, messages_key(session_id)]}
    assert len(slots) == 1
    new = (await gql(http, query, s=session_id))["data"]["session"]["messages"]  # type: ignore[index]
    assert [m["content"] for m in new][2:] == ["two, edited", "[n=4] two, edited"]
    assert (new[2]["branch"], new[2]["branches"]) == (2, 2)
    async with httpx.AsyncClient(base_url=cluster_pair[1].url, timeout=30) as other:
        switch = "mutation($s: ID!, $m: ID!) { switchBranch(sessionId: $s, messageId: $m) { id } }"
        assert "errors" not in await gql(other, switch, s=session_id, m=old[2]["id"])
    back = (await gql(http, query, s=session_id))["data"]["session"]["messages"]  # type: ignore[index]
    assert [m["id"] for m in back] == [m["id"] for m in old]
    assert await history_of(http, session_id) == [
        {"input": "one", "output": "[n=2] one"},
        {"input": "two", "output": "[n=4] two"},
    ]
