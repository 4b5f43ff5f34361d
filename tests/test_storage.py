"""Where sessions live: the embedded Redis by default, REDIS_URL otherwise, and outages."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from resolvers.services.model import OFFLINE_REPLY
from tests.support import AppServer, FakeGroq, app_env, error_codes, gql, new_session, start_redis


@pytest.mark.slow
async def test_embedded_redis_keeps_history_across_a_restart(
    start_app: type[AppServer], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = app_env(None, None, DATA_DIR=str(data_dir), OFFLINE_TOKEN_DELAY_SECONDS="0")
    first = start_app(env=env).start()
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as http:
        session_id = await new_session(http)
        reply = await http.post("/chat", json={"session_id": session_id, "message": "hello"})
        assert reply.text == OFFLINE_REPLY
    first.stop()
    # uvicorn re-raises SIGTERM after its graceful shutdown.
    assert first.process is not None and first.process.returncode in (0, -signal.SIGTERM)
    assert "stopped the embedded redis-server" in first.output()
    assert (data_dir / "appendonlydir").exists() or list(data_dir.glob("*.aof"))
    assert not (data_dir / "redis.sock").exists(), "the embedded server was not stopped"

    second = start_app(env=env).start()
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
        history = (await http.get(f"/session/{session_id}/history")).json()["history"]
        assert history == [{"input": "hello", "output": OFFLINE_REPLY}]
        assert (await http.get("/sessions")).json()["sessions"] == [session_id]
    second.stop()
    assert "embedded redis-server" in second.output()
    # The start log names the socket, so an operator can reach the data with redis-cli.
    socket_path = data_dir.resolve() / "redis.sock"
    assert f"redis-cli -s {socket_path}" in first.output()


@pytest.mark.slow
async def test_redis_outage_is_503_and_unavailable_then_recovers(
    make_app: Callable[..., AppServer],
    start_app: type[AppServer],
    fake_groq: FakeGroq,
    tmp_path: Path,
) -> None:
    redis = start_redis(tmp_path / "redis")
    server = make_app(redis_url=redis.url())
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        session_id = await new_session(http)
        redis.process.send_signal(signal.SIGKILL)
        redis.process.wait(5)

        began = time.monotonic()
        down = await http.post("/new_session")
        assert down.status_code == 503 and down.json()["detail"]
        assert time.monotonic() - began < 5
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200
        chat = await http.post("/chat", json={"session_id": session_id, "message": "hi"})
        assert chat.status_code == 503
        body = await gql(http, "mutation { createSession { id } }")
        assert error_codes(body) == ["UNAVAILABLE"]
        assert "Traceback" not in str(body)

        redis = start_redis(tmp_path / "redis", redis.port)
        for _ in range(50):
            if (await http.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await http.post("/new_session")).status_code == 200
    server.stop()
    redis.process.terminate()
    redis.process.wait(5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LLM_TIMEOUT_SECONDS", "-1"),
        ("HISTORY_WINDOW", "many"),
        ("REDIS_URL", "http://127.0.0.1:1"),
        ("LLM_MODEL", "no-provider"),
        ("AUTH_ADMIN_CLAIM", "guest"),
    ],
)
def test_impossible_configuration_stops_the_start_naming_the_variable(
    start_app: type[AppServer], variable: str, value: str
) -> None:
    server = start_app(env=app_env(None, None, **{variable: value}))
    with pytest.raises(RuntimeError):
        server.start()
    assert variable in server.output()
