"""Several processes behave as one server: two apps on one Redis, and uvicorn --workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import (
    LOOPBACK,
    REPO,
    AppServer,
    FakeGroq,
    app_env,
    free_port,
    new_session,
    stop,
    wait_for_port,
)

pytestmark = pytest.mark.slow


async def test_two_app_processes_share_sessions_order_and_history(
    start_app: type[AppServer], fresh_db: Callable[[], str], fake_groq: FakeGroq
) -> None:
    env = app_env(fresh_db(), fake_groq)
    one, two = start_app(env=env).start(), start_app(env=env).start()
    async with (
        httpx.AsyncClient(base_url=one.url, timeout=30) as a,
        httpx.AsyncClient(base_url=two.url, timeout=30) as b,
    ):
        created = []
        for client in (a, b, a, b):
            created.append(await new_session(client))
        # A turn through one process moves the session first for both.
        await b.post("/chat", json={"session_id": created[0], "message": "hello"})
        expected = [created[0], created[3], created[2], created[1]]
        assert (await a.get("/sessions")).json()["sessions"][:4] == expected
        assert (await b.get("/sessions")).json()["sessions"][:4] == expected
        history = (await a.get(f"/session/{created[0]}/history")).json()["history"]
        assert history == [{"input": "hello", "output": "[n=2] hello"}]
    one.stop()
    two.stop()


async def test_uvicorn_workers_share_the_embedded_redis(tmp_path: Path) -> None:
    port = free_port()
    env = app_env(None, None, DATA_DIR=str(tmp_path / "data"), OFFLINE_TOKEN_DELAY_SECONDS="0")
    log = (tmp_path / "workers.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "main:app", "--host", LOOPBACK, "--port", str(port),
         "--workers", "2", "--log-level", "info"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(port, process)
        async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{port}", timeout=30) as http:
            for _ in range(100):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1)  # both workers through their start
            created = await asyncio.gather(*(new_session(http) for _ in range(40)))
            listed = (await http.get("/sessions")).json()["sessions"]
            assert set(created) <= set(listed)
            replies = await asyncio.gather(
                *(http.post("/chat", json={"session_id": s, "message": "hi"}) for s in created[:10])
            )
            assert all(r.status_code == 200 for r in replies)
    finally:
        stop(process)
        log.close()
    output = (tmp_path / "workers.log").read_text()
    assert output.count("starting the embedded redis-server") == 1, output
    assert os.path.exists(tmp_path / "data" / "appendonlydir") or list(
        (tmp_path / "data").glob("*.aof")
    )
