"""The chat page in a real (headless Chromium) browser, against the app on a real uvicorn.

Screenshots land in tests/artifacts/ (ignored by git) for review.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, ViewportSize, expect

from resolvers.services.model import OFFLINE_REPLY
from tests.support import AppServer, FakeGroq, RedisServer, app_env, new_session
from tests.support.page import guest_headers, send, shot, start_chat

pytestmark = pytest.mark.browser


async def test_a_reply_streams_in_and_is_there_after_a_reload(page: Page) -> None:
    await start_chat(page, "Streaming")
    await expect(page.locator("#model")).to_have_text("groq:llama-3.1-8b-instant")
    await send(page, "!delay=0.15 alpha beta gamma delta epsilon")
    reply = page.locator(".msg.assistant .bubble").last
    await expect(page.locator("#input")).to_be_disabled()
    lengths: list[int] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lengths.append(len(await reply.inner_text()))
        if await page.locator(".msg.assistant.streaming").count() == 0:
            break
        await asyncio.sleep(0.05)
    growing = sorted(set(lengths))
    assert len(growing) >= 4, f"the reply did not grow over time: {lengths}"
    expected = "[n=2] !delay=0.15 alpha beta gamma delta epsilon"
    await expect(reply).to_have_text(expected)
    await expect(page.locator("#input")).to_be_enabled()
    await expect(page.locator(".msg.assistant .meta").last).not_to_be_empty()
    await shot(page, "desktop-light")

    await page.reload()
    await expect(page.locator(".msg.user .bubble")).to_have_text(
        ["!delay=0.15 alpha beta gamma delta epsilon"]
    )
    await expect(page.locator(".msg.assistant .bubble")).to_have_text([expected])


async def test_shift_enter_makes_a_new_line_and_enter_sends(page: Page) -> None:
    await start_chat(page, "Lines")
    await page.click("#input")
    await page.keyboard.type("line one")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("line two")
    assert await page.input_value("#input") == "line one\nline two"
    await page.keyboard.press("Enter")
    await expect(page.locator(".msg.user .bubble")).to_have_text("line one\nline two")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text("[n=2] line one line two")
    assert await page.input_value("#input") == ""


async def test_switching_and_deleting_sessions(page: Page) -> None:
    await start_chat(page, "First chat")
    await send(page, "about apples")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text("[n=2] about apples")
    await start_chat(page, "Second chat")
    await send(page, "about pears")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text("[n=2] about pears")

    await page.click("#sessions a:has-text('First chat')")
    await expect(page.locator("#chat-title")).to_have_text("First chat")
    await expect(page.locator(".msg.user .bubble")).to_have_text(["about apples"])
    first_id = page.url.rsplit("/", 1)[-1]

    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("#delete")
    await expect(page.locator("#sessions a:has-text('First chat')")).to_have_count(0)
    await expect(page.locator("#welcome")).to_be_visible()
    # Asked as the page's own guest: the chat is gone, not merely someone else's.
    headers = await guest_headers(page)
    async with httpx.AsyncClient(base_url=page.url.split("/#")[0]) as http:
        gone = await http.get(f"/session/{first_id}/history", headers=headers)
    assert gone.status_code == 404


async def test_a_failing_model_shows_an_error_and_keeps_the_message(page: Page) -> None:
    await start_chat(page, "Failing")
    await send(page, "!status=500 please")
    await expect(page.locator("#notice")).to_contain_text("model failed")
    assert await page.input_value("#input") == "!status=500 please"
    await expect(page.locator(".msg.assistant")).to_have_count(0)
    await expect(page.locator("#input")).to_be_enabled()


async def test_a_busy_session_shows_a_clear_message(page: Page, app: AppServer) -> None:
    session_id = await start_chat(page, "Busy")
    headers = await guest_headers(page)  # the chat belongs to the page's guest
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        body = {"session_id": session_id, "message": "!delay=0.3 a b c d"}
        async with http.stream("POST", "/chat", json=body, headers=headers) as running:
            assert running.status_code == 200
            await send(page, "me too")
            await expect(page.locator("#notice")).to_contain_text("already answering")
            await running.aread()


async def test_markup_in_a_reply_stays_inert(page: Page) -> None:
    await start_chat(page, "Injection")
    attack = (
        "<script>window.__pwned=1</script> <img src=x onerror=window.__pwned=2> "
        "[click](javascript:window.__pwned=3) **bold** `code`"
    )
    await send(page, attack)
    bubble = page.locator(".msg.assistant .bubble")
    await expect(bubble).to_contain_text("<script>window.__pwned=1</script>")
    await expect(bubble.locator("strong")).to_have_text("bold")
    await expect(bubble.locator("code")).to_have_text("code")
    assert await bubble.locator("script, img, iframe").count() == 0
    assert await page.locator("a[href^='javascript']").count() == 0
    await page.locator(".msg.assistant .bubble").last.click()
    assert await page.evaluate("window.__pwned") is None


async def test_markdown_renders_lists_and_code_blocks(page: Page) -> None:
    await page.goto("/")
    source = "Intro\n\n- one\n- two\n\n```py\nprint(1) <b>\n```\n\n1. a\n2. b"
    html = await page.evaluate(
        """async (source) => {
            const { renderMarkdown } = await import('/static/markdown.js');
            const div = document.createElement('div');
            renderMarkdown(source, div);
            return div.innerHTML;
        }""",
        source,
    )
    assert "<p>Intro</p>" in html
    assert "<ul><li>one</li><li>two</li></ul>" in html
    assert '<pre><code data-lang="py">print(1) &lt;b&gt;</code></pre>' in html
    assert "<ol><li>a</li><li>b</li></ol>" in html


async def test_phone_width_and_dark_theme(browser: Browser, app: AppServer) -> None:
    context = await browser.new_context(
        base_url=app.url, viewport={"width": 375, "height": 740}, color_scheme="dark"
    )
    page = await context.new_page()
    await page.goto("/")
    await expect(page.locator("#menu")).to_be_visible()
    await expect(page.locator("#sidebar")).not_to_be_in_viewport()
    await send(page, "hello from a phone")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text("[n=2] hello from a phone")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, "the page scrolls sideways at 375 px"
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(21, 23, 27)"
    await shot(page, "phone-dark")
    await page.click("#menu")
    await expect(page.locator("#sidebar")).to_be_in_viewport()
    await page.wait_for_timeout(300)  # the drawer's slide-in transition
    await expect(page.locator("#sessions a", has_text="hello from a phone")).to_be_visible()
    await shot(page, "phone-dark-drawer")
    await context.close()


async def test_admin_token_is_asked_for_and_used(
    shared_redis_url: str,
    browser: Browser,
    start_app: type[AppServer],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
) -> None:
    env = app_env(shared_redis_url, fake_groq, ADMIN_TOKEN="page-admin")
    server = start_app(env=env).start()
    async with httpx.AsyncClient(base_url=server.url) as http:
        known = await new_session(http, title="Listed for admins")
    context = await browser.new_context(base_url=server.url)
    page = await context.new_page()
    await page.goto("/")
    await expect(page.locator("#admin-form")).to_be_visible()
    await page.fill("#admin-token", "wrong")
    await page.click("#admin-form button")
    await expect(page.locator("#admin-error")).to_contain_text("not accepted")
    await page.fill("#admin-token", "page-admin")
    await page.click("#admin-form button")
    await expect(page.locator("#admin-form")).to_be_hidden()
    await expect(page.locator(f"#sessions a[data-id='{known}']")).to_be_visible()
    await context.close()
    server.stop()


async def test_a_lost_connection_shows_and_the_socket_reconnects(
    make_app: Callable[..., AppServer],
    shared_redis_url: str,
    browser: Browser,
    start_app: type[AppServer],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
) -> None:
    server = make_app(redis_url=shared_redis_url)
    context = await browser.new_context(base_url=server.url)
    page = await context.new_page()
    await page.goto("/")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    server.stop()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "closed")
    await expect(page.locator("#notice")).to_contain_text("connection was lost")
    server.start()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=20_000)
    await expect(page.locator("#notice")).to_be_hidden()
    await send(page, "back again")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text("[n=2] back again")
    await context.close()
    server.stop()


async def test_a_conversation_with_the_offline_model_out_of_the_box(
    browser: Browser, start_app: type[AppServer], tmp_path: Path
) -> None:
    """What `make run` gives on a bare machine: embedded Redis, offline model."""
    server = start_app(env=app_env(None, None, DATA_DIR=str(tmp_path / "data"))).start()
    viewport: ViewportSize = {"width": 1100, "height": 640}
    context = await browser.new_context(base_url=server.url, viewport=viewport)
    page = await context.new_page()
    await page.goto("/")
    await expect(page.locator("#model")).to_have_text("offline")
    await send(page, "Hello! Can you help me plan a trip to Lisbon?")
    reply = page.locator(".msg.assistant .bubble")
    shown = OFFLINE_REPLY.replace("`", "")  # inline code renders without its backticks
    await expect(reply).to_have_text(shown, timeout=15_000)
    assert await reply.locator("code").count() >= 5
    await page.reload()
    await expect(reply).to_have_text(shown)
    await expect(page.locator("#sessions a")).to_have_count(1)
    await shot(page, "offline-conversation")
    await context.close()
    server.stop()
