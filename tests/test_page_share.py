"""A share link's read-only page (/s/<id>) in headless Chromium: the conversation as it
was shared, its replies' Markdown rendered by the chat page's safe renderer, markup
inert; a revoked link says so."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.support import AppServer, error_codes, gql, new_session
from tests.support.page import shot

pytestmark = pytest.mark.browser

ATTACK = (
    "<script>window.__pwned=1</script> <img src=x onerror=window.__pwned=2> "
    "[click](javascript:window.__pwned=3) **bold** `code` [site](https://example.com/x)"
)


async def shared(app: AppServer, message: str) -> dict[str, str]:
    """A chat of a new guest's, shared: the share, and the guest's token (`token`)."""
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        token = (await http.post("/guest")).json()["token"]
        http.headers["authorization"] = f"Bearer {token}"
        session_id = await new_session(http, title="A shared <b>chat</b>")
        reply = await http.post(
            "/chat",
            json={"session_id": session_id, "message": message},
            headers={"accept": "application/json"},
        )
        assert reply.status_code == 200
        body = await gql(
            http, "mutation($s: ID!) { shareSession(id: $s) { id url } }", s=session_id
        )
    share: dict[str, str] = body["data"]["shareSession"]  # type: ignore[index]
    return {**share, "token": token}


async def test_a_shared_chat_reads_as_a_page_with_its_markup_inert(
    page: Page, app: AppServer
) -> None:
    share = await shared(app, ATTACK)
    await page.goto(share["url"])
    await expect(page.locator("body")).to_have_attribute("data-state", "shown")
    await expect(page.locator("#share-title")).to_have_text("A shared <b>chat</b>")
    user = page.locator(".msg.user .bubble")
    reply = page.locator(".msg.assistant .bubble")
    await expect(user).to_have_text(ATTACK)  # the user's words as they were typed
    await expect(reply).to_contain_text("<script>window.__pwned=1</script>")
    await expect(reply.locator("strong")).to_have_text("bold")
    await expect(reply.locator("code")).to_have_text("code")
    assert await page.locator("script:not([src]), img, iframe").count() == 0
    assert await page.locator("a[href^='javascript']").count() == 0
    link = reply.locator("a[href='https://example.com/x']")
    await expect(link).to_have_text("site")
    await reply.click()
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("#share-title b").count() == 0
    assert await page.locator("textarea, input, form").count() == 0  # read-only
    await shot(page, "share-page")


async def test_a_revoked_share_page_says_it_is_gone(page: Page, app: AppServer) -> None:
    share = await shared(app, "soon gone")
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        revoke = "mutation($s: ID!) { revokeShare(id: $s) }"
        anyone = await gql(http, revoke, s=share["id"])
        assert error_codes(anyone) == ["NOT_FOUND"]  # the link is not the key to revoke it
        owner = {"authorization": f"Bearer {share['token']}"}
        revoked = await gql(http, revoke, owner, s=share["id"])
    assert revoked["data"] == {"revokeShare": True}
    response = await page.goto(share["url"])
    assert response is not None and response.status == 404
    await expect(page.locator("body")).to_have_attribute("data-state", "missing")
    await expect(page.locator("#share-note")).to_contain_text("revoked")
