"""Identity and ownership: real tokens over real HTTP and WebSocket, a JWKS server on
loopback with keys the test makes; two users and an admin."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from websockets.typing import Subprotocol

from tests.support import AppServer, error_codes, gql
from tests.support.jwks import AUDIENCE, ISSUER, JwksServer, new_key
from tests.support.ws_client import LEGACY_WS, TRANSPORT_WS, graphql_socket

ROOT = "root-token-for-tests"
SECRET = "s" * 48

VIEWER = "{ viewer { id isAdmin sessions { totalCount edges { node { id ownerId } } } } }"
CHAT = """subscription($s: ID!, $m: String!) {
  chat(sessionId: $s, message: $m) { token done }
}"""


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def guest(http: httpx.AsyncClient) -> tuple[str, str]:
    response = await http.post("/guest")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["token"], body["user_id"]


async def create(http: httpx.AsyncClient, token: str | None, title: str = "mine") -> str:
    headers = bearer(token) if token else None
    response = await http.post("/new_session", json={"title": title}, headers=headers)
    assert response.status_code == 200, response.text
    session_id: str = response.json()["session_id"]
    return session_id


def sign_local(**claims: Any) -> str:
    now = datetime.now(UTC)
    body = {"sub": "someone", "iat": now, "exp": now + timedelta(minutes=5), **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, "HS256")


@pytest.fixture(scope="module")
def owned(make_app: Callable[..., AppServer]) -> AppServer:
    return make_app(ADMIN_TOKEN=ROOT, AUTH_SECRET=SECRET)


@pytest.fixture
async def http(owned: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=owned.url, timeout=30) as client:
        yield client


async def test_a_guest_owns_what_it_creates_and_nobody_else_sees_it_over_rest(
    http: httpx.AsyncClient,
) -> None:
    alice, alice_id = await guest(http)
    bob, _ = await guest(http)
    session_id = await create(http, alice, "alice's")
    reply = await http.post(
        "/chat", json={"session_id": session_id, "message": "hi"}, headers=bearer(alice)
    )
    assert reply.status_code == 200
    mine = await http.get("/me/sessions", headers=bearer(alice))
    assert mine.json() == {"sessions": [session_id], "next_cursor": None}
    for headers in (bearer(bob), {}):  # another user, and an anonymous caller
        assert (
            await http.get(f"/session/{session_id}/history", headers=headers)
        ).status_code == 404
        chat = await http.post(
            "/chat", json={"session_id": session_id, "message": "x"}, headers=headers
        )
        assert chat.status_code == 404
        assert (await http.delete(f"/session/{session_id}", headers=headers)).status_code == 404
    assert (await http.get("/me/sessions", headers=bearer(bob))).json()["sessions"] == []
    # The answer for someone else's session is exactly the one for a missing session.
    missing = await http.get(f"/session/{uuid.uuid4()}/history", headers=bearer(bob))
    theirs = await http.get(f"/session/{session_id}/history", headers=bearer(bob))
    assert missing.json() == theirs.json()
    admin = await http.get(f"/session/{session_id}/history", headers=bearer(ROOT))
    assert admin.json()["history"] == [{"input": "hi", "output": "[n=2] hi"}]
    assert session_id in (await http.get("/sessions", headers=bearer(ROOT))).json()["sessions"]
    body = await gql(
        http, "query($id: ID!) { session(id: $id) { ownerId } }", bearer(ROOT), id=session_id
    )
    assert body["data"] == {"session": {"ownerId": alice_id}}


async def test_every_graphql_operation_hides_another_users_session(
    http: httpx.AsyncClient,
) -> None:
    alice, alice_id = await guest(http)
    bob, _ = await guest(http)
    created = await gql(
        http, 'mutation { createSession(input: {title: "a"}) { id ownerId } }', bearer(alice)
    )
    session = created["data"]["createSession"]  # type: ignore[index]
    assert session["ownerId"] == alice_id
    sid = session["id"]
    seen = await gql(http, "query($id: ID!) { session(id: $id) { id } }", bearer(bob), id=sid)
    assert seen["data"] == {"session": None}
    history = await gql(
        http, "query($id: ID!) { history(sessionId: $id) { input } }", bearer(bob), id=sid
    )
    assert error_codes(history) == ["NOT_FOUND"]
    send = await gql(
        http,
        'mutation($id: ID!) { sendMessage(sessionId: $id, message: "x") { content } }',
        bearer(bob),
        id=sid,
    )
    assert error_codes(send) == ["NOT_FOUND"]
    deleted = await gql(http, "mutation($id: ID!) { deleteSession(id: $id) }", bearer(bob), id=sid)
    assert deleted["data"] == {"deleteSession": False}
    viewer = await gql(http, VIEWER, bearer(alice))
    assert viewer["data"]["viewer"]["id"] == alice_id  # type: ignore[index]
    assert viewer["data"]["viewer"]["isAdmin"] is False  # type: ignore[index]
    nodes = [e["node"] for e in viewer["data"]["viewer"]["sessions"]["edges"]]  # type: ignore[index]
    assert nodes == [{"id": sid, "ownerId": alice_id}]
    other = await gql(http, VIEWER, bearer(bob))
    assert other["data"]["viewer"]["sessions"]["totalCount"] == 0  # type: ignore[index]
    anonymous = await gql(http, VIEWER)
    assert anonymous["data"]["viewer"] == {  # type: ignore[index]
        "id": None,
        "isAdmin": False,
        "sessions": {"totalCount": 0, "edges": []},
    }
    admin = await gql(http, VIEWER, bearer(ROOT))
    assert admin["data"]["viewer"]["isAdmin"] is True  # type: ignore[index]
    listed = await gql(http, "{ sessions(first: 1000) { edges { node { id } } } }", bearer(bob))
    assert error_codes(listed) == ["UNAUTHENTICATED"]  # listing everyone's is the admin's


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_the_chat_subscription_follows_the_token_in_connection_init(
    owned: AppServer, http: httpx.AsyncClient, protocol: Subprotocol
) -> None:
    alice, _ = await guest(http)
    bob, _ = await guest(http)
    sid = await create(http, alice)
    async with graphql_socket(owned.ws_url, protocol, {"Authorization": f"Bearer {bob}"}) as ws:
        refused = await ws.collect(await ws.start(CHAT, s=sid, m="hello"))
    assert refused.codes == ["NOT_FOUND"]
    async with graphql_socket(owned.ws_url, protocol, {"Authorization": f"Bearer {alice}"}) as ws:
        got = await ws.collect(await ws.start(CHAT, s=sid, m="hello"))
    assert got.errors == [] and got.events[-1]["done"] is True
    async with graphql_socket(owned.ws_url, protocol, {"Authorization": "Bearer nonsense"}) as ws:
        bad = await ws.collect(await ws.start(CHAT, s=sid, m="hello"))
    assert bad.codes == ["UNAUTHENTICATED"]


BAD_TOKENS = {
    "not a jwt": "abc.def",
    "alg none": jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "", algorithm="none"),
    "expired": sign_local(exp=datetime.now(UTC) - timedelta(minutes=1)),
    "another secret": jwt.encode(
        {"sub": "x", "exp": int(time.time()) + 60}, "t" * 48, algorithm="HS256"
    ),
    "no sub": sign_local(sub=None),
    "sub a number": jwt.encode({"sub": 42, "exp": int(time.time()) + 60}, SECRET, "HS256"),
    "no expiry": jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"),
}


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
async def test_a_bad_token_is_refused_and_changes_nothing(
    http: httpx.AsyncClient, name: str
) -> None:
    token = BAD_TOKENS[name]
    before = (await http.get("/sessions", headers=bearer(ROOT))).json()["sessions"]
    response = await http.post("/new_session", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    body = await gql(http, "mutation { createSession { id } }", bearer(token))
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert (await http.get("/sessions", headers=bearer(ROOT))).json()["sessions"] == before


async def test_a_token_signed_with_auth_secret_names_its_user(http: httpx.AsyncClient) -> None:
    body = await gql(http, "{ viewer { id isAdmin } }", bearer(sign_local(sub="ops-7")))
    assert body["data"] == {"viewer": {"id": "ops-7", "isAdmin": False}}
    admin = await gql(http, "{ viewer { isAdmin } }", bearer(sign_local(sub="x", admin=True)))
    assert admin["data"] == {"viewer": {"isAdmin": True}}


# -- an outside identity provider -----------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> Iterator[JwksServer]:
    server = JwksServer(keys=[new_key("RS256"), new_key("ES256")]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def federated(make_app: Callable[..., AppServer], provider: JwksServer) -> AppServer:
    return make_app(
        AUTH_JWKS_URL=provider.url,
        AUTH_ISSUER=ISSUER,
        AUTH_AUDIENCE=AUDIENCE,
        AUTH_JWKS_TIMEOUT_SECONDS="1",
        AUTH_JWKS_REFRESH_SECONDS="0",
        ADMIN_TOKEN=ROOT,
    )


@pytest.fixture
async def idp(federated: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=federated.url, timeout=30) as client:
        yield client


async def viewer_of(http: httpx.AsyncClient, token: str) -> dict[str, object]:
    return await gql(http, "{ viewer { id isAdmin } }", bearer(token))


async def test_provider_tokens_rs256_and_es256_name_their_users(
    idp: httpx.AsyncClient, provider: JwksServer
) -> None:
    for key in provider.keys:
        body = await viewer_of(idp, key.sign(sub=f"user-{key.algorithm}"))
        assert body["data"] == {"viewer": {"id": f"user-{key.algorithm}", "isAdmin": False}}
    admin = await viewer_of(idp, provider.keys[0].sign(sub="boss", admin=True))
    assert admin["data"] == {"viewer": {"id": "boss", "isAdmin": True}}
    listed = await idp.get("/sessions", headers=bearer(provider.keys[0].sign(sub="b", admin=True)))
    assert listed.status_code == 200


async def test_wrong_issuer_audience_or_signature_is_unauthenticated(
    idp: httpx.AsyncClient, provider: JwksServer
) -> None:
    key = provider.keys[0]
    stranger = new_key("RS256")
    stranger.kid = key.kid  # the right kid, the wrong key
    for token in (
        key.sign(sub="u", iss="https://elsewhere.test/"),
        key.sign(sub="u", aud="another-app"),
        stranger.sign(sub="u"),
        jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, "k" * 48, algorithm="HS256"),
    ):
        body = await viewer_of(idp, token)
        assert error_codes(body) == ["UNAUTHENTICATED"]
        assert (await idp.post("/new_session", headers=bearer(token))).status_code == 401


async def test_a_rotated_key_is_fetched_on_its_first_use(
    idp: httpx.AsyncClient, provider: JwksServer
) -> None:
    assert (await viewer_of(idp, provider.keys[0].sign(sub="before")))["data"]
    rotated = new_key("ES256")
    provider.keys.append(rotated)
    body = await viewer_of(idp, rotated.sign(sub="after"))
    assert body["data"] == {"viewer": {"id": "after", "isAdmin": False}}


async def test_a_provider_that_is_down_or_slow_gives_a_bounded_unavailable(
    idp: httpx.AsyncClient, provider: JwksServer
) -> None:
    unknown = new_key("RS256")  # not yet cached: the keys must be fetched
    provider.up = False
    try:
        down = await idp.post("/new_session", headers=bearer(unknown.sign(sub="u")))
    finally:
        provider.up = True
    assert down.status_code == 503, down.text
    provider.delay = 3.0  # past AUTH_JWKS_TIMEOUT_SECONDS=1
    try:
        slow = await viewer_of(idp, new_key("RS256").sign(sub="u"))
    finally:
        provider.delay = 0.0
    assert error_codes(slow) == ["UNAVAILABLE"]


# -- required, restarts, several processes --------------------------------------------


@pytest.mark.slow
async def test_auth_required_refuses_anonymous_callers_but_hands_out_guests(
    make_app: Callable[..., AppServer],
) -> None:
    server = make_app(AUTH_REQUIRED="true")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        assert (await http.post("/new_session")).status_code == 401
        assert (await http.get("/me/sessions")).status_code == 401
        body = await gql(http, "{ serverInfo { model } }")
        assert error_codes(body) == ["UNAUTHENTICATED"]
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/")).status_code == 200
        token = (await gql(http, "mutation { createGuest { token } }"))["data"]
        assert isinstance(token, dict)
        guest_token = token["createGuest"]["token"]
        assert (await http.post("/new_session", headers=bearer(guest_token))).status_code == 200
        # Introspection runs none of the resolvers that refuse: it is refused apart, over
        # HTTP and WebSocket, fragments and all.
        for document in (
            "{ __schema { queryType { name } } }",
            '{ __type(name: "Session") { name } }',
            "query { ...F } fragment F on Query { __schema { types { name } } }",
        ):
            assert error_codes(await gql(http, document)) == ["UNAUTHENTICATED"]
            allowed = await gql(http, document, headers=bearer(guest_token))
            assert "errors" not in allowed, allowed
        async with graphql_socket(server.ws_url) as ws:
            got = await ws.collect(await ws.start("{ __schema { queryType { name } } }"))
        assert got.codes == ["UNAUTHENTICATED"]
    server.stop()


@pytest.mark.slow
async def test_a_guest_token_outlives_a_restart_and_works_on_another_process(
    make_app: Callable[..., AppServer], fresh_db: Callable[[], str]
) -> None:
    url = fresh_db()
    first = make_app(redis_url=url)  # no AUTH_SECRET: the secret is made and kept in Redis
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as http:
        token, user_id = await guest(http)
        session_id = await create(http, token)
    first.stop()
    second, third = make_app(redis_url=url), make_app(redis_url=url)
    for server in (second, third):
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            mine = await http.get("/me/sessions", headers=bearer(token))
            assert mine.json()["sessions"] == [session_id]
            body = await gql(http, "{ viewer { id } }", bearer(token))
            assert body["data"] == {"viewer": {"id": user_id}}
        server.stop()


async def test_my_sessions_page_with_the_same_cursors_as_every_session(
    http: httpx.AsyncClient,
) -> None:
    token, _ = await guest(http)
    created = [await create(http, token, f"s{i}") for i in range(7)]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        page = (await http.get("/me/sessions", params=params, headers=bearer(token))).json()
        seen += page["sessions"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


# Root fields that take a session id, with the variables to call them by; a new one must
# be added here (the walk below fails on any it does not know).
SESSION_OPERATIONS: dict[str, str] = {
    "session": "query($s: ID!) { session(id: $s) { id } }",
    "history": "query($s: ID!) { history(sessionId: $s) { input } }",
    "sendMessage": 'mutation($s: ID!) { sendMessage(sessionId: $s, message: "x") { content } }',
    "deleteSession": "mutation($s: ID!) { deleteSession(id: $s) }",
    "chat": 'subscription($s: ID!) { chat(sessionId: $s, message: "x") { token } }',
    "turn": "subscription($s: ID!) { turn(sessionId: $s) { token } }",
    "stopTurn": "mutation($s: ID!) { stopTurn(sessionId: $s) }",
    "updateSession": 'mutation($s: ID!) { updateSession(id: $s, input: {title: "x"}) { id } }',
    "rewind": 'mutation($s: ID!) { rewind(sessionId: $s, messageId: "0") { id } }',
    "regenerate": "subscription($s: ID!) { regenerate(sessionId: $s) { token } }",
    "edit": 'subscription($s: ID!) { edit(sessionId: $s, messageId: "0", message: "x") { token } }',
    "switchBranch": 'mutation($s: ID!) { switchBranch(sessionId: $s, messageId: "0") { id } }',
    "shareSession": "mutation($s: ID!) { shareSession(id: $s) { id url } }",
    "submitToolResults": "subscription($s: ID!) { submitToolResults(sessionId: $s, "
    'results: [{toolCallId: "call_1", content: "x"}]) { token } }',
    # Given a session id, or another user's share id (test_list_api.py): NOT_FOUND.
    "revokeShare": "mutation($s: ID!) { revokeShare(id: $s) }",
}


async def test_a_walk_of_the_schema_finds_no_door_into_another_users_session(
    owned: AppServer, http: httpx.AsyncClient
) -> None:
    introspection = await gql(
        http,
        "{ __schema { queryType { fields { name args { name } } } "
        "mutationType { fields { name args { name } } } "
        "subscriptionType { fields { name args { name } } } } }",
    )
    schema = introspection["data"]["__schema"]  # type: ignore[index]
    taking_a_session = {
        field["name"]
        for root in ("queryType", "mutationType", "subscriptionType")
        for field in schema[root]["fields"]
        if {arg["name"] for arg in field["args"]} & {"id", "sessionId"}
    }
    assert taking_a_session == set(SESSION_OPERATIONS), "a new operation must be walked too"
    alice, _ = await guest(http)
    bob, _ = await guest(http)
    sid = await create(http, alice)
    for name, document in SESSION_OPERATIONS.items():
        if document.startswith("subscription"):
            payload = {"Authorization": f"Bearer {bob}"}
            async with graphql_socket(owned.ws_url, TRANSPORT_WS, payload) as ws:
                codes = (await ws.collect(await ws.start(document, s=sid))).codes
            assert codes == ["NOT_FOUND"], name
            continue
        body = await gql(http, document, bearer(bob), s=sid)
        data = body.get("data") or {}
        assert isinstance(data, dict)
        refused = error_codes(body) == ["NOT_FOUND"] or data.get(name) in (None, False)
        assert refused, f"{name} answered {body}"
    # Every REST route with a session in its path, by the OpenAPI table.
    routes = (await http.get("/openapi.json")).json()["paths"]
    for path, methods in routes.items():
        if "{session_id}" not in path:
            continue
        for method in methods:
            concrete = path.replace("{session_id}", sid).replace("{turn_id}", str(uuid.uuid4()))
            response = await http.request(method.upper(), concrete, headers=bearer(bob))
            assert response.status_code == 404, (method, path, response.status_code)
    history = await http.get(f"/session/{sid}/history", headers=bearer(alice))
    assert history.status_code == 200  # and the owner still has it all


@pytest.mark.slow
async def test_the_open_listing_shows_nobody_another_users_session(
    make_app: Callable[..., AppServer],
) -> None:
    server = make_app()  # no ADMIN_TOKEN: listing every session is open to all
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        alice, _ = await guest(http)
        bob, _ = await guest(http)
        bobs = [await create(http, bob, f"bob {i}") for i in range(3)]
        alices = [await create(http, alice, f"alice {i}") for i in range(5)]  # the newest
        shared = await create(http, None, "anyone's")
        # GraphQL shows titles and contents: only what the caller may use, page by page.
        seen: list[str] = []
        after: str | None = None
        for _ in range(10):
            body = await gql(
                http,
                "query($a: String) { sessions(first: 2, after: $a) { edges { node { id title } } "
                "pageInfo { hasNextPage endCursor } } }",
                bearer(bob),
                a=after,
            )
            connection = body["data"]["sessions"]  # type: ignore[index]
            seen += [e["node"]["id"] for e in connection["edges"]]
            if not connection["pageInfo"]["hasNextPage"]:
                break
            after = connection["pageInfo"]["endCursor"]
        assert seen == [shared, *reversed(bobs)]
        # The REST listing names ids only, every one of them, as it always has: an id of
        # another user's session gives no access to it.
        listed = (await http.get("/sessions", headers=bearer(bob))).json()["sessions"]
        assert set(listed) == {shared, *bobs, *alices}
        for sid in alices:
            history = await http.get(f"/session/{sid}/history", headers=bearer(bob))
            assert history.status_code == 404
    server.stop()


@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Bearer", "just-a-token"])
async def test_an_authorization_header_that_is_not_a_bearer_token_is_refused(
    http: httpx.AsyncClient, header: str
) -> None:
    response = await http.post("/new_session", headers={"authorization": header})
    assert response.status_code == 401
    body = await gql(http, "{ viewer { id } }", {"authorization": header})
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_a_key_of_another_algorithm_than_the_tokens_is_refused(
    idp: httpx.AsyncClient, provider: JwksServer
) -> None:
    rsa_key = next(k for k in provider.keys if k.algorithm == "RS256")
    forged = new_key("ES256")
    forged.kid = rsa_key.kid  # an ES256 token naming an RSA key
    response = await idp.post("/new_session", headers=bearer(forged.sign(sub="u")))
    assert response.status_code == 401


async def test_a_provider_that_is_down_is_not_asked_again_at_once(
    idp: httpx.AsyncClient, provider: JwksServer
) -> None:
    provider.up = False
    try:
        first = await idp.post("/new_session", headers=bearer(new_key("RS256").sign(sub="u")))
        fetches = provider.fetches
        again = await idp.post("/new_session", headers=bearer(new_key("RS256").sign(sub="v")))
    finally:
        provider.up = True
    assert first.status_code == again.status_code == 503
    assert provider.fetches == fetches  # the failure is remembered for a few seconds


@pytest.mark.slow
async def test_nobody_can_spend_another_users_turn_limit(
    make_app: Callable[..., AppServer],
) -> None:
    server = make_app(RATE_LIMIT_EXEMPT="", RATE_LIMIT_TURNS_PER_MINUTE="2")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        alice, _ = await guest(http)
        bob, _ = await guest(http)
        sid = await create(http, alice)
        body = {"session_id": sid, "message": "x"}
        refused = [
            (await http.post("/chat", json=body, headers=bearer(bob))).status_code for _ in range(3)
        ]
        assert refused == [404, 404, 404]
        mine = [
            (await http.post("/chat", json=body, headers=bearer(alice))).status_code
            for _ in range(2)
        ]
        assert mine == [200, 200]
    server.stop()


# -- one namespace each: guests and a provider's users ---------------------------------


async def test_a_provider_time_written_as_text_is_refused(
    idp: httpx.AsyncClient, provider: JwksServer
) -> None:
    key = provider.keys[0]
    later = int(time.time()) + 600
    for claims in ({"exp": str(later)}, {"iat": str(later - 700)}, {"exp": True}):
        body = await viewer_of(idp, key.sign(sub="u", **claims))
        assert error_codes(body) == ["UNAUTHENTICATED"], claims


async def test_a_provider_subject_never_names_a_guest(
    idp: httpx.AsyncClient, provider: JwksServer
) -> None:
    body = await viewer_of(idp, provider.keys[0].sign(sub=f"guest:{uuid.uuid4()}"))
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_guests_have_ids_of_their_own_and_old_guest_tokens_keep_their_chats(
    http: httpx.AsyncClient,
) -> None:
    """A guest's id is `guest:<uuid>`, which no provider subject or signed user may be.
    A guest token signed before (its sub a bare uuid) names the same guest, and the
    sessions it made then are still its own."""
    _, guest_id = await guest(http)
    assert guest_id.startswith("guest:") and uuid.UUID(guest_id.removeprefix("guest:"))
    bare = str(uuid.uuid4())
    before = sign_local(sub=bare)  # a session owned by the bare id, as before the prefix
    session_id = await create(http, before, "from before")
    legacy = sign_local(sub=bare, iss="chat-session-server", guest=True)
    viewer = await gql(http, VIEWER, bearer(legacy))
    data = viewer["data"]
    assert isinstance(data, dict)
    assert data["viewer"]["id"] == f"guest:{bare}"
    owned = [e["node"] for e in data["viewer"]["sessions"]["edges"]]
    assert owned == [{"id": session_id, "ownerId": f"guest:{bare}"}]
    history = await http.get(f"/session/{session_id}/history", headers=bearer(legacy))
    assert history.status_code == 200
    # The signed user with the bare id is another user now.
    assert (
        await http.get(f"/session/{session_id}/history", headers=bearer(before))
    ).status_code == 404
    assert error_codes(await gql(http, VIEWER, bearer(sign_local(sub=guest_id)))) == [
        "UNAUTHENTICATED"
    ]
