"""Log lines as operators read them: LOG_FORMAT=json gives one JSON object a line, and
every line of a request, and of the turn it starts, carries the request's id, which the
response echoes (taken from X-Request-ID, or made)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from tests.support import AppServer, FakeGroq, new_session
from tests.support.servers import app_env
from tests.support.ws_client import TRANSPORT_WS, graphql_socket


@pytest.fixture(scope="module")
def json_app(
    start_app: type[AppServer], shared_redis_url: str, fake_groq: FakeGroq
) -> Iterator[AppServer]:
    env = app_env(shared_redis_url, fake_groq, LOG_FORMAT="json")
    server = start_app(env=env, uvicorn_log_level="info").start()
    yield server
    server.stop()


def lines_of(server: AppServer) -> list[dict[str, Any]]:
    """Every line the server wrote, each parsed as JSON (a line that is not fails)."""
    return [json.loads(line) for line in server.output().splitlines() if line.strip()]


async def wait_for_line(server: AppServer, text: str) -> list[dict[str, Any]]:
    for _ in range(100):
        found = [line for line in lines_of(server) if text in line["message"]]
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no log line with {text!r}")


async def test_every_line_is_json_and_a_request_s_lines_carry_its_id(json_app: AppServer) -> None:
    async with httpx.AsyncClient(base_url=json_app.url) as http:
        session_id = await new_session(http)
        body = {"session_id": session_id, "message": "!status=500 fails"}
        failed = await http.post("/chat", json=body, headers={"x-request-id": "req-42.a"})
        assert failed.status_code == 502
        assert failed.headers["x-request-id"] == "req-42.a"
    # The turn's own line (the model's failure) and the access line carry the id.
    access = await wait_for_line(json_app, '"POST /chat HTTP/1.1" 502')
    assert [line["request_id"] for line in access] == ["req-42.a"]
    assert access[0]["method"] == "POST" and access[0]["status"] == 502
    turn_lines = [line for line in lines_of(json_app) if line["request_id"] == "req-42.a"]
    assert any(line["logger"].startswith("resolvers") for line in turn_lines), turn_lines
    for line in lines_of(json_app):
        assert {"time", "level", "logger", "message", "request_id"} <= line.keys()


async def test_an_id_is_made_when_none_or_a_bad_one_is_given(json_app: AppServer) -> None:
    async with httpx.AsyncClient(base_url=json_app.url) as http:
        made = (await http.get("/healthz")).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
        bad = await http.get("/healthz", headers={"x-request-id": "two words"})
        assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["x-request-id"])
        assert (await http.get("/healthz")).headers["x-request-id"] != made
        refused = await http.get("/", headers={"host": "evil.example"})
        assert refused.status_code == 400 and refused.headers["x-request-id"]


async def test_a_websocket_and_the_turns_it_runs_carry_its_id(json_app: AppServer) -> None:
    async with httpx.AsyncClient(base_url=json_app.url) as http:
        session_id = await new_session(http)
    headers = {"x-request-id": "socket-7"}
    async with websockets.connect(
        json_app.ws_url, subprotocols=[Subprotocol(TRANSPORT_WS)], additional_headers=headers
    ) as ws:
        assert ws.response is not None
        assert ws.response.headers["x-request-id"] == "socket-7"
    async with graphql_socket(json_app.ws_url) as ws:
        got = await ws.chat(session_id, "!status=503 fails over a socket")
        assert got.codes == ["LLM_ERROR"]
    failed = await wait_for_line(json_app, "HTTP 503")
    ids = {line["request_id"] for line in failed}
    assert ids and "-" not in ids, failed


async def test_text_lines_carry_the_id_too(
    start_app: type[AppServer], shared_redis_url: str, fake_groq: FakeGroq
) -> None:
    server = start_app(env=app_env(shared_redis_url, fake_groq), uvicorn_log_level="info").start()
    async with httpx.AsyncClient(base_url=server.url) as http:
        await http.get("/healthz", headers={"x-request-id": "plain-1"})
    for _ in range(100):
        if "[plain-1]" in server.output():
            break
        await asyncio.sleep(0.05)
    server.stop()
    lines = [line for line in server.output().splitlines() if "plain-1" in line]
    assert lines and all("[plain-1]" in line and "GET /healthz" in line for line in lines)
