"""LangChain's own tracing: with LANGSMITH_TRACING=true a turn is a LangSmith run, sent
to a collector on loopback that stands in for LangSmith's API (the Groq fast path steps
aside while tracing is on, so LangChain's callbacks see the model call)."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.support import AppServer, FakeGroq, new_session
from tests.support.servers import app_env


class Collector(http.server.ThreadingHTTPServer):
    """Takes whatever the LangSmith SDK posts (runs in batches or multipart) and keeps it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[tuple[str, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def received(self) -> bytes:
        return b"\n".join(body for _, body in list(self.posts))


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Collector

    def do_GET(self) -> None:
        self.send_response(404)  # no /info: the SDK uses its defaults
        self.end_headers()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.posts.append((self.path, body))
        self.send_response(202)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_PATCH(self) -> None:
        self.do_POST()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_a_turn_is_a_langsmith_run(
    start_app: type[AppServer], shared_redis_url: str, fake_groq: FakeGroq, collector: Collector
) -> None:
    env = app_env(
        shared_redis_url,
        fake_groq,
        LANGSMITH_TRACING="true",
        LANGSMITH_ENDPOINT=collector.url,
        LANGSMITH_API_KEY="test-langsmith-key",
        LANGSMITH_PROJECT="chat-server-test",
    )
    server = start_app(env=env).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            session_id = await new_session(http)
            body = {"session_id": session_id, "message": "traced turn"}
            reply = await http.post("/chat", json=body)
            assert reply.status_code == 200 and reply.text
        for _ in range(100):  # the SDK sends from a background thread, in batches
            if b"ChatGroq" in collector.received() and b"traced turn" in collector.received():
                break
            await asyncio.sleep(0.1)
    finally:
        server.stop()
    sent = collector.received()
    assert b"ChatGroq" in sent, [path for path, _ in collector.posts]
    assert b'"run_type":"llm"' in sent.replace(b": ", b":")
    assert b"traced turn" in sent  # the prompt is in the run's inputs
    assert any(path.startswith("/runs") for path, _ in collector.posts)
