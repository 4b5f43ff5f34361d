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
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, message_to_dict, messages_from_dict
from redis.asyncio import Redis, RedisCluster

from resolvers.services import meta as declared
from resolvers.services.errors import BadInput, DataConflict
from resolvers.services.index import SessionIndex, every_owner_index
from resolvers.services.keys import INDEX_KEY, messages_key, meta_key
from resolvers.services.meta import MAX_COUNT
from resolvers.services.validation import check_session_id, check_text

_BATCH = 100

logger = logging.getLogger(__name__)


@dataclass
class Imported:
    written: int = 0
    skipped: int = 0  # already there (without --replace)


class Transfer:
    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        ttl_seconds: int = 0,
        index: SessionIndex | None = None,
    ) -> None:
        self._redis = redis
        self._single = isinstance(redis, Redis)
        self._ttl = ttl_seconds
        self._index = index or SessionIndex(redis, ttl_seconds=ttl_seconds)

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
                # What the record declares exported; the rest the importer computes anew.
                kept = declared.exported(meta)
                line = {
                    "session_id": session_id,
                    "owner": meta.get("owner"),
                    "meta": kept,
                    "messages": _readable(reversed(raw), session_id),
                }
                yield json.dumps(line, ensure_ascii=False)

    async def import_lines(self, lines: Iterable[str], *, replace: bool = False) -> Imported:
        """Write the sessions of `lines`, all or none. Every line is checked first: one
        that is not a session (its number in the error) imports nothing."""
        records = [parse_record(line, number) for number, line in _numbered(lines)]
        return await self.import_records(records, replace=replace)

    async def import_records(
        self, records: list[dict[str, Any]], *, replace: bool = False
    ) -> Imported:
        """Write checked sessions, all or none: on one Redis in one transaction; on a
        cluster (a transaction spans one slot) session by session, and what was written
        is taken back if a later one fails. Sessions already there are skipped unless
        `replace`."""
        found = await self._existing([r["session_id"] for r in records])
        chosen = [r for r in records if replace or r["session_id"] not in found]
        done = Imported(written=len(chosen), skipped=len(records) - len(chosen))
        if not chosen:
            return done
        owners = {r["owner"] for r in chosen if r["owner"]}
        for index in {INDEX_KEY} | {i for owner in owners for i in every_owner_index(owner)}:
            if await self._redis.type(index) not in ("zset", "none"):
                raise DataConflict(f"{index} holds a value of another type; nothing imported")
        if self._single:
            async with self._redis.pipeline(transaction=True) as pipe:
                for record in chosen:
                    self._queue(pipe, record, found.get(record["session_id"]))
                await pipe.execute()
            return done
        written: list[str] = []
        saved = await self._save([r["session_id"] for r in chosen if r["session_id"] in found])
        try:
            for record in chosen:
                written.append(record["session_id"])
                async with self._redis.pipeline(transaction=False) as pipe:
                    self._queue(pipe, record, found.get(record["session_id"]))
                    await pipe.execute()
        except BaseException:
            await self._take_back(written, saved)
            raise
        return done

    async def write(self, record: dict[str, Any], *, replace: bool = False) -> bool:
        """One checked session; False when it is there already and not `replace`."""
        return bool((await self.import_records([record], replace=replace)).written)

    async def _existing(self, session_ids: list[str]) -> dict[str, str | None]:
        """The sessions of `session_ids` that exist, with their owners."""
        found: dict[str, str | None] = {}
        for start in range(0, len(session_ids), _BATCH):
            group = session_ids[start : start + _BATCH]
            async with self._redis.pipeline(transaction=False) as pipe:
                for session_id in group:
                    pipe.exists(meta_key(session_id), messages_key(session_id))
                    pipe.hget(meta_key(session_id), "owner")
                answers = await pipe.execute()
            for index, session_id in enumerate(group):
                if answers[2 * index]:
                    owner = answers[2 * index + 1]
                    found[session_id] = None if owner is None else str(owner)
        return found

    def _queue(self, pipe: Any, record: dict[str, Any], old_owner: str | None) -> None:
        """The commands that write one session (its keys replaced whole) and its index
        entries, scored by its last activity."""
        session_id = record["session_id"]
        meta: dict[str, str] = record["meta"]
        elements: list[str] = record["elements"]
        score = int(meta.get("updated_at") or meta.get("created_at") or time.time() * 1e6)
        pipe.delete(meta_key(session_id), messages_key(session_id))
        pipe.hset(meta_key(session_id), mapping=meta)
        if elements:
            pipe.rpush(messages_key(session_id), *reversed(elements))  # newest first
        if self._ttl:
            pipe.expire(meta_key(session_id), self._ttl)
            pipe.expire(messages_key(session_id), self._ttl)
        self._index.queue_place(
            pipe,
            session_id,
            score,
            meta.get("owner") or None,
            pinned=meta.get("pinned") == "1",
            archived=meta.get("archived") == "1",
            replacing=True,
            old_owner=old_owner,
        )

    async def _save(self, session_ids: list[str]) -> dict[str, tuple[Any, int]]:
        """The keys of sessions about to be replaced, serialized, to put back on failure."""
        saved: dict[str, tuple[Any, int]] = {}
        for session_id in session_ids:
            for key in (meta_key(session_id), messages_key(session_id)):
                dumped = await self._redis.dump(key)
                if dumped is not None:
                    saved[key] = (dumped, max(0, int(await self._redis.pttl(key))))
        return saved

    async def _take_back(self, written: list[str], saved: dict[str, tuple[Any, int]]) -> None:
        """Undo a cluster import that failed halfway: what it wrote goes, what it
        replaced comes back."""
        for session_id in written:
            await self._redis.delete(meta_key(session_id), messages_key(session_id))
            await self._redis.zrem(INDEX_KEY, session_id)
        for key, (dumped, ttl) in saved.items():
            await self._redis.restore(key, ttl, dumped, replace=True)


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
    """A session of the export format, checked whole (a value that could not be written,
    or would not read back, is refused here, never found at write time), with what is
    derived from its messages computed anew: the usage, the list's mark."""
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    _check_strings(record)
    session_id = record.get("session_id")
    if not isinstance(session_id, str):
        raise TypeError("session_id must be a session id")
    session_id = check_session_id(session_id)
    meta = record.get("meta")
    if not isinstance(meta, dict) or not set(meta) <= declared.IMPORTED:
        raise ValueError(f"meta must be an object of {sorted(declared.IMPORTED)}")
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    for name in declared.REQUIRED:
        if name not in meta:
            raise ValueError(f"meta needs {name}")
    for name, value in meta.items():
        declared.check_value(name, value)
    owner = record.get("owner")
    if owner is not None and (not isinstance(owner, str) or not owner):
        raise ValueError("owner must be a user id")
    if owner is not None:
        meta["owner"] = owner
    messages = record.get("messages") or []
    if not isinstance(messages, list):
        raise TypeError("messages must be a list")
    messages_from_dict(messages)  # LangChain's own check of each message
    tokens_in = tokens_out = 0
    for position, message in enumerate(messages):
        data = message.get("data") if isinstance(message, dict) else None
        counts = data.get("usage_metadata") if isinstance(data, dict) else None
        if counts is not None and not (
            isinstance(counts, dict)
            and _count(counts.get("input_tokens"))
            and _count(counts.get("output_tokens"))
        ):
            raise ValueError(f"message {position}: usage counts must be from 0 to {MAX_COUNT}")
        used_in, used_out = counted(message)
        tokens_in, tokens_out = tokens_in + used_in, tokens_out + used_out
    for name in ("summary_at", "summary_covers"):
        if name in meta and int(meta[name]) >= len(messages):
            raise ValueError(f"meta.{name} is past the last message")
    elements = [json.dumps(m, ensure_ascii=False) for m in messages]
    meta["input_tokens"] = str(min(tokens_in, MAX_COUNT))
    meta["output_tokens"] = str(min(tokens_out, MAX_COUNT))
    newest = hashlib.sha1(elements[-1].encode()).hexdigest() if elements else ""  # noqa: S324
    meta["list_mark"] = f"{len(elements)}:{newest}"
    return {
        "session_id": session_id,
        "owner": owner,
        "meta": meta,
        "messages": messages,
        "elements": elements,
    }


def _check_strings(value: object, depth: int = 0) -> None:
    """Every string of a record can be written as UTF-8 (JSON lets a lone surrogate in)."""
    if isinstance(value, str):
        check_text(value, "a string of the record")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, depth + 1)
            _check_strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item, depth + 1)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def counted(message: object) -> tuple[int, int]:
    """The usage a message adds to its session's (as `scripts/_messages.lua` counts it):
    a reply this server stored (it carries a message_id) with the provider's counts."""
    data = message.get("data") if isinstance(message, dict) else None
    extra = data.get("additional_kwargs") if isinstance(data, dict) else None
    counts = data.get("usage_metadata") if isinstance(data, dict) else None
    if not isinstance(extra, dict) or not isinstance(extra.get("message_id"), str):
        return 0, 0
    if not isinstance(counts, dict):
        return 0, 0
    tokens_in, tokens_out = counts.get("input_tokens"), counts.get("output_tokens")
    if _count(tokens_in) and _count(tokens_out):
        return int(tokens_in), int(tokens_out)  # type: ignore[arg-type]
    return 0, 0


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
                done = await transfer.import_records(records, replace=args.replace)
        except BadInput as exc:
            print(f"nothing imported: {exc}", file=sys.stderr)
            return 2
        print(f"imported {done.written} sessions, skipped {done.skipped} already there",
              file=sys.stderr)  # fmt: skip
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
