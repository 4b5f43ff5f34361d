"""GraphiQL (/graphql), Swagger UI (/docs) and ReDoc (/redoc) with no network beyond
this server: every script and style they load comes from static/vendor/, with a
subresource-integrity hash that the file matches; in Chromium with the network cut,
each page renders."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, expect

from tests.support import AppServer

PAGES = {"/graphql": "text/html", "/docs": "text/html", "/redoc": "text/html"}
ASSET = re.compile(r'<(?:script|link)\b[^>]*?(?:src|href)="([^"]+\.(?:js|css))"([^>]*)>')


def sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


async def test_every_asset_is_served_here_and_matches_its_integrity(
    client: httpx.AsyncClient,
) -> None:
    checked = 0
    for path in PAGES:
        page = await client.get(path, headers={"accept": "text/html"})
        assert page.status_code == 200, path
        assert "unpkg.com" not in page.text and "cdn.jsdelivr.net" not in page.text, path
        assert "fonts.googleapis.com" not in page.text, path
        assets = ASSET.findall(page.text)
        assert assets, path
        for url, rest in assets:
            assert url.startswith("/static/vendor/"), (path, url)
            integrity = re.search(r'integrity="([^"]+)"', rest)
            assert integrity, (path, url)
            served = await client.get(url)
            assert served.status_code == 200, url
            assert sri(served.content) == integrity.group(1), url
            checked += 1
    assert checked >= 9


@pytest.fixture
async def offline(
    browser: Browser,
    app: AppServer,
) -> AsyncIterator[tuple[Page, list[str]]]:
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    refused: list[str] = []

    async def only_this_server(route: Route) -> None:
        if route.request.url.startswith(app.url):
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.abort("internetdisconnected")

    await context.route("**/*", only_this_server)
    page = await context.new_page()
    yield page, refused
    await context.close()


@pytest.mark.browser
async def test_the_playground_and_the_api_docs_render_with_the_network_cut(
    offline: tuple[Page, list[str]], app: AppServer
) -> None:
    page, refused = offline
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    await page.goto(f"{app.url}/graphql")
    await expect(page.locator(".graphiql-query-editor .CodeMirror")).to_be_visible(timeout=15_000)
    # Its schema's request answered before the page is left (a request cut by leaving
    # the page is no failure of the server; on a loaded machine it was still running).
    await page.wait_for_load_state("networkidle")
    await page.goto(f"{app.url}/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text(
        "Chat session server", timeout=15_000
    )
    await expect(page.locator(".opblock-summary-path").first).to_be_visible()
    await page.wait_for_load_state("networkidle")
    await page.goto(f"{app.url}/redoc")
    await expect(page.locator("h1").first).to_contain_text("Chat session server", timeout=15_000)
    await expect(page.get_by_text("/new_session").first).to_be_attached()
    assert not [url for url in failed if url.startswith(app.url)], failed
    # Whatever the pages asked of other hosts, they rendered without it.
    assert all(not url.startswith(app.url) for url in refused)
