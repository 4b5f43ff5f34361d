"""Export and import of sessions as JSON Lines, for backups and moves between servers;
and import of a ChatGPT export (`conversations.json`).

One line per session: `{"session_id", "owner", "meta", "messages"}`, the messages
oldest first in LangChain's `message_to_dict` form (as the session's list holds them,
ids, turn ids, usage and all), `meta` the session's metadata as stored. An import writes
each session in one step (on one Redis, a transaction) and rebuilds what is derived from
it: the message count (the list), the index of sessions by activity and the owner's.

Command line (REDIS_URL and the other settings from the environment, as the server):

    python -m resolvers.services.transfer export [--session ID ...] > backup.jsonl
    python -m resolvers.services.transfer import [--replace] < backup.jsonl
    python -m resolvers.services.transfer import-chatgpt conversations.json [--owner USER]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, message_to_dict, messages_from_dict
from redis.asyncio import Redis, RedisCluster

from resolvers.services.errors import BadInput
from resolvers.services.keys import INDEX_KEY, messages_key, meta_key, owner_index_key
from resolvers.services.validation import check_session_id

# The metadata fields a session may have (docs/architecture.md, storage layout).
META_FIELDS = frozenset(
    {
        "title",
        "system_prompt",
        "created_at",
        "updated_at",
        "last_turn",
        "owner",
        "input_tokens",
        "output_tokens",
        "summary_at",
        "summary_covers",
        "summary_stale",
        "list_mark",
        "epoch",
    }
)
# Fields that hold whole numbers (times in microseconds, token counts, positions).
_WHOLE_FIELDS = frozenset(
    {
        "created_at",
        "updated_at",
        "input_tokens",
        "output_tokens",
        "summary_at",
        "summary_covers",
        "epoch",
    }
)
_WHOLE = re.compile(r"-?[0-9]{1,20}")
_BATCH = 100

logger = logging.getLogger(__name__)


@dataclass
class Imported:
    written: int = 0
    skipped: int = 0  # already there (without --replace)


class Transfer:
    def __init__(self, redis: Redis | RedisCluster, *, ttl_seconds: int = 0) -> None:
        self._redis = redis
        self._single = isinstance(redis, Redis)
        self._ttl = ttl_seconds

    async def export(self, session_ids: Iterable[str] | None = None) -> AsyncIterator[str]:
        """One JSON line per session (every indexed session, most recent first, or those
        named); a named session that does not exist is skipped."""
        if session_ids is None:
            ids = [str(s) for s in await self._redis.zrevrange(INDEX_KEY, 0, -1)]
        else:
            ids = [check_session_id(s) for s in session_ids]
        for start in range(0, len(ids), _BATCH):
            group = ids[start : start + _BATCH]
            async with self._redis.pipeline(transaction=False) as pipe:
                for session_id in group:
                    pipe.hgetall(meta_key(session_id))
                    pipe.lrange(messages_key(session_id), 0, -1)
                found = await pipe.execute()
            for index, session_id in enumerate(group):
                meta, raw = found[2 * index], found[2 * index + 1]
                if not meta and not raw:
                    continue
                record = {
                    "session_id": session_id,
                    "owner": meta.get("owner"),
                    "meta": dict(meta),
                    "messages": _readable(reversed(raw), session_id),
                }
                yield json.dumps(record, ensure_ascii=False)

    async def import_lines(self, lines: Iterable[str], *, replace: bool = False) -> Imported:
        """Write the sessions of `lines`. Every line is checked first: one that is not a
        session (its number in the error) imports nothing."""
        records = [parse_record(line, number) for number, line in _numbered(lines)]
        done = Imported()
        for record in records:
            if await self.write(record, replace=replace):
                done.written += 1
            else:
                done.skipped += 1
        return done

    async def write(self, record: dict[str, Any], *, replace: bool = False) -> bool:
        """One session, in one step; False when it is there already and not `replace`."""
        session_id = record["session_id"]
        meta: dict[str, str] = record["meta"]
        old_owner = await self._redis.hget(meta_key(session_id), "owner")
        if not replace and (
            old_owner is not None
            or await self._redis.exists(meta_key(session_id), messages_key(session_id))
        ):
            return False
        score = int(meta.get("updated_at") or meta.get("created_at") or time.time() * 1e6)
        elements = [json.dumps(m, ensure_ascii=False) for m in record["messages"]]
        async with self._redis.pipeline(transaction=self._single) as pipe:
            pipe.delete(meta_key(session_id), messages_key(session_id))
            pipe.hset(meta_key(session_id), mapping=meta)  # type: ignore[arg-type]
            if elements:
                pipe.rpush(messages_key(session_id), *reversed(elements))  # newest first
            if self._ttl:
                pipe.expire(meta_key(session_id), self._ttl)
                pipe.expire(messages_key(session_id), self._ttl)
            await pipe.execute()
        # The indexes live in other slots on a cluster: written after the session.
        if old_owner is not None and old_owner != meta.get("owner"):
            await self._redis.zrem(owner_index_key(str(old_owner)), session_id)
        await self._redis.zadd(INDEX_KEY, {session_id: score})
        if meta.get("owner"):
            await self._redis.zadd(owner_index_key(meta["owner"]), {session_id: score})
        return True


def parse_record(line: str, number: int = 1) -> dict[str, Any]:
    """A session of the export format, checked; BadInput naming the line otherwise."""
    try:
        return _checked(json.loads(line))
    except (BadInput, ValueError, TypeError, KeyError) as exc:
        raise BadInput(f"line {number}: {exc}") from None
    except RecursionError:
        raise BadInput(f"line {number}: JSON nested too deeply") from None


def _readable(elements: Iterable[str], session_id: str) -> list[Any]:
    """The list's elements as JSON; one that is not (another program's) is left out, as
    every reader of the list leaves it out."""
    found = []
    for element in elements:
        try:
            found.append(json.loads(element))
        except (ValueError, RecursionError):
            logger.warning("export of session %s skips an unreadable element", session_id)
    return found


def _checked(record: object) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    session_id = record.get("session_id")
    if not isinstance(session_id, str):
        raise TypeError("session_id must be a session id")
    session_id = check_session_id(session_id)
    meta = record.get("meta")
    if not isinstance(meta, dict) or not set(meta) <= META_FIELDS:
        raise ValueError(f"meta must be an object of {sorted(META_FIELDS)}")
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    for name in ("system_prompt", "created_at", "updated_at"):
        if name not in meta:
            raise ValueError(f"meta needs {name}")
    for name in _WHOLE_FIELDS & set(meta):
        if not _WHOLE.fullmatch(meta[name]):
            raise ValueError(f"meta.{name} must be a whole number")
    owner = record.get("owner")
    if owner is not None and (not isinstance(owner, str) or not owner):
        raise ValueError("owner must be a user id")
    if owner is not None:
        meta["owner"] = owner
    messages = record.get("messages") or []
    if not isinstance(messages, list):
        raise TypeError("messages must be a list")
    messages_from_dict(messages)  # LangChain's own check of each message
    return {"session_id": session_id, "owner": owner, "meta": meta, "messages": messages}


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield number, line


# -- ChatGPT's export --------------------------------------------------------------------


def chatgpt_records(
    conversations: list[dict[str, Any]], *, owner: str | None = None, system_prompt: str = ""
) -> Iterator[dict[str, Any]]:
    """Sessions of a ChatGPT `conversations.json`: each conversation's branch that ends
    at its current message, its user and assistant text messages in order. The session
    id comes from the conversation's id, so importing the same file twice makes no
    second copy."""
    for conversation in conversations:
        mapping = conversation.get("mapping") or {}
        node_id = conversation.get("current_node")
        branch: list[dict[str, Any]] = []
        for _ in range(len(mapping) + 1):  # bounded: a parent chain longer is a loop
            node = mapping.get(node_id) if node_id else None
            if node is None:
                break
            branch.append(node)
            node_id = node.get("parent")
        messages = []
        for node in reversed(branch):
            message = node.get("message") or {}
            role = (message.get("author") or {}).get("role")
            content = message.get("content") or {}
            parts = [p for p in content.get("parts") or [] if isinstance(p, str)]
            text = "\n".join(parts).strip()
            if role not in ("user", "assistant") or not text:
                continue
            made = HumanMessage(content=text) if role == "user" else AIMessage(content=text)
            messages.append(message_to_dict(made))
        if not messages:
            continue
        created = _micros(conversation.get("create_time"))
        updated = _micros(conversation.get("update_time")) or created
        key = str(conversation.get("id") or conversation.get("conversation_id") or "")
        meta: dict[str, Any] = {
            "title": str(conversation.get("title") or "")[:200],
            "system_prompt": system_prompt,
            "created_at": created,
            "updated_at": updated,
        }
        yield parse_record(
            json.dumps(
                {
                    "session_id": _session_id_of(key or json.dumps(messages)),
                    "owner": owner,
                    "meta": {k: v for k, v in meta.items() if v not in ("", None)},
                    "messages": messages,
                }
            )
        )


def _session_id_of(key: str) -> str:
    """A UUID4-shaped id made from `key` (the same key, the same id)."""
    return str(uuid.UUID(bytes=hashlib.sha256(key.encode()).digest()[:16], version=4))


def _micros(seconds: object) -> int | None:
    return int(float(seconds) * 1_000_000) if isinstance(seconds, int | float) else None


# -- the command line ----------------------------------------------------------------------


async def _main(argv: list[str]) -> int:
    from resolvers.services.settings import get_settings
    from resolvers.services.storage import make_client, redis_url

    parser = argparse.ArgumentParser(prog="python -m resolvers.services.transfer")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="sessions as JSON Lines, to stdout")
    export.add_argument("--session", action="append", help="only this session (repeatable)")
    imports = commands.add_parser("import", help="sessions as JSON Lines, from stdin")
    imports.add_argument("--replace", action="store_true", help="overwrite existing sessions")
    chatgpt = commands.add_parser("import-chatgpt", help="a ChatGPT conversations.json")
    chatgpt.add_argument("file")
    chatgpt.add_argument("--owner", help="the user id that owns the imported sessions")
    chatgpt.add_argument("--replace", action="store_true")
    args = parser.parse_args(argv)

    settings = get_settings()
    async with contextlib.AsyncExitStack() as stack:
        url = await redis_url(settings.redis_url, settings.data_dir, stack)
        redis = make_client(url, max_connections=4, cluster=settings.redis_cluster)
        stack.push_async_callback(redis.aclose)
        transfer = Transfer(redis, ttl_seconds=settings.session_ttl_seconds)
        try:
            if args.command == "export":
                count = 0
                async for line in transfer.export(args.session):
                    sys.stdout.write(line + "\n")
                    count += 1
                print(f"exported {count} sessions", file=sys.stderr)
                return 0
            if args.command == "import":
                done = await transfer.import_lines(sys.stdin, replace=args.replace)
            else:
                with open(args.file, encoding="utf-8") as file:  # noqa: ASYNC230  a CLI
                    conversations = json.load(file)
                if not isinstance(conversations, list):
                    print("nothing imported: not a list of conversations", file=sys.stderr)
                    return 2
                records = list(
                    chatgpt_records(
                        conversations, owner=args.owner, system_prompt=settings.system_prompt
                    )
                )
                done = Imported()
                for record in records:
                    if await transfer.write(record, replace=args.replace):
                        done.written += 1
                    else:
                        done.skipped += 1
        except BadInput as exc:
            print(f"nothing imported: {exc}", file=sys.stderr)
            return 2
        print(f"imported {done.written} sessions, skipped {done.skipped} already there",
              file=sys.stderr)  # fmt: skip
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
