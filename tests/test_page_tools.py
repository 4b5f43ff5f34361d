"""Rich turns in the chat page, in headless Chromium against the app on a real uvicorn: a
reply's reasoning streams into a collapsed "Thinking" block above its answer (and shows
so again from the history); the page's demo tools are offered with every message, a
call shows as a card whose Run or Decline (mouse or keyboard) answers it, and once
every call has an answer they go in one `submitToolResults` whose reply streams like
any other; calls still waiting come back after a reload, answered ones show their
results from the history, a new message cancels them, a tool the page does not have
answers "unknown tool", and the tools are not offered with "Demo tools" off.

The browser fixtures are in tests/conftest.py, the helpers in tests/support/page.py. The
model is the fake Groq server: `!reason=K` streams K pieces of reasoning (" r0", " r1",
...) before the answer, `!call=NAME{JSON}` calls the offered tool NAME, and after the
tools' results it answers "[n=N] <call id>=<content> ...". Every wait is bounded; no
wall-clock duration is asserted.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from tests.support import AppServer, gql
from tests.support.page import (
    UUID_V4,
    guest_headers,
    named,
    record_subscriptions,
    send,
    shot,
    start_chat,
    watch_reply,
)

pytestmark = pytest.mark.browser

DECLINED = "declined by the user"
MESSAGES = """
query($s: ID!) {
  session(id: $s) {
    activeTurn { turnId }
    pendingToolCalls { id name arguments }
    messages { id role content reasoning toolCallId toolCalls { id name arguments } }
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


def cards(tab: Page) -> Locator:
    return tab.locator("#messages .call")


async def card_waits(card: Locator, tool: str) -> None:
    """The card of a call of `tool` asks for the person's approval."""
    await expect(card.locator(".call-name")).to_have_text(tool)
    await expect(card.locator(".call-status")).to_have_text("Waiting for your approval")
    await expect(card.get_by_role("button", name=f"Run {tool}")).to_be_enabled()
    await expect(card.get_by_role("button", name=f"Decline {tool}")).to_be_enabled()


async def card_shows(card: Locator, status: str, result: str) -> None:
    await expect(card.locator(".call-status")).to_have_text(status)
    await expect(card.locator(".call-result")).to_have_text(result)
    await expect(card.get_by_role("button")).to_have_count(0)


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


async def test_a_calculator_call_runs_once_approved_and_its_result_is_sent(
    page: Page, app: AppServer
) -> None:
    subscriptions = record_subscriptions(page)
    session_id = await start_chat(page, "Arithmetic")
    message = '!reason=2 !call=calculator{"expression":"6*7"} how much?'
    await send(page, message)

    # Both demo tools were offered; the reply asks for one call: a card waits.
    [chat] = named(subscriptions, "chat")
    assert [t["name"] for t in chat["tools"]] == ["current_time", "calculator"]
    assert chat["tools"][1]["parameters"]["required"] == ["expression"]
    card = cards(page)
    await expect(card).to_have_count(1)
    await card_waits(card, "calculator")
    assert json.loads(await card.locator(".call-args").inner_text()) == {"expression": "6*7"}
    await expect(card).to_have_attribute("aria-label", "Tool call: calculator")
    asking = page.locator(".msg.assistant").last
    await expect(asking.locator(".bubble")).to_be_hidden()  # no answer text, the card only
    assert await asking.locator(".thinking-text").text_content() == " r0 r1"
    await expect(page.locator("#input")).to_be_enabled()
    pending = (await stored(app, page, session_id))["pendingToolCalls"]
    assert [(c["name"], json.loads(c["arguments"])) for c in pending] == [
        ("calculator", {"expression": "6*7"})
    ]
    call_id = pending[0]["id"]
    await shot(page, "tools-approval")

    # Run: the result shows on the card and goes to the server with a turn id of its own;
    # the next reply streams after the card.
    await card.get_by_role("button", name="Run calculator").click()
    await card_shows(card, "Done", "42")
    expected = f"[n=4] {call_id}=42"
    await watch_reply(page, expected)
    [submitted] = named(subscriptions, "submitToolResults")
    assert submitted["sessionId"] == session_id
    assert submitted["results"] == [{"toolCallId": call_id, "content": "42"}]
    assert [t["name"] for t in submitted["tools"]] == ["current_time", "calculator"]
    assert UUID_V4.match(submitted["turnId"]) and submitted["turnId"] != chat["turnId"]
    assert len(named(subscriptions, "chat")) == 1
    await expect(page.locator(".msg")).to_have_count(3)  # the result is no bubble of its own
    await expect(page.locator(".msg.assistant .bubble").last).to_have_text(expected)
    await expect(page.locator("#input")).to_be_enabled()

    session = await stored(app, page, session_id)
    assert session["pendingToolCalls"] == []
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("USER", message),
        ("ASSISTANT", ""),
        ("TOOL", "42"),
        ("ASSISTANT", expected),
    ]
    assert session["messages"][2]["toolCallId"] == call_id

    # The history shows the card with its result, and the reply after it.
    await page.reload()
    await expect(cards(page)).to_have_count(1)
    await card_shows(cards(page), "Done", "42")
    await expect(page.locator(".msg")).to_have_count(3)
    await expect(page.locator(".msg.assistant .bubble").last).to_have_text(expected)
    # (the fake reasons again before its answer to the results)
    await expect(page.locator(".msg.assistant .thinking-text")).to_have_text([" r0 r1"] * 2)


async def test_declining_a_call_from_the_keyboard_answers_declined(
    page: Page, app: AppServer
) -> None:
    subscriptions = record_subscriptions(page)
    session_id = await start_chat(page, "No clock")
    await send(page, "!call=current_time what time is it?")
    card = cards(page)
    await card_waits(card, "current_time")
    await expect(card.locator(".call-args")).to_have_text("(no arguments)")
    [call] = (await stored(app, page, session_id))["pendingToolCalls"]
    await card.get_by_role("button", name="Decline current_time").focus()
    await page.keyboard.press("Enter")
    await card_shows(card, "Declined", DECLINED)
    await watch_reply(page, f"[n=4] {call['id']}={DECLINED}")
    await expect(page.locator("#input")).to_be_focused()  # the reply in, back to the input
    [submitted] = named(subscriptions, "submitToolResults")
    assert submitted["results"] == [{"toolCallId": call["id"], "content": DECLINED}]
    messages = (await stored(app, page, session_id))["messages"]
    assert [(m["role"], m["content"]) for m in messages][2] == ("TOOL", DECLINED)


async def test_calls_still_waiting_come_back_after_a_reload(page: Page, app: AppServer) -> None:
    subscriptions = record_subscriptions(page)
    session_id = await start_chat(page, "Two calls")
    await send(page, '!call=current_time !call=calculator{"expression":"(1+2)*3.5/0"} both')
    await expect(cards(page)).to_have_count(2)
    clock, calc = cards(page).nth(0), cards(page).nth(1)
    await card_waits(clock, "current_time")
    await card_waits(calc, "calculator")
    await expect(clock).to_have_attribute("aria-label", "Tool call (1 of 2): current_time")

    # One answered: nothing is sent until the other is; the focus moves on to it.
    await clock.get_by_role("button", name="Run current_time").click()
    await expect(clock.locator(".call-status")).to_have_text("Answered")
    await expect(calc.get_by_role("button", name="Run calculator")).to_be_focused()
    assert not named(subscriptions, "submitToolResults")
    pending = (await stored(app, page, session_id))["pendingToolCalls"]
    assert [c["name"] for c in pending] == ["current_time", "calculator"]

    # After a reload both wait again (an answer not sent is not kept).
    await page.reload()
    await expect(cards(page)).to_have_count(2)
    await card_waits(cards(page).nth(0), "current_time")
    await card_waits(cards(page).nth(1), "calculator")
    await cards(page).nth(1).get_by_role("button", name="Run calculator").click()
    await cards(page).nth(0).get_by_role("button", name="Run current_time").click()

    # Both go together, in the order of the calls: the time as ISO text with its zone,
    # and the calculator's error.
    await expect(page.locator(".msg.assistant .bubble").last).to_contain_text("[n=5]")
    [submitted] = named(subscriptions, "submitToolResults")
    ids = [c["id"] for c in pending]
    assert [r["toolCallId"] for r in submitted["results"]] == ids
    now = json.loads(submitted["results"][0]["content"])
    assert set(now) == {"time", "timeZone"} and now["timeZone"]
    assert now["time"][10] == "T" and now["time"][-6] in "+-"
    assert submitted["results"][1]["content"] == "error: division by zero"
    await watch_reply(
        page,
        f"[n=5] {ids[0]}={submitted['results'][0]['content']} {ids[1]}=error: division by zero",
    )

    # The history shows both cards with their results.
    await page.reload()
    await expect(cards(page)).to_have_count(2)
    await expect(cards(page).nth(0).locator(".call-status")).to_have_text("Done")
    assert json.loads(await cards(page).nth(0).locator(".call-result").inner_text()) == now
    await card_shows(cards(page).nth(1), "Error", "error: division by zero")
    await expect(page.locator(".msg")).to_have_count(3)


async def test_a_reload_while_the_answer_streams_follows_it_and_shows_the_result(
    page: Page, app: AppServer
) -> None:
    subscriptions = record_subscriptions(page)
    session_id = await start_chat(page, "Reloaded mid-answer")
    # Each of the model's replies reasons 30 pieces first, one every 0.25 s: time to
    # reload while the second one streams.
    await send(page, '!reason=30 !delay=0.25 !call=calculator{"expression":"2.5*4"} slow')
    await expect(cards(page)).to_have_count(1, timeout=30_000)
    await card_waits(cards(page), "calculator")
    [call] = (await stored(app, page, session_id))["pendingToolCalls"]
    await cards(page).get_by_role("button", name="Run calculator").click()
    await expect(page.locator(".msg.assistant.streaming .thinking-text")).to_contain_text(" r0")
    await page.reload()

    # The page follows the running turn: its reply streams after the card (no message of
    # the person's before it), whose buttons wait meanwhile; once stored, the card shows
    # the result.
    replies = page.locator("#messages > .msg")
    await expect(replies.nth(2)).to_have_class("msg assistant streaming")
    await expect(cards(page).get_by_role("button", name="Run calculator")).to_be_disabled()
    expected = f"[n=4] {call['id']}=10"
    await watch_reply(page, expected)
    await card_shows(cards(page), "Done", "10")
    await expect(replies).to_have_count(3)
    reasoning = "".join(f" r{k}" for k in range(30))
    await expect(page.locator(".msg.assistant .thinking-text")).to_have_text([reasoning] * 2)
    assert len(named(subscriptions, "submitToolResults")) == 1
    assert named(subscriptions, "turn"), "the page did not follow the turn"
    messages = (await stored(app, page, session_id))["messages"]
    assert [(m["role"], m["content"]) for m in messages][2:] == [
        ("TOOL", "10"),
        ("ASSISTANT", expected),
    ]


async def test_a_new_message_cancels_the_calls_waiting(page: Page, app: AppServer) -> None:
    session_id = await start_chat(page, "Changed my mind")
    await send(page, "!call=current_time please")
    await card_waits(cards(page), "current_time")
    await send(page, "never mind")
    await watch_reply(page, "[n=5] never mind")
    await card_shows(cards(page), "Cancelled", "cancelled")
    session = await stored(app, page, session_id)
    assert session["pendingToolCalls"] == []
    assert [m["role"] for m in session["messages"]] == [
        "USER",
        "ASSISTANT",
        "TOOL",
        "USER",
        "ASSISTANT",
    ]
    await page.reload()
    await card_shows(cards(page), "Cancelled", "cancelled")
    await expect(page.locator(".msg")).to_have_count(4)


async def test_a_call_of_a_tool_the_page_does_not_have_answers_unknown_tool(
    page: Page, app: AppServer
) -> None:
    """Another client offered a tool of its own; the page shows the call and answers it
    "unknown tool" when run."""
    session_id = await start_chat(page, "Someone else's tool")
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        asked = await http.post(
            "/chat",
            json={
                "session_id": session_id,
                "message": '!call=weather{"city":"Oslo"} rain?',
                "tools": [{"name": "weather"}],
            },
            headers={**await guest_headers(page), "accept": "application/json"},
        )
    assert asked.status_code == 200, asked.text
    await page.reload()
    card = cards(page)
    await card_waits(card, "weather")
    await expect(card.locator(".call-note")).to_contain_text("no tool named")
    await card.get_by_role("button", name="Run weather").click()
    await card_shows(card, "Unknown tool", "unknown tool")
    [call] = [m for m in (await stored(app, page, session_id))["messages"] if m["role"] == "TOOL"]
    assert call["content"] == "unknown tool"
    await watch_reply(page, f"[n=4] {call['toolCallId']}=unknown tool")


async def test_with_demo_tools_off_no_tool_is_offered(page: Page) -> None:
    subscriptions = record_subscriptions(page)
    await start_chat(page, "Plain")
    toggle = page.get_by_role("checkbox", name="Demo tools")
    await expect(toggle).to_be_checked()
    await toggle.uncheck()
    message = '!call=calculator{"expression":"1+1"} plain'
    await send(page, message)
    await watch_reply(page, f"[n=2] {message}")
    [chat] = named(subscriptions, "chat")
    assert "tools" not in chat
    await expect(cards(page)).to_have_count(0)
    await page.reload()  # the setting stays
    await expect(page.get_by_role("checkbox", name="Demo tools")).not_to_be_checked()
    await page.get_by_role("checkbox", name="Demo tools").check()
    await page.reload()
    await expect(page.get_by_role("checkbox", name="Demo tools")).to_be_checked()


async def test_the_cards_at_375_px(browser: Browser, app: AppServer) -> None:
    context = await browser.new_context(base_url=app.url, viewport={"width": 375, "height": 740})
    tab = await context.new_page()
    try:
        await tab.goto("/")
        await send(tab, '!reason=2 !call=calculator{"expression":"(12.5+7.5)*(3-1)/4"} phone')
        card = cards(tab)
        await card_waits(card, "calculator")
        for name in ("Run calculator", "Decline calculator"):
            button = card.get_by_role("button", name=name)
            await expect(button).to_be_in_viewport()
            box = await button.bounding_box()
            assert box is not None and box["x"] + box["width"] <= 375
            assert box["height"] >= 24, "too small to tap"
        assert await tab.evaluate("document.documentElement.scrollWidth") <= 375
        await shot(tab, "phone-tools")
        await card.get_by_role("button", name="Run calculator").click()
        await card_shows(card, "Done", "10")
        await expect(tab.locator(".msg.assistant .bubble").last).to_contain_text("=10")
        assert await tab.evaluate("document.documentElement.scrollWidth") <= 375
    finally:
        await context.close()


async def test_the_answer_to_the_results_can_be_regenerated(page: Page, app: AppServer) -> None:
    """The answer after the tools' results has Regenerate, as any reply does: the server
    answers the same results again, and the picker shows the two versions."""
    subscriptions = record_subscriptions(page)
    session_id = await start_chat(page, "Again")
    await send(page, '!call=calculator{"expression":"3*3"} again')
    await cards(page).get_by_role("button", name="Run calculator").click()
    await card_shows(cards(page), "Done", "9")
    answer = page.locator("#messages > .msg.assistant").last
    await expect(answer.locator(".bubble")).to_contain_text("=9")
    await page.reload()  # from the history too
    await expect(cards(page)).to_have_count(1)
    old_id = (await stored(app, page, session_id))["messages"][-1]["id"]
    regenerate = page.get_by_role("button", name="Regenerate the last reply")
    await expect(regenerate).to_have_count(1)
    await regenerate.click()
    await expect(answer.locator(".versions .count")).to_have_text("2 / 2")
    [again] = named(subscriptions, "regenerate")
    assert again["messageId"] == old_id  # the reply it makes a new version of
    session = await stored(app, page, session_id)
    assert session["messages"][-1]["id"] != old_id
    assert [m["role"] for m in session["messages"]] == ["USER", "ASSISTANT", "TOOL", "ASSISTANT"]
    assert session["messages"][-1]["content"].endswith("=9")
