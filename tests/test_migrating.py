"""A team coming from the documented FastAPI + Redis + LangChain app: every command of
docs/migrating.md run against a Redis holding sessions that app's own code path wrote
(LangChain's `RedisChatMessageHistory`, replies as `AIMessageChunk`); and the hint a
server started without REDIS_URL gives when such a Redis answers on localhost:6379."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from playwright.async_api import Browser, expect
from redis.asyncio import Redis

from tests.support import REPO, AppServer, FakeGroq, RedisServer, app_env, gql, start_redis, stop
from tests.support.snapshot import snapshot

pytestmark = pytest.mark.slow

GUIDE = REPO / "docs" / "migrating.md"
DOCUMENTED_URL = "redis://localhost:6379/0"
DOCUMENTED_SERVER = "http://127.0.0.1:8000"
BLOCK = re.compile(r"```(sh|python)\n(.*?)```", re.DOTALL)
CONVERSATIONS = [
    [("What is the capital of Portugal?", "Lisbon."), ("And its river?", "The Tagus.")],
    [("Hello", "Hi! How can I help?")],
]


@dataclass
class Documented:
    redis: RedisServer
    session_ids: list[str]


def written_by_the_documented_app(url: str) -> list[str]:
    """Sessions as the documented app writes them: its own history class, the user's
    message, then the streamed reply (an `AIMessageChunk`)."""
    from langchain_community.chat_message_histories import RedisChatMessageHistory

    ids = []
    for turns in CONVERSATIONS:
        session_id = str(uuid.uuid4())
        history = RedisChatMessageHistory(session_id, url=url)
        for question, answer in turns:
            history.add_message(HumanMessage(content=question))
            history.add_message(AIMessageChunk(content=answer))
        ids.append(session_id)
    return ids


@pytest.fixture(scope="module")
def documented(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Documented]:
    server = start_redis(tmp_path_factory.mktemp("documented-redis"))
    try:
        yield Documented(server, written_by_the_documented_app(server.url()))
    finally:
        stop(server.process)


def guide_blocks() -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in BLOCK.findall(GUIDE.read_text())]


def test_the_guide_is_linked_from_the_readme_first_screen() -> None:
    first_screen = "\n".join((REPO / "README.md").read_text().splitlines()[:45])
    assert "docs/migrating.md" in first_screen


async def test_every_command_of_the_guide_works_on_the_documented_apps_redis(
    documented: Documented, start_app: type[AppServer], fake_groq: FakeGroq, tmp_path: Path
) -> None:
    """The blocks in order: `make run` lines start the app (with the variables they
    set), every other shell line runs in bash, the Python runs as written; addresses
    are the test's own (its Redis, its server's port)."""
    redis_url = documented.redis.url()
    session_id = documented.session_ids[0]
    running: AppServer | None = None
    outputs: list[str] = []
    ran = {"make run": 0, "sh": 0, "python": 0}
    try:
        for kind, body in guide_blocks():
            body = body.replace(DOCUMENTED_URL, redis_url)
            if kind == "python":
                code = f"SESSION_ID = {session_id!r}\n" + body
                done = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-c", code],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert done.returncode == 0, done.stderr
                outputs.append(done.stdout)
                ran["python"] += 1
                continue
            if body.strip().endswith("make run"):
                if running is not None:
                    running.stop()
                assignments = body.strip().removesuffix("make run").split()
                env = dict(item.split("=", 1) for item in assignments)
                url = env.pop("REDIS_URL")
                running = start_app(env=app_env(url, fake_groq, **env)).start()
                ran["make run"] += 1
                await adopted(running, len(documented.session_ids), env.get("ADMIN_TOKEN"))
                continue
            if DOCUMENTED_SERVER in body:
                assert running is not None, "a request before the server was started"
                body = body.replace(DOCUMENTED_SERVER, running.url)
            script = body
            done = await asyncio.to_thread(
                subprocess.run,
                ["bash", "-euo", "pipefail", "-c", script],
                capture_output=True,
                text=True,
                timeout=60,
                env={
                    **os.environ,
                    "SESSION_ID": session_id,
                    "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                },
                cwd=tmp_path,
            )
            assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
            outputs.append(done.stdout)
            ran["sh"] += 1
    finally:
        if running is not None:
            running.stop()
    assert ran == {"make run": 2, "sh": 3, "python": 1}
    continued, admin_listed, read_back = outputs[1], outputs[2], outputs[3]
    assert all(f"message_store:{sid}" in outputs[0] for sid in documented.session_ids)
    assert all(sid in continued for sid in documented.session_ids)
    assert '"input":"What is the capital of Portugal?","output":"Lisbon."' in continued
    assert "And tomorrow?" in continued  # the reply streamed
    assert all(sid in admin_listed for sid in documented.session_ids)
    # Their own app reads the session, the turn this server added included.
    assert "('human', 'And tomorrow?')" in read_back
    assert "('AIMessageChunk', 'Lisbon.')" in read_back  # theirs, as they wrote it
    assert "('ai', '[n=6] And tomorrow?')" in read_back


async def adopted(app: AppServer, sessions: int, admin: str | None) -> None:
    """Until the background adoption has listed the documented app's sessions."""
    headers = {"authorization": f"Bearer {admin}"} if admin else {}
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as http:
        for _ in range(100):
            listed = (await http.get("/sessions", headers=headers)).json()["sessions"]
            if len(listed) >= sessions:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the documented app's sessions were not adopted")


# -- the hint at start ----------------------------------------------------------------------


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Hinted:
    app: AppServer
    documented: Documented
    before: dict[str, tuple[str, Any, bool]]
    connections_before: int


@pytest.fixture(scope="module")
async def hinted(
    tmp_path_factory: pytest.TempPathFactory, start_app: type[AppServer]
) -> AsyncIterator[Hinted]:
    """The documented app's Redis on localhost:6379, and this server started beside it
    without REDIS_URL (its own embedded Redis)."""
    if port_taken(6379):
        pytest.skip("something listens on 127.0.0.1:6379 already")
    server = start_redis(tmp_path_factory.mktemp("documented-6379"), 6379)
    try:
        ids = written_by_the_documented_app(server.url())
        watcher = Redis.from_url(server.url())  # one connection for every look
        before = await snapshot(watcher)
        connections = int((await watcher.info("stats"))["total_connections_received"])
        data_dir = tmp_path_factory.mktemp("embedded")
        env = app_env(None, None, DATA_DIR=str(data_dir))
        app = start_app(env=env).start()
        yield Hinted(app, Documented(server, ids), before, connections)
        app.stop()
        await watcher.aclose()
    finally:
        stop(server.process)


async def test_a_server_without_redis_url_says_where_the_documented_chats_are(
    hinted: Hinted,
) -> None:
    for _ in range(100):  # the look runs in the background at start
        if "LangChain chat histories" in hinted.app.output():
            break
        await asyncio.sleep(0.05)
    lines = [line for line in hinted.app.output().splitlines() if "chat histories" in line]
    assert len(lines) == 1, lines
    assert "holds 2 LangChain chat histories" in lines[0]
    assert "REDIS_URL=redis://localhost:6379/0" in lines[0]
    async with httpx.AsyncClient(base_url=hinted.app.url, timeout=10) as http:
        body = await gql(http, "{ serverInfo { outsideHistories { count more redisUrl } } }")
        listed = (await http.get("/sessions")).json()["sessions"]
    assert body["data"] == {
        "serverInfo": {
            "outsideHistories": {"count": 2, "more": False, "redisUrl": "redis://localhost:6379/0"}
        }
    }
    assert listed == []  # its own Redis: the documented chats are not served
    # It only looked: one connection, nothing written.
    watcher = Redis.from_url(hinted.documented.redis.url())
    try:
        connections = int((await watcher.info("stats"))["total_connections_received"])
        assert connections - hinted.connections_before == 2  # the look, and this watcher
        assert await snapshot(watcher) == hinted.before
    finally:
        await watcher.aclose()


@pytest.mark.browser
async def test_the_page_shows_the_hint_while_its_list_is_empty(
    hinted: Hinted,
    browser: Browser,
) -> None:
    context = await browser.new_context(base_url=hinted.app.url)
    page = await context.new_page()
    try:
        await page.goto("/")
        hint = page.locator("#sessions-elsewhere")
        await expect(hint).to_be_visible(timeout=15_000)
        await expect(hint).to_contain_text("holds 2 chats of another LangChain app")
        await expect(hint).to_contain_text("REDIS_URL=redis://localhost:6379/0")
        # Once the page has a chat of its own, the hint goes.
        await page.get_by_role("button", name="New chat").click()
        await page.locator("#input").fill("hello")
        await page.keyboard.press("Enter")
        await expect(page.locator(".sessions li")).to_have_count(1, timeout=15_000)
        await expect(hint).to_be_hidden()
    finally:
        await context.close()
