"""Conversation control in the chat page, in headless Chromium against the app on a real
uvicorn: Regenerate on the last reply (streamed in its place, followed again after a
lost socket), Edit on the last message (sent with `edit` as a new version of it, the old
one kept; Escape leaves everything as it was; tests/test_page_branches.py has the
versions), the title renamed in the header, a long chat opened
with its last 50 messages and paged back on scrolling up, and the tokens used (per reply
on hover, per chat in the header) as GraphQL reports them.

The browser fixtures are in tests/conftest.py, the helpers in tests/support/page.py. The
model is the fake Groq server: its reply to a message is "[n=K]" and the message's
words, K the number of messages it was sent; `!delay=S !tokens=K` makes a reply of K + 1
pieces, one every S seconds; its `/requests` count says how often the model ran. Every
wait is bounded; no wall-clock duration is asserted.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from redis.asyncio import Redis

from resolvers.services.keys import messages_key
from tests.support import AppServer, FakeGroq, gql, new_session
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

SESSION = """
query($s: ID!) {
  session(id: $s) {
    title
    usage { inputTokens outputTokens }
    activeTurn { turnId }
    messages { id turnId status role content usage { inputTokens outputTokens } }
  }
}
"""


async def stored(server: AppServer, tab: Page, session_id: str) -> dict[str, Any]:
    """The chat as stored (no turn running), read as the tab's guest."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        body = await gql(http, SESSION, headers=await guest_headers(tab), s=session_id)
    assert "errors" not in body, body
    session: dict[str, Any] = body["data"]["session"]  # type: ignore[index]
    assert session["activeTurn"] is None
    return session


# Scrolls the messages to their top: where the first message then is on screen.
TO_TOP = """el => {
    el.scrollTop = 0;
    return el.querySelector('.msg').getBoundingClientRect().top;
}"""


def pairs(session: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in session["messages"]]


def tokens(usage: dict[str, int]) -> str:
    """How the page writes a count of tokens."""
    return f"{usage['inputTokens']:,} in / {usage['outputTokens']:,} out tokens"


async def stopped_reply(tab: Page, text: str) -> str:
    """Sends `text` (a slow reply), stops it after a few pieces: the stored reply."""
    await send(tab, text)
    reply = tab.locator(".msg.assistant").last
    await expect(reply.locator(".bubble")).to_contain_text(" t2")
    await tab.get_by_role("button", name="Stop the reply").click()
    await expect(reply.locator(".note")).to_have_text("stopped")
    await expect(tab.locator("#input")).to_be_enabled()
    return await reply.locator(".bubble").inner_text()


async def test_regenerate_replaces_the_last_reply_in_the_page_and_in_history(
    page: Page, app: AppServer, fake_groq: FakeGroq
) -> None:
    subscriptions = record_subscriptions(page)
    session_id = await start_chat(page, "Regenerated")
    await send(page, "an earlier question")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text(["[n=2] an earlier question"])
    # The last reply is one cut short by Stop: the regenerated one is whole, so it shows.
    text = "!delay=0.1 !tokens=30 again please"
    partial = await stopped_reply(page, text)
    before = await stored(app, page, session_id)
    asked, old = before["messages"][-2:]
    assert (old["content"], old["status"]) == (partial, "STOPPED")

    # The last turn's buttons say so (earlier turns have their own: "... this reply").
    await expect(page.get_by_role("button", name="Regenerate the last reply")).to_have_count(1)
    await expect(page.get_by_role("button", name="Regenerate this reply")).to_have_count(1)
    await expect(page.get_by_role("button", name="Edit your last message")).to_have_count(1)
    last = page.locator(".msg.assistant").last
    await expect(last.get_by_role("button", name="Regenerate the last reply")).to_be_visible()
    await last.evaluate("node => { node.dataset.mark = 'old'; }")
    runs = model_runs(fake_groq)
    await page.get_by_role("button", name="Regenerate the last reply").click()

    expected = "[n=4]" + "".join(f" t{k}" for k in range(30))
    await expect(page.locator("#stop")).to_be_visible()
    await expect(page.get_by_role("button", name="Regenerate the last reply")).to_have_count(0)
    await watch_reply(page, expected)
    # In the old reply's place, in the same node: no new message, no "stopped" mark.
    await expect(page.locator(".msg.assistant .bubble")).to_have_text(
        ["[n=2] an earlier question", expected]
    )
    await expect(page.locator(".msg.assistant[data-mark='old'] .bubble")).to_have_text(expected)
    await expect(page.locator(".msg.user .bubble")).to_have_text(["an earlier question", text])
    await expect(page.locator(".msg .note")).to_have_count(0)
    await expect(page.locator("#input")).to_be_enabled()
    await expect(page.get_by_role("button", name="Regenerate the last reply")).to_be_visible()
    assert model_runs(fake_groq) == runs + 1, "the model did not run once more"

    regenerations = named(subscriptions, "regenerate")
    assert len(regenerations) == 1
    turn_id = regenerations[0]["turnId"]
    assert UUID_V4.match(turn_id) and regenerations[0]["sessionId"] == session_id
    assert len(named(subscriptions, "chat")) == 2  # the two messages, nothing more
    after = await stored(app, page, session_id)
    assert pairs(after) == [
        ("USER", "an earlier question"),
        ("ASSISTANT", "[n=2] an earlier question"),
        ("USER", text),
        ("ASSISTANT", expected),
    ]
    new = after["messages"][-1]
    assert (new["status"], new["turnId"]) == ("COMPLETE", turn_id)
    assert new["id"] != old["id"] and after["messages"][-2] == asked
    await expect(page.locator("#usage")).to_have_text(tokens(after["usage"]))
    await expect(page.locator(".msg.assistant").last).to_have_attribute(
        "title", tokens(new["usage"])
    )
    await shot(page, "desktop-regenerated")
    await page.reload()
    await expect(page.locator(".msg.assistant .bubble")).to_have_text(
        ["[n=2] an earlier question", expected]
    )
    await expect(page.locator(".msg.assistant.stopped")).to_have_count(0)


async def test_a_regenerated_reply_resumes_after_a_lost_socket_without_running_again(
    new_tab: NewTab, app: AppServer, fake_groq: FakeGroq
) -> None:
    async with RedisProxy(app.port) as proxy:
        tab = await new_tab(f"http://127.0.0.1:{proxy.port}")
        subscriptions = record_subscriptions(tab)
        session_id = await start_chat(tab, "Regenerated, resumed")
        text = "!delay=0.1 !tokens=40 resume the regeneration"
        partial = await stopped_reply(tab, text)
        runs = model_runs(fake_groq)
        await tab.get_by_role("button", name="Regenerate the last reply").click()
        reply = tab.locator(".msg.assistant").last
        await expect(reply.locator(".bubble")).to_contain_text(" t3")
        await reply.evaluate("node => { node.dataset.mark = 'regenerating'; }")
        assert proxy.drop_connections() > 0
        await watch_reply(tab, reply_of(40))

        await expect(tab.locator(".msg.assistant[data-mark='regenerating'] .bubble")).to_have_text(
            reply_of(40)
        )
        await expect(tab.locator(".msg.assistant")).to_have_count(1)
        await expect(tab.locator(".msg.pending, .msg.failed, .msg .note")).to_have_count(0)
        await expect(tab.locator("#input")).to_be_enabled()

    regenerations, follows = named(subscriptions, "regenerate"), named(subscriptions, "turn")
    assert len(regenerations) == 1, f"regenerate was sent {len(regenerations)} times"
    turn_id = regenerations[0]["turnId"]
    assert follows, "the page did not follow the regenerated reply after the drop"
    assert all(f["turnId"] == turn_id and f["sessionId"] == session_id for f in follows)
    assert follows[0]["after"] >= 4, "it did not resume after the last event it showed"
    session = await stored(app, tab, session_id)
    assert pairs(session) == [("USER", text), ("ASSISTANT", reply_of(40))]
    assert session["messages"][-1]["turnId"] == turn_id
    assert partial != reply_of(40)
    assert model_runs(fake_groq) == runs + 1, "the regeneration ran more than once"


async def test_edit_sends_a_new_version_of_the_last_message_and_escape_changes_nothing(
    page: Page, app: AppServer, fake_groq: FakeGroq
) -> None:
    subscriptions = record_subscriptions(page)
    session_id = await start_chat(page, "Edited")
    await send(page, "alpha one")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text(["[n=2] alpha one"])
    await send(page, "beta two")
    await expect(page.locator(".msg.assistant .bubble").last).to_have_text("[n=4] beta two")
    first = await stored(app, page, session_id)
    edited_id = first["messages"][2]["id"]
    requests = record_graphql(page)
    runs = model_runs(fake_groq)

    # Something typed waits in the input; Edit puts the last message there instead, and
    # Escape puts it back as it was: nothing is sent, nothing changes.
    await page.fill("#input", "a draft")
    edit = page.get_by_role("button", name="Edit your last message")
    await expect(page.locator(".msg.user").last.get_by_role("button")).to_have_accessible_name(
        "Edit your last message"
    )
    await edit.click()
    await expect(page.locator("#input")).to_have_value("beta two")
    await expect(page.locator("#edit-bar")).to_be_visible()
    await expect(page.locator(".msg.user.editing .bubble")).to_have_text("beta two")
    await page.press("#input", "Escape")
    await expect(page.locator("#input")).to_have_value("a draft")
    await expect(page.locator("#edit-bar")).to_be_hidden()
    await expect(page.locator(".msg.editing")).to_have_count(0)
    assert pairs(await stored(app, page, session_id)) == pairs(first)
    assert not operations(requests, "rewind") and not named(subscriptions, "edit")

    # The Cancel button does the same.
    await edit.click()
    await expect(page.locator("#input")).to_have_value("beta two")
    await page.get_by_role("button", name="Cancel the edit").click()
    await expect(page.locator("#input")).to_have_value("a draft")
    assert pairs(await stored(app, page, session_id)) == pairs(first)

    # Edited and sent: the edited text is a new version of the message, answered in its
    # place (the model was sent 4 messages, not 6); the old one is kept, not rewound.
    await edit.click()
    await page.fill("#input", "gamma three")
    await page.press("#input", "Enter")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text(
        ["[n=2] alpha one", "[n=4] gamma three"]
    )
    await expect(page.locator(".msg.user .bubble")).to_have_text(["alpha one", "gamma three"])
    await expect(page.locator("#input")).to_be_enabled()
    await expect(page.locator("#input")).to_have_value("a draft")  # what was typed is kept
    assert not operations(requests, "rewind")
    edits = named(subscriptions, "edit")
    assert [{k: v for k, v in e.items() if k != "turnId"} for e in edits] == [
        {"sessionId": session_id, "messageId": edited_id, "message": "gamma three"}
    ]
    assert UUID_V4.match(edits[0]["turnId"])
    assert len(named(subscriptions, "chat")) == 2  # the two messages before, nothing more
    assert model_runs(fake_groq) == runs + 1
    after = await stored(app, page, session_id)
    assert pairs(after) == [
        ("USER", "alpha one"),
        ("ASSISTANT", "[n=2] alpha one"),
        ("USER", "gamma three"),
        ("ASSISTANT", "[n=4] gamma three"),
    ]
    assert after["messages"][:2] == first["messages"][:2]
    assert edited_id not in {m["id"] for m in after["messages"]}
    assert after["messages"][3]["turnId"] == edits[0]["turnId"]
    await expect(page.locator(".msg.user").last.locator(".versions .count")).to_have_text("2 / 2")
    await expect(page.locator("#usage")).to_have_text(tokens(after["usage"]))
    # The new last turn has the buttons (its message's id learned from the history).
    await expect(
        page.locator(".msg.user").last.get_by_role("button", name="Edit your last message")
    ).to_be_visible()
    await page.reload()
    await expect(page.locator(".msg.user .bubble")).to_have_text(["alpha one", "gamma three"])


async def test_rename_in_the_header_persists_and_shows_in_the_list(
    page: Page, app: AppServer
) -> None:
    session_id = await start_chat(page, "Before the rename")
    rename = page.get_by_role("button", name="Rename this chat")
    title_input = page.get_by_role("textbox", name="Title of this chat")
    listed = page.locator(f"#sessions a[data-id='{session_id}'] .name")

    await rename.click()
    await expect(title_input).to_be_focused()
    await expect(title_input).to_have_value("Before the rename")
    await title_input.fill("Not kept")
    await title_input.press("Escape")
    await expect(title_input).to_be_hidden()
    await expect(page.locator("#chat-title")).to_have_text("Before the rename")
    assert (await stored(app, page, session_id))["title"] == "Before the rename"

    await rename.click()
    await title_input.fill("After the rename")
    await title_input.press("Enter")
    await expect(page.locator("#chat-title")).to_have_text("After the rename")
    await expect(title_input).to_be_hidden()
    await expect(listed).to_have_text("After the rename")
    assert (await stored(app, page, session_id))["title"] == "After the rename"

    await page.reload()
    await expect(page.locator("#chat-title")).to_have_text("After the rename")
    await expect(listed).to_have_text("After the rename")


async def test_a_long_chat_opens_with_its_last_50_and_pages_back_on_scrolling_up(
    page: Page, app: AppServer
) -> None:
    total = 120
    texts = [f"message {k:03d}" for k in range(total)]
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http, title="A long chat")  # no owner: anyone's
    redis = Redis.from_url(app.env["REDIS_URL"], decode_responses=True)
    try:
        for k, text in enumerate(texts):  # oldest first, as LangChain's history writes
            entry = {"type": "human" if k % 2 == 0 else "ai", "data": {"content": text}}
            await redis.lpush(messages_key(session_id), json.dumps(entry))
    finally:
        await redis.aclose()

    requests = record_graphql(page)
    await page.goto(f"/#/s/{session_id}")
    bubbles = page.locator("#messages > .msg .bubble")
    await expect(bubbles).to_have_text(texts[-50:])
    box = page.locator("#messages")
    assert await box.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight") < 2
    assert len(operations(requests, "messagesPage")) == 1

    shown = 50
    for _ in range(10):  # two pages to load; bounded
        if shown == total:
            break
        # The oldest message shown, and where it is on screen once scrolled to the top.
        await page.locator("#messages > .msg").first.evaluate(
            "(node, n) => { node.dataset.oldest = String(n); }", shown
        )
        top = await box.evaluate(TO_TOP)
        await expect(bubbles).not_to_have_count(shown)
        oldest = page.locator(f"#messages > .msg[data-oldest='{shown}']")
        now = await bubbles.count()
        assert now == min(shown + 50, total), f"a page of {now - shown} messages"
        # Put before it, and it did not move: the view did not jump.
        assert abs(await oldest.evaluate("node => node.getBoundingClientRect().top") - top) < 2
        shown = now
    await expect(bubbles).to_have_text(texts)  # all of them, each once, in order
    # Once a page came back shorter than asked, scrolling up asks for no more.
    await box.evaluate("el => { el.scrollTop = 0; }")
    await page.wait_for_timeout(300)
    pages = operations(requests, "messagesPage")
    assert [p.get("before") for p in pages] == [None, "70", "20"]
    assert all(p["last"] == 50 for p in pages)
    await expect(bubbles).to_have_count(total)


async def test_usage_per_reply_on_hover_and_per_chat_in_the_header(
    page: Page, app: AppServer
) -> None:
    session_id = await start_chat(page, "Counted")
    usage = page.locator("#usage")
    await expect(usage).to_have_text(tokens({"inputTokens": 0, "outputTokens": 0}))
    await send(page, "one two three")
    await expect(page.locator(".msg.assistant .bubble")).to_have_text(["[n=2] one two three"])
    first = await stored(app, page, session_id)
    assert first["usage"]["outputTokens"] > 0, "the model reported no usage"
    await expect(usage).to_have_text(tokens(first["usage"]))
    reply = page.locator(".msg.assistant").last
    await expect(reply).to_have_attribute("title", tokens(first["messages"][1]["usage"]))
    await expect(page.locator(".msg.user[title]")).to_have_count(0)

    await send(page, "four five")
    await expect(page.locator(".msg.assistant .bubble").last).to_have_text("[n=4] four five")
    second = await stored(app, page, session_id)
    assert second["usage"]["inputTokens"] > first["usage"]["inputTokens"]
    await expect(usage).to_have_text(tokens(second["usage"]))
    await expect(page.locator(".msg.assistant").last).to_have_attribute(
        "title", tokens(second["messages"][3]["usage"])
    )

    await page.reload()  # read from the history, as shown live
    await expect(usage).to_have_text(tokens(second["usage"]))
    replies = [m for m in second["messages"] if m["role"] == "ASSISTANT"]
    await expect(page.locator(".msg.assistant")).to_have_count(len(replies))
    for k, message in enumerate(replies):
        await expect(page.locator(".msg.assistant").nth(k)).to_have_attribute(
            "title", tokens(message["usage"])
        )


async def test_the_new_controls_at_375_px(browser: Browser, app: AppServer) -> None:
    context = await browser.new_context(base_url=app.url, viewport={"width": 375, "height": 740})
    tab = await context.new_page()
    try:
        await tab.goto("/")
        await expect(tab.get_by_role("button", name="Rename this chat")).to_be_hidden()
        await send(tab, "a phone's question with rather many words in it, to wrap")
        await expect(tab.locator(".msg.assistant .bubble")).to_contain_text("[n=2]")
        for name in ("Regenerate the last reply", "Edit your last message", "Rename this chat"):
            button = tab.get_by_role("button", name=name)
            await expect(button).to_be_visible()
            await expect(button).to_be_in_viewport()
        await expect(tab.locator("#usage")).to_be_visible()
        assert await tab.evaluate("document.documentElement.scrollWidth") <= 375
        await tab.get_by_role("button", name="Rename this chat").click()
        title_input = tab.get_by_role("textbox", name="Title of this chat")
        await expect(title_input).to_be_in_viewport()
        box = await title_input.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 375
        await tab.get_by_role("button", name="Edit your last message").click()
        await expect(tab.locator("#edit-bar")).to_be_in_viewport()
        assert await tab.evaluate("document.documentElement.scrollWidth") <= 375
        await shot(tab, "phone-conversation-controls")
    finally:
        await context.close()


async def test_a_regenerated_reply_found_running_on_opening_the_chat_streams_in_place(
    new_tab: NewTab, app: AppServer, fake_groq: FakeGroq
) -> None:
    """A second tab of the same guest opens the chat while the first regenerates its
    last reply: the reply streams in the old one's place, the message shows once."""
    first = await new_tab(app.url)
    session_id = await start_chat(first, "Regenerated elsewhere")
    text = "!delay=0.1 !tokens=30 shown once"
    await stopped_reply(first, text)
    await first.get_by_role("button", name="Regenerate the last reply").click()
    await expect(first.locator(".msg.assistant .bubble")).to_contain_text(" t2")

    second = await new_tab(app.url, context=first.context)
    await second.goto(f"/#/s/{session_id}")
    await expect(second.locator(".msg.assistant.streaming")).to_have_count(1)
    await expect(second.locator(".msg.user .bubble")).to_have_text([text])
    await expect(second.locator("#stop")).to_be_visible()
    await watch_reply(second, reply_of(30))
    await expect(second.locator(".msg.assistant .bubble")).to_have_text([reply_of(30)])
    await expect(second.locator(".msg.user .bubble")).to_have_text([text])
    await expect(second.locator(".msg .note")).to_have_count(0)
    await expect(first.locator(".msg.assistant .bubble")).to_have_text([reply_of(30)])
    session = await stored(app, second, session_id)
    assert pairs(session) == [("USER", text), ("ASSISTANT", reply_of(30))]
