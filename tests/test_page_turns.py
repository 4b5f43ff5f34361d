"""Durable turns in the chat page, in headless Chromium against the app on a real uvicorn:
a reply followed to its end after a reload, a reply taken up again after a lost socket
(never sent twice), the Stop button, a reply followed from a second tab and after a
reconnect, and a browser's EventSource following a turn over
`GET /session/{id}/turns/{turn_id}/events` and resuming it with `Last-Event-ID`.

The browser fixtures are in tests/conftest.py, the helpers in tests/support/page.py. The
model is the fake Groq server: `!delay=S !tokens=K` makes a reply of K + 1 pieces ("[n=2]",
" t0", ...), one every S seconds, and its `/requests` count says how often the model ran. A lost
connection is a real one: the page talks to the app through a TCP proxy whose
connections the test resets. Every wait is bounded; no wall-clock duration is asserted.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.support import AppServer, FakeGroq, gql, new_session
from tests.support.page import (
    UUID_V4,
    NewTab,
    guest_headers,
    model_runs,
    named,
    piece,
    record_subscriptions,
    reply_of,
    send,
    start_chat,
    watch_reply,
)
from tests.support.redis_proxy import RedisProxy

pytestmark = pytest.mark.browser

MESSAGES = """
query($s: ID!) {
  session(id: $s) { activeTurn { turnId } messages { id turnId status role content } }
}
"""
# Drops crypto.randomUUID, as in a page served over plain http to another host (it
# exists only in a secure context): the page makes its turn ids another way.
NO_RANDOM_UUID = "delete Crypto.prototype.randomUUID;"


async def stored_messages(server: AppServer, tab: Page, session_id: str) -> list[dict[str, Any]]:
    """The chat's messages as stored, read as the tab's guest."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        body = await gql(http, MESSAGES, headers=await guest_headers(tab), s=session_id)
    session = body["data"]["session"]  # type: ignore[index]
    assert session["activeTurn"] is None
    messages: list[dict[str, Any]] = session["messages"]
    return messages


async def test_a_reload_mid_reply_shows_the_reply_continue_to_its_end_once(
    page: Page, app: AppServer, fake_groq: FakeGroq
) -> None:
    session_id = await start_chat(page, "Reloaded")
    text = "!delay=0.1 !tokens=40 reload me"
    expected = reply_of(40)
    runs = model_runs(fake_groq)
    await send(page, text)
    await expect(page.locator(".msg.assistant .bubble")).to_contain_text(" t2")

    await page.reload()
    # Not stored yet: the message shows from the running turn, its reply streams on.
    await expect(page.locator(".msg.user .bubble")).to_have_text([text])
    await expect(page.locator(".msg.assistant.streaming")).to_have_count(1)
    await expect(page.locator("#stop")).to_be_visible()
    await expect(page.locator("#send")).to_be_disabled()
    await watch_reply(page, expected)
    await expect(page.locator(".msg.user .bubble")).to_have_text([text])
    await expect(page.locator(".msg.assistant .bubble")).to_have_text([expected])
    await expect(page.locator(".msg .note")).to_have_count(0)
    await expect(page.locator("#stop")).to_be_hidden()
    await expect(page.locator("#input")).to_be_enabled()

    messages = await stored_messages(app, page, session_id)
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("USER", text, "COMPLETE"),
        ("ASSISTANT", expected, "COMPLETE"),
    ]
    assert model_runs(fake_groq) == runs + 1, "the message ran more than once"


async def test_a_lost_socket_mid_reply_resumes_after_the_last_event_without_sending_again(
    new_tab: NewTab, app: AppServer, fake_groq: FakeGroq
) -> None:
    async with RedisProxy(app.port) as proxy:
        tab = await new_tab(f"http://127.0.0.1:{proxy.port}")
        subscriptions = record_subscriptions(tab)
        session_id = await start_chat(tab, "Resumed")
        text = "!delay=0.1 !tokens=40 resume me"
        expected = reply_of(40)
        runs = model_runs(fake_groq)
        await send(tab, text)
        await expect(tab.locator(".msg.assistant .bubble")).to_contain_text(" t3")
        # The node of the reply, marked: the same one must go on after the drop.
        await tab.locator(".msg.assistant").evaluate("node => { node.dataset.mark = 'first'; }")
        assert proxy.drop_connections() > 0
        await watch_reply(tab, expected)

        await expect(tab.locator(".msg.assistant[data-mark='first'] .bubble")).to_have_text(
            expected
        )
        await expect(tab.locator(".msg.assistant")).to_have_count(1)
        await expect(tab.locator(".msg.pending, .msg.failed")).to_have_count(0)
        await expect(tab.locator("#input")).to_be_enabled()
        assert await tab.input_value("#input") == ""

    chats, follows = named(subscriptions, "chat"), named(subscriptions, "turn")
    assert len(chats) == 1, f"the message was sent {len(chats)} times"
    turn_id = chats[0]["turnId"]
    assert UUID_V4.match(turn_id), turn_id
    assert follows, "the page did not follow its turn after the drop"
    assert all(f["turnId"] == turn_id and f["sessionId"] == session_id for f in follows)
    assert follows[0]["after"] >= 4, "it did not resume after the last event it showed"
    messages = await stored_messages(app, tab, session_id)
    assert [(m["content"], m["turnId"]) for m in messages] == [(text, turn_id), (expected, turn_id)]
    assert model_runs(fake_groq) == runs + 1, "the message ran more than once"


async def test_the_stop_button_stops_the_reply_and_marks_it_stopped(
    new_tab: NewTab, app: AppServer, fake_groq: FakeGroq
) -> None:
    # Without crypto.randomUUID: the turn id is made from crypto.getRandomValues.
    tab = await new_tab(app.url, init_script=NO_RANDOM_UUID)
    session_id = await start_chat(tab, "Stopped")
    assert await tab.evaluate("typeof crypto.randomUUID") == "undefined"
    await expect(tab.locator("#stop")).to_be_hidden()
    text = "!delay=0.1 !tokens=300 stop me"
    await send(tab, text)
    reply = tab.locator(".msg.assistant")
    await expect(reply.locator(".bubble")).to_contain_text(" t2")
    stop = tab.get_by_role("button", name="Stop the reply")
    await expect(stop).to_be_visible()
    await expect(tab.locator("#send")).to_be_disabled()
    await stop.click()

    await expect(reply).to_have_class(re.compile(r"\bstopped\b"))
    await expect(reply.locator(".note")).to_have_text("stopped")
    await expect(tab.locator(".msg.assistant.streaming")).to_have_count(0)
    await expect(tab.locator("#stop")).to_be_hidden()
    await expect(tab.locator("#send")).to_be_enabled()
    await expect(tab.locator("#input")).to_be_enabled()
    shown = await reply.locator(".bubble").inner_text()
    assert shown.startswith("[n=2] t0 t1 t2") and len(shown) < len(reply_of(300))

    user, answer = await stored_messages(app, tab, session_id)
    assert (user["content"], user["status"]) == (text, "COMPLETE")
    assert (answer["content"], answer["status"]) == (shown, "STOPPED")
    assert user["turnId"] == answer["turnId"] and UUID_V4.match(answer["turnId"])

    # The chat takes the next message at once; a reload shows the stopped reply marked.
    await send(tab, "after the stop")
    await expect(tab.locator(".msg.assistant .bubble").last).to_have_text("[n=4] after the stop")
    await tab.reload()
    await expect(tab.locator(".msg.assistant .bubble")).to_have_text(
        [shown, "[n=4] after the stop"]
    )
    await expect(tab.locator(".msg.assistant.stopped .note")).to_have_text(["stopped"])
    await expect(tab.locator(".msg.assistant.stopped .bubble")).to_have_text(shown)


async def test_a_second_tab_follows_the_running_reply_and_stops_it(
    new_tab: NewTab, app: AppServer, fake_groq: FakeGroq
) -> None:
    first = await new_tab(app.url)
    session_id = await start_chat(first, "Two tabs")
    text = "!delay=0.1 !tokens=300 two tabs"
    runs = model_runs(fake_groq)
    await send(first, text)
    await expect(first.locator(".msg.assistant .bubble")).to_contain_text(" t2")

    # The same browser (the same guest), the chat opened by its address mid-reply.
    second = await new_tab(app.url, context=first.context)
    await second.goto(f"/#/s/{session_id}")
    await expect(second.locator(".msg.user .bubble")).to_have_text([text])
    await expect(second.locator(".msg.assistant .bubble")).to_contain_text(" t4")
    await expect(second.locator("#input")).to_be_disabled()
    await second.get_by_role("button", name="Stop the reply").click()

    for tab in (first, second):
        await expect(tab.locator(".msg.assistant.stopped .note")).to_have_text(["stopped"])
        await expect(tab.locator("#stop")).to_be_hidden()
        await expect(tab.locator("#input")).to_be_enabled()
    shown = await first.locator(".msg.assistant .bubble").inner_text()
    await expect(second.locator(".msg.assistant .bubble")).to_have_text([shown])
    _, answer = await stored_messages(app, first, session_id)
    assert (answer["content"], answer["status"]) == (shown, "STOPPED")
    assert model_runs(fake_groq) == runs + 1


async def test_a_reply_started_while_the_socket_was_lost_is_followed_once_it_is_back(
    new_tab: NewTab, app: AppServer
) -> None:
    async with RedisProxy(app.port) as proxy:
        tab = await new_tab(f"http://127.0.0.1:{proxy.port}")
        session_id = await start_chat(tab, "Elsewhere")
        await expect(tab.locator("#conn")).to_have_attribute("data-state", "open")
        proxy.refuse_new()
        proxy.drop_connections()
        await expect(tab.locator("#conn")).to_have_attribute("data-state", "closed")
        # Meanwhile the same guest sends a message from another program.
        text = "!delay=0.1 !tokens=100 sent elsewhere"
        headers = await guest_headers(tab)
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
            body = {"session_id": session_id, "message": text}
            async with http.stream("POST", "/chat", json=body, headers=headers) as running:
                assert running.status_code == 200
                proxy.accept_new()
                await expect(tab.locator("#conn")).to_have_attribute(
                    "data-state", "open", timeout=20_000
                )
                await expect(tab.locator(".msg.user .bubble")).to_have_text([text])
                await expect(tab.locator(".msg.assistant.streaming")).to_have_count(1)
                await watch_reply(tab, reply_of(100))
                await running.aread()
        await expect(tab.locator(".msg.assistant .bubble")).to_have_text([reply_of(100)])
        await expect(tab.locator("#input")).to_be_enabled()


EVENT_SOURCE = """(url) => {
    const seen = { events: [], opens: 0, errors: 0, source: null };
    window.__seen = seen;
    const source = new EventSource(url);
    seen.source = source;
    source.onopen = () => { seen.opens += 1; };
    source.onerror = () => { seen.errors += 1; };
    for (const type of ['token', 'done']) {
        source.addEventListener(type, (event) => {
            seen.events.push({ type, id: event.lastEventId, data: JSON.parse(event.data) });
        });
    }
}"""
SEEN = """() => ({
    events: window.__seen.events, opens: window.__seen.opens,
    state: window.__seen.source.readyState,
})"""
FETCH = """async ([url, last]) => {
    const headers = last === null ? {} : { 'Last-Event-ID': String(last) };
    const response = await fetch(url, { headers });
    return { status: response.status, text: await response.text() };
}"""


def sse_blocks(text: str) -> list[tuple[int, str, dict[str, str]]]:
    """(id, event, data) of each event of a text/event-stream body."""
    blocks = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        if "event" not in fields:
            assert fields == {"retry": "1000"}  # the reconnect hint, first
            continue
        blocks.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return blocks


async def seen_events(tab: Page) -> dict[str, Any]:
    seen: dict[str, Any] = await tab.evaluate(SEEN)
    return seen


async def test_an_event_source_follows_a_turn_of_another_process_and_resumes_it(
    new_tab: NewTab,
    make_app: Callable[..., AppServer],
    fresh_db: Callable[[], str],
) -> None:
    """The turn runs on process B; the browser follows it on process A (through a proxy
    whose connections the test resets): EventSource reconnects by itself with
    Last-Event-ID, and every piece arrives once, in order."""
    url = fresh_db()
    follower, runner = make_app(redis_url=url), make_app(redis_url=url)
    tokens = 60
    async with (
        RedisProxy(follower.port) as proxy,
        httpx.AsyncClient(base_url=runner.url, timeout=60) as http_b,
    ):
        session_id = await new_session(http_b)  # no owner: EventSource sends no token
        turn_id = str(uuid.uuid4())
        body = {
            "session_id": session_id,
            "message": f"!delay=0.1 !tokens={tokens} followed",
            "turn_id": turn_id,
        }
        running = asyncio.create_task(
            http_b.post("/chat", json=body, headers={"accept": "application/json"})
        )
        async with httpx.AsyncClient(base_url=follower.url, timeout=30) as http_a:
            for _ in range(200):  # until process A sees the turn (bounded)
                active = (await gql(http_a, MESSAGES, s=session_id))["data"]
                if active["session"]["activeTurn"]:  # type: ignore[index]
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the turn did not start")

        tab = await new_tab(f"http://127.0.0.1:{proxy.port}")
        resumes: list[str | None] = []

        async def note_request(request: Any) -> None:
            if request.url.endswith(f"/turns/{turn_id}/events"):
                resumes.append((await request.all_headers()).get("last-event-id"))

        tab.on("request", note_request)
        await tab.goto("/")
        events_url = f"/session/{session_id}/turns/{turn_id}/events"
        await tab.evaluate(EVENT_SOURCE, events_url)
        for _ in range(200):
            if len((await seen_events(tab))["events"]) >= 5:
                break
            await asyncio.sleep(0.05)
        before = len((await seen_events(tab))["events"])
        assert before >= 5, "the EventSource got too few events"
        assert proxy.drop_connections() > 0

        seen: dict[str, Any] = {}
        for _ in range(600):  # until it closed itself: the end was seen, then a 204
            seen = await seen_events(tab)
            if seen["state"] == 2:
                break
            await asyncio.sleep(0.05)
        assert seen["state"] == 2, "the EventSource did not end"
        reply = (await running).json()["response"]
        assert reply == reply_of(tokens)

        events = seen["events"]
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(set(ids)), f"events repeated or out of order: {ids}"
        assert events[-1] == {
            "type": "done",
            "id": str(tokens + 2),
            "data": {"response": reply, "status": "COMPLETE"},
        }
        assert "".join(e["data"]["token"] for e in events[:-1]) == reply
        assert seen["opens"] == 2, "the EventSource did not reconnect once after the drop"
        assert len(events) > before, "nothing came after the reconnect"
        # The reconnect said where it was; the last one (after the end) got 204. The
        # request listener runs on its own: it may note the last request a moment after
        # the EventSource closed.
        for _ in range(100):
            if resumes[-1:] == [str(tokens + 2)]:
                break
            await asyncio.sleep(0.05)
        assert resumes[0] is None
        assert resumes[1] is not None and int(resumes[1]) >= 5
        assert resumes[-1] == str(tokens + 2)

        # fetch() with Last-Event-ID resumes after it, in the browser, on either process.
        last = tokens - 8
        tail = await tab.evaluate(FETCH, [events_url, last])
        assert tail["status"] == 200
        blocks = sse_blocks(tail["text"])
        assert [b[0] for b in blocks] == list(range(last + 1, tokens + 3))
        assert [b[2]["token"] for b in blocks[:-1]] == [
            piece(seq) for seq in range(last + 1, tokens + 2)
        ]
        assert blocks[-1][1:] == ("done", {"response": reply, "status": "COMPLETE"})
        whole = sse_blocks((await tab.evaluate(FETCH, [events_url, None]))["text"])
        assert "".join(b[2].get("token", "") for b in whole) == reply
        assert (await tab.evaluate(FETCH, [events_url, tokens + 2]))["status"] == 204
        async with httpx.AsyncClient(base_url=runner.url, timeout=30) as http:
            again = await http.get(events_url, headers={"last-event-id": str(last)})
        assert again.text == tail["text"]
