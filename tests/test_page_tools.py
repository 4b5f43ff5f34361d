"""Rich turns in the chat page, in headless Chromium against the app on a real uvicorn: a
reply's reasoning streams into a collapsed "Thinking" block above its answer (and shows
so again from the history).

The browser fixtures are in tests/conftest.py, the helpers in tests/support/page.py. The
model is the fake Groq server: `!reason=K` streams K pieces of reasoning (" r0", " r1",
...) before the answer. Every wait is bounded; no wall-clock duration is asserted.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.support import AppServer, gql
from tests.support.page import guest_headers, send, start_chat, watch_reply

pytestmark = pytest.mark.browser

MESSAGES = """
query($s: ID!) {
  session(id: $s) {
    activeTurn { turnId }
    messages { id role content reasoning }
  }
}
"""


async def stored(server: AppServer, tab: Page, session_id: str) -> dict[str, Any]:
    """The chat as stored (no turn running), as the tab's guest."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        body = await gql(http, MESSAGES, headers=await guest_headers(tab), s=session_id)
    assert "errors" not in body, body
    session: dict[str, Any] = body["data"]["session"]  # type: ignore[index]
    assert session["activeTurn"] is None
    return session


async def test_reasoning_streams_into_a_collapsed_thinking_block(
    page: Page, app: AppServer
) -> None:
    session_id = await start_chat(page, "Thoughtful")
    await send(page, "!reason=3 !delay=0.3 think first")
    reply = page.locator(".msg.assistant").last
    thinking = reply.locator("details.thinking")
    # It streams: the block is there while the reply is, before the answer's first word.
    await expect(reply).to_have_class("msg assistant streaming")
    await expect(thinking.locator("summary")).to_have_text("Thinking…")
    await expect(thinking.locator(".thinking-text")).to_contain_text(" r0")
    answer = "[n=2] !reason=3 !delay=0.3 think first"
    await watch_reply(page, answer)
    await expect(thinking.locator("summary")).to_have_text("Thinking")
    assert await thinking.locator(".thinking-text").text_content() == " r0 r1 r2"
    await expect(thinking).not_to_have_attribute("open", "")
    await expect(thinking.locator(".thinking-text")).to_be_hidden()  # collapsed
    await expect(reply.locator(".bubble")).to_have_text(answer)  # never in the answer
    # The block is above the answer and opens with the keyboard.
    order = await reply.evaluate("r => Array.from(r.children, c => c.className)")
    assert order.index("thinking") < order.index("bubble"), order
    await thinking.locator("summary").focus()
    await page.keyboard.press("Enter")
    await expect(thinking.locator(".thinking-text")).to_be_visible()

    # The history shows the same block, collapsed.
    messages = (await stored(app, page, session_id))["messages"]
    assert [(m["content"], m["reasoning"]) for m in messages] == [
        ("!reason=3 !delay=0.3 think first", None),
        (answer, " r0 r1 r2"),
    ]
    await page.reload()
    thinking = page.locator(".msg.assistant details.thinking")
    await expect(thinking).to_have_count(1)
    await expect(thinking.locator("summary")).to_have_text("Thinking")
    assert await thinking.locator(".thinking-text").text_content() == " r0 r1 r2"
    await expect(thinking.locator(".thinking-text")).to_be_hidden()
    await expect(page.locator(".msg.assistant .bubble")).to_have_text(answer)
    await expect(page.locator(".msg.user .thinking")).to_have_count(0)
