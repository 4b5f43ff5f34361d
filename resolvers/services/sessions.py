"""Sessions: making, reading, listing and deleting them.

A session is LangChain's message list `message_store:<id>` and the hash of its fields
(`meta.py` declares them) beside it; its keys are in `keys.py`. Its message count is the
list's length, so lists that other LangChain programs append to or clear are counted
right. Who may use a session is checked in the same step that reads it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.typing import EncodableT, FieldT

from resolvers.services import meta as record
from resolvers.services.adoption import Adoption
from resolvers.services.errors import BadInput, NotFound
from resolvers.services.history import (
    Exchange,
    StoredMessage,
    ToolCall,
    decode_newest_first,
    exchanges,
    pending_calls,
)
from resolvers.services.identity import ANONYMOUS, Identity
from resolvers.services.index import (
    MAX_PAGE,
    IdPage,
    Listing,
    SessionIndex,
    encode_cursor,
    from_micros,
    index_key,
    now_micros,
)
from resolvers.services.keys import (
    ARCHIVED_INDEX_PREFIX,
    OWNER_INDEX_PREFIX,
    PINNED_INDEX_PREFIX,
    SHARE_PREFIX,
    TURN_SESSION_PREFIX,
    active_turn_key,
    kids_key,
    lock_key,
    messages_key,
    meta_key,
    session_tag,
    share_pointer_key,
    tree_key,
    turn_ids_key,
    turn_rate_key,
    turn_session_key,
)
from resolvers.services.scripts import Script, caller, each, outcome_of
from resolvers.services.usage import MAX_TOOL_CALLS, NO_USAGE, Usage
from resolvers.services.validation import check_length, check_session_id, check_text

logger = logging.getLogger(__name__)

MAX_TITLE_CHARS = 200
_NOT_FOUND = "no session with that id"
# A user's sessions are walked 500 at a time, at most this many times (5 million).
MAX_OWNED_BATCHES = 10_000

__all__ = ["MAX_PAGE", "IdPage", "SessionInfo", "SessionPage", "SessionStore", "new_session_id"]


def new_session_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as a client sees it (`meta.FIELDS` declares what it is made of)."""

    id: str
    title: str | None
    # None when it was not read: a listing reads only the fields it shows (a prompt can
    # be as long as a message); `SessionStore.system_prompt` reads it on demand.
    system_prompt: str | None
    created_at: datetime
    updated_at: datetime
    message_count: int
    # The user who created it; None for a session created anonymously.
    owner_id: str | None = None
    # The sum of its replies' token counts, as the provider reported them.
    usage: Usage = NO_USAGE
    pinned: bool = False
    archived: bool = False


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: list[SessionInfo]
    cursors: list[str]
    has_next: bool
    total: int
    # Where the next page starts (the last entry walked, shown or not).
    end_cursor: str | None = None


class SessionStore:
    """Sessions in Redis. Every method checks ids before any key is built."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        index: SessionIndex,
        adoption: Adoption,
        default_system_prompt: str,
        ttl_seconds: int,
        max_prompt_chars: int = 32000,
    ) -> None:
        self._redis = redis
        self._single = isinstance(redis, Redis)
        self._index = index
        self._adoption = adoption
        self._default_prompt = default_system_prompt
        self._ttl = ttl_seconds
        self._max_prompt = max_prompt_chars
        self._read = Script(redis, "read_session")
        self._history = Script(redis, "read_history")
        self._delete = Script(redis, "delete_session")
        self._move = Script(redis, "move_owner")

    async def create(
        self,
        *,
        title: str | None = None,
        system_prompt: str | None = None,
        owner: str | None = None,
        session_id: str | None = None,
        pinned: bool = False,
        archived: bool = False,
    ) -> SessionInfo:
        """A new session (with a new id unless one chosen by `new_session_id` is given);
        owned by `owner` (a user id), or by nobody when None; pinned or archived as asked."""
        title, system_prompt = self.check_fields(title, system_prompt)
        prompt = system_prompt if system_prompt is not None else self._default_prompt
        session_id = check_session_id(session_id) if session_id else new_session_id()
        now = now_micros()
        fields: dict[FieldT, EncodableT] = {
            "system_prompt": prompt,
            "created_at": now,
            "updated_at": now,
            "list_mark": "0:",
        }
        if title:
            fields["title"] = title
        if owner is not None:
            fields["owner"] = owner
        for flag, wanted in (("pinned", pinned), ("archived", archived)):
            if wanted:
                fields[flag] = "1"
        async with self._redis.pipeline(transaction=self._single) as pipe:
            pipe.hset(meta_key(session_id), mapping=fields)
            if self._ttl:
                pipe.expire(meta_key(session_id), self._ttl)
            self._index.queue_place(pipe, session_id, now, owner, pinned=pinned, archived=archived)
            await pipe.execute()
        created = from_micros(now)
        return SessionInfo(
            id=session_id,
            title=title or None,
            system_prompt=prompt,
            created_at=created,
            updated_at=created,
            message_count=0,
            owner_id=owner,
            pinned=pinned,
            archived=archived,
        )

    @property
    def index(self) -> SessionIndex:
        return self._index

    def prompt_or_default(self, prompt: str | None) -> str:
        """A session's system prompt as a turn sends it (an adopted list has none)."""
        return str(prompt) if prompt else self._default_prompt

    def check_fields(
        self, title: str | None, system_prompt: str | None
    ) -> tuple[str | None, str | None]:
        """A session's title and system prompt, checked (BadInput past their limits); a
        blank prompt is the default one."""
        if title is not None:
            check_text(check_length(title, MAX_TITLE_CHARS, "title"), "title")
        if system_prompt is not None:
            check_length(system_prompt, self._max_prompt, "system prompt")
            check_text(system_prompt, "system prompt")
            if not system_prompt.strip():
                system_prompt = self._default_prompt
        return title, system_prompt

    async def get(self, session_id: str, *, who: Identity = ANONYMOUS) -> SessionInfo | None:
        """The session, or None when there is none or `who` may not use it (the same
        answer: a session of another user is indistinguishable from a missing one)."""
        check_session_id(session_id)
        found = await self._read_info(session_id, who)
        if found is None and await self._adoption.one(session_id):
            found = await self._read_info(session_id, who)
        return found

    async def _read_info(self, session_id: str, who: Identity | None) -> SessionInfo | None:
        result = await self._read(
            keys={"meta": meta_key(session_id), "messages": messages_key(session_id)},
            args={**caller(who), "fields": ""},
        )
        return _read_result(session_id, result)

    async def system_prompt(self, session_id: str, *, who: Identity = ANONYMOUS) -> str | None:
        check_session_id(session_id)
        prompt, owner = await self._redis.hmget(meta_key(session_id), ["system_prompt", "owner"])
        if prompt is None or not who.may_use(None if owner is None else str(owner)):
            return None
        return str(prompt)

    async def _owner_if_usable(self, session_id: str, who: Identity) -> tuple[bool, str | None]:
        """Whether the session exists and `who` may use it, and its owner (one round trip)."""
        check_session_id(session_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(meta_key(session_id), messages_key(session_id))
            pipe.hget(meta_key(session_id), "owner")
            exists, owner = await pipe.execute()
        return bool(exists) and who.may_use(owner), owner

    async def check_usable(self, session_id: str, *, who: Identity = ANONYMOUS) -> None:
        """NotFound unless the session exists and `who` may use it (one round trip)."""
        usable, _ = await self._owner_if_usable(session_id, who)
        if not usable:
            raise NotFound(_NOT_FOUND)

    async def require(self, session_id: str, *, who: Identity = ANONYMOUS) -> SessionInfo:
        info = await self.get(session_id, who=who)
        if info is None:
            raise NotFound(_NOT_FOUND)
        return info

    async def exists(self, session_id: str) -> bool:
        return bool(await self._redis.exists(meta_key(session_id), messages_key(session_id)))

    async def delete(self, session_id: str, *, who: Identity = ANONYMOUS) -> bool:
        """Delete the session and everything kept for it (its branches, its turns'
        events, their records, the running turn's lock and record, its shares, its index
        entries). False when
        there is no such session, or `who` may not use it."""
        check_session_id(session_id)
        window = int(time.time() // 60)
        counters = [turn_rate_key(session_id, w) for w in (window - 1, window, window + 1)]
        args: dict[str, EncodableT] = {
            **caller(who),
            "session_id": session_id,
            "tag": session_tag(session_id),
            "extra": " ".join([*counters, tree_key(session_id), kids_key(session_id)]),
        }
        keys = {
            "meta": meta_key(session_id),
            "messages": messages_key(session_id),
            "lock": lock_key(session_id),
            "active": active_turn_key(session_id),
            "turn_ids": turn_ids_key(session_id),
        }
        if self._single:
            keys["index"] = index_key()
            args["turn_prefix"] = TURN_SESSION_PREFIX
            args["owner_prefix"] = OWNER_INDEX_PREFIX
            args["archived_prefix"] = ARCHIVED_INDEX_PREFIX
            args["pinned_prefix"] = PINNED_INDEX_PREFIX
            args["share_prefix"] = SHARE_PREFIX
        result = await self._delete(keys=keys, args=args)
        if outcome_of(result) != 1:
            return False
        self._index.forget(session_id)
        if not self._single:
            # Other slots: the indexes and the turn ids' records.
            owner = result["owner"]
            await self._index.remove(session_id, owner=str(owner) if owner else None)
            for turn_id in result["turn_ids"] or []:
                await self._redis.delete(turn_session_key(str(turn_id)))
            for share_id in result["share_ids"] or []:
                await self._redis.delete(share_pointer_key(str(share_id)))
        return True

    async def messages(
        self, session_id: str, *, last: int | None = None, who: Identity = ANONYMOUS
    ) -> list[StoredMessage]:
        """The last `last` messages (all when None), oldest first."""
        check_session_id(session_id)
        if last is not None and last < 0:
            raise BadInput("last must not be negative")
        if last == 0:
            await self.check_usable(session_id, who=who)
            return []
        # One more than asked, when there is one: the parent of the oldest asked for.
        raw, length = await self._read_history(session_id, who, -1 if last is None else last + 1)
        below = None
        if last is not None and len(raw) > last:
            below = raw.pop()
        return decode_newest_first(raw, length, below=below)

    async def path_end(self, session_id: str, *, who: Identity = ANONYMOUS) -> list[StoredMessage]:
        """The path's newest messages, oldest first: enough to tell the tool calls of its
        last reply and the results that answer them (summaries between included)."""
        return await self.messages(session_id, last=MAX_TOOL_CALLS + 4, who=who)

    async def pending_tool_calls(
        self, session_id: str, *, who: Identity = ANONYMOUS
    ) -> tuple[ToolCall, ...]:
        """The tool calls of the path's last reply that no result answers yet."""
        return pending_calls(await self.path_end(session_id, who=who))

    async def exchanges(self, session_id: str, *, who: Identity = ANONYMOUS) -> list[Exchange]:
        """The session's exchanges (its `Turn`s: a message and its reply), oldest first;
        NotFound when there is no session."""
        check_session_id(session_id)
        raw, _ = await self._read_history(session_id, who, -1)
        return exchanges(decode_newest_first(raw))

    async def _read_history(
        self, session_id: str, who: Identity, newest: int
    ) -> tuple[list[Any], int]:
        """The newest `newest` elements (-1: all) and the list's length, read only once
        the owner is checked, in the same step (a refused caller reads nothing)."""
        result = await self._history(
            keys={"meta": meta_key(session_id), "messages": messages_key(session_id)},
            args={**caller(who), "newest": newest},
        )
        if outcome_of(result) != 1:
            raise NotFound(_NOT_FOUND)
        return list(result["elements"] or []), int(result["length"])

    async def page(
        self,
        *,
        first: int,
        after: str | None,
        owner: str | None = None,
        who: Identity | None = None,
        listing: Listing = "main",
    ) -> SessionPage:
        """A page of sessions, most recently active first, with their metadata: every
        session, or those `owner` owns in one of their indexes (`listing`: the main one,
        the archived or the pinned). Given `who`, the sessions they may not use are
        left out (the admin listing is open to all without ADMIN_TOKEN: nobody else's
        title or messages show there), at no extra cost: the owner is read anyway. So
        is an entry its session's flags no longer list there (left by a cluster's index
        write racing a change of flags)."""
        if first < 0:
            raise BadInput("first must not be negative")
        first = min(first, MAX_PAGE)
        index = index_key(owner, listing)
        await self._index.prune(index)
        entries, has_next, total = await self._index.slice(index, first, after)
        replies = await each(
            self._read,
            self._redis,
            [
                (
                    {"meta": meta_key(session_id), "messages": messages_key(session_id)},
                    {"admin": "*", "user": "", "fields": " ".join(record.LISTED)},
                )
                for session_id, _ in entries
            ],
        )
        sessions, cursors = [], []
        for (session_id, score), reply in zip(entries, replies, strict=True):
            if isinstance(reply, BaseException):
                raise reply
            info = _read_result(session_id, reply)
            if (
                info is not None
                and (who is None or who.may_use(info.owner_id))
                and (owner is None or _listed_in(info, listing))
            ):
                sessions.append(info)
                cursors.append(encode_cursor(score, session_id))
        # The page ends where the walk stopped, even at a session this caller may not see:
        # its id is no secret (the open REST listing names every id) and gives no access.
        end = encode_cursor(entries[-1][1], entries[-1][0]) if entries else None
        return SessionPage(
            sessions=sessions, cursors=cursors, has_next=has_next, total=total, end_cursor=end
        )

    async def ids(
        self,
        *,
        limit: int | None,
        cursor: str | None,
        owner: str | None = None,
        listing: Listing = "main",
    ) -> IdPage:
        """Session ids, most recently active first: all of them, or one page; of every
        session, or of those `owner` owns in one of their indexes."""
        return await self._index.ids(limit=limit, cursor=cursor, owner=owner, listing=listing)

    async def move_owner(self, old: str, new: str) -> int:
        """Give every session `old` owns to `new` (a legacy guest id's to its prefixed
        one), a batch at a time, in each of the owner's indexes; how many moved."""
        moved = 0
        for listing in ("main", "archived", "pinned"):
            source, target = index_key(old, listing), index_key(new, listing)
            for _ in range(MAX_OWNED_BATCHES):
                entries: Any = await self._redis.zrange(source, 0, 499, withscores=True)
                if not entries:
                    break
                scores = {str(member): int(score) for member, score in entries}
                ids = list(scores)
                done = await each(
                    self._move,
                    self._redis,
                    [({"meta": meta_key(sid)}, {"old": old, "new": new}) for sid in ids],
                )
                # A pinned session was moved with the main index: its entry follows.
                mine = {
                    sid: scores[sid]
                    for sid, result in zip(ids, done, strict=True)
                    if not isinstance(result, BaseException)
                    and (int(result) or (listing == "pinned" and await self._owned(sid, new)))
                }
                if mine:
                    await self._redis.zadd(target, mine)
                await self._redis.zrem(source, *ids)
                if listing != "pinned":
                    moved += len(mine)
        return moved

    async def _owned(self, session_id: str, owner: str) -> bool:
        return await self._redis.hget(meta_key(session_id), "owner") == owner


def _read_result(session_id: str, result: Any) -> SessionInfo | None:
    """A session from `scripts/read_session.lua`'s answer (None: not one to show)."""
    if outcome_of(result) != 1:
        return None
    flat = [str(v) for v in result["fields"]]
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    usage = Usage(
        input_tokens=int(result["input_tokens"]), output_tokens=int(result["output_tokens"])
    )
    return info_of(session_id, fields, int(result["length"]), usage)


def info_of(
    session_id: str, fields: Mapping[str, str], count: int, usage: Usage = NO_USAGE
) -> SessionInfo:
    return SessionInfo(
        id=session_id,
        title=fields.get("title") or None,
        system_prompt=fields.get("system_prompt"),
        created_at=from_micros(fields.get("created_at")),
        updated_at=from_micros(fields.get("updated_at")),
        message_count=count,
        owner_id=fields.get("owner") or None,
        usage=usage,
        pinned=fields.get("pinned") == "1",
        archived=fields.get("archived") == "1",
    )


def _listed_in(info: SessionInfo, listing: Listing) -> bool:
    """Whether the session's flags list it in its owner's `listing` index."""
    if listing == "archived":
        return info.archived
    if listing == "pinned":
        return info.pinned and not info.archived
    return not info.archived
