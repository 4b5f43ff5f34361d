"""Shared helpers of the fuzz and property tests: strategies, contract checks, counters.

The counters let a run quote figures: every fuzz test records how many cases (HTTP
requests, state-machine steps) it ran, and a line per test is printed in pytest's
terminal summary ("fuzz cases" section), also with `-q`.
"""

from __future__ import annotations

import re
import string
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import strategies as st

from tests.support import AppServer

# -- the contract ---------------------------------------------------------------------

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

GRAPHQL_CODES = frozenset(
    {
        "BAD_USER_INPUT",
        "NOT_FOUND",
        "UNAUTHENTICATED",
        "SESSION_BUSY",
        "LLM_ERROR",
        "UNAVAILABLE",
        "RATE_LIMITED",
    }
)
# The codes of errors found before anything runs (no `path`), as GraphQL clients know
# them, and of an HTTP request that is not a GraphQL request at all (400).
PRE_EXECUTION_CODES = frozenset({"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED"})
REFUSAL_CODES = frozenset({"BAD_REQUEST"})

# What an error text must never show: a traceback, or where the code lives.
LEAKS = re.compile(r"Traceback|/work/|\.py\b|File \"")

# The fake model's directives (see tests/support/fake_groq.py): a fuzzed message must not
# make the model fail or hang on purpose, so `!` is dropped from generated messages.
_DIRECTIVE_MARK = "!"


def is_uuid4(value: object) -> bool:
    return isinstance(value, str) and UUID4.fullmatch(value) is not None


def leak_in(text: str, sent: str = "") -> str | None:
    """What in an error text shows internals, or None.

    An error may quote the request (a GraphQL coercion error names the bad value), so
    what the client itself sent (`sent`) does not count.
    """
    for found in LEAKS.finditer(text):
        if found.group() not in sent:
            return found.group()
    return None


def assert_no_leak(text: str, sent: str = "") -> None:
    found = leak_in(text, sent)
    assert found is None, f"error text leaks internals ({found!r}): {text[:500]!r}"


# -- strategies -----------------------------------------------------------------------

# Any text Python can put in JSON as UTF-8: every code point but the surrogates.
UNICODE = st.characters(exclude_categories=["Cs"])

_RTL = "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u202e\u202b\u200f"
_EMOJI = (
    "\U0001f600\U0001f468\u200d\U0001f469\u200d\U0001f467\ufe0f\U0001f3f3\ufe0f\u200d\U0001f308"
)
_ODD = "\x00\x01\x7f\u0085\u2028\u2029\ufeff\ufffd\U0010ffff\r\n\t"


def _variants(canonical: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Strings close to the canonical ids drawn from `canonical`, none of them canonical."""
    return st.one_of(
        canonical.map(str.upper),
        canonical.map(lambda s: s[:14] + "1" + s[15:]),  # version 1
        canonical.map(lambda s: s[:19] + "c" + s[20:]),  # wrong variant
        canonical.map(lambda s: "{" + s + "}"),
        canonical.map(lambda s: s.replace("-", "")),
        canonical.map(lambda s: s + "\n"),
        canonical.map(lambda s: s + "\x00"),
        canonical.map(lambda s: " " + s),
        canonical.map(lambda s: s[:-1]),
        canonical.map(lambda s: s + "0"),
        canonical.map(lambda s: "urn:uuid:" + s),
        canonical.map(lambda s: s[:9] + "\uff14" + s[10:]),  # a fullwidth digit
        canonical.map(lambda s: s[:8] + "\u2010" + s[9:]),  # a unicode hyphen
        canonical.map(lambda s: "message_store:" + s),
        canonical.map(lambda s: s + "*"),
        canonical.map(lambda s: s + "/"),
        canonical.map(lambda s: s[:-1] + "?"),
    )


def near_misses_of(session_id: str) -> st.SearchStrategy[str]:
    """Non-canonical spellings of one real session id."""
    return _variants(st.just(session_id))


def _near_miss_ids() -> st.SearchStrategy[str]:
    """Strings that look like a session id but are not a canonical UUID4."""
    return st.one_of(
        _variants(st.uuids(version=4).map(str)),
        st.sampled_from(["", "*", "..", "../../etc/passwd", "sessions:index", "null", "0"]),
    )


def session_ids() -> st.SearchStrategy[str]:
    """Arbitrary strings used as a session id, canonical UUID4s included (unknown ones)."""
    canonical = st.uuids(version=4).map(str)
    return st.one_of(
        st.text(UNICODE, max_size=60),
        st.text(string.printable, max_size=60),
        _near_miss_ids(),
        canonical,
    )


def messages(*, max_size: int = 400) -> st.SearchStrategy[str]:
    """Chat messages: any unicode (NUL, RTL, emoji, controls), and some very long ones."""
    pieces = st.sampled_from([_RTL, _EMOJI, _ODD, "<script>alert(1)</script>", "{{x}}", "%s%n"])
    mixed = st.lists(st.one_of(st.text(UNICODE, max_size=40), pieces), max_size=8).map("".join)
    long = st.integers(min_value=1000, max_value=40_000).flatmap(
        lambda n: st.sampled_from(["a", "\u00e9", "\U0001f600", "\u05e9 ", "\x00", " "]).map(
            lambda c: c * n
        )
    )
    return st.one_of(st.text(UNICODE, max_size=max_size), mixed, long).map(
        lambda s: s.replace(_DIRECTIVE_MARK, "")
    )


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Arbitrary JSON documents (no NaN or infinities: they are not JSON)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(UNICODE, max_size=30),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(UNICODE, max_size=12), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def json_objects_near(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects using the documented keys with any values, plus stray keys."""
    return st.dictionaries(
        st.one_of(st.sampled_from(keys), st.text(UNICODE, max_size=12)),
        json_values(4),
        max_size=5,
    )


# What in the server's log means a request went wrong inside: an unexpected exception
# (REST, GraphQL, the ASGI app, a turn), or the model failing, which the fake model
# never does unless asked to.
_LOG_PROBLEMS = re.compile(
    r"Exception in ASGI application|ERROR \S+: unexpected |ERROR \S+: turn failed"
    r"|turn failed on session \S+: LLM_ERROR|Traceback \(most recent call last\)"
)


def server_log_problems(app: AppServer) -> list[str]:
    """The lines of the app's log that show an internal failure."""
    return [line for line in app.output().splitlines() if _LOG_PROBLEMS.search(line)]


# -- the app stays healthy ------------------------------------------------------------


def assert_healthy(base_url: str) -> None:
    """Liveness, readiness, and one whole normal turn over REST."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        created = http.post("/new_session")
        assert created.status_code == 200, created.text
        session_id = created.json()["session_id"]
        assert is_uuid4(session_id)
        reply = http.post(
            "/chat",
            json={"session_id": session_id, "message": "still alive?"},
            headers={"accept": "application/json"},
        )
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"session_id": session_id, "response": "[n=2] still alive?"}
        history = http.get(f"/session/{session_id}/history")
        assert history.json() == {
            "history": [{"input": "still alive?", "output": "[n=2] still alive?"}]
        }
        assert http.delete(f"/session/{session_id}").status_code == 204


# -- running schemathesis ---------------------------------------------------------------


@dataclass
class Exchange:
    """One request schemathesis sent, and the answer."""

    phase: str
    operation: str
    status: int
    body: bytes
    request_body: bytes | None


@dataclass
class SchemathesisRun:
    exchanges: list[Exchange] = field(default_factory=list)
    check_failures: list[str] = field(default_factory=list)
    engine_errors: list[str] = field(default_factory=list)

    def summary(self) -> Counter[str]:
        return Counter(f"{e.phase} {e.operation} {e.status}" for e in self.exchanges)


def run_schemathesis(schema: Any) -> SchemathesisRun:
    """Run every enabled phase of schemathesis' engine (what `st run` does) on `schema`.

    schemathesis' own pytest integration for a schema loaded from a fixture
    (`schemathesis.pytest.from_fixture`) does not work with pytest 9.2 (it sets
    `Node._nodeid`, which pytest renamed), so the engine runs inside an ordinary test.
    Every request is recorded through a schema-level `after_call` hook; the engine's
    own check failures and errors are collected from its events.
    """
    from schemathesis.engine import events, from_schema

    run = SchemathesisRun()

    def after_call(context: Any, case: Any, response: Any) -> None:
        meta = case.meta
        run.exchanges.append(
            Exchange(
                phase=str(meta.phase.name.value) if meta is not None else "?",
                operation=case.operation.label,
                status=int(response.status_code),
                body=bytes(response.content or b""),
                request_body=response.request.body
                if isinstance(response.request.body, bytes | None)
                else str(response.request.body).encode(),
            )
        )

    schema.hooks.register_hook_with_name(after_call, "after_call")
    try:
        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                recorder = event.recorder
                for checks in recorder.checks.values():
                    for check in checks:
                        if check.failure_info is not None:
                            failure = check.failure_info.failure
                            run.check_failures.append(
                                f"{recorder.label}: {check.name}: {failure.title}: "
                                f"{failure.message}\n{check.failure_info.code_sample}"
                            )
            elif isinstance(event, events.NonFatalError):
                run.engine_errors.append(f"{event.label}: {event.info.format()}")
            elif isinstance(event, events.FatalError):
                run.engine_errors.append(f"fatal: {event.exception!r}")
    finally:
        schema.hooks.unregister(after_call)
    return run


# -- counting cases ---------------------------------------------------------------------


@dataclass
class _Tally:
    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


class FuzzStats:
    """Cases run per test, printed in the terminal summary."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tallies: dict[str, _Tally] = defaultdict(_Tally)

    def record(self, test: str, outcome: object = None) -> None:
        with self._lock:
            tally = self._tallies[test]
            tally.cases += 1
            if outcome is not None:
                tally.outcomes[str(outcome)] += 1

    def cases(self, test: str, outcome: str | None = None) -> int:
        """Cases `test` ran (with that `outcome`, when given)."""
        tally = self._tallies.get(test)
        if tally is None:
            return 0
        return tally.cases if outcome is None else tally.outcomes[outcome]

    def lines(self) -> list[str]:
        lines = []
        for test, tally in sorted(self._tallies.items()):
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(tally.outcomes.items()))
            lines.append(f"{test}: {tally.cases} cases" + (f" ({detail})" if detail else ""))
        total = sum(t.cases for t in self._tallies.values())
        lines.append(f"total: {total} cases")
        return lines

    # The pytest hook, on this object registered as a plugin (see `reporting`).
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self._tallies:
            terminalreporter.section("fuzz cases")
            for line in self.lines():
                terminalreporter.write_line(line)


STATS = FuzzStats()
_PLUGIN_NAME = "chat-server-fuzz-stats"


def fake_reply(message: str, n_messages: int = 2) -> str:
    """What tests/support/fake_groq.py answers: `[n=N]` then the message's words."""
    return " ".join([f"[n={n_messages}]", *message.split()])


def reporting(config: pytest.Config) -> FuzzStats:
    """The shared counters, registered once per run to print the summary."""
    if not config.pluginmanager.has_plugin(_PLUGIN_NAME):
        config.pluginmanager.register(STATS, _PLUGIN_NAME)
    return STATS
