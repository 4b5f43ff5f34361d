"""Fuzzing GraphQL at /graphql: schemathesis from introspection, hypothesis on arguments.

Over real HTTP to the app under uvicorn, started as conftest's `app` fixture starts it
but on a Redis database of its own (9), with the fake Groq model behind it.

The bar (docs/api.md): HTTP 200 (or 400 for a request that is not GraphQL at all), never a
5xx; every error carries an `extensions.code` of the contract, or is a validation error
(those have no code, and no `path`: they are found before anything runs); no error
message shows a traceback or where the code lives; the server is healthy afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support import AppServer
from tests.support.fuzzing import (
    GRAPHQL_CODES,
    PRE_EXECUTION_CODES,
    REFUSAL_CODES,
    UNICODE,
    FuzzStats,
    assert_healthy,
    fake_reply,
    is_uuid4,
    json_values,
    leak_in,
    messages,
    near_misses_of,
    run_schemathesis,
    server_log_problems,
    session_ids,
)

pytestmark = pytest.mark.fuzz

MAX_MESSAGE_CHARS = 32000
MAX_TITLE_CHARS = 200
DEFAULT_PROMPT = "You are a helpful assistant. Answer clearly and concisely."
INT32 = 2**31

FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SCHEMATHESIS_CONFIG: dict[str, Any] = {
    "seed": 20240601,
    "generation": {
        "mode": "all",
        "max-examples": 70,  # per operation (root field), in the fuzzing phase
        "deterministic": True,
        "database": "none",
        "allow-x00": True,
    },
    "phases": {"stateful": {"enabled": True}},
    "checks": {
        # `ID`, `String` and `Int` cannot say "a canonical UUID4", "not blank" or "not
        # negative": schema-valid arguments get the documented BAD_USER_INPUT.
        "positive_data_acceptance": {"enabled": False},
    },
    "request-timeout": 30,
    "workers": 1,
}


@pytest.fixture(scope="module")
def app(make_app: Callable[..., AppServer]) -> AppServer:
    """The app as conftest's `app` runs it, on a database of its own: the fuzzers create
    thousands of sessions, which neither slow nor confuse the tests that list sessions."""
    return make_app()


@pytest.fixture(scope="module")
def http(app: AppServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.url, timeout=60) as client:
        yield client


# -- checking an answer ---------------------------------------------------------------


def graphql_problems(status: int, raw: bytes, sent: str = "") -> list[str]:
    """What is wrong with one answer of /graphql, by the bar above (`sent`: the request,
    which an error may quote)."""
    if status >= 500 or status not in {200, 400}:
        return [f"HTTP {status}: {raw[:300]!r}"]
    try:
        body = json.loads(raw)
    except ValueError:
        return [f"HTTP {status}, not JSON: {raw[:300]!r}"]
    if not isinstance(body, dict):
        return [f"not a JSON object: {raw[:300]!r}"]
    problems = []
    for error in body.get("errors") or []:
        message = error.get("message")
        code = (error.get("extensions") or {}).get("code")
        if not isinstance(message, str):
            problems.append(f"error without a message: {error}")
            continue
        if leak := leak_in(message, sent):
            problems.append(f"message leaks {leak!r}: {message[:300]}")
        if code is None:
            problems.append(f"an error without extensions.code: {error}")
        elif status == 400:
            if code not in REFUSAL_CODES:
                problems.append(f"a 400 with {code!r}: {error}")
        elif code in PRE_EXECUTION_CODES:
            if "path" in error:
                problems.append(f"{code} on an error found while running: {error}")
        elif code not in GRAPHQL_CODES:
            problems.append(f"extensions.code {code!r} is not in the contract: {error}")
    return problems


def post(
    http: httpx.Client, query: str, variables: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """POST one operation; assert the bar; return the JSON body."""
    response = http.post("/graphql", json={"query": query, "variables": variables, **extra})
    sent = json.dumps(variables, ensure_ascii=False) + query
    problems = graphql_problems(response.status_code, response.content, sent)
    assert not problems, (query, variables, problems)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def codes(body: dict[str, Any]) -> list[str | None]:
    return [(e.get("extensions") or {}).get("code") for e in body.get("errors") or []]


def new_session(http: httpx.Client) -> str:
    body = post(http, "mutation { createSession { id } }")
    session_id: str = body["data"]["createSession"]["id"]
    assert is_uuid4(session_id)
    return session_id


SEND = "mutation($s: ID!, $m: String!) { sendMessage(sessionId: $s, message: $m) { role content } }"


@pytest.fixture(scope="module")
def known_session(http: httpx.Client) -> str:
    """A session with one stored turn, to aim near misses of its id at."""
    session_id = new_session(http)
    body = post(http, SEND, {"s": session_id, "m": "remember me"})
    assert body["data"]["sendMessage"]["content"] == "[n=2] remember me"
    return session_id


# -- schemathesis from introspection ----------------------------------------------------


def test_schemathesis_graphql(app: AppServer, stats: FuzzStats) -> None:
    """Every query and mutation schemathesis derives from the introspected schema."""
    schema = schemathesis.graphql.from_url(
        f"{app.url}/graphql", config=schemathesis.Config.from_dict(SCHEMATHESIS_CONFIG)
    )
    run = run_schemathesis(schema)
    problems = []
    for exchange in run.exchanges:
        sent = (exchange.request_body or b"").decode(errors="replace")
        found = graphql_problems(exchange.status, exchange.body, sent)
        stats.record("graphql: schemathesis", f"{exchange.phase} {exchange.status}")
        problems += [f"{exchange.operation} {exchange.request_body!r:.300}: {p}" for p in found]
    print("schemathesis (GraphQL):", dict(sorted(run.summary().items())))
    assert run.exchanges, "schemathesis sent no request"
    assert not run.engine_errors, "\n\n".join(run.engine_errors)
    assert not problems, "\n".join(problems[:20])
    assert not run.check_failures, "\n\n".join(run.check_failures[:10])
    assert_healthy(app.url)


# -- session ids ---------------------------------------------------------------------


SESSION_QUERY = """
query($id: ID!, $last: Int) {
  session(id: $id) { id messageCount messages(last: $last) { role content } turns { input } }
}
"""


@FUZZ
@given(data=st.data())
def test_any_id_to_session_history_and_delete(
    data: st.DataObject, http: httpx.Client, known_session: str, stats: FuzzStats
) -> None:
    """`session` is null, `history` and `deleteSession` refuse: for every id but a real one."""
    session_id = data.draw(st.one_of(session_ids(), near_misses_of(known_session)), label="id")
    canonical = is_uuid4(session_id)

    body = post(http, SESSION_QUERY, {"id": session_id, "last": None})
    stats.record("graphql: ids", "session " + ",".join(map(str, codes(body))))
    assert body["data"] is None or body["data"]["session"] is None, body
    assert codes(body) == ([] if canonical else ["BAD_USER_INPUT"]), body

    body = post(http, "query($id: ID!) { history(sessionId: $id) { input } }", {"id": session_id})
    stats.record("graphql: ids", "history " + ",".join(map(str, codes(body))))
    assert body["data"] is None, body
    assert codes(body) == (["NOT_FOUND"] if canonical else ["BAD_USER_INPUT"]), body

    body = post(http, "mutation($id: ID!) { deleteSession(id: $id) }", {"id": session_id})
    stats.record("graphql: ids", "deleteSession " + ",".join(map(str, codes(body))))
    if canonical:
        assert body == {"data": {"deleteSession": False}}, body
    else:
        assert codes(body) == ["BAD_USER_INPUT"], body

    still = post(http, SESSION_QUERY, {"id": known_session, "last": None})
    assert still["data"]["session"]["messageCount"] == 2


@FUZZ
@given(
    value=json_values(3).filter(lambda v: not isinstance(v, str)),
    field=st.sampled_from(
        [
            ("query($id: ID!) { session(id: $id) { id } }", "id"),
            ("query($id: ID!) { history(sessionId: $id) { input } }", "id"),
            ("mutation($id: ID!) { deleteSession(id: $id) }", "id"),
            (SEND.replace("$s", "$id").replace("$m", "$m"), "m"),
        ]
    ),
)
def test_variables_of_the_wrong_type(
    value: Any, field: tuple[str, str], http: httpx.Client, stats: FuzzStats
) -> None:
    """An id or message that is a number, a list, null ...: a validation error or a code."""
    query, name = field
    variables = {"id": "00000000-0000-4000-8000-000000000000", "m": "x", name: value}
    variables = {k: v for k, v in variables.items() if f"${k}" in query}
    body = post(http, query, variables)
    stats.record("graphql: wrong variable types", ",".join(map(str, codes(body))) or "ok")
    whole = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )
    if name == "id" and whole:
        # ID takes a whole number as its decimal text, which is never a UUID4.
        assert codes(body) == ["BAD_USER_INPUT"], body
    else:
        found = codes(body)
        assert found and set(found) <= {"BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED"}, body


# -- messages ------------------------------------------------------------------------


@FUZZ
@given(message=messages())
@example(message="a" * MAX_MESSAGE_CHARS)
@example(message="a" * (MAX_MESSAGE_CHARS + 1))
@example(message="\x00\u202e\U0001f600")
@example(message="\u3000\n")
def test_send_message_with_any_message(message: str, http: httpx.Client, stats: FuzzStats) -> None:
    session_id = new_session(http)
    body = post(http, SEND, {"s": session_id, "m": message})
    stats.record("graphql: sendMessage", ",".join(map(str, codes(body))) or "ok")
    turns = post(
        http, "query($id: ID!) { history(sessionId: $id) { input output } }", {"id": session_id}
    )
    if not message.strip() or len(message) > MAX_MESSAGE_CHARS:
        assert codes(body) == ["BAD_USER_INPUT"], body
        assert turns == {"data": {"history": []}}
    else:
        reply = fake_reply(message)
        assert body == {"data": {"sendMessage": {"role": "ASSISTANT", "content": reply}}}
        assert turns == {"data": {"history": [{"input": message, "output": reply}]}}
    post(http, "mutation($id: ID!) { deleteSession(id: $id) }", {"id": session_id})


@FUZZ
@given(
    session_id=st.one_of(session_ids(), st.just("00000000-0000-4000-8000-000000000000")),
    message=messages(max_size=40),
)
def test_subscription_over_plain_http_is_refused(
    session_id: str, message: str, http: httpx.Client, stats: FuzzStats
) -> None:
    query = "subscription($s: ID!, $m: String!) { chat(sessionId: $s, message: $m) { token } }"
    body = post(http, query, {"s": session_id, "m": message})
    stats.record("graphql: chat over plain HTTP", ",".join(map(str, codes(body))))
    assert codes(body) == ["BAD_USER_INPUT"], body


# -- createSession -------------------------------------------------------------------

CREATE = """
mutation($input: CreateSessionInput) {
  createSession(input: $input) { id title systemPrompt messageCount createdAt updatedAt }
}
"""


@FUZZ
@given(
    title=st.one_of(st.none(), st.text(UNICODE, max_size=MAX_TITLE_CHARS + 20)),
    prompt=st.one_of(st.none(), st.text(UNICODE, max_size=300), st.sampled_from(["", " \n\t"])),
    with_input=st.booleans(),
)
@example(title="t" * MAX_TITLE_CHARS, prompt=None, with_input=True)
@example(title="t" * (MAX_TITLE_CHARS + 1), prompt=None, with_input=True)
@example(title="", prompt="   ", with_input=True)
def test_create_session_with_any_title_and_prompt(
    title: str | None, prompt: str | None, with_input: bool, http: httpx.Client, stats: FuzzStats
) -> None:
    variables = {"input": {"title": title, "systemPrompt": prompt} if with_input else None}
    body = post(http, CREATE, variables)
    stats.record("graphql: createSession", ",".join(map(str, codes(body))) or "ok")
    if with_input and title is not None and len(title) > MAX_TITLE_CHARS:
        assert codes(body) == ["BAD_USER_INPUT"], body
        return
    created = body["data"]["createSession"]
    assert is_uuid4(created["id"])
    assert created["title"] == (title if with_input and title else None)
    expected_prompt = prompt if with_input and prompt is not None and prompt.strip() else None
    assert created["systemPrompt"] == (expected_prompt or DEFAULT_PROMPT)
    assert created["messageCount"] == 0
    assert created["createdAt"] == created["updatedAt"]
    again = post(http, SESSION_QUERY.replace("turns { input }", "title"), {"id": created["id"]})
    assert again["data"]["session"]["title"] == created["title"]
    post(http, "mutation($id: ID!) { deleteSession(id: $id) }", {"id": created["id"]})


# -- sessions(first, after) and messages(last) ------------------------------------------

SESSIONS = """
query($first: Int!, $after: String) {
  sessions(first: $first, after: $after) {
    totalCount
    edges { cursor node { id updatedAt } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


@pytest.fixture(scope="module")
def real_cursors(http: httpx.Client) -> list[str]:
    for _ in range(3):
        new_session(http)
    body = post(http, SESSIONS, {"first": 5, "after": None})
    cursors = [edge["cursor"] for edge in body["data"]["sessions"]["edges"]]
    assert cursors
    return cursors


@FUZZ
@given(data=st.data())
def test_sessions_with_any_first_and_after(
    data: st.DataObject, http: httpx.Client, real_cursors: list[str], stats: FuzzStats
) -> None:
    first = data.draw(
        st.one_of(
            st.integers(min_value=-3, max_value=60),
            st.integers(min_value=-INT32, max_value=INT32 - 1),
            st.sampled_from([INT32, -INT32 - 1, 10**20]),  # beyond GraphQL's Int
        ),
        label="first",
    )
    after = data.draw(
        st.one_of(st.none(), st.sampled_from(real_cursors), st.text(UNICODE, max_size=40)),
        label="after",
    )
    body = post(http, SESSIONS, {"first": first, "after": after})
    stats.record("graphql: sessions", ",".join(map(str, codes(body))) or "ok")
    if not -INT32 <= first < INT32:
        assert codes(body) == ["BAD_USER_INPUT"], body  # a variable it cannot coerce
        return
    if first < 0 or (after is not None and after not in real_cursors):
        # A made-up cursor is refused, unless it happens to decode to a real position.
        assert codes(body) == ["BAD_USER_INPUT"] or "errors" not in body, body
        if first < 0:
            assert codes(body) == ["BAD_USER_INPUT"], body
        return
    page = body["data"]["sessions"]
    edges = page["edges"]
    assert len(edges) <= min(first, 1000)
    ids = [edge["node"]["id"] for edge in edges]
    assert len(set(ids)) == len(ids) and all(map(is_uuid4, ids))
    stamps = [edge["node"]["updatedAt"] for edge in edges]
    assert stamps == sorted(stamps, reverse=True), "not most recently active first"
    assert page["pageInfo"]["endCursor"] == (edges[-1]["cursor"] if edges else None)


@FUZZ
@given(
    last=st.one_of(
        st.none(), st.integers(min_value=-5, max_value=10), st.integers(-INT32, INT32 - 1)
    )
)
@example(last=0)
@example(last=-1)
@example(last=INT32 - 1)
def test_messages_with_any_last(
    last: int | None, http: httpx.Client, known_session: str, stats: FuzzStats
) -> None:
    body = post(http, SESSION_QUERY, {"id": known_session, "last": last})
    stats.record("graphql: messages(last)", ",".join(map(str, codes(body))) or "ok")
    if last is not None and last < 0:
        assert codes(body) == ["BAD_USER_INPUT"], body
        return
    got = body["data"]["session"]["messages"]
    everything = [
        {"role": "USER", "content": "remember me"},
        {"role": "ASSISTANT", "content": "[n=2] remember me"},
    ]
    assert got == (everything if last is None else everything[len(everything) - min(last, 2) :])


# -- requests that are not GraphQL ------------------------------------------------------


@FUZZ
@given(
    # A body that is a JSON object or array: a bare scalar (`false`, `1`, `"x"`, `null`)
    # is a known 500, kept by test_a_json_scalar_body_is_400_not_500 below.
    payload=st.one_of(
        st.lists(json_values(3), max_size=3),
        st.dictionaries(st.text(UNICODE, max_size=12), json_values(3), max_size=4),
        st.fixed_dictionaries(
            {"query": st.one_of(st.text(UNICODE, max_size=80), json_values(2))},
            optional={
                "variables": json_values(3),
                "operationName": json_values(1),
                "extensions": json_values(2),
            },
        ),
    )
)
@example(payload={"query": "{"})
@example(payload={"query": "{ serverInfo { model } }", "variables": 5})
@example(payload=[{"query": "{ __typename }"}])
@example(payload={"query": "query { session(id: 1) { id } } mutation { deleteSession }"})
def test_any_json_request_body(payload: Any, http: httpx.Client, stats: FuzzStats) -> None:
    response = http.post("/graphql", json=payload)
    stats.record("graphql: arbitrary request bodies", response.status_code)
    sent = json.dumps(payload, ensure_ascii=False)
    problems = graphql_problems(response.status_code, response.content, sent)
    assert not problems, (payload, problems)


@FUZZ
@given(
    query=st.one_of(
        st.text(UNICODE, max_size=120),
        st.sampled_from(
            [
                '{ session(id: "x") { id } }',
                "{ sessions(first: -1) { totalCount } }",
                "{ __schema { types { name } } }",
                "mutation { createSession { id } }",
                '{ history(sessionId: "' + "0" * 5000 + '") { input } }',
                "{" * 500 + "}" * 500,
                "query($id: ID!) { session(id: $id) { id } }",
            ]
        ),
    ),
    variables=st.one_of(st.none(), st.text(UNICODE, max_size=30), json_values(2).map(json.dumps)),
    operation_name=st.one_of(st.none(), st.text(UNICODE, max_size=10)),
)
def test_any_query_over_get(
    query: str,
    variables: str | None,
    operation_name: str | None,
    http: httpx.Client,
    stats: FuzzStats,
) -> None:
    """GET /graphql?query=...&variables=...: 200 or 400 (mutations are refused), no 5xx."""
    params = {"query": query, "variables": variables, "operationName": operation_name}
    params = {k: v for k, v in params.items() if v is not None}
    response = http.get("/graphql", params=params, headers={"accept": "application/json"})
    stats.record("graphql: GET", response.status_code)
    problems = graphql_problems(response.status_code, response.content, json.dumps(params))
    assert not problems, (params, problems)


def test_the_server_log_shows_no_internal_failure(app: AppServer) -> None:
    """Everything above, seen from the server: no unexpected exception, no model failure.

    (Runs before the regression tests below, which do make the server fail.)
    """
    problems = server_log_problems(app)
    assert not problems, "\n".join(problems[:20])


# -- found by fuzzing: kept as regression tests -----------------------------------------
#
# JSON variables may hold an escaped lone surrogate ("\ud83d", half an emoji): the
# JSON is valid, and Python parses it into a str that cannot be encoded as UTF-8.


def _raw_post(http: httpx.Client, query: str, variables_json: str) -> dict[str, Any]:
    content = f'{{"query": {json.dumps(query)}, "variables": {variables_json}}}'
    response = http.post("/graphql", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_lone_surrogate_in_title_is_bad_user_input(http: httpx.Client) -> None:
    body = _raw_post(http, CREATE, '{"input": {"title": "trip \\ud83d"}}')
    # Observed: {"message": "internal error", "extensions": {"code": "INTERNAL"}}.
    assert codes(body) == ["BAD_USER_INPUT"], body


def test_lone_surrogate_in_message_is_bad_user_input_not_llm_error(http: httpx.Client) -> None:
    session_id = new_session(http)
    body = _raw_post(http, SEND, f'{{"s": "{session_id}", "m": "hi \\udc00"}}')
    # Observed: "the model provider failed: UnicodeEncodeError", code LLM_ERROR.
    assert codes(body) == ["BAD_USER_INPUT"], body


@pytest.mark.parametrize("body", ["false", "true", "0", "1.5", '"{ __typename }"', "null"])
def test_a_json_scalar_body_is_400_not_500(body: str, http: httpx.Client) -> None:
    """Valid JSON that is not an object: not a GraphQL request, so a 400 like `[]` or `{}`.

    Observed: 500 {"detail": "internal error"}; the log says "unexpected AttributeError on
    POST /graphql": strawberry's `parse_http_body` calls `.get` on whatever JSON it parsed.
    """
    response = http.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, (body, response.status_code, response.text)


def test_healthy_after_graphql_fuzzing(app: AppServer) -> None:
    assert_healthy(app.url)
