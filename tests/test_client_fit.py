"""What the clients people use expect of the server, each found with a real client: the
WebSocket subprotocol it settles on, HEAD and the favicon a browser asks for."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from tests.support import AppServer, FakeGroq, new_session
from tests.support.servers import app_env
from tests.support.ws_client import LEGACY_WS, TRANSPORT_WS, graphql_socket


async def test_graphql_transport_ws_is_chosen_when_a_client_offers_both(app: AppServer) -> None:
    # gql's default transport offers the legacy protocol first.
    offered = [Subprotocol(LEGACY_WS), Subprotocol(TRANSPORT_WS)]
    async with websockets.connect(app.ws_url, subprotocols=offered) as ws:
        assert ws.subprotocol == TRANSPORT_WS
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        # A query runs over it (the legacy protocol would refuse it).
        query = {"query": "{ serverInfo { model } }"}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
        result = json.loads(await ws.recv())
        assert result["type"] == "next", result
        assert result["payload"]["data"]["serverInfo"]["model"]


async def test_the_legacy_protocol_alone_is_still_served(app: AppServer) -> None:
    async with websockets.connect(app.ws_url, subprotocols=[Subprotocol(LEGACY_WS)]) as ws:
        assert ws.subprotocol == LEGACY_WS


async def test_head_of_the_page_and_the_favicon(client: httpx.AsyncClient) -> None:
    head = await client.head("/")
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/html")
    assert head.content == b""
    icon = await client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/svg+xml"
    assert icon.content.startswith(b"<svg")
    assert (await client.head("/favicon.ico")).status_code == 200


async def test_every_refusal_of_graphql_is_json_with_a_code(client: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, object], int, str]] = [
        ({"content": b"{bad", "headers": {"content-type": "application/json"}}, 400, "BAD_REQUEST"),
        ({"json": {"variables": {}}}, 400, "BAD_REQUEST"),
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, 400, "BAD_REQUEST"),
        ({"json": {"query": "{ nosuch }"}}, 200, "GRAPHQL_VALIDATION_FAILED"),
        ({"json": {"query": "{ {"}}, 200, "GRAPHQL_PARSE_FAILED"),
        ({"json": {"query": "{ " + "a: serverInfo { model } " * 31 + "}"}}, 200,
         "GRAPHQL_VALIDATION_FAILED"),
        ({"json": {"query": "{ " + "serverInfo { model } " * 700 + "}"}}, 200,
         "GRAPHQL_PARSE_FAILED"),  # past the token limit
        ({"json": {"query": "query($s: ID!) { session(id: $s) { id } }"}}, 200, "BAD_USER_INPUT"),
        ({"json": {"query": "query($unused: ID) { serverInfo { model } }"}}, 200,
         "GRAPHQL_VALIDATION_FAILED"),
    ]  # fmt: skip
    for request, status, code in cases:
        response = await client.post("/graphql", **request)  # type: ignore[arg-type]
        assert response.status_code == status, (request, response.text)
        assert response.headers["content-type"].startswith("application/json")
        errors = response.json()["errors"]
        assert [e["extensions"]["code"] for e in errors] == [code] * len(errors), response.text
    mutation_by_get = await client.get(
        "/graphql", params={"query": "mutation { createGuest { token } }"}
    )
    assert mutation_by_get.status_code == 400
    assert mutation_by_get.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_validation_errors_over_a_websocket_carry_a_code(app: AppServer) -> None:
    async with websockets.connect(app.ws_url, subprotocols=[Subprotocol(TRANSPORT_WS)]) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        bad = {"query": "subscription { chat(sessionId: 1) { nosuch } }"}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": bad}))
        message = json.loads(await ws.recv())
    assert message["type"] == "error", message
    codes = {e["extensions"]["code"] for e in message["payload"]}
    assert codes == {"GRAPHQL_VALIDATION_FAILED"}, message


APQ_QUERY = "{ serverInfo { model } }"


def apq(query: str | None, digest: str) -> dict[str, object]:
    body: dict[str, object] = {
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    }
    if query is not None:
        body["query"] = query
    return body


async def test_automatic_persisted_queries_by_apollo_s_protocol(
    client: httpx.AsyncClient,
) -> None:
    query = APQ_QUERY + f" # {uuid.uuid4()}"  # a document no earlier run has kept
    digest = hashlib.sha256(query.encode()).hexdigest()
    unknown = await client.post("/graphql", json=apq(None, digest))
    assert unknown.status_code == 200
    assert unknown.json()["errors"] == [
        {"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}
    ]
    sent = await client.post("/graphql", json=apq(query, digest))
    assert sent.json()["data"]["serverInfo"]["model"]
    by_hash = await client.post("/graphql", json=apq(None, digest))
    assert by_hash.json() == sent.json()
    # Apollo's link can send a hashed query with GET (useGETForHashedQueries).
    as_get = await client.get(
        "/graphql",
        params={"extensions": json.dumps(apq(None, digest)["extensions"])},
        headers={"accept": "application/json"},
    )
    assert as_get.json() == sent.json()
    wrong = await client.post("/graphql", json=apq(query, "0" * 64))
    assert wrong.status_code == 400
    assert wrong.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    for bad in ({"version": 2, "sha256Hash": digest}, {"version": 1, "sha256Hash": "x"}, "x"):
        refused = await client.post("/graphql", json={"extensions": {"persistedQuery": bad}})
        assert refused.status_code == 400, bad


async def test_persisted_documents_are_bounded(
    start_app: type[AppServer], fresh_db: Callable[[], str], fake_groq: FakeGroq
) -> None:
    env = app_env(fresh_db(), fake_groq, APQ_MAX_DOCUMENTS="3", APQ_MAX_DOCUMENT_BYTES="200")
    server = start_app(env=env).start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            queries = [APQ_QUERY + f" # {n}" for n in range(5)]
            for query in queries:
                digest = hashlib.sha256(query.encode()).hexdigest()
                sent = (await http.post("/graphql", json=apq(query, digest))).json()
                assert sent["data"]["serverInfo"], sent
            kept = []
            for query in queries:
                digest = hashlib.sha256(query.encode()).hexdigest()
                found = (await http.post("/graphql", json=apq(None, digest))).json()
                kept.append(found.get("data") is not None)
            # The three used last are kept; the two oldest were dropped.
            assert kept == [False, False, True, True, True]
            big = APQ_QUERY + " #" + "x" * 300
            digest = hashlib.sha256(big.encode()).hexdigest()
            assert (await http.post("/graphql", json=apq(big, digest))).json()["data"]
            again = (await http.post("/graphql", json=apq(None, digest))).json()
            assert again["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    finally:
        server.stop()


# Apollo Client as npm has it (the registry is reachable here and in CI), installed once
# under tests/artifacts/.
APOLLO = ("@apollo/client@3.14.1", "graphql@16.15.0")
APOLLO_DIR = Path(__file__).parent / "artifacts" / "apollo-client"


def apollo_client_dir() -> Path:
    """A folder with Apollo Client installed and the test's script beside it (an ES
    module finds its packages in the node_modules of its own folder)."""
    return npm_folder(APOLLO_DIR, APOLLO, "apq.mjs")


def npm_folder(folder: Path, packages: tuple[str, ...], script: str) -> Path:
    """`folder` with `packages` installed from npm (once) and `script` (from
    tests/support/node/) beside them."""
    marker = folder / "node_modules" / ".installed"
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "package.json").write_text('{"private": true}')
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", *packages],
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=300,
        )
        marker.write_text(" ".join(packages))
    shutil.copy(Path(__file__).parent / "support" / "node" / script, folder / script)
    return folder


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js runs Apollo Client")
async def test_apollo_client_with_persisted_queries(app: AppServer) -> None:
    folder = apollo_client_dir()
    run = await asyncio.create_subprocess_exec(
        "node", "apq.mjs", f"{app.url}/graphql",
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(run.communicate(), 60)
    assert run.returncode == 0, err.decode()
    first, second = (json.loads(line) for line in out.decode().splitlines())
    for result in (first, second):
        assert "error" not in result, result
        assert result["data"]["serverInfo"]["model"]
    # The first time Apollo sent the hash alone, was told PersistedQueryNotFound, and
    # sent the document; the second time (a new client) the hash alone was enough.
    assert ["query" in body for body in first["sent"]] == [False, True]
    assert ["query" in body for body in second["sent"]] == [False]


# graphql-ws's own client, with its WebSocket from `ws` (Node 20 has none of its own).
GRAPHQL_WS = ("graphql-ws@6.0.6", "ws@8.18.3", "graphql@16.15.0")
GRAPHQL_WS_DIR = Path(__file__).parent / "artifacts" / "graphql-ws"


def graphql_ws_dir() -> Path:
    return npm_folder(GRAPHQL_WS_DIR, GRAPHQL_WS, "rejoin.mjs")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js runs graphql-ws's client")
async def test_graphql_ws_retrying_after_a_dropped_socket_shows_the_reply_once(
    app: AppServer,
) -> None:
    """The review's case: a client that re-subscribes with its turn id (graphql-ws
    `retryAttempts`) showed the start of the reply twice, because the join replayed it
    merged. Now the join replays one token an event, and the seq recipe holds."""
    import uuid

    from tests.support import new_session
    from tests.support.redis_proxy import RedisProxy

    folder = graphql_ws_dir()
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
    async with RedisProxy(app.port) as proxy:
        message = "!delay=0.05 !tokens=60 rejoined"
        run = await asyncio.create_subprocess_exec(
            "node", "rejoin.mjs", f"ws://127.0.0.1:{proxy.port}/graphql",
            session_id, str(uuid.uuid4()), message, "12",
            cwd=folder,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert run.stdout is not None
        ready = await asyncio.wait_for(run.stdout.readline(), 30)
        assert ready.strip() == b"READY", ready
        dropped = proxy.drop_connections()
        out, err = await asyncio.wait_for(run.communicate(), 60)
    assert run.returncode == 0, err.decode()
    result = json.loads(out.decode().splitlines()[-1])
    assert dropped >= 1 and result["connected"] == 2
    assert result["shown"] == "[n=2]" + "".join(f" t{k}" for k in range(60))
    # The join replayed what was there one token an event, from 1.
    seqs = result["seqs"]
    restart = next(i for i in range(1, len(seqs)) if seqs[i] <= seqs[i - 1])
    assert seqs[restart : restart + 5] == [1, 2, 3, 4, 5]


# Apollo Client over both transports (GraphQLWsLink for subscriptions, HttpLink for the
# rest), to run a tool round trip as an app built on it would.
APOLLO_TOOLS = ("@apollo/client@3.14.1", "graphql@16.15.0", "graphql-ws@6.0.6", "ws@8.18.3")
APOLLO_TOOLS_DIR = Path(__file__).parent / "artifacts" / "apollo-tools"


def apollo_tools_dir() -> Path:
    return npm_folder(APOLLO_TOOLS_DIR, APOLLO_TOOLS, "tools.mjs")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js runs Apollo Client")
async def test_apollo_client_runs_a_tool_round_trip_from_its_subscriptions(
    app: AppServer,
) -> None:
    """Apollo Client's subscriptions carry a whole tool round trip: `chat` with a tool
    ends REQUIRES_ACTION with its call (after the reasoning), the script runs the tool
    and answers it with `submitToolResults`, and a query through the same client finds
    the history in the LangChain layout and nothing pending."""
    folder = apollo_tools_dir()
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        session_id = await new_session(http)
    message = '!reason=2 !call=calculator{"expression":"6*7"} apollo'
    run = await asyncio.create_subprocess_exec(
        "node", "tools.mjs", f"{app.url}/graphql", app.ws_url, session_id, message,
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(run.communicate(), 60)
    assert run.returncode == 0, (out.decode(), err.decode())
    [line] = out.decode().splitlines()
    seen = json.loads(line)
    asked, answered = seen["asked"], seen["answered"]
    # The first turn: reasoning pieces, no answer text, then the call to make.
    assert asked["reasoning"] == " r0 r1"
    assert asked["answer"] == ""
    assert asked["done"] and asked["status"] == "REQUIRES_ACTION"
    assert asked["turnId"] == asked["sentTurnId"]
    [call] = asked["toolCalls"]
    assert call["name"] == "calculator"
    assert json.loads(call["arguments"]) == {"expression": "6*7"}
    assert asked["message"]["toolCalls"] == [call]
    # The script ran the calculator, and the model answered from its result.
    assert seen["results"] == [{"toolCallId": call["id"], "content": "42"}]
    assert answered["status"] == "COMPLETE" and answered["toolCalls"] is None
    assert answered["turnId"] == answered["sentTurnId"]
    assert answered["answer"] == f"[n=4] {call['id']}=42"
    assert answered["message"]["content"] == answered["answer"]
    # The fake reasons again for the reply (its directives are the last user message's).
    assert answered["reasoning"] == " r0 r1"
    for events in (asked, answered):
        assert events["seqs"] == sorted(set(events["seqs"])), events["seqs"]
    # The same client's query over HTTP: nothing pending, the round trip stored.
    session = seen["session"]
    assert session["pendingToolCalls"] == []
    messages = session["messages"]
    assert [m["role"] for m in messages] == ["USER", "ASSISTANT", "TOOL", "ASSISTANT"]
    assert [c["id"] for c in messages[1]["toolCalls"]] == [call["id"]]
    assert messages[2]["toolCallId"] == call["id"]
    assert messages[0]["toolCallId"] is None and messages[3]["toolCalls"] is None


async def test_a_query_over_the_legacy_protocol_is_told_where_queries_go(app: AppServer) -> None:
    async with graphql_socket(app.ws_url, LEGACY_WS) as ws:
        got = await ws.collect(await ws.start("{ viewer { isAdmin } }"))
    assert got.errors, got
    message = got.errors[0]["message"]
    assert "HTTP POST /graphql" in message and "graphql-transport-ws" in message


async def test_a_graphql_get_runs_for_clients_and_opens_graphiql_for_browsers(
    client: httpx.AsyncClient,
) -> None:
    query = {"query": "{ viewer { isAdmin } }"}
    ran = await client.get("/graphql", params=query, headers={"accept": "application/json"})
    assert ran.json() == {"data": {"viewer": {"isAdmin": False}}}
    browsed = await client.get(
        "/graphql", params=query, headers={"accept": "text/html,application/xhtml+xml,*/*"}
    )
    assert browsed.headers["content-type"].startswith("text/html")
    assert "parameters.query" in browsed.text  # the editor is filled from the link
