"""The list of chats in headless Chromium: pinning a chat puts it first under "Pinned",
archiving takes it to the Archived view and back, and the Share button makes, copies and
revokes read-only links."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.support import AppServer
from tests.support.page import NewTab, send, shot, start_chat

pytestmark = pytest.mark.browser


async def click_action(page: Page, title: str, action: str) -> None:
    row = page.locator("#sessions li[data-id]", has_text=title)
    await row.hover()
    await row.locator(f"button[data-action='{action}']").click()


async def test_pinning_and_archiving_move_a_chat_in_the_list(page: Page) -> None:
    await start_chat(page, "Alpha")
    await start_chat(page, "Beta")
    await start_chat(page, "Gamma")
    names = page.locator("#sessions a .name")
    await expect(names).to_have_text(["Gamma", "Beta", "Alpha"])

    await click_action(page, "Alpha", "pin")
    await expect(page.locator("#sessions .group-label")).to_have_text(["Pinned", "Recent"])
    await expect(names).to_have_text(["Alpha", "Gamma", "Beta"])
    pin = page.locator("#sessions li[data-id]", has_text="Alpha").locator("button.pin")
    await expect(pin).to_have_attribute("aria-pressed", "true")
    await page.locator("#sessions li[data-id]", has_text="Gamma").hover()
    await shot(page, "list-pinned")

    await click_action(page, "Beta", "archive")
    await expect(names).to_have_text(["Alpha", "Gamma"])
    await page.click("#archive-view")
    await expect(page.locator("#list-title")).to_have_text("Archived chats")
    await expect(names).to_have_text(["Beta"])
    await shot(page, "list-archive")
    await click_action(page, "Beta", "archive")  # restore
    await expect(page.locator("#sessions-empty")).to_have_text("No archived chats.")
    await page.click("#archive-view")
    await expect(page.locator("#list-title")).to_have_text("My chats")
    await expect(names).to_have_text(["Alpha", "Gamma", "Beta"])

    await click_action(page, "Alpha", "pin")  # unpin
    await expect(page.locator("#sessions .group-label")).to_have_count(0)
    await expect(names).to_have_text(["Gamma", "Beta", "Alpha"])
    await page.reload()
    await expect(names).to_have_text(["Gamma", "Beta", "Alpha"])


async def test_the_share_button_makes_copies_and_revokes_a_link(
    page: Page, app: AppServer, new_tab: NewTab
) -> None:
    await start_chat(page, "Shared plans")
    await send(page, "**meet** at noon")
    await expect(page.locator(".msg.assistant .bubble strong")).to_have_text("meet")
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await click_action(page, "Shared plans", "share")
    panel = page.locator("#share-panel")
    await expect(panel).to_be_visible()
    await expect(page.locator("#share-about")).to_contain_text("Shared plans")
    await expect(page.locator("#share-links")).to_have_text("No links yet.")
    await page.click("#share-new")
    link = page.locator("#share-links li[data-share-id]")
    await expect(link).to_have_count(1)
    url = await link.locator("input").input_value()
    assert url.startswith(f"{app.url}/s/")
    await link.locator("button[data-action='copy']").click()
    await expect(link).to_have_attribute("data-copied", "true")
    assert await page.evaluate("navigator.clipboard.readText()") == url
    await shot(page, "list-share")

    reader = await new_tab(app)
    await reader.goto(url)
    await expect(reader.locator(".msg.assistant .bubble strong")).to_have_text("meet")
    await send(page, "later words")  # the link shows the chat as it was
    await expect(page.locator(".msg.assistant")).to_have_count(2)
    await reader.reload()
    await expect(reader.locator("body")).to_have_attribute("data-state", "shown")
    await expect(reader.locator(".msg")).to_have_count(2)

    page.once("dialog", lambda dialog: dialog.accept())
    await link.locator("button[data-action='revoke']").click()
    await expect(page.locator("#share-links")).to_have_text("No links yet.")
    await reader.reload()
    await expect(reader.locator("body")).to_have_attribute("data-state", "missing")
    await page.click("#share-close")
    await expect(panel).to_be_hidden()
