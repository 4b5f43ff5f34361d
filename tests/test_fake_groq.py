"""The fake Groq server (tests/support/fake_groq.py), driven through the real ChatGroq client."""

from __future__ import annotations

import asyncio
import queue
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import groq
import httpx
import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_groq import ChatGroq

FAKE = Path(__file__).parent / "support" / "fake_groq.py"
READY_TIMEOUT = 30.0
MODEL = "llama-3.1-8b-instant"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[str]:
    """Base URL of a fake Groq server run as a subprocess for this module."""
    with subprocess.Popen(
        [sys.executable, str(FAKE)], cwd=FAKE.parent.parent, stdout=subprocess.PIPE, text=True
    ) as proc:
        stdout = proc.stdout
        assert stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            try:
                line = lines.get(timeout=READY_TIMEOUT)
            except queue.Empty:
                line = ""
            word, _, port = line.partition(" ")
            if word != "READY":
                pytest.fail(f"fake_groq did not start: {line!r}, exit code {proc.poll()}")
            yield f"http://127.0.0.1:{int(port)}"
        finally:
            proc.terminate()
            try:
                returncode = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        assert returncode == 0, f"fake_groq exited with {returncode} on SIGTERM"


@asynccontextmanager
async def chat_groq(base_url: str | None, **kwargs: Any) -> AsyncIterator[ChatGroq]:
    """A real ChatGroq whose async HTTP client is closed on exit (no ResourceWarnings)."""
    async with httpx.AsyncClient() as http:
        if base_url is not None:
            kwargs["base_url"] = base_url
        yield ChatGroq(model=MODEL, api_key="test", max_retries=0, http_async_client=http, **kwargs)


def conversation(text: str | list[str | dict[str, Any]]) -> list[BaseMessage]:
    return [SystemMessage("You are a test."), HumanMessage(text)]


async def stream(
    base_url: str | None, text: str, into: list[tuple[float, AIMessageChunk]] | None = None
) -> list[tuple[float, AIMessageChunk]]:
    """(arrival time, chunk) for each chunk ChatGroq.astream yields; `into` keeps them on error."""
    got = [] if into is None else into
    async with chat_groq(base_url) as llm:
        async for chunk in llm.astream(conversation(text)):
            assert isinstance(chunk, AIMessageChunk)
            got.append((time.monotonic(), chunk))
    return got


def contents(chunks: list[tuple[float, AIMessageChunk]]) -> list[str]:
    return [chunk.text for _, chunk in chunks if chunk.text]


def test_stream_echoes_last_user_message(fake_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_BASE", fake_server)  # what the app under test relies on
    chunks = asyncio.run(stream(None, "hello   there"))
    assert len(chunks) > 1
    assert contents(chunks) == ["[n=2]", " hello", " there"]
    assert "".join(chunk.text for _, chunk in chunks) == "[n=2] hello there"
    message = chunks[0][1]
    for _, chunk in chunks[1:]:
        message += chunk
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == 3


def test_invoke_non_streaming_with_content_parts(fake_server: str) -> None:
    async def invoke() -> AIMessage:
        parts: list[str | dict[str, Any]] = [
            {"type": "text", "text": "hi"},
            {"type": "text", "text": "you !tokens=2"},
        ]
        async with chat_groq(fake_server) as llm:
            return await llm.ainvoke(conversation(parts))

    message = asyncio.run(invoke())
    assert message.content == "[n=2] t0 t1"
    assert message.response_metadata["finish_reason"] == "stop"


def test_status_500_raises(fake_server: str) -> None:
    with pytest.raises(groq.InternalServerError) as raised:
        asyncio.run(stream(fake_server, "boom !status=500"))
    assert raised.value.status_code == 500


def test_status_429_carries_retry_after(fake_server: str) -> None:
    with pytest.raises(groq.RateLimitError) as raised:
        asyncio.run(stream(fake_server, "slow down !status=429 !retry_after=2"))
    assert raised.value.response.headers["retry-after"] == "2"


def test_cut_drops_the_stream_midway(fake_server: str) -> None:
    got: list[tuple[float, AIMessageChunk]] = []
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        asyncio.run(stream(fake_server, "a b c d !cut=2", into=got))
    assert contents(got) == ["[n=2]", " a"]
    assert all("finish_reason" not in chunk.response_metadata for _, chunk in got)


def test_delay_spreads_chunks_over_time(fake_server: str) -> None:
    chunks = asyncio.run(stream(fake_server, "one two !delay=0.2"))
    timed = [(at, chunk.text) for at, chunk in chunks if chunk.text]
    assert [text for _, text in timed] == ["[n=2]", " one", " two", " !delay=0.2"]
    assert timed[-1][0] - timed[0][0] >= 0.3


def test_hang_times_out(fake_server: str) -> None:
    async def hang() -> None:
        async with chat_groq(fake_server, timeout=0.3) as llm:
            await llm.ainvoke(conversation("!hang"))

    with pytest.raises(groq.APITimeoutError):
        asyncio.run(hang())


def test_requests_are_recorded_and_reset(fake_server: str) -> None:
    assert httpx.post(f"{fake_server}/reset").status_code == 200
    asyncio.run(stream(fake_server, "remember me"))
    recorded = httpx.get(f"{fake_server}/requests").json()
    assert recorded["count"] == 1
    last = recorded["last"]
    assert last["model"] == MODEL
    assert last["stream"] is True
    assert last["messages"] == [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": "remember me"},
    ]
    assert recorded["open"] == 0 and recorded["max_open"] == 1 and recorded["gone"] == 0
    assert recorded["recent"] == [last]
    httpx.post(f"{fake_server}/reset")
    after = httpx.get(f"{fake_server}/requests").json()
    assert after == {
        "count": 0,
        "last": None,
        "recent": [],
        "open": 0,
        "max_open": 0,
        "gone": 0,
    }
