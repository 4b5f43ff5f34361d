"""Redis faults: slow replies, cancelled commands, dropped and refused connections, an
exhausted pool, kill -9 and a graceful restart, each against a real redis-server.

Every test records its figures with `record_property` (in the JUnit XML) and prints them
on one line starting with `[redis-faults]` (shown with `pytest -s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from redis.asyncio import Redis
from websockets.typing import Subprotocol

from resolvers.services.errors import SessionBusy
from resolvers.services.keys import lock_key
from resolvers.services.storage import make_client
from tests.support import (
    AppServer,
    FakeGroq,
    RedisServer,
    app_env,
    error_codes,
    free_port,
    gql,
    new_session,
    start_redis,
)
from tests.support.redis_proxy import RedisProxy
from tests.support.stores import stores_on

pytestmark = pytest.mark.slow

RecordProperty = Callable[[str, object], None]

AOF = ("--appendonly", "yes", "--appendfsync", "everysec")
# Loopback is exempt by default; zero makes sure no limit shapes these figures.
NO_LIMITS = {"RATE_LIMIT_PER_MINUTE": "0", "RATE_LIMIT_TURNS_PER_MINUTE": "0"}
JSON_REPLY = {"accept": "application/json"}

HISTORY_QUERY = "query History($id: ID!) { history(sessionId: $id) { input output } }"
MESSAGES_QUERY = "query Messages($id: ID!) { session(id: $id) { id messages { content } } }"
ROLES_QUERY = "query Roles($id: ID!) { session(id: $id) { messageCount messages { role } } }"


def report(record_property: RecordProperty, test: str, **figures: object) -> None:
    """Keep the figures in the JUnit XML and print them on one line (seen with -s)."""
    for name, value in figures.items():
        record_property(name, value)
    print(f"\n[redis-faults] {test}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def ms(seconds: float) -> int:
    return round(seconds * 1000)


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_proxy(redis_server: RedisServer) -> Iterator[RedisProxy]:
    proxy = RedisProxy(redis_server.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(shared_proxy: RedisProxy) -> Iterator[RedisProxy]:
    """The module's proxy, with its faults cleared after each test."""
    yield shared_proxy
    shared_proxy.delay = 0.0
    shared_proxy.accept_new()


@pytest.fixture(scope="module")
def proxied_app(
    make_app: Callable[..., AppServer],
    start_app: type[AppServer],
    shared_proxy: RedisProxy,
    fake_groq: FakeGroq,
) -> Iterator[AppServer]:
    """The app on the test Redis, reached through the proxy."""
    server = make_app(redis_url=shared_proxy.url, **NO_LIMITS)
    yield server
    server.stop()


@dataclass(frozen=True)
class TwoSessions:
    """Two sessions whose histories differ in length and in every word."""

    a: str
    b: str
    history: dict[str, list[dict[str, str]]]

    def other(self, session_id: str) -> str:
        return self.b if session_id == self.a else self.a


async def two_sessions(http: httpx.AsyncClient) -> TwoSessions:
    a, b = await new_session(http), await new_session(http)
    for session_id, message in ((a, "alpha one"), (a, "alpha two"), (b, "bravo one")):
        reply = await http.post(
            "/chat", json={"session_id": session_id, "message": message}, headers=JSON_REPLY
        )
        assert reply.status_code == 200, reply.text
    history = {
        a: [
            {"input": "alpha one", "output": "[n=2] alpha one"},
            {"input": "alpha two", "output": "[n=4] alpha two"},
        ],
        b: [{"input": "bravo one", "output": "[n=2] bravo one"}],
    }
    for session_id in (a, b):
        got = await http.get(f"/session/{session_id}/history")
        assert got.json()["history"] == history[session_id]
    return TwoSessions(a=a, b=b, history=history)


async def bounded_gather(limit: int, jobs: list[Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Awaitable[Any]) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(run(job) for job in jobs))


async def wait_ready(http: httpx.AsyncClient, seconds: float) -> float:
    """Poll /readyz until 200 (bounded); how long it took."""
    began = time.monotonic()
    for _ in range(int(seconds / 0.05)):
        if time.monotonic() - began > seconds:
            break
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get("/readyz", timeout=1)).status_code == 200:
                return time.monotonic() - began
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz was not 200 within {seconds} s")


async def close_app_client(client: Redis) -> None:
    await client.aclose()
    # `make_client`'s client does not own its pool (see the test of closing it).
    await client.connection_pool.disconnect()


# -- 1. CVE-2023-28858: a cancelled command must not leave its reply for the next one ----


async def test_cancelled_history_requests_never_get_another_sessions_data(
    proxied_app: AppServer, proxy: RedisProxy, record_property: RecordProperty
) -> None:
    async with httpx.AsyncClient(base_url=proxied_app.url, timeout=30) as http:
        sessions = await two_sessions(http)
    ids = [sessions.a, sessions.b]
    outcomes: dict[str, int] = {"ok": 0, "cancelled": 0, "wrong_session": 0, "error": 0}
    # Client deadlines spread around the 0.2 s the proxy holds each Redis reply.
    deadlines = [0.01, 0.05, 0.1, 0.15, 0.19, 0.22, 0.3, 2.0]

    async def impatient(i: int) -> None:
        session_id = ids[i % 2]
        deadline = deadlines[i % len(deadlines)]
        timeout = httpx.Timeout(deadline) if i % 4 < 2 else httpx.Timeout(30)
        async with httpx.AsyncClient(base_url=proxied_app.url, timeout=timeout) as client:
            try:
                # Half give up through httpx's own timeout, half by being cancelled.
                response = await asyncio.wait_for(
                    client.get(f"/session/{session_id}/history"), deadline
                )
            except (TimeoutError, httpx.TimeoutException):
                outcomes["cancelled"] += 1
                return
        if response.status_code != 200:
            outcomes["error"] += 1
        elif response.json()["history"] == sessions.history[session_id]:
            outcomes["ok"] += 1
        elif response.json()["history"] == sessions.history[sessions.other(session_id)]:
            outcomes["wrong_session"] += 1
        else:
            outcomes["error"] += 1

    storm = 120
    eofs_before = proxy.client_eofs
    with proxy.delayed(0.2):
        await asyncio.gather(*(impatient(i) for i in range(storm)))
        await asyncio.sleep(0.3)
    # A plain HTTP handler is not cancelled when its client leaves (the GraphQL-over-
    # WebSocket test below is the one that cancels commands inside the app).
    closed_by_app = proxy.client_eofs - eofs_before

    after, wrong_after, failed_after = 300, 0, 0
    async with httpx.AsyncClient(base_url=proxied_app.url, timeout=30) as http:

        async def check(i: int) -> None:
            nonlocal wrong_after, failed_after
            session_id = ids[i % 2]
            response = await http.get(f"/session/{session_id}/history")
            if response.status_code != 200:
                failed_after += 1
            elif response.json()["history"] != sessions.history[session_id]:
                wrong_after += 1

        await bounded_gather(30, [check(i) for i in range(after)])

    report(
        record_property,
        "cancelled HTTP history requests (proxy delay 200 ms)",
        storm_requests=storm,
        storm_completed=outcomes["ok"],
        storm_cancelled_by_client=outcomes["cancelled"],
        storm_wrong_session=outcomes["wrong_session"],
        storm_errors=outcomes["error"],
        redis_connections_closed_by_app=closed_by_app,
        after_requests=after,
        after_wrong_session=wrong_after,
        after_failed=failed_after,
    )
    assert outcomes["cancelled"] > storm // 3, "the clients did not give up mid-request"
    assert outcomes["wrong_session"] == 0 and outcomes["error"] == 0, outcomes
    assert wrong_after == 0 and failed_after == 0


async def test_graphql_operations_cancelled_mid_redis_command_leave_no_stale_replies(
    proxied_app: AppServer, proxy: RedisProxy, record_property: RecordProperty
) -> None:
    """Over graphql-transport-ws, `complete` (or a closed socket) cancels the operation's
    task inside the app while its Redis command waits for the reply: the redis-py
    cancellation path of CVE-2023-28858, driven through the app itself."""
    async with httpx.AsyncClient(base_url=proxied_app.url, timeout=30) as http:
        sessions = await two_sessions(http)
    ids = [sessions.a, sessions.b]
    queries = [HISTORY_QUERY, MESSAGES_QUERY]

    def expected(query: str, session_id: str) -> dict[str, Any]:
        turns = sessions.history[session_id]
        if query == HISTORY_QUERY:
            return {"history": turns}
        contents = [text for turn in turns for text in (turn["input"], turn["output"])]
        return {"session": {"id": session_id, "messages": [{"content": c} for c in contents]}}

    tally = {"sent": 0, "completed_by_client": 0, "sockets_closed": 0, "answered": 0}
    wrong: list[object] = []

    async def socket_run(n: int, *, cancel: bool) -> None:
        async with websockets.connect(
            proxied_app.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
            ops: dict[str, tuple[str, str]] = {}
            before = proxy.chunks_to_server
            for i in range(10):
                op_id = f"{n}-{i}"
                query, session_id = queries[i % 2], ids[(i // 2) % 2]
                ops[op_id] = (query, session_id)
                payload = {"query": query, "variables": {"id": session_id}}
                await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))
                tally["sent"] += 1
            if not cancel:
                pending = set(ops)
            else:
                # The commands are out (on a loaded machine that can take a while), their
                # replies held back by the proxy's delay.
                await proxy.wait_for_command(before)
                await asyncio.sleep(0.05)
                if n % 2:
                    tally["sockets_closed"] += 1
                    return  # leaving the block closes the socket: every operation is cancelled
                pending = set()
                for op_id in ops:
                    await ws.send(json.dumps({"id": op_id, "type": "complete"}))
                    tally["completed_by_client"] += 1
            deadline = time.monotonic() + 10
            while pending and time.monotonic() < deadline:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message.get("type") == "next":
                    query, session_id = ops[message["id"]]
                    tally["answered"] += 1
                    if message["payload"] != {"data": expected(query, session_id)}:
                        wrong.append(message)
                elif message.get("type") in ("complete", "error"):
                    pending.discard(message.get("id"))
            assert not pending, f"operations never completed: {pending}"

    eofs_before = proxy.client_eofs
    with proxy.delayed(0.25):
        await asyncio.gather(*(socket_run(n, cancel=True) for n in range(8)))
        await asyncio.sleep(0.4)  # the app handles `complete` and closes asynchronously
    cancelled_connections = proxy.client_eofs - eofs_before
    answered_in_storm = tally["answered"]
    await asyncio.gather(*(socket_run(n, cancel=False) for n in range(100, 108)))

    report(
        record_property,
        "GraphQL operations cancelled mid Redis command (proxy delay 250 ms)",
        operations_sent=tally["sent"],
        cancelled_by_complete=tally["completed_by_client"],
        sockets_closed_mid_command=tally["sockets_closed"],
        redis_connections_closed_by_app=cancelled_connections,
        answered_after=tally["answered"] - answered_in_storm,
        wrong_answers=len(wrong),
    )
    assert cancelled_connections > 0, "no Redis command was cancelled mid-flight"
    assert not wrong, wrong[:3]
    assert tally["answered"] - answered_in_storm == 80


async def test_redis_client_cancelled_mid_command_keeps_replies_in_order(
    proxy: RedisProxy, record_property: RecordProperty
) -> None:
    """The app's own client configuration (`make_client`), as redis-py's test_cwe_404."""
    prefix = f"faults:cwe404:{uuid.uuid4()}"
    keys = [f"{prefix}:{i}" for i in range(10)]
    client = make_client(proxy.url, max_connections=10)
    assert isinstance(client, Redis)  # a single-node URL, not a cluster
    try:
        await client.mset({key: f"value-{i}" for i, key in enumerate(keys)})
        cancelled = 0
        for round_ in range(3):
            with proxy.delayed(0.3):
                sent = proxy.chunks_to_server
                # `ensure_future`: redis-py types `get` as an Awaitable (it is a coroutine).
                gets = [asyncio.ensure_future(client.get(keys[i % 10])) for i in range(10)]

                async def pipelined(i: int) -> list[Any]:
                    async with client.pipeline(transaction=False) as pipe:
                        pipe.get(keys[i])
                        pipe.get(keys[(i + 1) % 10])
                        result: list[Any] = await pipe.execute()
                        return result

                pipes = [asyncio.create_task(pipelined(i)) for i in range(5)]
                await proxy.wait_for_command(sent)
                await asyncio.sleep(0.05 + 0.05 * round_)  # well inside the 0.3 s wait
                for task in gets + pipes:
                    task.cancel()
                results = await asyncio.gather(*gets, *pipes, return_exceptions=True)
                cancelled += sum(isinstance(r, asyncio.CancelledError) for r in results)
                # On a loaded machine a reply may beat the cancel: it must then be the
                # right one; the round still has to cancel some.
                expected = [f"value-{i % 10}" for i in range(10)] + [
                    [f"value-{i}", f"value-{(i + 1) % 10}"] for i in range(5)
                ]
                for result, want in zip(results, expected, strict=True):
                    assert isinstance(result, asyncio.CancelledError) or result == want, result
                assert any(isinstance(r, asyncio.CancelledError) for r in results), results

        wrong = 0
        checked = 0
        with proxy.delayed(0.01):

            async def one(i: int) -> None:
                nonlocal wrong, checked
                key = i % 10
                got: object
                want: object
                if i % 3 == 0:
                    async with client.pipeline(transaction=False) as pipe:
                        pipe.get(keys[key])
                        pipe.ping()
                        pipe.get(keys[(key + 1) % 10])
                        got = await pipe.execute()
                    want = [f"value-{key}", True, f"value-{(key + 1) % 10}"]
                else:
                    got, want = await client.get(keys[key]), f"value-{key}"
                checked += 1
                wrong += got != want

            await asyncio.gather(*(one(i) for i in range(300)))
    finally:
        with contextlib.suppress(Exception):
            await client.delete(*keys)
        await close_app_client(client)
    report(
        record_property,
        "redis.asyncio commands cancelled mid-read (proxy delay 300 ms)",
        commands_cancelled=cancelled,
        commands_checked_after=checked,
        wrong_replies=wrong,
    )
    assert cancelled > 0 and checked == 300 and wrong == 0


async def test_closing_the_app_client_closes_its_redis_connections(
    redis_server: RedisServer, record_property: RecordProperty
) -> None:
    """The lifespan closes the client with `aclose()`; Redis must see its connections go."""
    async with RedisProxy(redis_server.port) as proxy:
        client = make_client(proxy.url, max_connections=10)
        assert isinstance(client, Redis)  # a single-node URL, not a cluster
        try:
            await asyncio.gather(*(client.ping() for _ in range(5)))
            opened = proxy.open_connections
            await client.aclose()
            for _ in range(100):  # at most 1 s
                if proxy.open_connections == 0:
                    break
                await asyncio.sleep(0.01)
            left_open = proxy.open_connections
        finally:
            await client.connection_pool.disconnect()
    report(
        record_property,
        "closing the app's Redis client",
        connections_before_close=opened,
        connections_left_open_after_aclose=left_open,
    )
    assert opened > 0
    assert left_open == 0, "aclose() left the pool's connections open"


# -- 2. dropped and refused connections --------------------------------------------------


async def test_connections_reset_mid_command_are_retried_with_the_right_reply(
    proxied_app: AppServer, proxy: RedisProxy, record_property: RecordProperty
) -> None:
    async with httpx.AsyncClient(base_url=proxied_app.url, timeout=30) as http:
        sessions = await two_sessions(http)
        ids = [sessions.a, sessions.b]

        async def fetch(i: int) -> tuple[int, bool, float]:
            began = time.monotonic()
            response = await http.get(f"/session/{ids[i % 2]}/history")
            right = (
                response.status_code == 200
                and response.json()["history"] == sessions.history[ids[i % 2]]
            )
            return response.status_code, right, time.monotonic() - began

        with proxy.delayed(0.3):
            sent = proxy.chunks_to_server
            requests = [asyncio.create_task(fetch(i)) for i in range(20)]
            await proxy.wait_for_command(sent)
            await asyncio.sleep(0.1)
            dropped = proxy.drop_connections()
            results = await asyncio.gather(*requests)
    statuses = sorted({status for status, _, _ in results})
    report(
        record_property,
        "Redis connections reset mid-command (proxy delay 300 ms)",
        requests=len(results),
        connections_reset=dropped,
        ok_with_own_data=sum(right for _, right, _ in results),
        statuses=statuses,
        max_latency_ms=ms(max(t for _, _, t in results)),
    )
    assert dropped > 0
    assert all(right for _, right, _ in results), results


async def test_refused_connections_are_503_then_the_app_recovers_by_itself(
    proxied_app: AppServer, proxy: RedisProxy, record_property: RecordProperty
) -> None:
    async with httpx.AsyncClient(base_url=proxied_app.url, timeout=30) as http:
        session_id = await new_session(http)
        proxy.refuse_new()
        proxy.drop_connections()
        latencies, statuses = [], set()
        for _ in range(5):
            began = time.monotonic()
            response = await http.get(f"/session/{session_id}/history")
            latencies.append(time.monotonic() - began)
            statuses.add(response.status_code)
        ready_down = (await http.get("/readyz")).status_code
        body = await gql(http, "mutation { createSession { id } }")
        proxy.accept_new()
        recovery = await wait_ready(http, 10)
        after = await http.get(f"/session/{session_id}/history")
    report(
        record_property,
        "Redis refusing connections",
        statuses_while_refused=sorted(statuses),
        max_503_latency_ms=ms(max(latencies)),
        readyz_while_refused=ready_down,
        ready_again_after_ms=ms(recovery),
    )
    assert statuses == {503} and max(latencies) < 3
    assert ready_down == 503 and error_codes(body) == ["UNAVAILABLE"]
    assert after.status_code == 200 and after.json() == {"history": []}


# -- 3. pool exhaustion ------------------------------------------------------------------


async def test_requests_beyond_the_pool_wait_for_a_connection_instead_of_failing(
    start_app: type[AppServer],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
    record_property: RecordProperty,
) -> None:
    async with RedisProxy(redis_server.port) as proxy:
        env = app_env(proxy.url, fake_groq, REDIS_MAX_CONNECTIONS="2", **NO_LIMITS)
        server = start_app(env=env).start()
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                session_id = await new_session(http)

                async def request(i: int) -> tuple[int, float, str]:
                    began = time.monotonic()
                    if i % 2:
                        response = await http.post("/new_session")
                    else:
                        response = await http.get(f"/session/{session_id}/history")
                    return response.status_code, time.monotonic() - began, response.text

                with proxy.delayed(0.05):
                    began = time.monotonic()
                    results = await asyncio.gather(*(request(i) for i in range(50)))
                    wall = time.monotonic() - began
        finally:
            server.stop()
        peak = proxy.peak_connections
    failures = [(status, text) for status, _, text in results if status != 200]
    latencies = [t for _, t, _ in results]
    report(
        record_property,
        "50 concurrent requests on a pool of 2 (proxy delay 50 ms)",
        requests=len(results),
        failed=len(failures),
        peak_redis_connections=peak,
        median_latency_ms=ms(statistics.median(latencies)),
        max_latency_ms=ms(max(latencies)),
        wall_ms=ms(wall),
    )
    assert not failures, failures[:3]
    assert not any("Too many connections" in text for _, _, text in results)
    assert peak <= 2


# -- 4. kill -9 during a stream of turns -------------------------------------------------


@dataclass
class Attempt:
    session_id: str
    message: str
    sent: float
    done: float
    status: int


async def test_kill_9_mid_turns_loses_no_acknowledged_turn_and_leaves_no_half_turn(
    make_app: Callable[..., AppServer],
    start_app: type[AppServer],
    fake_groq: FakeGroq,
    tmp_path: Path,
    record_property: RecordProperty,
) -> None:
    directory, port = tmp_path / "redis-aof", free_port()
    redis = start_redis(directory, port, *AOF)
    server = make_app(redis_url=redis.url(), **NO_LIMITS)
    attempts: list[Attempt] = []
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
            sessions = [await new_session(http) for _ in range(3)]
            stop_turns = asyncio.Event()

            async def send_turns() -> None:
                for k in itertools.count():
                    if stop_turns.is_set() or k >= 5000:
                        return
                    session_id = sessions[k % len(sessions)]
                    # A few ms per token, so the kill often lands while a reply streams.
                    message = f"turn {k} !delay=0.005"
                    sent = time.monotonic()
                    try:
                        response = await http.post(
                            "/chat",
                            json={"session_id": session_id, "message": message},
                            headers=JSON_REPLY,
                        )
                        status = response.status_code
                        if status == 200:
                            reply = response.json()["response"]
                            assert reply.endswith(f"] {message}"), reply
                    except httpx.HTTPError:
                        status = -1
                    attempts.append(Attempt(session_id, message, sent, time.monotonic(), status))
                    if status != 200:
                        await asyncio.sleep(0.05)

            runner = asyncio.create_task(send_turns())
            try:
                # Kill once the loop has run 2 s and had at least 30 turns acknowledged.
                for _ in range(500):  # at most 10 s
                    acked_so_far = sum(a.status == 200 for a in attempts)
                    if acked_so_far >= 30 and time.monotonic() - attempts[0].sent >= 2:
                        break
                    await asyncio.sleep(0.02)
                redis.process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                await asyncio.to_thread(redis.process.wait, 5)

                # New turns sent at the dead Redis are refused at once (the loop itself
                # may wait: a turn whose commit was in flight waits to learn its fate).
                probes = []
                for k in range(3):
                    sent = time.monotonic()
                    message = f"while down {k}"
                    response = await http.post(
                        "/chat",
                        json={"session_id": sessions[k % 3], "message": message},
                        headers=JSON_REPLY,
                    )
                    done = time.monotonic()
                    probes.append(
                        Attempt(sessions[k % 3], message, sent, done, response.status_code)
                    )
                await asyncio.sleep(0.5)
                ready_down = (await http.get("/readyz")).status_code
                create = await gql(http, "mutation { createSession { id } }")
                read = await gql(http, ROLES_QUERY, id=sessions[0])

                restarting = time.monotonic()
                redis = await asyncio.to_thread(start_redis, directory, port, *AOF)
                back = time.monotonic()
                recovery = await wait_ready(http, 15)
                # Turns go through again (a session whose lock was taken just before
                # the kill stays busy until the lock expires, so any session will do).
                for _ in range(100):
                    if any(a.status == 200 and a.sent > back for a in attempts):
                        break
                    await asyncio.sleep(0.05)
            finally:
                stop_turns.set()
                await asyncio.wait_for(runner, 20)

            histories: dict[str, list[dict[str, str]]] = {}
            roles: dict[str, Any] = {}
            for session_id in sessions:
                got = await http.get(f"/session/{session_id}/history")
                assert got.status_code == 200, got.text
                histories[session_id] = got.json()["history"]
                roles[session_id] = (await gql(http, ROLES_QUERY, id=session_id))["data"]
    finally:
        server.stop()
        redis.process.terminate()
        await asyncio.to_thread(redis.process.wait, 5)

    acked = [a for a in attempts if a.status == 200]
    acked_before_kill = [a for a in acked if a.done < killed]
    down = probes + [a for a in attempts if killed < a.sent and a.done < restarting]
    stored = {(sid, turn["input"]) for sid, turns in histories.items() for turn in turns}
    lost = [a for a in acked_before_kill if (a.session_id, a.message) not in stored]
    lost_old = [a for a in lost if a.done < killed - 1.0]
    acked_keys = {(a.session_id, a.message) for a in acked}
    stored_unacked = [key for key in stored if key not in acked_keys]
    half_written: list[tuple[object, ...]] = []
    for session_id, turns in histories.items():
        for j, turn in enumerate(turns):
            # [n=<system + earlier messages (window 40) + this one>] <the words>
            if turn["output"] != f"[n={2 + min(2 * j, 40)}] {turn['input']}":
                half_written.append((session_id, j, turn))
        session = roles[session_id]["session"]
        kinds = [m["role"] for m in session["messages"]]
        if (
            session["messageCount"] != len(kinds)
            or len(kinds) != 2 * len(turns)
            or kinds != ["USER", "ASSISTANT"] * len(turns)
        ):
            half_written.append((session_id, "roles", session["messageCount"], kinds[-4:]))
    unexpected = sorted({a.status for a in attempts} - {200, 503, 409})
    down_latency = [a.done - a.sent for a in down]
    report(
        record_property,
        "kill -9 of redis-server during turns (AOF everysec)",
        turns_acknowledged_before_kill=len(acked_before_kill),
        acknowledged_lost=len(lost),
        acknowledged_lost_older_than_1s=len(lost_old),
        stored_but_not_acknowledged=len(stored_unacked),
        half_written_turns=len(half_written),
        requests_while_down=len(down),
        statuses_while_down=sorted({a.status for a in down}),
        max_503_latency_ms=ms(max(down_latency)) if down_latency else None,
        median_503_latency_ms=ms(statistics.median(down_latency)) if down_latency else None,
        readyz_while_down=ready_down,
        ready_after_restart_ms=ms(recovery),
        busy_409_after_restart=sum(a.status == 409 for a in attempts),
    )
    assert len(acked_before_kill) >= 10
    assert not lost_old, lost_old
    assert not half_written, half_written
    # A turn is never stored without being acknowledged: one whose commit's answer was
    # lost with Redis waits to learn whether it landed.
    assert not stored_unacked, stored_unacked
    assert down and {a.status for a in down} == {503}
    assert max(down_latency) < 3
    assert ready_down == 503
    assert error_codes(create) == ["UNAVAILABLE"] and error_codes(read) == ["UNAVAILABLE"]
    assert not unexpected, unexpected
    assert any(a.status == 200 and a.sent > back for a in attempts), "no turn after the restart"


# -- 5. graceful restart while idle ------------------------------------------------------


async def test_after_a_graceful_redis_restart_the_next_requests_succeed(
    make_app: Callable[..., AppServer],
    start_app: type[AppServer],
    fake_groq: FakeGroq,
    tmp_path: Path,
    record_property: RecordProperty,
) -> None:
    directory, port = tmp_path / "redis-restart", free_port()
    redis = start_redis(directory, port, *AOF)
    server = make_app(redis_url=redis.url(), **NO_LIMITS)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            session_id = await new_session(http)
            first_turn = {"session_id": session_id, "message": "before restart"}
            assert (await http.post("/chat", json=first_turn, headers=JSON_REPLY)).is_success
            # Fill the pool with idle connections, all of which the restart will close.
            warm = [http.get(f"/session/{session_id}/history") for _ in range(20)]
            assert all(r.status_code == 200 for r in await asyncio.gather(*warm))

            async with Redis.from_url(redis.url()) as admin:
                await admin.shutdown()
            await asyncio.to_thread(redis.process.wait, 10)
            redis = await asyncio.to_thread(start_redis, directory, port, *AOF)

            began = time.monotonic()
            first = await http.get(f"/session/{session_id}/history")
            first_latency = time.monotonic() - began
            statuses = [first.status_code]
            for i in range(10):
                if i % 2:
                    statuses.append((await http.post("/new_session")).status_code)
                else:
                    got = await http.get(f"/session/{session_id}/history")
                    statuses.append(got.status_code)
            turn = {"session_id": session_id, "message": "after restart"}
            statuses.append((await http.post("/chat", json=turn, headers=JSON_REPLY)).status_code)
            burst = [http.get(f"/session/{session_id}/history") for _ in range(20)]
            statuses += [r.status_code for r in await asyncio.gather(*burst)]
            history = (await http.get(f"/session/{session_id}/history")).json()["history"]
    finally:
        server.stop()
        redis.process.terminate()
        await asyncio.to_thread(redis.process.wait, 5)
    report(
        record_property,
        "graceful Redis restart (SHUTDOWN) while idle",
        requests_after_restart=len(statuses),
        failed_after_restart=sum(s != 200 for s in statuses),
        first_request_latency_ms=ms(first_latency),
    )
    assert statuses == [200] * len(statuses), statuses
    assert first.json()["history"] == [
        {"input": "before restart", "output": "[n=2] before restart"}
    ]
    assert [t["input"] for t in history] == ["before restart", "after restart"]


async def test_a_turn_start_whose_reply_is_lost_is_retried_as_the_same_start(
    redis_server: RedisServer,
) -> None:
    """A reply lost on the wire makes redis-py send the start again: the retry must
    recognise the lock it took, not report the session busy and leave the lock held."""
    async with RedisProxy(redis_server.port) as proxy:
        client = make_client(proxy.url, max_connections=4)
        try:
            store = stores_on(client, window=4)
            session = await store.sessions.create()
            warm = await store.turns.begin_turn(
                (await store.sessions.create()).id
            )  # scripts loaded
            assert warm.token
            proxy.lose_reply_to(lock_key(session.id).encode())
            start = await store.turns.begin_turn(session.id)
            assert proxy.replies_lost == 1
            assert await client.get(lock_key(session.id)) == start.token
            with pytest.raises(SessionBusy):
                await store.turns.begin_turn(session.id)
            await store.turns.release_lock(session.id, start.token)
            assert await client.get(lock_key(session.id)) is None
        finally:
            await client.aclose()
