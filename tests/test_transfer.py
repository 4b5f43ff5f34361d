"""Export and import of sessions (JSON Lines), from the command line and the admin
routes, and the import of a ChatGPT export: 1,000 sessions round-trip exactly."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, message_to_dict
from redis import Redis

from resolvers.services.keys import INDEX_KEY, messages_key, meta_key, owner_index_key
from tests.support import AppServer, FakeGroq, new_session
from tests.support.servers import REPO, app_env

ADMIN = "transfer-admin-token"
SESSIONS = 1000


def cli(redis_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = app_env(redis_url, None)
    return subprocess.run(
        [sys.executable, "-m", "resolvers.services.transfer", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def seed(redis_url: str, count: int) -> None:
    """`count` sessions in the server's layout, as turns would have left them."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    with redis.pipeline(transaction=False) as pipe:
        for n in range(count):
            session_id = str(uuid.uuid4())
            at = 1_790_000_000_000_000 + n
            messages = [
                HumanMessage(content=f"question {n}", additional_kwargs={"message_id": f"0.{n:x}"}),
                AIMessage(content=f"answer {n} \u00e9\U0001f600", usage_metadata={
                    "input_tokens": n, "output_tokens": 2, "total_tokens": n + 2},
                    additional_kwargs={"message_id": f"1.{n:x}"}),
            ]  # fmt: skip
            pipe.lpush(
                messages_key(session_id), *(json.dumps(message_to_dict(m)) for m in messages)
            )
            meta: dict[str, str | int] = {"title": f"t{n}", "system_prompt": "be brief",
                    "created_at": at, "updated_at": at, "input_tokens": n,
                    "output_tokens": 2}  # fmt: skip
            if n % 3 == 0:
                meta["owner"] = owner = f"user-{n % 7}"
                pipe.zadd(owner_index_key(owner), {session_id: at})
            pipe.hset(meta_key(session_id), mapping=meta)  # type: ignore[arg-type]
            pipe.zadd(INDEX_KEY, {session_id: at})
        pipe.execute()
    redis.close()


def indexes(redis_url: str) -> dict[str, Any]:
    redis = Redis.from_url(redis_url, decode_responses=True)
    found = {
        "index": redis.zrange(INDEX_KEY, 0, -1, withscores=True),
        "owners": {
            key: redis.zrange(key, 0, -1, withscores=True)
            for key in redis.scan_iter(match="sessions:owner:*")
        },
        "counts": sorted(redis.llen(messages_key(str(s))) for s in redis.zrange(INDEX_KEY, 0, -1)),
    }
    redis.close()
    return found


@pytest.mark.slow
def test_a_thousand_sessions_round_trip_exactly(
    fresh_db: Callable[[], str], tmp_path: Path
) -> None:
    source, target = fresh_db(), fresh_db()
    seed(source, SESSIONS)
    exported = cli(source, "export")
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert len(lines) == SESSIONS
    record = json.loads(lines[0])
    assert set(record) == {"session_id", "owner", "meta", "messages", "branches", "children"}
    assert record["messages"][0]["type"] == "human"  # oldest first, LangChain's form
    imported = cli(target, "import", stdin=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    assert f"imported {SESSIONS} sessions" in imported.stderr
    again = cli(target, "export")
    assert again.stdout == exported.stdout  # every id, message and field as it was
    assert indexes(target) == indexes(source)  # counts and indexes rebuilt
    # Importing again changes nothing unless asked to replace.
    twice = cli(target, "import", stdin=exported.stdout)
    assert f"imported 0 sessions, skipped {SESSIONS}" in twice.stderr


@pytest.mark.slow  # runs the command line: a Python process each
def test_a_bad_line_imports_nothing(fresh_db: Callable[[], str]) -> None:
    source, target = fresh_db(), fresh_db()
    seed(source, 3)
    good = cli(source, "export").stdout.splitlines()
    alien = {"session_id": str(uuid.uuid4()), "messages": [{"type": "alien", "data": {}}]}
    for bad in ('{"session_id": "nope"}', "not json", json.dumps(alien)):
        done = cli(target, "import", stdin="\n".join([*good, bad]))
        assert done.returncode == 2 and "line 4" in done.stderr, done.stderr
        assert indexes(target)["index"] == []


@pytest.mark.slow  # runs the command line: a Python process each
def test_a_chatgpt_export_becomes_sessions(fresh_db: Callable[[], str], tmp_path: Path) -> None:
    def node(node_id: str, role: str, text: str, parent: str | None) -> dict[str, Any]:
        return {
            "id": node_id,
            "parent": parent,
            "message": {
                "author": {"role": role},
                "content": {"content_type": "text", "parts": [text]},
            },
        }

    conversation = {
        "id": "conv-1",
        "title": "Trip",
        "create_time": 1_700_000_000.5,
        "update_time": 1_700_000_100.0,
        "current_node": "a2",
        "mapping": {
            "root": {"id": "root", "parent": None, "message": None},
            "s": node("s", "system", "hidden system text", "root"),
            "u1": node("u1", "user", "Lisbon in 3 days?", "s"),
            "a1": node("a1", "assistant", "an abandoned branch", "u1"),
            "a2": node("a2", "assistant", "Day 1: Alfama.", "u1"),
        },
    }
    file = tmp_path / "conversations.json"
    file.write_text(json.dumps([conversation, {"id": "empty", "mapping": {}}]))
    url = fresh_db()
    done = cli(url, "import-chatgpt", str(file), "--owner", "user-9")
    assert done.returncode == 0, done.stderr
    assert "imported 1 sessions" in done.stderr
    (line,) = cli(url, "export").stdout.splitlines()
    record = json.loads(line)
    assert [(m["type"], m["data"]["content"]) for m in record["messages"]] == [
        ("human", "Lisbon in 3 days?"),
        ("ai", "Day 1: Alfama."),
    ]
    # The regenerated-away reply is kept as a branch beside the current one.
    [kept] = record["branches"]
    assert kept["message"]["data"]["content"] == "an abandoned branch"
    assert record["children"] == {
        kept["parent"]: [
            kept["id"],
            record["messages"][1]["data"]["additional_kwargs"]["message_id"],
        ]
    }
    assert record["owner"] == "user-9" and record["meta"]["title"] == "Trip"
    assert record["meta"]["created_at"] == "1700000000500000"
    assert uuid.UUID(record["session_id"]).version == 4
    again = cli(url, "import-chatgpt", str(file), "--owner", "user-9")
    assert "imported 0 sessions, skipped 1" in again.stderr


@pytest.fixture(scope="module")
def admin_app(
    start_app: type[AppServer], fresh_db: Callable[[], str], fake_groq: FakeGroq
) -> Iterator[AppServer]:
    server = start_app(env=app_env(fresh_db(), fake_groq, ADMIN_TOKEN=ADMIN)).start()
    yield server
    server.stop()


ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN}"}


async def test_the_admin_routes_export_and_import(admin_app: AppServer) -> None:
    admin = ADMIN_HEADERS
    async with httpx.AsyncClient(base_url=admin_app.url, timeout=30) as http:
        session_id = await new_session(http)
        assert (
            await http.post("/chat", json={"session_id": session_id, "message": "hi"})
        ).status_code == 200
        assert (await http.get("/admin/export")).status_code == 401
        exported = await http.get("/admin/export", params={"session_id": session_id}, headers=admin)
        assert exported.headers["content-type"].startswith("application/x-ndjson")
        (line,) = exported.text.splitlines()
        assert json.loads(line)["session_id"] == session_id
        # Nothing internal goes out (the last turn's id, the list's mark).
        assert set(json.loads(line)["meta"]) & {"last_turn", "list_mark"} == set()
        assert (await http.delete(f"/session/{session_id}")).status_code == 204
        refused = await http.post("/admin/import", content=line)
        assert refused.status_code == 401
        bad = await http.post("/admin/import", content=b"{", headers=admin)
        assert bad.status_code == 400 and "line 1" in bad.json()["detail"]
        imported = await http.post("/admin/import", content=line, headers=admin)
        assert imported.json() == {"imported": 1, "skipped": 0}
        history = (await http.get(f"/session/{session_id}/history")).json()["history"]
        assert history[0]["input"] == "hi"


async def test_export_and_import_need_the_admin_token_even_when_admin_is_open(
    client: httpx.AsyncClient,
) -> None:
    # The shared app runs without ADMIN_TOKEN: listing sessions is open there, these are not.
    assert (await client.get("/admin/export")).status_code == 401
    assert (await client.post("/admin/import", content=b"")).status_code == 401


async def test_what_a_rewind_leaves_and_odd_text_round_trip_over_http(
    admin_app: AppServer,
) -> None:
    admin = ADMIN_HEADERS
    async with httpx.AsyncClient(base_url=admin_app.url, timeout=30) as http:
        session_id = await new_session(http)
        odd = "line\u2028separator \u0085 and \u2029 too"
        turn = await http.post("/chat", json={"session_id": session_id, "message": odd})
        assert turn.status_code == 200
        bad_id = await http.get("/admin/export", params={"session_id": "x"}, headers=admin)
        assert bad_id.status_code == 400
        exported = await http.get("/admin/export", params={"session_id": session_id}, headers=admin)
        record = json.loads(exported.text.split("\n")[0])
        record["meta"]["summary_stale"] = "1"  # as a rewind past a summary leaves it
        line = json.dumps(record, ensure_ascii=False)
        for meta in ({}, {**record["meta"], "updated_at": 1.5}, {"system_prompt": "x"}):
            bad = json.dumps({**record, "meta": meta})
            refused = await http.post("/admin/import", content=bad, headers=admin)
            assert refused.status_code == 400, meta
        replaced = await http.post(
            "/admin/import", params={"replace": "true"}, content=line.encode(), headers=admin
        )
        assert replaced.json() == {"imported": 1, "skipped": 0}
        again = await http.get("/admin/export", params={"session_id": session_id}, headers=admin)
        assert json.loads(again.text.split("\n")[0]) == record
        history = (await http.get(f"/session/{session_id}/history")).json()["history"]
        assert history[0]["input"] == odd


async def test_an_import_with_a_line_that_cannot_be_written_writes_nothing(
    admin_app: AppServer,
) -> None:
    """The review's cases: a lone surrogate passed the check and failed at write time,
    with a bare 500 and the earlier lines written; a count past int64 was let in. Every
    line is checked for all of it first: 400 naming the line, nothing written."""
    admin = ADMIN_HEADERS
    async with httpx.AsyncClient(base_url=admin_app.url, timeout=30) as http:
        good = []
        for _ in range(2):
            session_id = await new_session(http)
            await http.post("/chat", json={"session_id": session_id, "message": "kept"})
            exported = await http.get(
                "/admin/export", params={"session_id": session_id}, headers=admin
            )
            good.append(exported.text.strip())
            assert (await http.delete(f"/session/{session_id}")).status_code == 204
        template = json.loads(good[0])
        surrogate = dict(template, session_id=str(uuid.uuid4()))
        surrogate["messages"] = [*template["messages"]]
        surrogate["messages"][0] = {
            **template["messages"][0],
            "data": {**template["messages"][0]["data"], "content": "lone \ud800 surrogate"},
        }
        past_int64 = dict(template, session_id=str(uuid.uuid4()))
        past_int64["meta"] = {**template["meta"], "input_tokens": "9" * 20}
        huge_reply = dict(template, session_id=str(uuid.uuid4()))
        huge_reply["messages"] = [
            template["messages"][0],
            {
                **template["messages"][1],
                "data": {
                    **template["messages"][1]["data"],
                    "usage_metadata": {
                        "input_tokens": 2**40,
                        "output_tokens": 1,
                        "total_tokens": 1,
                    },
                },
            },
        ]
        for bad in (surrogate, past_int64, huge_reply):
            body = "\n".join([*good, json.dumps(bad)])
            refused = await http.post("/admin/import", content=body.encode(), headers=admin)
            assert refused.status_code == 400, refused.text
            assert "line 3" in refused.json()["detail"]
            for line in good:
                missing = await http.get(f"/session/{json.loads(line)['session_id']}/history")
                assert missing.status_code == 404


async def test_imported_sessions_older_than_the_ttl_are_listed(
    make_app: Callable[..., AppServer],
) -> None:
    """An import keeps a session's last activity (its index score), however old; with a
    TTL the session lives a TTL from the import, and is listed all that time."""
    app = make_app(ADMIN_TOKEN="admin-secret", SESSION_TTL_SECONDS="3600")
    admin = {"authorization": "Bearer admin-secret"}
    old = 1_500_000_000_000_000  # 2017
    session_id = str(uuid.uuid4())
    record = {
        "session_id": session_id,
        "owner": None,
        "meta": {"title": "old", "system_prompt": "p", "created_at": old, "updated_at": old},
        "messages": [message_to_dict(HumanMessage(content="long ago"))],
    }
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        imported = await http.post("/admin/import", content=json.dumps(record), headers=admin)
        assert imported.json() == {"imported": 1, "skipped": 0}
        listed = (await http.get("/sessions", headers=admin)).json()["sessions"]
    assert listed == [session_id]


def chatgpt_node(
    node_id: str, role: str, text: str, parent: str | None, children: list[str]
) -> dict[str, Any]:
    """A node of ChatGPT's `mapping`, as its export writes one."""
    return {
        "id": node_id,
        "parent": parent,
        "children": children,
        "message": {
            "id": node_id,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": 1_700_000_000.0,
            "content": {"content_type": "text", "parts": [text]},
            "status": "finished_successfully",
            "end_turn": True,
            "metadata": {},
            "recipient": "all",
        },
    }


# A conversation as ChatGPT exports it after an edit of the second question and a
# regeneration of the first answer: the root and a hidden system node above them.
EDITED = {
    "id": "conv-edited",
    "title": "Edited",
    "create_time": 1_700_000_000.0,
    "update_time": 1_700_000_500.0,
    "current_node": "a2b",
    "mapping": {
        "root": {"id": "root", "message": None, "parent": None, "children": ["sys"]},
        "sys": {**chatgpt_node("sys", "system", "", "root", ["u1"])},
        "u1": chatgpt_node("u1", "user", "first question", "sys", ["a1", "a1r"]),
        "a1": chatgpt_node("a1", "assistant", "first answer", "u1", ["u2"]),
        "a1r": chatgpt_node("a1r", "assistant", "first answer, regenerated", "u1", ["u2b"]),
        "u2": chatgpt_node("u2", "user", "second question", "a1", ["a2"]),
        "a2": chatgpt_node("a2", "assistant", "second answer", "u2", []),
        "u2b": chatgpt_node("u2b", "user", "second question, edited", "a1r", ["a2b"]),
        "a2b": chatgpt_node("a2b", "assistant", "answer to the edit", "u2b", []),
    },
}


async def test_a_chatgpt_export_with_edits_keeps_every_branch_and_round_trips(
    fresh_db: Callable[[], str],
) -> None:
    from redis.asyncio import Redis as AsyncRedis

    from resolvers.services.conversation import Conversations
    from resolvers.services.transfer import Transfer, chatgpt_records
    from tests.support.stores import stores_on

    redis = AsyncRedis.from_url(fresh_db(), decode_responses=True)
    try:
        transfer = Transfer(redis)
        [record] = list(chatgpt_records([EDITED], system_prompt="be brief"))
        assert (await transfer.import_records([record])).written == 1
        store = stores_on(redis)
        talk = Conversations(redis, store.sessions)
        session_id = record["session_id"]
        path = await store.sessions.messages(session_id)
        assert [m.content for m in path] == [
            "first question",
            "first answer, regenerated",
            "second question, edited",
            "answer to the edit",
        ]
        # ChatGPT's sibling order: the regenerated answer is the second of two.
        listed = await talk.siblings(session_id, [path[0].id])
        assert listed == {path[0].id: [listed[path[0].id][0], path[1].id]}
        # The other branch, whole, one switch away.
        await talk.switch_branch(session_id, listed[path[0].id][0])
        assert [m.content for m in await store.sessions.messages(session_id)] == [
            "first question",
            "first answer",
            "second question",
            "second answer",
        ]
        # Export, import into another database, export again: the same lines.
        exported = [line async for line in transfer.export([session_id])]
        other = AsyncRedis.from_url(fresh_db(), decode_responses=True)
        try:
            moved = Transfer(other)
            await moved.import_lines(exported)
            assert [line async for line in moved.export([session_id])] == exported
        finally:
            await other.aclose()
        info = await store.sessions.require(session_id)
        assert info.message_count == 4
    finally:
        await redis.aclose()


def test_an_import_refuses_a_tree_that_does_not_hold_together() -> None:
    from resolvers.services.errors import BadInput
    from resolvers.services.transfer import parse_record

    base = {
        "session_id": str(uuid.uuid4()),
        "owner": None,
        "meta": {"created_at": 1, "updated_at": 1, "system_prompt": "p"},
        "messages": [
            message_to_dict(HumanMessage(content="q", additional_kwargs={"message_id": "0.a"}))
        ],
    }
    reply = message_to_dict(AIMessage(content="r", additional_kwargs={"message_id": "1.b"}))
    good = {**base, "branches": [{"id": "0.c", "parent": "", "message": reply}],
            "children": {"": ["0.a", "0.c"]}}  # fmt: skip
    assert parse_record(json.dumps(good))["kids"] == {"": '["0.a", "0.c"]'}
    for bad in (
        {"branches": [{"id": "0.c", "parent": "nowhere", "message": reply}]},
        # A loop of parents, and a parent that is not one level up.
        {
            "branches": [
                {"id": "1.c", "parent": "1.d", "message": reply},
                {"id": "1.d", "parent": "1.c", "message": reply},
            ]
        },
        {"branches": [{"id": "3.c", "parent": "0.a", "message": reply}]},
        {"branches": [{"id": "1", "parent": "0.a", "message": reply}]},
        {
            "children": {"": ["0.a", "1.x"]},
            "branches": [{"id": "1.x", "parent": "0.a", "message": reply}],
        },
        {"branches": [{"id": "0.a", "parent": "", "message": reply}]},  # the path's id
        {"branches": [{"id": "0.c", "parent": "", "message": {"type": "alien", "data": {}}}]},
        {"branches": [{"id": "", "parent": "", "message": reply}]},
        {"branches": "x"},
        {"children": {"0.a": ["0.zz"]}},
        {"children": {"0.a": ["0.a", "0.a"]}},
        {"children": {"nowhere": ["0.a"]}},
    ):
        line = json.dumps({**good, **bad})
        with pytest.raises(BadInput, match="line 1"):
            parse_record(line)


def test_odd_chatgpt_mappings_import_what_holds_together() -> None:
    from resolvers.services.transfer import chatgpt_records

    def node(nid: str, role: str | None, text: str, parent: str | None, *children: str) -> Any:
        message = None if role is None else {"author": {"role": role}, "content": {"parts": [text]}}
        return {"id": nid, "message": message, "parent": parent, "children": list(children)}

    cases: dict[str, tuple[dict[str, Any], str | None, list[str]]] = {
        "each other's parent, no root": (
            {"A": node("A", "user", "hi", "B", "B"), "B": node("B", "assistant", "yo", "A", "A")},
            None,
            [],
        ),
        "a root and a loop beside it": (
            {
                "R": node("R", "user", "root", None),
                "A": node("A", "user", "hi", "B", "B"),
                "B": node("B", "assistant", "yo", "A", "A"),
            },
            "A",
            ["root"],
        ),
        "a message-less root with two children": (
            {
                "root": node("root", None, "", None, "u1", "u2"),
                "u1": node("u1", "user", "one", "root"),
                "u2": node("u2", "user", "two", "root"),
            },
            "root",
            ["two"],
        ),
        "current_node on a tool node": (
            {
                "u": node("u", "user", "q", None, "a"),
                "a": node("a", "assistant", "r", "u", "t"),
                "t": node("t", "tool", "x", "a"),
            },
            "t",
            ["q", "r"],
        ),
    }
    for name, (mapping, current, expected) in cases.items():
        conversation = {"id": name, "mapping": mapping, "current_node": current, "create_time": 1.0}
        records = list(chatgpt_records([conversation], system_prompt="p"))
        assert [[m["data"]["content"] for m in r["messages"]] for r in records] == (
            [expected] if expected else []
        ), name


def test_an_export_reads_hostile_marks_and_entries_as_lost_places(
    fresh_db: Callable[[], str],
) -> None:
    """Values another program left: never an error that stops the whole export."""
    import asyncio

    from redis.asyncio import Redis as AsyncRedis

    from resolvers.services.keys import tree_key
    from resolvers.services.transfer import Transfer

    async def run() -> list[dict[str, Any]]:
        redis = AsyncRedis.from_url(fresh_db(), decode_responses=True)
        try:
            ids = []
            for mark in ("\u00b2:00", "0", "1:ZZ", "99999999999999999999:ab"):
                session_id = str(uuid.uuid4())
                ids.append(session_id)
                await redis.hset(
                    meta_key(session_id),
                    mapping={"list_mark": mark, "created_at": 1, "updated_at": 1},
                )
                await redis.lpush(
                    messages_key(session_id), json.dumps(message_to_dict(HumanMessage("q")))
                )
                await redis.hset(tree_key(session_id), mapping={"1.a": "\u00b2:x{}", "1.b": "0:{"})
            return [json.loads(line) async for line in Transfer(redis).export(ids)]
        finally:
            await redis.aclose()

    lines = asyncio.run(run())
    assert len(lines) == 4
    assert all(line["branches"] == [] for line in lines)
