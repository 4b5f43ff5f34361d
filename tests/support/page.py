"""Helpers of the browser tests (headless Chromium through Playwright): where Chromium
is, the steps a user takes in the chat page, and what the tests watch of a tab. The
fixtures (`browser`, `page`, `new_tab`) are in tests/conftest.py.

The model is the fake Groq server: its reply to a message is "[n=K]" and the message's
words, K the number of messages it was sent; `!delay=S !tokens=K` makes a reply of
K + 1 pieces ("[n=2]", " t0", ...), one every S seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from playwright.async_api import Page, Request, ViewportSize, WebSocket, expect

from tests.support.servers import FakeGroq

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT: ViewportSize = {"width": 1200, "height": 800}
UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

# Opens a tab: `new_tab(server or base URL, *, init_script=None, context=None)`.
NewTab = Callable[..., Awaitable[Page]]


async def guest_headers(page: Page) -> dict[str, str]:
    """The Authorization header of the guest the page signed in as."""
    token = await page.evaluate("localStorage.getItem('chat.guestToken')")
    assert isinstance(token, str) and token
    return {"authorization": f"Bearer {token}"}


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def start_chat(page: Page, title: str) -> str:
    """Opens the page, starts a chat with this title; returns its session id."""
    await page.goto("/")
    await page.fill("#new-title", title)
    await page.click("#new-chat")
    await expect(page.locator("#chat-title")).to_have_text(title)
    await expect(page.locator("#sessions a", has_text=title)).to_be_visible()
    return page.url.rsplit("/", 1)[-1]


async def send(page: Page, text: str) -> None:
    await page.fill("#input", text)
    await page.press("#input", "Enter")


def reply_of(tokens: int) -> str:
    """The fake model's reply to a message with `!tokens=K` (system prompt + 1 message)."""
    return "[n=2]" + "".join(f" t{k}" for k in range(tokens))


def piece(seq: int) -> str:
    """The fake model's piece number `seq` (1-based) of a `!tokens=K` reply."""
    return "[n=2]" if seq == 1 else f" t{seq - 2}"


def model_runs(fake: FakeGroq) -> int:
    return int(str(fake.requests()["count"]))


def record_subscriptions(tab: Page) -> list[dict[str, Any]]:
    """The `subscribe` messages `tab` sends over its GraphQL sockets from now on."""
    sent: list[dict[str, Any]] = []

    def on_frame(payload: str | bytes) -> None:
        if isinstance(payload, str):
            message = json.loads(payload)
            if message.get("type") == "subscribe":
                sent.append(message["payload"])

    def on_socket(ws: WebSocket) -> None:
        ws.on("framesent", on_frame)

    tab.on("websocket", on_socket)
    return sent


def named(subscriptions: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """The variables of the subscriptions whose document selects `field`."""
    return [s["variables"] for s in subscriptions if f" {field}(" in s["query"]]


async def watch_reply(tab: Page, expected: str, *, seconds: float = 30) -> list[str]:
    """Samples the last reply's text until it shows `expected` and no longer streams;
    every sample must be a beginning of `expected` (no piece shown twice, none left
    out). Returns the samples."""
    reply = tab.locator(".msg.assistant .bubble").last
    samples: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await reply.count():
            text = await reply.inner_text()
            samples.append(text)
            assert expected.startswith(text), f"not a beginning of the reply: {text!r}"
            if text == expected and not await tab.locator(".msg.assistant.streaming").count():
                return samples
        await asyncio.sleep(0.05)
    raise AssertionError(f"the reply did not end as {expected!r}: last {samples[-1:]!r}")


def record_graphql(tab: Page) -> list[dict[str, Any]]:
    """The bodies of the GraphQL requests `tab` sends over HTTP from now on."""
    sent: list[dict[str, Any]] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/graphql") and request.method == "POST":
            sent.append(json.loads(request.post_data or "{}"))

    tab.on("request", on_request)
    return sent


def operations(sent: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """The variables of the requests whose document selects `field`."""
    return [s["variables"] for s in sent if re.search(rf"\b{field}\(", s["query"])]
