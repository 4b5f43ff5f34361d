"""Export and import of sessions as JSON Lines, for backups and moves between servers;
and import of a ChatGPT export (`conversations.json`).

One line per session: `{"session_id", "owner", "meta", "messages", "branches",
"children"}`, the messages of the active path oldest first in LangChain's
`message_to_dict` form (as the session's list holds them, ids, turn ids, usage and all),
`meta` the session's metadata as stored; `branches` the messages off the path, each
`{"id", "parent", "message"}`, and `children` the children of each message that has one
off the path (`{"<id>": ["<id>", ...]}`, `""` for the start), as `scripts/_tree.lua`
keeps them. An import writes each session in one step (on one Redis, a transaction) and
rebuilds what is derived from it: the message count (the list), the usage (every
branch's), the index of sessions by activity and the owner's.

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

from resolvers.services import meta as declared
from resolvers.services.errors import BadInput, DataConflict
from resolvers.services.history import position_of
from resolvers.services.index import SessionIndex, every_owner_index
from resolvers.services.keys import INDEX_KEY, kids_key, messages_key, meta_key, tree_key
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
                    pipe.hgetall(tree_key(session_id))
                    pipe.hgetall(kids_key(session_id))
                found = await pipe.execute()
            for index, session_id in enumerate(group):
                meta, raw, tree, kids = found[4 * index : 4 * index + 4]
                if not meta and not raw:
                    continue
                # What the record declares exported; the rest the importer computes anew.
                kept = declared.exported(meta)
                line = {
                    "session_id": session_id,
                    "owner": meta.get("owner"),
                    "meta": kept,
                    "messages": _readable(reversed(raw), session_id),
                    # A list another program cleared or rewrote has lost its branches'
                    # places (as the scripts read it): they are not exported.
                    **_tree_of(tree, kids, session_id, placed=_intact(raw, meta)),
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
        keys = _keys_of(session_id)
        pipe.delete(*keys)
        pipe.hset(meta_key(session_id), mapping=meta)
        if elements:
            pipe.rpush(messages_key(session_id), *reversed(elements))  # newest first
        if record["tree"]:
            pipe.hset(tree_key(session_id), mapping=record["tree"])
        if record["kids"]:
            pipe.hset(kids_key(session_id), mapping=record["kids"])
        if self._ttl:
            for key in keys:
                pipe.expire(key, self._ttl)
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
            for key in _keys_of(session_id):
                dumped = await self._redis.dump(key)
                if dumped is not None:
                    saved[key] = (dumped, max(0, int(await self._redis.pttl(key))))
        return saved

    async def _take_back(self, written: list[str], saved: dict[str, tuple[Any, int]]) -> None:
        """Undo a cluster import that failed halfway: what it wrote goes, what it
        replaced comes back."""
        for session_id in written:
            await self._redis.delete(*_keys_of(session_id))
            await self._redis.zrem(INDEX_KEY, session_id)
        for key, (dumped, ttl) in saved.items():
            await self._redis.restore(key, ttl, dumped, replace=True)


def _keys_of(session_id: str) -> list[str]:
    """The keys an import writes whole (all in the session's slot)."""
    return [
        meta_key(session_id),
        messages_key(session_id),
        tree_key(session_id),
        kids_key(session_id),
    ]


def _tree_of(
    tree: dict[str, str], kids: dict[str, str], session_id: str, *, placed: bool
) -> dict[str, Any]:
    """The branches off the path and the children lists, as the export writes them;
    an entry that is not one this server wrote is left out, and all of them when the
    list has lost their places (`placed` false)."""
    if not placed:
        return {"branches": [], "children": {}}
    branches = []
    for message_id, value in tree.items():
        found = _ENTRY.match(value)
        encoded = value[found.end() :].encode() if found else b""
        length = int(found.group(1)) if found and len(found.group(1)) <= 16 else -1
        try:
            if length < 0 or length > len(encoded):
                raise ValueError("not a tree entry")  # noqa: TRY301  read as unreadable
            parent = encoded[:length].decode()
            message = json.loads(encoded[length:])
        except (ValueError, RecursionError):
            logger.warning("export of session %s skips an unreadable branch entry", session_id)
            continue
        branches.append({"id": message_id, "parent": parent, "message": message})
    # In an order of their own (a hash's order is not kept across a copy): by depth.
    branches.sort(key=lambda b: (position_of(b["id"]) or 0, b["id"]))
    children: dict[str, list[str]] = {}
    for parent, value in kids.items():
        with contextlib.suppress(ValueError, RecursionError):
            ids = json.loads(value)
            if isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids):
                children[parent] = ids
    return {"branches": branches, "children": dict(sorted(children.items()))}


# As the scripts read them (`_session.lua`, `_tree.lua`): ASCII digits only.
_MARK = re.compile(r"([0-9]+):([0-9a-f]*)", re.ASCII)
_ENTRY = re.compile(r"([0-9]+):", re.ASCII)


def _intact(raw: list[str], meta: dict[str, str]) -> bool:
    """Whether the list (newest first) still holds what this server last left in it,
    maybe with more appended: `scripts/_session.lua`'s `intact`."""
    mark = meta.get("list_mark")
    if mark is None:
        return len(raw) > 0
    found = _MARK.fullmatch(mark)
    if found is None or len(found.group(1)) > 16 or int(found.group(1)) > len(raw):
        return False
    kept = int(found.group(1))
    if kept == 0:
        return True
    element = raw[len(raw) - kept]
    return hashlib.sha1(element.encode()).hexdigest() == found.group(2)  # noqa: S324  as Redis does


def tree_entry(parent: str, element: str) -> str:
    """An off-path message as `scripts/_tree.lua` keeps it (the parent's length in
    bytes, as Lua counts it)."""
    return f"{len(parent.encode())}:{parent}{element}"


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
        used_in, used_out = _checked_counts(message, f"message {position}")
        tokens_in, tokens_out = tokens_in + used_in, tokens_out + used_out
    for name in ("summary_at", "summary_covers"):
        if name in meta and int(meta[name]) >= len(messages):
            raise ValueError(f"meta.{name} is past the last message")
    elements = [json.dumps(m, ensure_ascii=False) for m in messages]
    tree, kids, (branch_in, branch_out) = _checked_tree(record, messages)
    tokens_in, tokens_out = tokens_in + branch_in, tokens_out + branch_out
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
        "tree": tree,
        "kids": kids,
    }


# Longer than any id this server gives; as validation.MAX_MESSAGE_ID_CHARS.
_MAX_ID_CHARS = 64


def _checked_tree(
    record: dict[str, Any], messages: list[Any]
) -> tuple[dict[str, str], dict[str, str], tuple[int, int]]:
    """The branches and children lists of a record, checked: every id known and
    unique, every parent known, every message LangChain's; as the tree's hashes hold
    them, with the usage of the branches' replies."""
    branches = record.get("branches") or []
    children = record.get("children") or {}
    if not isinstance(branches, list) or not isinstance(children, dict):
        raise TypeError("branches must be a list and children an object")
    # Every id's depth: a path message's is its position, an off-path one's the number
    # its id begins with; a parent is one level up, so no chain of parents can loop.
    depth = {_path_id(message, position): position for position, message in enumerate(messages)}
    depth[""] = -1
    known = set(depth)
    tree: dict[str, str] = {}
    parents: dict[str, str] = {}
    used_in = used_out = 0
    for number, branch in enumerate(branches):
        if not isinstance(branch, dict) or set(branch) != {"id", "parent", "message"}:
            raise ValueError(f"branch {number} must be an object of id, parent, message")
        identifier, parent, message = branch["id"], branch["parent"], branch["message"]
        if not (isinstance(identifier, str) and 0 < len(identifier) <= _MAX_ID_CHARS):
            raise ValueError(f"branch {number}: id must be a message id")
        if not (isinstance(parent, str) and len(parent) <= _MAX_ID_CHARS):
            raise ValueError(f"branch {number}: parent must be a message id")
        if identifier in known or identifier in tree:
            raise ValueError(f"branch {number}: id {identifier!r} is there twice")
        level = position_of(identifier)
        if level is None or identifier == str(level):
            raise ValueError(f"branch {number}: id {identifier!r} does not name its depth")
        depth[identifier] = level
        messages_from_dict([message])
        more_in, more_out = _checked_counts(message, f"branch {number}")
        used_in, used_out = used_in + more_in, used_out + more_out
        tree[identifier] = tree_entry(parent, json.dumps(message, ensure_ascii=False))
        parents[identifier] = parent
    known |= set(tree)
    for identifier, parent in parents.items():
        if parent not in known or depth[parent] != depth[identifier] - 1:
            raise ValueError(f"branch {identifier!r}: its parent is not the message above it")
    kids: dict[str, str] = {}
    for parent, ids in children.items():
        if parent not in known or not isinstance(ids, list) or not ids:
            raise ValueError(f"children of {parent!r}: not a message of the session")
        if (
            not all(isinstance(i, str) and i in known and i for i in ids)
            or len(set(ids)) != len(ids)
            or any(depth[i] != depth[parent] + 1 for i in ids)
        ):
            raise ValueError(f"children of {parent!r} must be ids of its messages, once each")
        kids[parent] = json.dumps(ids)
    return tree, kids, (used_in, used_out)


def _path_id(message: object, position: int) -> str:
    """A path message's id, as the scripts read it (its own, else its position)."""
    data = message.get("data") if isinstance(message, dict) else None
    extra = data.get("additional_kwargs") if isinstance(data, dict) else None
    own = extra.get("message_id") if isinstance(extra, dict) else None
    return own if isinstance(own, str) and own else str(position)


def _checked_counts(message: object, what: str) -> tuple[int, int]:
    """The usage a message adds (`counted`), once its counts, if any, are checked."""
    data = message.get("data") if isinstance(message, dict) else None
    counts = data.get("usage_metadata") if isinstance(data, dict) else None
    if counts is not None and not (
        isinstance(counts, dict)
        and _count(counts.get("input_tokens"))
        and _count(counts.get("output_tokens"))
    ):
        raise ValueError(f"{what}: usage counts must be from 0 to {MAX_COUNT}")
    return counted(message)


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
    """Sessions of a ChatGPT `conversations.json`: each conversation's whole tree of user
    and assistant text messages (ChatGPT's `mapping`: an edit or a regeneration is a
    sibling there as here), the branch that ends at its `current_node` as the active
    path. Nodes without such a message (the root, system and tool messages) are left out
    and their children hang from the nearest message above them. The session id comes
    from the conversation's id, so importing the same file twice makes no second copy."""
    for conversation in conversations:
        mapping = conversation.get("mapping") or {}
        if not isinstance(mapping, dict):
            continue
        key = str(conversation.get("id") or conversation.get("conversation_id") or "")
        tree = _chatgpt_tree(mapping, conversation.get("current_node"), key)
        if tree is None:
            continue
        messages, branches, children = tree
        created = _micros(conversation.get("create_time"))
        updated = _micros(conversation.get("update_time")) or created
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
                    "branches": branches,
                    "children": children,
                }
            )
        )


def _chatgpt_message(node: object) -> HumanMessage | AIMessage | None:
    message = node.get("message") if isinstance(node, dict) else None
    if not isinstance(message, dict):
        return None
    author = message.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    content = message.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    text = "\n".join(p for p in parts or [] if isinstance(p, str)).strip()
    if role not in ("user", "assistant") or not text:
        return None
    return HumanMessage(content=text) if role == "user" else AIMessage(content=text)


def _chatgpt_tree(
    mapping: dict[str, Any], current: object, key: str
) -> tuple[list[Any], list[Any], dict[str, list[str]]] | None:
    """The active path's messages, the branches and the children lists of one
    conversation's `mapping`; None when it holds no message."""
    made = {nid: m for nid, node in mapping.items() if (m := _chatgpt_message(node)) is not None}
    if not made:
        return None

    def node_parent(nid: str) -> str | None:
        node = mapping.get(nid)
        parent = node.get("parent") if isinstance(node, dict) else None
        return parent if isinstance(parent, str) and parent in mapping else None

    def kept_above(nid: str | None) -> str | None:
        for _ in range(len(mapping) + 1):  # bounded: a parent chain longer is a loop
            if nid is None or nid in made:
                return nid
            nid = node_parent(nid)
        return None

    parent_of = {nid: kept_above(node_parent(nid)) for nid in made}

    def rooted(nid: str) -> bool:
        """Whether its parents lead to the start (not round a loop)."""
        seen: set[str] = set()
        up: str | None = nid
        while up is not None:
            if up in seen:
                return False
            seen.add(up)
            up = parent_of[up]
        return True

    # Messages whose parents go round a loop belong nowhere: left out.
    made = {nid: message for nid, message in made.items() if rooted(nid)}
    if not made:
        return None
    depth: dict[str, int] = {}
    for nid in made:
        chain: list[str] = []
        up: str | None = nid
        while up is not None and up not in depth and len(chain) <= len(made):
            chain.append(up)
            up = parent_of[up]
        level = depth.get(up, -1) if up is not None else -1
        for found in reversed(chain):
            level += 1
            depth[found] = level
    ids = {
        nid: f"{depth[nid]}.{hashlib.sha256((key + nid).encode()).hexdigest()[:8]}" for nid in made
    }
    # Children in ChatGPT's order (its `children` lists), through the nodes left out.
    order = {nid: index for index, nid in enumerate(mapping)}
    for nid, node in mapping.items():
        for index, child in enumerate(node.get("children") or [] if isinstance(node, dict) else []):
            if isinstance(child, str) and child in order:
                order[child] = order.get(nid, 0) * 10_000 + index
    children: dict[str, list[str]] = {}
    for nid in sorted(made, key=lambda n: (depth[n], order.get(n, 0))):
        children.setdefault(_id_or_start(ids, parent_of[nid]), []).append(ids[nid])
    path_nodes: list[str] = []
    at: str | None = kept_above(
        current if isinstance(current, str) and current in mapping else None
    )
    while at is not None and len(path_nodes) <= len(made):
        path_nodes.append(at)
        at = parent_of[at]
    path_nodes.reverse()
    if not path_nodes or depth[path_nodes[0]] != 0:
        path_nodes = []
        # No message on the way to current_node: from the start down the newest children,
        # as a switch goes down.
        at = max(
            (n for n in made if parent_of[n] is None), key=lambda n: order.get(n, 0), default=None
        )
        while at is not None and len(path_nodes) <= len(made):
            path_nodes.append(at)
            below = children.get(ids[at])
            at = next((n for n in made if ids[n] == below[-1]), None) if below else None

    def as_dict(nid: str) -> Any:
        message = made[nid]
        message.additional_kwargs["message_id"] = ids[nid]
        return message_to_dict(message)

    if not path_nodes:
        return None
    on_path = set(path_nodes)
    messages = [as_dict(nid) for nid in path_nodes]
    branches = [
        {"id": ids[n], "parent": _id_or_start(ids, parent_of[n]), "message": as_dict(n)}
        for n in sorted(made, key=lambda n: depth[n])
        if n not in on_path
    ]
    path_ids = {ids[n] for n in path_nodes}
    listed = {
        parent: kids
        for parent, kids in children.items()
        if not (len(kids) == 1 and kids[0] in path_ids)
    }
    return messages, branches, listed


def _id_or_start(ids: dict[str, str], node: str | None) -> str:
    return "" if node is None else ids[node]


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
