"""GraphiQL at /graphql in a real browser: a `chat` subscription typed into it streams.

Strawberry's GraphiQL page loads React and GraphiQL from unpkg. This machine (and CI)
has no internet, so the test fetches the exact same package versions from the npm
registry (`npm pack`) and serves them to the browser in unpkg's place; the page's
subresource-integrity hashes still have to match, so they are the real files.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Route, expect

from tests.support import AppServer
from tests.test_page import browser  # noqa: F401  the shared Chromium fixture

pytestmark = pytest.mark.browser

PACKAGES = {
    "react@18.2.0": "react",
    "react-dom@18.2.0": "react-dom",
    "js-cookie@3.0.5": "js-cookie",
    "graphiql@3.8.3": "graphiql",
    "@graphiql/plugin-explorer@1.0.2": "@graphiql/plugin-explorer",
}
CACHE = Path(__file__).resolve().parent / "artifacts" / "unpkg"

if shutil.which("npm") is None and not os.environ.get("CI"):
    pytest.skip("npm is needed to fetch GraphiQL's assets", allow_module_level=True)


def unpack_packages() -> Path:
    """The packages GraphiQL's page asks unpkg for, unpacked under CACHE/<spec>/."""
    for spec in PACKAGES:
        target = CACHE / spec
        if target.exists():
            continue
        CACHE.mkdir(parents=True, exist_ok=True)
        packed = subprocess.run(
            ["npm", "pack", "--json", "--pack-destination", str(CACHE), spec],
            check=True,
            capture_output=True,
            timeout=120,
        )
        tarball = CACHE / json.loads(packed.stdout)[0]["filename"]
        with tarfile.open(tarball) as archive:
            archive.extractall(CACHE / (spec + ".tmp"), filter="data")
        (CACHE / (spec + ".tmp") / "package").rename(target)
        shutil.rmtree(CACHE / (spec + ".tmp"))
        tarball.unlink()
    return CACHE


@pytest.fixture(scope="module")
def unpkg() -> Path:
    return unpack_packages()


async def serve_from_cache(route: Route, cache: Path) -> None:
    path = route.request.url.split("https://unpkg.com/", 1)[1].split("?")[0]
    spec = next((s for s in PACKAGES if path.startswith(s + "/")), None)
    if spec is None:
        await route.fulfill(status=404)
        return
    file = cache / spec / path[len(spec) + 1 :]
    if not file.is_file():
        await route.fulfill(status=404)
        return
    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    await route.fulfill(
        body=file.read_bytes(),
        headers={"content-type": kind, "access-control-allow-origin": "*"},
    )


@pytest.fixture
async def graphiql_page(
    browser: Browser,  # noqa: F811  the fixture imported above
    app: AppServer,
    unpkg: Path,
) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    await context.route("https://unpkg.com/**", lambda route: serve_from_cache(route, unpkg))
    page = await context.new_page()
    yield page
    await context.close()


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
    await page.screenshot(path=str(CACHE.parent / "graphiql-subscription.png"))
