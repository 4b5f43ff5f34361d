"""Prometheus metrics at /metrics, scraped and parsed with the Prometheus text parser
while turns run on a server of two uvicorn workers: every scrape, whichever worker
answers it, gives the sums over both."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import AppServer, FakeGroq, new_session
from tests.support.servers import app_env

TURNS = 20
PIECES = 6  # `!tokens=5`: the fake's "[n=N]" piece and five more


@pytest.fixture
def two_workers(
    start_app: type[AppServer], fresh_db: Callable[[], str], fake_groq: FakeGroq, tmp_path: Path
) -> Iterator[tuple[AppServer, Path]]:
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = app_env(fresh_db(), fake_groq, PROMETHEUS_MULTIPROC_DIR=str(folder))
    server = start_app(env=env, workers=2).start()
    yield server, folder
    server.stop()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # A new connection each time, so either worker may answer.
    async with httpx.AsyncClient(
        base_url=url, limits=httpx.Limits(max_keepalive_connections=0)
    ) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


@pytest.mark.slow  # uvicorn with two workers: three processes
async def test_metrics_sum_both_workers_under_load(two_workers: tuple[AppServer, Path]) -> None:
    server, folder = two_workers
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
        sessions = [await new_session(http) for _ in range(TURNS)]
        failing = await new_session(http)

        async def turn(session_id: str, message: str) -> int:
            body = {"session_id": session_id, "message": message}
            return (await http.post("/chat", json=body)).status_code

        async def scrape_meanwhile() -> int:
            scraped = 0
            for _ in range(20):  # parsed while turns run
                await scrape(server.url)
                scraped += 1
                await asyncio.sleep(0.02)
            return scraped

        results = await asyncio.gather(
            *(turn(s, "!tokens=5 !delay=0.01 go") for s in sessions),
            turn(failing, "!status=500 fails"),
            scrape_meanwhile(),
        )
    assert results[: TURNS + 1] == [200] * TURNS + [502]
    # Both workers wrote metrics: their files are in the shared folder.
    pids = {path.stem.rsplit("_", 1)[-1] for path in folder.glob("counter_*.db")}
    assert len(pids) == 2, sorted(folder.iterdir())
    for _ in range(4):  # whichever worker answers, the same sums
        found = await scrape(server.url)
        assert found[("chat_turns_total", (("outcome", "COMPLETE"),))] == TURNS
        assert found[("chat_turns_total", (("outcome", "LLM_ERROR"),))] == 1
        assert found[("chat_tokens_streamed_total", ())] == TURNS * PIECES
        assert found[("chat_turn_duration_seconds_count", ())] == TURNS + 1
        assert found[("chat_turn_first_token_seconds_count", ())] == TURNS
        # A step's time observed once per step taken: each turn began, the stored ones
        # committed (the failing turn began too, and stored nothing).
        assert found[("chat_redis_seconds_count", (("step", "commit"),))] == TURNS
        assert found[("chat_redis_seconds_count", (("step", "begin"),))] == TURNS + 1
        assert found[("chat_open_subscriptions", ())] == 0
        assert found[("chat_open_websockets", ())] == 0
        # No label names a session or a user.
        labels = {name for (_, pairs) in found for name, _ in pairs}
        assert labels <= {"outcome", "step", "limit", "le"}, labels


async def test_rate_limit_refusals_are_counted(
    start_app: type[AppServer], fresh_db: Callable[[], str], fake_groq: FakeGroq, tmp_path: Path
) -> None:
    env = app_env(
        fresh_db(),
        fake_groq,
        RATE_LIMIT_EXEMPT="",
        RATE_LIMIT_TURNS_PER_MINUTE="1",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    )
    server = start_app(env=env).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            session_id = await new_session(http)
            body = {"session_id": session_id, "message": "one"}
            assert (await http.post("/chat", json=body)).status_code == 200
            assert (await http.post("/chat", json=body)).status_code == 429
        found = await scrape(server.url)
        assert found[("chat_rate_limited_total", (("limit", "turns"),))] == 1
    finally:
        server.stop()


def test_the_dashboard_asks_only_for_metrics_the_server_has() -> None:
    import json
    import re

    from resolvers.services import metrics

    dashboard = json.loads(
        (Path(__file__).parent.parent / "docs" / "grafana-dashboard.json").read_text()
    )
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(chat_[a-z_]+?)(?:_bucket|_count|_sum)?\b", target["expr"])
    }
    served = {
        metric.describe()[0].name
        for metric in vars(metrics).values()
        if hasattr(metric, "describe") and hasattr(metric, "_name")
    }
    served |= {name + "_total" for name in served}
    assert asked and asked <= served, asked - served
