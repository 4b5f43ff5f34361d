"""The suite's fixtures: a real redis-server, the fake Groq server, the app under a real
uvicorn (started on demand with given settings), HTTP clients. Helpers are in
`tests/support/`."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis, RedisCluster

from tests.support import (
    FAKE_GROQ,
    LOOPBACK,
    REPO,
    AppServer,
    FakeGroq,
    RedisServer,
    app_env,
    start_redis,
    stop,
)
from tests.support.cluster import running_cluster
from tests.support.zygote import Zygote

if TYPE_CHECKING:  # Playwright and Hypothesis are imported by their fixtures only
    from playwright.async_api import Browser, BrowserContext, Page

    from tests.support.fuzzing import FuzzStats

# Databases of the test Redis: one per module or test that needs its own.
DATABASES = 128


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"), None, "--databases", str(DATABASES))
    yield server
    stop(server.process)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url(), decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def fake_groq() -> Iterator[FakeGroq]:
    process = subprocess.Popen(
        [sys.executable, str(FAKE_GROQ)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode().split()
    assert line[:1] == ["READY"], f"fake Groq server did not start: {line}"
    yield FakeGroq(url=f"http://{LOOPBACK}:{line[1]}", process=process)
    stop(process)
    process.stdout.close()


@pytest.fixture(scope="session")
def zygote() -> Iterator[Zygote]:
    """Forks app processes off one that has the app's libraries imported (seconds each
    saved); see tests/support/zygote.py."""
    forker = Zygote()
    yield forker
    forker.close()


@pytest.fixture(scope="session")
def start_app(
    tmp_path_factory: pytest.TempPathFactory, zygote: Zygote
) -> Iterator[type[AppServer]]:
    """Starts app servers on demand; every one is stopped at the end of the session."""
    started: list[AppServer] = []
    logs = tmp_path_factory.mktemp("app-logs")

    class Tracked(AppServer):
        def start(self) -> AppServer:
            self.log = self.log or logs / f"app-{self.port}.log"
            if self.zygote is None:
                self.zygote = zygote
            started.append(self)
            return super().start()

    yield Tracked
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def shared_redis_url(redis_server: RedisServer) -> str:
    """The database of the shared `app` (db 0): for a second process of the same server."""
    return redis_server.url(0)


@pytest.fixture(scope="session")
def fresh_db(redis_server: RedisServer) -> Callable[[], str]:
    """Hands out a Redis database no other test uses, emptied: its URL."""
    numbers = itertools.count(1)  # db 0 is the shared app's

    def take() -> str:
        number = next(numbers)
        assert number < DATABASES, "more databases than the test Redis has"
        url = redis_server.url(number)
        client = SyncRedis.from_url(url)
        try:
            client.flushdb()
        finally:
            client.close()
        return url

    return take


@pytest.fixture(scope="session")
def make_app(
    start_app: type[AppServer], fresh_db: Callable[[], str], fake_groq: FakeGroq
) -> Callable[..., AppServer]:
    """Starts the app with the given settings (environment variables), on a fresh
    database unless `redis_url` is given, with the fake model unless `model` is False."""

    def make(*, redis_url: str | None = None, model: bool = True, **settings: str) -> AppServer:
        env = app_env(redis_url or fresh_db(), fake_groq if model else None, **settings)
        return start_app(env=env).start()

    return make


@pytest.fixture(scope="session")
def app(start_app: type[AppServer], shared_redis_url: str, fake_groq: FakeGroq) -> AppServer:
    """The app on the shared test database and the fake Groq model."""
    return start_app(env=app_env(shared_redis_url, fake_groq)).start()


@pytest.fixture
async def client(app: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def db_url(fresh_db: Callable[[], str]) -> str:
    """A Redis database of the module's own."""
    return fresh_db()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Redis]:
    """The module's database, emptied before and after the test: the index holds only
    this test's sessions."""
    client = Redis.from_url(db_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """A 3-primary Redis Cluster, started once per worker that runs a `cluster` test
    (workers take whole files, `--dist loadfile`, so at most one per worker)."""
    with running_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


@pytest.fixture(params=["one", pytest.param("cluster", marks=pytest.mark.cluster)])
async def backend_db(
    request: pytest.FixtureRequest, db_url: str
) -> AsyncIterator[Redis | RedisCluster]:
    """The store's tests run twice: on a database of one Redis, and on the cluster (as a
    conformance suite does), so the cluster's own paths meet the same assertions. Emptied
    before and after."""
    client: Redis | RedisCluster
    if request.param == "one":
        client = Redis.from_url(db_url, decode_responses=True)
    else:
        nodes = request.getfixturevalue("cluster")
        client = RedisCluster(host=LOOPBACK, port=nodes[0].port, decode_responses=True)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium (Debian's package; CHROMIUM names another). Missing, the
    browser tests are skipped, except on CI, where they fail."""
    from playwright.async_api import async_playwright

    from tests.support.page import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium package")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser, app: AppServer) -> AsyncIterator[Page]:
    """A tab on the shared app, in a browser of its own (a new guest)."""
    from tests.support.page import VIEWPORT

    context = await browser.new_context(base_url=app.url, viewport=VIEWPORT)
    opened = await context.new_page()
    yield opened
    await context.close()


@pytest.fixture
async def new_tab(browser: Browser) -> AsyncIterator[Callable[..., object]]:
    """Opens tabs: `await new_tab(server or base URL, *, init_script=None, context=None)`,
    in a browser of its own (a new guest) unless `context` is given; closed at the end."""
    from tests.support.page import VIEWPORT

    contexts: list[BrowserContext] = []

    async def make(
        where: AppServer | str,
        *,
        init_script: str | None = None,
        context: BrowserContext | None = None,
    ) -> Page:
        if context is None:
            base_url = where.url if isinstance(where, AppServer) else where
            context = await browser.new_context(base_url=base_url, viewport=VIEWPORT)
            contexts.append(context)
            if init_script:
                await context.add_init_script(init_script)
        return await context.new_page()

    yield make
    for context in contexts:
        await context.close()


@pytest.fixture(scope="module")
def stats(request: pytest.FixtureRequest) -> FuzzStats:
    """The fuzzers' shared counters, summed over the run and printed at its end."""
    from tests.support.fuzzing import reporting

    return reporting(request.config)


# The files that take longest (`pytest --durations`, a whole run with four workers on a
# 2-core machine), longest first. The workers take whole files in collection order
# (`--dist loadfile`): these start first, so none of them is left to run alone at the
# end. A file missing here keeps its place after them.
LONGEST_FIRST = (
    "test_session_model.py",
    "test_fuzz_graphql.py",
    "test_faults_redis.py",
    "test_history_properties.py",
    "test_fuzz_rest.py",
    "test_hardening.py",
    "test_rich_faults.py",
    "test_page_tools.py",
    "test_page_users.py",
    "test_page.py",
    "test_page_robustness.py",
    "test_process_faults.py",
    "test_transfer.py",
    "test_page_turns.py",
    "test_durable_turns.py",
    "test_identity.py",
    "test_rich_turns.py",
    "test_metrics.py",
    "test_storage.py",
    "test_list_api.py",
    "test_page_branches.py",
    "test_branches.py",
    "test_migrating.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
