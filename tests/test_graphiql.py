"""GraphiQL at /graphql in a real browser with the network cut: a `chat` subscription
typed into it streams. The page's scripts come from this server (static/vendor/), checked
by the subresource-integrity hashes of Strawberry's own page."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, Route, expect

from tests.support import AppServer
from tests.support.page import shot

pytestmark = pytest.mark.browser


@pytest.fixture
async def graphiql_page(
    browser: Browser,
    app: AppServer,
) -> AsyncIterator[Page]:
    """A browser with the network cut: only this server answers (GraphiQL's scripts
    come from the server's own copies, static/vendor/)."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    await context.route("**/*", lambda route: only_this_server(route, app.url))
    page = await context.new_page()
    yield page
    await context.close()


async def only_this_server(route: Route, origin: str) -> None:
    if route.request.url.startswith(origin):
        await route.continue_()
    else:
        await route.abort("internetdisconnected")


async def test_a_chat_subscription_typed_into_graphiql_streams(
    graphiql_page: Page, app: AppServer
) -> None:
    page = graphiql_page
    await page.goto(f"{app.url}/graphql")
    editor = page.locator(".graphiql-query-editor .CodeMirror")
    await expect(editor).to_be_visible(timeout=15_000)

    created = await page.evaluate(
        """async () => {
            const r = await fetch('/graphql', {method: 'POST',
              headers: {'content-type': 'application/json'},
              body: JSON.stringify({query: 'mutation { createSession { id } }'})});
            return (await r.json()).data.createSession.id;
        }"""
    )
    query = (
        f'subscription {{ chat(sessionId: "{created}", '
        'message: "!delay=0.25 alpha beta gamma delta epsilon zeta") { token done } }'
    )
    # Into the editor, replacing the example query, as a person pasting it would.
    await editor.click()
    await page.keyboard.press("Control+A")
    await page.keyboard.press("Delete")
    await page.keyboard.insert_text(query)
    await page.wait_for_timeout(500)  # GraphiQL parses the edited document after a pause
    await page.click(".graphiql-execute-button")

    result = page.locator(".result-window")
    seen: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = await result.inner_text()
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if '"done": true' in text:
            break
        await asyncio.sleep(0.05)
    tokens = {line.strip() for text in seen for line in text.splitlines() if '"token"' in line}
    assert len(tokens) >= 4, f"GraphiQL did not show the reply streaming: {seen}"
    assert '"done": true' in seen[-1]
    await shot(page, "graphiql-subscription")


async def test_a_link_with_a_query_opens_graphiql_with_it(
    graphiql_page: Page, app: AppServer
) -> None:
    """A link `/graphql?query=...` opened in a browser opens GraphiQL with the query in
    its editor (before, the browser got the operation's JSON result)."""
    page = graphiql_page
    await page.goto(f"{app.url}/graphql?query=%7B%20viewer%20%7B%20isAdmin%20%7D%20%7D")
    editor = page.locator(".graphiql-query-editor .CodeMirror")
    await expect(editor).to_be_visible(timeout=15_000)
    await expect(editor).to_contain_text("viewer")
    await expect(editor).to_contain_text("isAdmin")
