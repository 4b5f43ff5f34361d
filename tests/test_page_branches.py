"""Versions of messages in the chat page, in headless Chromium against the app on a real
uvicorn: Edit on an earlier message sends it as a new version (`edit`) and the old one,
with what followed it, is shown again by the version picker's arrows ("1 / 2" between
them: `switchBranch`); Regenerate adds versions of a reply (`regenerate` with
`messageId`), the last one or an earlier one; a failed edit changes nothing, a lost
socket does not run an edit twice, a second tab that follows an edit shows the new
version once it is stored; the arrows work from the keyboard and at 375 px.

The browser fixtures are in tests/conftest.py, the helpers in tests/support/page.py. The
model is the fake Groq server: its reply to a message is "[n=K]" and the message's words,
K the number of messages it was sent; `!delay=S !tokens=K` makes a reply of K + 1 pieces,
one every S seconds. Its replies to the same messages are the same, so the versions of a
reply here differ by where they were stopped. Every wait is bounded; no wall-clock
duration is asserted.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from tests.support import AppServer, FakeGroq, gql
from tests.support.page import (
    UUID_V4,
    NewTab,
    guest_headers,
    model_runs,
    named,
    operations,
    record_graphql,
    record_subscriptions,
    reply_of,
    send,
    shot,
    start_chat,
    watch_reply,
)
from tests.support.redis_proxy import RedisProxy

pytestmark = pytest.mark.browser

PATH = """
query($s: ID!) {
  session(id: $s) {
    activeTurn { turnId }
    messages { id turnId status role content branch branches siblingIds }
  }
}
"""


async def active_path(server: AppServer, tab: Page, session_id: str) -> list[dict[str, Any]]:
    """The chat's messages as stored (its active path; no turn running), as the tab's guest."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        body = await gql(http, PATH, headers=await guest_headers(tab), s=session_id)
    assert "errors" not in body, body
    session: dict[str, Any] = body["data"]["session"]  # type: ignore[index]
    assert session["activeTurn"] is None
    messages: list[dict[str, Any]] = session["messages"]
    return messages


async def shows(tab: Page, users: list[str], replies: list[str]) -> None:
    await expect(tab.locator("#messages > .msg.user .bubble")).to_have_text(users)
    await expect(tab.locator("#messages > .msg.assistant .bubble")).to_have_text(replies)
    await expect(tab.locator(".msg.streaming")).to_have_count(0)


async def picker_says(item: Locator, count: str, what: str) -> None:
    """The picker of `item` shows `count` ("2 / 3"), its arrows enabled where there is a
    version before or after."""
    branch, branches = (int(n) for n in count.split(" / "))
    picker = item.locator(".versions")
    await expect(picker.locator(".count")).to_have_text(count)
    await expect(picker).to_have_attribute(
        "aria-label", f"Version {branch} of {branches} of this {what}"
    )
    previous = item.get_by_role("button", name=f"Previous version of this {what}")
    following = item.get_by_role("button", name=f"Next version of this {what}")
    await (expect(previous).to_be_enabled() if branch > 1 else expect(previous).to_be_disabled())
    await (
        expect(following).to_be_enabled()
        if branch < branches
        else expect(following).to_be_disabled()
    )


async def stop_after(tab: Page, piece: str) -> str:
    """Stops the reply that streams once it shows `piece`: the stored reply."""
    reply = tab.locator(".msg.assistant").last
    await expect(reply.locator(".bubble")).to_contain_text(piece)
    await tab.get_by_role("button", name="Stop the reply").click()
    await expect(reply.locator(".note")).to_have_text("stopped")
    await expect(tab.locator("#input")).to_be_enabled()
    return await reply.locator(".bubble").inner_text()


async def test_editing_an_earlier_message_keeps_the_old_version_behind_the_picker(
    page: Page, app: AppServer, fake_groq: FakeGroq
) -> None:
    subscriptions = record_subscriptions(page)
    session_id = await start_chat(page, "Edited in the middle")
    for k, text in enumerate(["alpha one", "beta two", "gamma three"]):
        await send(page, text)
        await expect(page.locator(".msg.assistant .bubble").last).to_have_text(
            f"[n={2 * k + 2}] {text}"
        )
    old = await active_path(app, page, session_id)
    assert all((m["branch"], m["branches"]) == (1, 1) for m in old)
    await expect(page.locator(".versions")).to_have_count(0)
    requests = record_graphql(page)
    runs = model_runs(fake_groq)

    # Edit is on every message of the person's; the one on an earlier message edits it.
    users = page.locator("#messages > .msg.user")
    await expect(page.get_by_role("button", name="Edit your last message")).to_have_count(1)
    await expect(page.get_by_role("button", name="Edit this message")).to_have_count(2)
    await users.nth(1).get_by_role("button", name="Edit this message").click()
    await expect(page.locator("#input")).to_have_value("beta two")
    await expect(page.locator("#edit-bar")).to_be_visible()
    await expect(page.locator(".msg.user.editing .bubble")).to_have_text("beta two")
    await page.fill("#input", "delta four")
    await page.press("#input", "Enter")

    # The new version and its reply in the old one's place; what followed is gone from
    # the view (the model was sent 4 messages: the edited one's history, not the rest).
    new_path = (["alpha one", "delta four"], ["[n=2] alpha one", "[n=4] delta four"])
    old_path = (
        ["alpha one", "beta two", "gamma three"],
        ["[n=2] alpha one", "[n=4] beta two", "[n=6] gamma three"],
    )
    await shows(page, *new_path)
    await expect(page.locator("#edit-bar")).to_be_hidden()
    await expect(page.locator("#input")).to_be_enabled()
    assert model_runs(fake_groq) == runs + 1
    edits = named(subscriptions, "edit")
    assert len(edits) == 1
    assert {k: v for k, v in edits[0].items() if k != "turnId"} == {
        "sessionId": session_id,
        "messageId": old[2]["id"],
        "message": "delta four",
    }
    assert UUID_V4.match(edits[0]["turnId"])
    assert not operations(requests, "rewind"), "the edit forgot the old version"
    # The edited message says it is the second of two; its reply is the only one.
    await picker_says(users.nth(1), "2 / 2", "message")
    await expect(page.locator(".versions")).to_have_count(1)

    stored = await active_path(app, page, session_id)
    assert [m["content"] for m in stored] == [
        "alpha one",
        "[n=2] alpha one",
        "delta four",
        "[n=4] delta four",
    ]
    assert stored[2]["siblingIds"] == [old[2]["id"], stored[2]["id"]]
    assert stored[3]["turnId"] == edits[0]["turnId"]
    await shot(page, "desktop-branches-edited")

    # Back to the old version: its text and what followed it, as they were.
    requests.clear()
    await users.nth(1).get_by_role("button", name="Previous version of this message").click()
    await shows(page, *old_path)
    await picker_says(users.nth(1), "1 / 2", "message")
    assert operations(requests, "switchBranch") == [
        {"sessionId": session_id, "messageId": old[2]["id"]}
    ]
    assert [m["id"] for m in await active_path(app, page, session_id)] == [m["id"] for m in old]
    # The focus stayed on the picker (its Previous arrow is disabled now: on Next), so
    # the keyboard goes on from there.
    following = users.nth(1).get_by_role("button", name="Next version of this message")
    await expect(following).to_be_focused()
    await page.keyboard.press("Enter")
    await shows(page, *new_path)
    await picker_says(users.nth(1), "2 / 2", "message")
    await expect(
        users.nth(1).get_by_role("button", name="Previous version of this message")
    ).to_be_focused()

    # The chat goes on from the version shown; a reload shows the same.
    await send(page, "epsilon five")
    await expect(page.locator(".msg.assistant .bubble").last).to_have_text("[n=6] epsilon five")
    await page.reload()
    await shows(
        page,
        ["alpha one", "delta four", "epsilon five"],
        ["[n=2] alpha one", "[n=4] delta four", "[n=6] epsilon five"],
    )
    await picker_says(users.nth(1), "2 / 2", "message")
    await users.nth(1).get_by_role("button", name="Previous version of this message").click()
    await shows(page, *old_path)


async def test_an_edit_the_model_fails_leaves_the_chat_and_the_edit_as_they_were(
    page: Page, app: AppServer
) -> None:
    session_id = await start_chat(page, "Edit failed")
    await send(page, "alpha one")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text(["[n=2] alpha one"])
    await send(page, "beta two")
    await expect(page.locator(".msg.assistant .bubble").last).to_have_text("[n=4] beta two")
    old = await active_path(app, page, session_id)
    users = page.locator("#messages > .msg.user")
    await page.fill("#input", "a draft")
    await users.first.get_by_role("button", name="Edit this message").click()
    await page.fill("#input", "!status=500 edited")
    await page.press("#input", "Enter")

    # Nothing stored: the message edited and what followed show again, the edit is on
    # again with its text (the draft waits, as before), the notice says why.
    await expect(page.locator("#notice")).to_contain_text("model failed")
    await shows(page, ["alpha one", "beta two"], ["[n=2] alpha one", "[n=4] beta two"])
    await expect(page.locator("#input")).to_have_value("!status=500 edited")
    await expect(page.locator("#edit-bar")).to_be_visible()
    await expect(page.locator(".msg.user.editing .bubble")).to_have_text("alpha one")
    await expect(page.locator(".versions, .msg.failed")).to_have_count(0)
    assert await active_path(app, page, session_id) == old
    await page.press("#input", "Escape")
    await expect(page.locator("#input")).to_have_value("a draft")

    # Sent again, it works: the new version in the old one's place.
    await users.first.get_by_role("button", name="Edit this message").click()
    await page.fill("#input", "edited at last")
    await page.press("#input", "Enter")
    await shows(page, ["edited at last"], ["[n=2] edited at last"])
    await picker_says(users.first, "2 / 2", "message")
    await expect(page.locator("#input")).to_have_value("a draft")


async def test_an_edit_resumes_after_a_lost_socket_without_running_again(
    new_tab: NewTab, app: AppServer, fake_groq: FakeGroq
) -> None:
    async with RedisProxy(app.port) as proxy:
        tab = await new_tab(f"http://127.0.0.1:{proxy.port}")
        subscriptions = record_subscriptions(tab)
        session_id = await start_chat(tab, "Edit resumed")
        await send(tab, "alpha one")
        await expect(tab.locator(".msg.assistant .bubble")).to_have_text(["[n=2] alpha one"])
        await send(tab, "beta two")
        await expect(tab.locator(".msg.assistant .bubble").last).to_have_text("[n=4] beta two")
        runs = model_runs(fake_groq)
        await tab.locator(".msg.user").first.get_by_role("button", name="Edit this message").click()
        text = "!delay=0.1 !tokens=40 edited"
        await tab.fill("#input", text)
        await tab.press("#input", "Enter")
        reply = tab.locator(".msg.assistant").last
        await expect(reply.locator(".bubble")).to_contain_text(" t3")
        await reply.evaluate("node => { node.dataset.mark = 'editing'; }")
        assert proxy.drop_connections() > 0
        await watch_reply(tab, reply_of(40))

        await expect(tab.locator(".msg.assistant[data-mark='editing'] .bubble")).to_have_text(
            reply_of(40)
        )
        await shows(tab, [text], [reply_of(40)])
        await expect(tab.locator(".msg.pending, .msg.failed, .msg .note")).to_have_count(0)
        await expect(tab.locator("#input")).to_be_enabled()
        await picker_says(tab.locator(".msg.user").first, "2 / 2", "message")

    edits, follows = named(subscriptions, "edit"), named(subscriptions, "turn")
    assert len(edits) == 1, f"the edit was sent {len(edits)} times"
    assert follows and all(f["turnId"] == edits[0]["turnId"] for f in follows)
    assert follows[0]["after"] >= 4, "it did not resume after the last event it showed"
    stored = await active_path(app, tab, session_id)
    assert [m["content"] for m in stored] == [text, reply_of(40)]
    assert stored[1]["turnId"] == edits[0]["turnId"]
    assert model_runs(fake_groq) == runs + 1, "the edit ran more than once"


async def test_a_second_tab_following_an_edit_shows_the_new_version_at_its_end(
    new_tab: NewTab, app: AppServer
) -> None:
    first = await new_tab(app.url)
    session_id = await start_chat(first, "Edit followed")
    await send(first, "alpha one")
    await expect(first.locator(".msg.assistant .bubble")).to_have_text(["[n=2] alpha one"])
    await send(first, "beta two")
    await expect(first.locator(".msg.assistant .bubble").last).to_have_text("[n=4] beta two")
    await first.locator(".msg.user").first.get_by_role("button", name="Edit this message").click()
    text = "!delay=0.1 !tokens=30 edited elsewhere"
    await first.fill("#input", text)
    await first.press("#input", "Enter")
    await expect(first.locator(".msg.assistant .bubble")).to_contain_text(" t2")

    # The same guest opens the chat mid-edit: the server does not say the turn is an
    # edit, so the reply streams after the chat as stored; once stored, the chat shows
    # as it is now.
    second = await new_tab(app.url, context=first.context)
    await second.goto(f"/#/s/{session_id}")
    await expect(second.locator(".msg.assistant.streaming")).to_have_count(1)
    for tab in (first, second):
        await shows(tab, [text], [reply_of(30)])
        await picker_says(tab.locator(".msg.user").first, "2 / 2", "message")
        await expect(tab.locator("#input")).to_be_enabled()


async def test_regenerating_the_last_reply_twice_keeps_three_versions(
    page: Page, app: AppServer, fake_groq: FakeGroq
) -> None:
    subscriptions = record_subscriptions(page)
    session_id = await start_chat(page, "Three versions")
    text = "!delay=0.1 !tokens=40 three versions"
    await send(page, text)
    first = await stop_after(page, " t2")  # stopped early
    reply = page.locator("#messages > .msg.assistant").last
    regenerate = page.get_by_role("button", name="Regenerate the last reply")

    await regenerate.click()
    await watch_reply(page, reply_of(40))  # whole
    second = reply_of(40)
    await picker_says(reply, "2 / 2", "reply")
    await regenerate.click()
    await expect(reply.locator(".versions")).to_have_count(0)  # while it streams
    third = await stop_after(page, " t12")  # stopped later
    assert len(first) < len(third) < len(second)
    await picker_says(reply, "3 / 3", "reply")
    await expect(page.locator(".msg.assistant")).to_have_count(1)
    await expect(page.locator(".msg.user .bubble")).to_have_text([text])

    regenerations = named(subscriptions, "regenerate")
    stored = await active_path(app, page, session_id)
    assert len(regenerations) == 2
    assert all(r["sessionId"] == session_id and UUID_V4.match(r["turnId"]) for r in regenerations)
    versions = stored[1]["siblingIds"]
    assert len(versions) == 3 and stored[1]["id"] == versions[2]
    # Each regenerate named the reply it makes a new version of.
    assert [r["messageId"] for r in regenerations] == versions[:2]
    assert [(m["content"], m["branch"]) for m in stored] == [(text, 1), (third, 3)]

    # Flip through them: each shows with its own text and mark.
    previous = reply.get_by_role("button", name="Previous version of this reply")
    following = reply.get_by_role("button", name="Next version of this reply")
    await previous.click()
    await shows(page, [text], [second])
    await picker_says(reply, "2 / 3", "reply")
    await expect(page.locator(".msg .note")).to_have_count(0)
    await previous.click()
    await shows(page, [text], [first])
    await picker_says(reply, "1 / 3", "reply")
    await expect(reply.locator(".note")).to_have_text("stopped")
    await following.click()
    await shows(page, [text], [second])
    await picker_says(reply, "2 / 3", "reply")
    await following.click()
    await shows(page, [text], [third])
    await picker_says(reply, "3 / 3", "reply")
    assert [m["content"] for m in await active_path(app, page, session_id)] == [text, third]
    await shot(page, "desktop-branches-regenerated")


async def test_regenerating_an_earlier_reply_keeps_what_followed_as_the_old_version(
    page: Page, app: AppServer, fake_groq: FakeGroq
) -> None:
    subscriptions = record_subscriptions(page)
    session_id = await start_chat(page, "Regenerated in the middle")
    await send(page, "alpha one")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text(["[n=2] alpha one"])
    await send(page, "beta two")
    await expect(page.locator(".msg.assistant .bubble").last).to_have_text("[n=4] beta two")
    old = await active_path(app, page, session_id)
    runs = model_runs(fake_groq)

    replies = page.locator("#messages > .msg.assistant")
    await replies.first.get_by_role("button", name="Regenerate this reply").click()
    # The chat ends with the new version; the later turn is the old version's.
    await shows(page, ["alpha one"], ["[n=2] alpha one"])
    await picker_says(replies.first, "2 / 2", "reply")
    assert model_runs(fake_groq) == runs + 1
    assert [r["messageId"] for r in named(subscriptions, "regenerate")] == [old[1]["id"]]
    stored = await active_path(app, page, session_id)
    assert [m["id"] for m in stored][:1] == [old[0]["id"]] and len(stored) == 2
    assert stored[1]["siblingIds"] == [old[1]["id"], stored[1]["id"]]

    await replies.first.get_by_role("button", name="Previous version of this reply").click()
    await shows(page, ["alpha one", "beta two"], ["[n=2] alpha one", "[n=4] beta two"])
    await picker_says(replies.first, "1 / 2", "reply")
    assert [m["id"] for m in await active_path(app, page, session_id)] == [m["id"] for m in old]


async def test_a_regeneration_stopped_before_its_first_token_changes_nothing(
    page: Page, app: AppServer
) -> None:
    session_id = await start_chat(page, "Stopped at once")
    first = "!first_delay=3 alpha"  # each run of it waits 3 s before its first token
    await send(page, first)
    await expect(page.locator(".msg.assistant .bubble")).to_have_text(
        [f"[n=2] {first}"], timeout=20_000
    )
    await send(page, "beta")
    await expect(page.locator(".msg.assistant .bubble").last).to_have_text("[n=4] beta")
    old = await active_path(app, page, session_id)

    replies = page.locator("#messages > .msg.assistant")
    await replies.first.get_by_role("button", name="Regenerate this reply").click()
    await expect(page.locator(".msg.assistant.streaming")).to_have_count(1)
    await expect(page.locator(".msg.user")).to_have_count(1)  # what followed: out meanwhile
    await page.wait_for_timeout(500)  # the server has the turn (its first token is 3 s off)
    await page.get_by_role("button", name="Stop the reply").click()

    # The server kept the old reply: it shows as it was (not marked stopped), and so
    # does what followed it.
    await shows(page, [first, "beta"], [f"[n=2] {first}", "[n=4] beta"])
    await expect(page.locator(".msg .note, .versions")).to_have_count(0)
    await expect(page.locator("#input")).to_be_enabled()
    assert await active_path(app, page, session_id) == old
    await expect(replies.first).to_have_attribute("data-id", old[1]["id"])


async def test_the_picker_at_375_px(browser: Browser, app: AppServer) -> None:
    context = await browser.new_context(base_url=app.url, viewport={"width": 375, "height": 740})
    tab = await context.new_page()
    try:
        await tab.goto("/")
        await send(tab, "a phone's question with rather many words in it, to wrap nicely")
        await expect(tab.locator(".msg.assistant .bubble")).to_contain_text("[n=2]")
        await tab.get_by_role("button", name="Edit your last message").click()
        await tab.fill("#input", "a phone's edited question, also long enough to wrap here")
        await tab.press("#input", "Enter")
        await expect(tab.locator(".msg.assistant .bubble")).to_have_text(
            ["[n=2] a phone's edited question, also long enough to wrap here"]
        )
        await tab.get_by_role("button", name="Regenerate the last reply").click()
        mine, reply = tab.locator(".msg.user"), tab.locator(".msg.assistant")
        await picker_says(reply, "2 / 2", "reply")
        await picker_says(mine, "2 / 2", "message")
        for item, what in ((mine, "message"), (reply, "reply")):
            for name in ("Previous", "Next"):
                arrow = item.get_by_role("button", name=f"{name} version of this {what}")
                await expect(arrow).to_be_in_viewport()
                box = await arrow.bounding_box()
                assert box is not None and box["x"] + box["width"] <= 375
                assert box["height"] >= 24 and box["width"] >= 24, "too small to tap"
        assert await tab.evaluate("document.documentElement.scrollWidth") <= 375
        await shot(tab, "phone-branches")
        await mine.get_by_role("button", name="Previous version of this message").click()
        await expect(tab.locator(".msg.user .bubble")).to_have_text(
            ["a phone's question with rather many words in it, to wrap nicely"]
        )
        await picker_says(mine, "1 / 2", "message")
        assert await tab.evaluate("document.documentElement.scrollWidth") <= 375
    finally:
        await context.close()
