"""The model's failure modes end in LLM_ERROR within bounds, or are ridden out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import AppServer, FakeGroq, RedisServer, app_env, new_session


async def history_of(http: httpx.AsyncClient, session_id: str) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = (await http.get(f"/session/{session_id}/history")).json()[
        "history"
    ]
    return turns


async def test_a_429_is_retried_after_its_retry_after(
    client: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(client)
    message = "!status=429 !retry_after=1 !fail_times=1 patience"
    began = time.monotonic()
    before = fake_groq.requests()["count"]
    response = await client.post("/chat", json={"session_id": session_id, "message": message})
    elapsed = time.monotonic() - began
    assert response.status_code == 200
    assert response.text == f"[n=2] {message}"
    assert fake_groq.requests()["count"] == before + 2  # type: ignore[operator]
    assert elapsed >= 0.9, "Retry-After was not honoured"


async def test_retries_are_bounded_then_llm_error(
    client: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(client)
    before = fake_groq.requests()["count"]
    response = await client.post(
        "/chat", json={"session_id": session_id, "message": "!status=429 !retry_after=0 never"}
    )
    assert response.status_code == 502
    assert fake_groq.requests()["count"] == before + 3  # type: ignore[operator]  # 1 + 2 retries
    assert await history_of(client, session_id) == []


async def test_a_provider_that_refuses_connections_fails_fast(
    start_app: type[AppServer], redis_server: RedisServer
) -> None:
    env = app_env(redis_server.url(0), None, GROQ_API_KEY="k", GROQ_API_BASE="http://127.0.0.1:9")
    server = start_app(env=env).start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        session_id = await new_session(http)
        began = time.monotonic()
        response = await http.post("/chat", json={"session_id": session_id, "message": "hi"})
        assert response.status_code == 502
        assert time.monotonic() - began < 10
        assert await history_of(http, session_id) == []
    server.stop()


@pytest.fixture(scope="module")
def bounded_app(
    start_app: type[AppServer], redis_server: RedisServer, fake_groq: FakeGroq
) -> AppServer:
    env = app_env(
        redis_server.url(0),
        fake_groq,
        LLM_TIMEOUT_SECONDS="1",
        LLM_TURN_TIMEOUT_SECONDS="1.5",
        LLM_MODEL="groq:primary-model",
        LLM_FALLBACK_MODEL="groq:backup-model",
        LLM_MAX_RETRIES="0",
    )
    return start_app(env=env).start()


@pytest.fixture
async def bounded(bounded_app: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=bounded_app.url, timeout=30) as http:
        yield http


async def test_a_reply_longer_than_the_turn_bound_fails_mid_stream(
    bounded: httpx.AsyncClient,
) -> None:
    session_id = await new_session(bounded)
    began = time.monotonic()
    response = await bounded.post(
        "/chat",
        json={"session_id": session_id, "message": "!delay=0.4 a b c d e f g h"},
        headers={"accept": "text/event-stream"},
    )
    assert response.status_code == 200
    assert response.text.startswith("event: token")
    assert '"code": "LLM_ERROR"' in response.text
    assert time.monotonic() - began < 4
    assert await history_of(bounded, session_id) == []


async def test_the_fallback_takes_over_when_the_primary_fails_first(
    bounded: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await new_session(bounded)
    message = "!fail_model=primary-model rescued"
    response = await bounded.post("/chat", json={"session_id": session_id, "message": message})
    assert response.status_code == 200
    assert response.text == f"[n=2] {message}"
    last = fake_groq.requests()["last"]
    assert isinstance(last, dict) and last["model"] == "backup-model"
    assert await history_of(bounded, session_id) == [{"input": message, "output": response.text}]


async def test_no_fallback_once_the_primary_has_started(bounded: httpx.AsyncClient) -> None:
    session_id = await new_session(bounded)
    response = await bounded.post(
        "/chat",
        json={"session_id": session_id, "message": "!cut=2 a b c d"},
        headers={"accept": "text/event-stream"},
    )
    assert '"code": "LLM_ERROR"' in response.text
    assert await history_of(bounded, session_id) == []


async def test_when_every_model_fails_the_turn_is_llm_error(bounded: httpx.AsyncClient) -> None:
    session_id = await new_session(bounded)
    response = await bounded.post(
        "/chat", json={"session_id": session_id, "message": "!status=500 both down"}
    )
    assert response.status_code == 502
    assert await history_of(bounded, session_id) == []
