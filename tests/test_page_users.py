"""The chat page as a per-user app, in headless Chromium: every browser is a guest (a token
from `createGuest`, kept in localStorage) that sees and opens only its own chats; an
admin who enters the admin token sees everyone's.

The browser fixtures are in tests/conftest.py, the helpers in tests/support/page.py.
Each browser context is one browser, so one guest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import pytest
from playwright.async_api import Page, Request, Route, expect

from tests.support import AppServer
from tests.support.page import NewTab, send, start_chat

pytestmark = pytest.mark.browser

ADMIN_TOKEN = "users-page-admin"
GUEST_KEY = "chat.guestToken"


@pytest.fixture
def server(make_app: Callable[..., AppServer]) -> AppServer:
    """The app with an admin token, on a database of its own."""
    return make_app(ADMIN_TOKEN=ADMIN_TOKEN)


def guest_requests(page: Page) -> list[Request]:
    """The `createGuest` requests `page` sends from now on (the list grows)."""
    seen: list[Request] = []

    def note(request: Request) -> None:
        if request.url.endswith("/graphql") and "createGuest" in (request.post_data or ""):
            seen.append(request)

    page.on("request", note)
    return seen


async def kept_token(page: Page) -> str | None:
    token: str | None = await page.evaluate(f"localStorage.getItem({GUEST_KEY!r})")
    return token


def seed_token(token: str) -> str:
    """An init script that puts `token` where the page keeps its guest token, once."""
    return (
        "if (!sessionStorage.getItem('seeded')) {"
        f" localStorage.setItem({GUEST_KEY!r}, {json.dumps(token)});"
        " sessionStorage.setItem('seeded', '1'); }"
    )


def foreign_token() -> str:
    """A well-formed, unexpired HS256 token signed with a secret the server does not
    have: what a browser keeps after the server's secret changed."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = part(json.dumps({"sub": "someone-else", "exp": int(time.time()) + 3600}).encode())
    signature = hmac.new(b"another secret", f"{header}.{claims}".encode(), hashlib.sha256)
    return f"{header}.{claims}.{part(signature.digest())}"


async def guest_chat(page: Page, title: str, text: str) -> str:
    """A new chat named `title` with one turn, `text`; its id."""
    session_id = await start_chat(page, title)
    await send(page, text)
    await expect(page.locator(".msg.assistant .bubble")).to_have_text(f"[n=2] {text}")
    return session_id


async def test_two_guests_see_and_open_only_their_own_chats(
    new_tab: NewTab, server: AppServer
) -> None:
    alice, bob = await new_tab(server), await new_tab(server)
    alice_chat = await guest_chat(alice, "Alice's plans", "from alice")
    bob_chat = await guest_chat(bob, "Bob's plans", "from bob")

    await expect(alice.locator("#sessions a .name")).to_have_text(["Alice's plans"])
    await expect(bob.locator("#sessions a .name")).to_have_text(["Bob's plans"])
    await expect(alice.locator("#list-title")).to_have_text("My chats")
    alice_token, bob_token = await kept_token(alice), await kept_token(bob)
    assert alice_token and bob_token and alice_token != bob_token

    # The other guest's chat, by its address, in a new tab of the same browser.
    for owner, other_chat in ((alice, bob_chat), (bob, alice_chat)):
        tab = await owner.context.new_page()
        await tab.goto(f"/#/s/{other_chat}")
        await expect(tab.locator("#notice")).to_contain_text("no longer exists")
        await expect(tab.locator("#chat-title")).to_have_text("New chat")
        await expect(tab.locator(".msg")).to_have_count(0)
        await expect(tab.locator("#sessions a")).to_have_count(1)
        assert await kept_token(tab) == await kept_token(owner)

    # Its own chat, by its address, opens as before.
    tab = await alice.context.new_page()
    await tab.goto(f"/#/s/{alice_chat}")
    await expect(tab.locator("#chat-title")).to_have_text("Alice's plans")
    await expect(tab.locator(".msg.user .bubble")).to_have_text(["from alice"])
    await expect(tab.locator("#notice")).to_be_hidden()


async def test_an_admin_sees_every_chat_and_goes_back_to_their_own(
    new_tab: NewTab, server: AppServer
) -> None:
    alice, bob = await new_tab(server), await new_tab(server)
    alice_chat = await guest_chat(alice, "Alice's secret", "alice asks")
    bob_chat = await guest_chat(bob, "Bob's secret", "bob asks")

    admin = await new_tab(server)
    await admin.goto("/")
    await expect(admin.locator("#list-title")).to_have_text("My chats")
    await expect(admin.locator("#sessions-empty")).to_be_visible()
    await expect(admin.locator("#admin-form")).to_be_visible()
    await admin.fill("#admin-token", ADMIN_TOKEN)
    await admin.click("#admin-form button")
    await expect(admin.locator("#admin-form")).to_be_hidden()
    await expect(admin.locator("#list-title")).to_have_text("All chats")
    await expect(admin.locator(f"#sessions a[data-id='{alice_chat}'] .name")).to_have_text(
        "Alice's secret"
    )
    await expect(admin.locator(f"#sessions a[data-id='{bob_chat}'] .name")).to_have_text(
        "Bob's secret"
    )
    await expect(admin.locator("#sessions a")).to_have_count(2)

    # An admin opens anyone's chat, and can chat in it (the socket has the admin token).
    await admin.click(f"#sessions a[data-id='{bob_chat}']")
    await expect(admin.locator("#chat-title")).to_have_text("Bob's secret")
    await expect(admin.locator(".msg.user .bubble")).to_have_text(["bob asks"])
    await send(admin, "the admin adds")
    await expect(admin.locator(".msg.assistant .bubble").last).to_have_text("[n=4] the admin adds")

    # Back to the admin's own chats (as a guest, none), and the guests' lists unchanged.
    await admin.click("#my-chats")
    await expect(admin.locator("#list-title")).to_have_text("My chats")
    await expect(admin.locator("#sessions a")).to_have_count(0)
    await expect(admin.locator("#admin-form")).to_be_visible()
    await expect(admin.locator("#my-chats")).to_be_hidden()
    await bob.reload()
    await expect(bob.locator("#sessions a .name")).to_have_text(["Bob's secret"])
    await expect(bob.locator(".msg.assistant .bubble").last).to_have_text("[n=4] the admin adds")


async def test_a_wrong_admin_token_leaves_the_guests_own_chats(
    new_tab: NewTab, server: AppServer
) -> None:
    page = await new_tab(server)
    await guest_chat(page, "Mine only", "hello")
    await page.fill("#admin-token", "not the token")
    await page.click("#admin-form button")
    await expect(page.locator("#admin-error")).to_contain_text("not accepted")
    await expect(page.locator("#list-title")).to_have_text("My chats")
    await expect(page.locator("#sessions a .name")).to_have_text(["Mine only"])
    await send(page, "still me")
    await expect(page.locator(".msg.assistant .bubble").last).to_have_text("[n=4] still me")


@pytest.mark.parametrize("required", ["false", "true"])
async def test_a_reload_keeps_the_guests_chats(
    new_tab: NewTab, make_app: Callable[..., AppServer], required: str
) -> None:
    """With AUTH_REQUIRED too: the page always sends its token, the socket included."""
    page = await new_tab(make_app(AUTH_REQUIRED=required))
    asked = guest_requests(page)
    chat = await guest_chat(page, "Kept", "remember me")
    token = await kept_token(page)
    assert token and len(asked) == 1
    assert asked[0].headers.get("authorization") is None

    await page.reload()
    await expect(page.locator("#sessions a .name")).to_have_text(["Kept"])
    await expect(page.locator(".msg.user .bubble")).to_have_text(["remember me"])
    await send(page, "and again")
    await expect(page.locator(".msg.assistant .bubble").last).to_have_text("[n=4] and again")
    assert await kept_token(page) == token
    assert len(asked) == 1, "a reload asked for another guest token"

    # Every request of the page goes with the guest token.
    async with page.expect_request("**/graphql") as listing:
        await page.reload()
    assert (await listing.value).headers.get("authorization") == f"Bearer {token}"
    await expect(page.locator(f"#sessions a[data-id='{chat}']")).to_have_attribute(
        "aria-current", "true"
    )


async def test_a_rejected_guest_token_is_replaced_and_the_page_goes_on(
    new_tab: NewTab, server: AppServer
) -> None:
    stale = foreign_token()
    page = await new_tab(server, init_script=seed_token(stale))
    asked = guest_requests(page)
    await page.goto("/")
    await expect(page.locator("#sessions-empty")).to_be_visible()
    await send(page, "a new guest")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text("[n=2] a new guest")
    await expect(page.locator("#notice")).to_be_hidden()
    await expect(page.locator("#sessions a")).to_have_count(1)
    token = await kept_token(page)
    assert token and token != stale
    assert len(asked) == 1


async def test_a_guest_token_the_server_keeps_rejecting_is_asked_for_once(
    new_tab: NewTab, server: AppServer
) -> None:
    """The server rejects every token, even the one it has just given: the page says so
    and does not ask for token after token."""
    page = await new_tab(server, init_script=seed_token(foreign_token()))
    asked = guest_requests(page)

    async def reject(route: Route) -> None:
        if "createGuest" in (route.request.post_data or ""):
            await route.continue_()
            return
        error = {"message": "invalid token", "extensions": {"code": "UNAUTHENTICATED"}}
        await route.fulfill(json={"data": None, "errors": [error]})

    await page.route("**/graphql", reject)
    await page.goto("/")
    await expect(page.locator("#notice")).to_contain_text("did not accept")
    for title in ("One", "Two"):
        async with page.expect_response("**/graphql"):
            await page.fill("#new-title", title)
            await page.click("#new-chat")
        await expect(page.locator("#notice")).to_contain_text("did not accept")
    await expect(page.locator("#sessions a")).to_have_count(0)
    assert len(asked) == 1


async def test_a_changed_server_secret_gives_the_page_a_new_guest(
    new_tab: NewTab, make_app: Callable[..., AppServer]
) -> None:
    """The server restarts with another AUTH_SECRET: the kept token no longer verifies,
    the socket included. The page becomes a new guest once; the old guest's chats are
    out of its reach, and the message sent in one goes back into the input."""
    server = make_app(AUTH_SECRET="the first secret, long enough to be accepted")
    page = await new_tab(server)
    asked = guest_requests(page)
    await guest_chat(page, "Before the change", "first")
    old_token = await kept_token(page)

    server.stop()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "closed")
    server.env["AUTH_SECRET"] = "the second secret, also long enough to be accepted"
    server.start()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=20_000)

    await send(page, "after the change")
    await expect(page.locator("#notice")).to_contain_text("no longer exists")
    await expect(page.locator("#input")).to_have_value("after the change")
    await expect(page.locator("#input")).to_be_enabled()
    await expect(page.locator("#sessions a")).to_have_count(0)
    new_token = await kept_token(page)
    assert new_token and new_token != old_token
    assert len(asked) == 2

    # The new guest goes on as any other.
    await page.goto("/")
    await send(page, "a fresh start")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text("[n=2] a fresh start")
    await expect(page.locator("#sessions a")).to_have_count(1)
    assert len(asked) == 2
