"""The conversation list as clients use it, over real HTTP to a real server: pins and
the archive, the model's titles (the fake model names sessions), share links read with
no token; two users, so nobody reaches another's session through any of it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.support import AppServer, FakeGroq, error_codes, gql

SECRET = "s" * 48
SESSION = "id title pinned archived usage { inputTokens outputTokens }"
CREATE = f"mutation($i: CreateSessionInput) {{ createSession(input: $i) {{ {SESSION} }} }}"
UPDATE = (
    "mutation($s: ID!, $i: CreateSessionInput!) "
    f"{{ updateSession(id: $s, input: $i) {{ {SESSION} }} }}"
)
SEND = "mutation($s: ID!, $m: String!) { sendMessage(sessionId: $s, message: $m) { content } }"
READ = f"query($s: ID!) {{ session(id: $s) {{ {SESSION} }} }}"
SHARE = "mutation($s: ID!) { shareSession(id: $s) { id url createdAt } }"
REVOKE = "mutation($s: ID!) { revokeShare(id: $s) }"
LISTS = """query($a: String) {
  viewer {
    pinnedSessions { id }
    sessions(first: 2, after: $a) {
      totalCount edges { node { id } } pageInfo { hasNextPage endCursor }
    }
    archive: sessions(archived: true) { totalCount edges { node { id archived } } }
  }
}"""


@pytest.fixture(scope="module")
def owned(make_app: Callable[..., AppServer]) -> AppServer:
    """Guests own their sessions; the model names them (TITLE_AUTO's default)."""
    return make_app(AUTH_SECRET=SECRET, TITLE_AUTO="")


@pytest.fixture
async def http(owned: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=owned.url, timeout=30) as client:
        yield client


async def guest(http: httpx.AsyncClient) -> dict[str, str]:
    token = (await http.post("/guest")).json()["token"]
    return {"authorization": f"Bearer {token}"}


async def data(http: httpx.AsyncClient, query: str, who: dict[str, str], **v: object) -> Any:
    body = await gql(http, query, who, **v)
    assert "errors" not in body, body
    return body["data"]


async def make(http: httpx.AsyncClient, who: dict[str, str], **given: object) -> dict[str, Any]:
    made: dict[str, Any] = (await data(http, CREATE, who, i=given or None))["createSession"]
    return made


# -- pins and the archive ----------------------------------------------------------------


async def test_pins_and_the_archive_round_trip_through_the_lists(http: httpx.AsyncClient) -> None:
    alice = await guest(http)
    plain = await make(http, alice, title="plain")
    pinned = await make(http, alice, title="pinned", pinned=True)
    archived = await make(http, alice, title="archived", archived=True)
    assert (pinned["pinned"], pinned["archived"]) == (True, False)
    assert archived["archived"] is True
    viewer = (await data(http, LISTS, alice))["viewer"]
    assert [s["id"] for s in viewer["pinnedSessions"]] == [pinned["id"]]
    assert viewer["sessions"]["totalCount"] == 2
    assert [e["node"]["id"] for e in viewer["sessions"]["edges"]] == [pinned["id"], plain["id"]]
    assert [e["node"]["id"] for e in viewer["archive"]["edges"]] == [archived["id"]]

    moved = await data(http, UPDATE, alice, s=plain["id"], i={"archived": True})
    assert moved["updateSession"]["archived"] is True
    await data(http, UPDATE, alice, s=archived["id"], i={"archived": False, "pinned": True})
    await data(http, UPDATE, alice, s=pinned["id"], i={"pinned": False})
    viewer = (await data(http, LISTS, alice))["viewer"]
    assert [s["id"] for s in viewer["pinnedSessions"]] == [archived["id"]]
    assert [e["node"]["id"] for e in viewer["sessions"]["edges"]] == [archived["id"], pinned["id"]]
    assert [e["node"]["id"] for e in viewer["archive"]["edges"]] == [plain["id"]]
    # REST lists as viewer.sessions does; ?archived=true the archive.
    mine = (await http.get("/me/sessions", headers=alice)).json()["sessions"]
    assert mine == [archived["id"], pinned["id"]]
    kept = (await http.get("/me/sessions?archived=true", headers=alice)).json()["sessions"]
    assert kept == [plain["id"]]
    assert (await http.get("/me/sessions?archived=maybe", headers=alice)).status_code == 400


async def test_another_user_can_neither_pin_nor_see_the_flags(http: httpx.AsyncClient) -> None:
    alice, bob = await guest(http), await guest(http)
    session = await make(http, alice)
    body = await gql(http, UPDATE, bob, s=session["id"], i={"pinned": True})
    assert error_codes(body) == ["NOT_FOUND"]
    assert (await data(http, READ, alice, s=session["id"]))["session"]["pinned"] is False
    assert (await data(http, LISTS, bob))["viewer"]["pinnedSessions"] == []


# -- titles --------------------------------------------------------------------------------


async def wait_for_title(
    http: httpx.AsyncClient, who: dict[str, str], session_id: str, not_this: str
) -> dict[str, Any]:
    """The session once its title is no longer `not_this` (at most about 20 s)."""
    for _ in range(400):
        found: dict[str, Any] = (await data(http, READ, who, s=session_id))["session"]
        if found["title"] != not_this:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"the title stayed {not_this!r}")


async def test_the_model_names_a_session_after_its_first_turn(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    alice = await guest(http)
    session = await make(http, alice)
    before = await data(http, SEND, alice, s=session["id"], m="What is   a   keyset page?")
    replied = time.monotonic()
    assert before["sendMessage"]["content"] == "[n=2] What is a keyset page?"
    first = (await data(http, READ, alice, s=session["id"]))["session"]
    start = "What is a keyset page?"
    if first["title"] == start:  # not named yet: the reply did not wait for it
        first = await wait_for_title(http, alice, session["id"], start)
    print(f"title landed {time.monotonic() - replied:.3f} s after the reply")
    # The fake model answers with the words it was sent: the request's own text.
    assert first["title"] == "[n=2] User: What is a keyset page? Assistant: [n=2] What is"
    assert len(first["title"]) <= 60
    async with httpx.AsyncClient() as fake:
        asked = (await fake.get(f"{fake_groq.url}/requests")).json()["last"]
    assert asked["messages"][0]["role"] == "system"
    # The naming request's tokens count in the session's usage (the reply's: 8 in, 6 out).
    assert first["usage"]["inputTokens"] > 8 and first["usage"]["outputTokens"] > 6
    # Later turns keep the title.
    await data(http, SEND, alice, s=session["id"], m="and another")
    assert (await data(http, READ, alice, s=session["id"]))["session"]["title"] == first["title"]


async def test_a_title_set_while_the_model_thinks_is_kept(
    http: httpx.AsyncClient, owned: AppServer
) -> None:
    alice = await guest(http)
    session = await make(http, alice)
    # The naming request carries the message's words, so it waits a second too.
    await data(http, SEND, alice, s=session["id"], m="!first_delay=1 slow one")
    renamed = await data(http, UPDATE, alice, s=session["id"], i={"title": "My own"})
    assert renamed["updateSession"]["title"] == "My own"
    assert owned.log is not None
    for _ in range(400):
        if f"title of session {session['id']} kept" in owned.log.read_text():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the naming request never ended")
    assert (await data(http, READ, alice, s=session["id"]))["session"]["title"] == "My own"


async def test_a_session_titled_at_creation_is_not_named(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    alice = await guest(http)
    session = await make(http, alice, title="Chosen")
    async with httpx.AsyncClient() as fake:
        before = (await fake.get(f"{fake_groq.url}/requests")).json()["count"]
        await data(http, SEND, alice, s=session["id"], m="hello")
        await data(http, SEND, alice, s=session["id"], m="again")  # the first turn's task ran
        after = (await fake.get(f"{fake_groq.url}/requests")).json()["count"]
    assert after - before == 2  # the two replies; no naming request
    assert (await data(http, READ, alice, s=session["id"]))["session"]["title"] == "Chosen"


@pytest.mark.slow  # an app of its own for each
@pytest.mark.parametrize("settings", [{"TITLE_AUTO": "false"}, {"model": False}])
async def test_without_naming_the_title_is_the_first_messages_start(
    make_app: Callable[..., AppServer], settings: dict[str, Any]
) -> None:
    server = make_app(**{"TITLE_AUTO": "", **settings})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        session = (await data(http, CREATE, {}, i=None))["createSession"]
        long = "word " * 40
        await data(http, SEND, {}, s=session["id"], m=long)
        await data(http, SEND, {}, s=session["id"], m="second")
        found = (await data(http, READ, {}, s=session["id"]))["session"]
    assert found["title"] == " ".join(long.split())[:60]
    server.stop()


# -- share links -----------------------------------------------------------------------


async def test_a_share_is_a_snapshot_anyone_with_the_url_reads(
    http: httpx.AsyncClient, owned: AppServer
) -> None:
    alice = await guest(http)
    session = await make(http, alice, title="Lisbon")
    await data(http, SEND, alice, s=session["id"], m="**where** to eat")
    share = (await data(http, SHARE, alice, s=session["id"]))["shareSession"]
    assert share["url"] == f"{owned.url}/s/{share['id']}"
    await data(http, SEND, alice, s=session["id"], m="later words")
    async with httpx.AsyncClient(base_url=owned.url) as anyone:  # no token
        read = await anyone.get(f"/share/{share['id']}")
        page = await anyone.get(f"/s/{share['id']}")
    assert read.status_code == 200
    assert read.headers["cache-control"] == "no-store"
    assert read.headers["referrer-policy"] == "no-referrer"
    shown = read.json()
    assert set(shown) == {"title", "messages", "createdAt"}
    assert shown["title"] == "Lisbon" and shown["createdAt"] == share["createdAt"]
    assert [(m["role"], m["content"]) for m in shown["messages"]] == [
        ("USER", "**where** to eat"),
        ("ASSISTANT", "[n=2] **where** to eat"),
    ]
    assert all(set(m) == {"role", "content", "createdAt"} for m in shown["messages"])
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    shares = "query($s: ID!) { session(id: $s) { shares { id url } } }"
    listed = await data(http, shares, alice, s=session["id"])
    assert listed["session"]["shares"] == [{"id": share["id"], "url": share["url"]}]


async def test_a_revoked_or_deleted_share_is_gone(http: httpx.AsyncClient) -> None:
    alice = await guest(http)
    session = await make(http, alice)
    first = (await data(http, SHARE, alice, s=session["id"]))["shareSession"]
    second = (await data(http, SHARE, alice, s=session["id"]))["shareSession"]
    assert (await data(http, REVOKE, alice, s=first["id"]))["revokeShare"] is True
    assert (await http.get(f"/share/{first['id']}")).status_code == 404
    assert (await http.get(f"/s/{first['id']}")).status_code == 404
    assert error_codes(await gql(http, REVOKE, alice, s=first["id"])) == ["NOT_FOUND"]
    assert (await http.get(f"/share/{second['id']}")).status_code == 200
    deleted = await gql(http, "mutation($s: ID!) { deleteSession(id: $s) }", alice, s=session["id"])
    assert deleted["data"] == {"deleteSession": True}
    assert (await http.get(f"/share/{second['id']}")).status_code == 404
    assert (await http.get(f"/s/{second['id']}")).status_code == 404


async def test_another_user_gets_not_found_for_every_share_operation(
    http: httpx.AsyncClient,
) -> None:
    alice, bob = await guest(http), await guest(http)
    session = await make(http, alice)
    share = (await data(http, SHARE, alice, s=session["id"]))["shareSession"]
    assert error_codes(await gql(http, SHARE, bob, s=session["id"])) == ["NOT_FOUND"]
    assert error_codes(await gql(http, REVOKE, bob, s=share["id"])) == ["NOT_FOUND"]
    shares = await gql(http, "query($s: ID!) { session(id: $s) { shares { id } } }", bob,
                       s=session["id"])  # fmt: skip
    assert shares["data"] == {"session": None}
    assert (await http.get(f"/share/{share['id']}")).status_code == 200  # still shared


async def test_a_session_keeps_at_most_twenty_shares(http: httpx.AsyncClient) -> None:
    alice = await guest(http)
    session = await make(http, alice)
    for _ in range(20):
        await data(http, SHARE, alice, s=session["id"])
    refused = await gql(http, SHARE, alice, s=session["id"])
    assert error_codes(refused) == ["BAD_USER_INPUT"]
