"""Sessions: metadata, the activity index, the per-session turn lock, and turn commits.

The keys are described in `keys`. The index, a sorted set of ids scored by the time of
last activity, makes a page of the most recently active sessions one
`ZREVRANGEBYSCORE` away, without `KEYS` or `SCAN`. A session's message count is its
list's length, so lists that other LangChain programs append to or clear are counted
right.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from resolvers.services.errors import (
    BadInput,
    DataConflict,
    NotFound,
    SessionBusy,
    StoreUnavailable,
)
from resolvers.services.history import (
    Role,
    StoredMessage,
    TurnPair,
    decode,
    decode_newest_first,
    pair_turns,
)
from resolvers.services.identity import ANONYMOUS, Identity
from resolvers.services.keys import (
    INDEX_KEY,
    MESSAGES_PREFIX,
    OWNER_INDEX_PREFIX,
    TURN_SESSION_PREFIX,
    active_turn_key,
    lock_key,
    messages_key,
    meta_key,
    owner_index_key,
    session_tag,
    turn_ids_key,
    turn_rate_key,
    turn_session_key,
    turn_stream_key,
)
from resolvers.services.scripts import Script
from resolvers.services.usage import NO_USAGE, Usage
from resolvers.services.validation import (
    check_length,
    check_session_id,
    check_text,
    check_turn_id,
    is_session_id,
)

logger = logging.getLogger(__name__)

MAX_TITLE_CHARS = 200
MAX_PAGE = 1000  # larger pages are cut to this; the cursor gives the rest
AUTO_TITLE_CHARS = 60
# What a listing shows of each session (not the system prompt: see SessionInfo).
_LISTED_FIELDS = ("title", "created_at", "updated_at", "owner", "input_tokens", "output_tokens")
_NOT_FOUND = "no session with that id"

# A user's sessions are walked 500 at a time, at most this many times (5 million).
MAX_OWNED_BATCHES = 10_000
# Stream entries read at once (each holds many tokens).
_ENTRIES_PER_READ = 500


def _token_args(first: int, tokens: list[str]) -> dict[str, EncodableT]:
    """The first seq, the last seq and the JSON list of tokens (or '' for none)."""
    if not tokens:
        return {"first": first, "last": first, "tokens": ""}
    last = first + len(tokens) - 1
    return {"first": first, "last": last, "tokens": json.dumps(tokens, ensure_ascii=False)}


def _summary(raw: Any, at: Any) -> StoredMessage | None:
    """The summary element read with a turn's start (its id is its position)."""
    if raw is None or at is None:
        return None
    found = decode(str(raw), int(at))
    return found if found is not None and found.role is Role.SYSTEM else None


def _micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def _from_micros(value: bytes | str | int | None) -> datetime:
    """A time this server stored (µs since the epoch); the epoch itself for a value
    another program left that is not one (a read never fails on it)."""
    try:
        micros = int(value or 0)
        return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, tz=UTC)


def new_session_id() -> str:
    return str(uuid.uuid4())


def encode_cursor(score: float, session_id: str) -> str:
    return base64.urlsafe_b64encode(f"{int(score)}:{session_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        score, _, session_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        return int(score), check_session_id(session_id)
    except (ValueError, binascii.Error, UnicodeError, BadInput):
        raise BadInput("cursor is not one this server returned") from None


@dataclass(frozen=True, slots=True)
class SessionInfo:
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


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: list[SessionInfo]
    cursors: list[str]
    has_next: bool
    total: int
    # Where the next page starts (the last entry walked, shown or not).
    end_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class IdPage:
    ids: list[str]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class TurnStart:
    """What a turn needs, read in the same round trip that takes the lock; or, with
    `joined`, word that a turn with this id is already there (nothing was taken)."""

    token: str
    system_prompt: str
    window: list[StoredMessage]
    owner: str | None = None
    turn_id: str = ""
    # Messages in the list when the turn began: the new ones' positions follow.
    length: int = 0
    joined: bool = False
    # Regenerating: the reply to replace and the user message, as the list holds them.
    replaces: str | None = None
    asked: str | None = None
    # The summary of trimmed history kept in the list, if there is one.
    summary: StoredMessage | None = None
    # Newest messages left out of the window (a regenerate's reply and message, and a
    # summary written after them).
    skip: int = 0


@dataclass(frozen=True, slots=True)
class ActiveTurn:
    turn_id: str
    started_at: datetime
    message: str


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """Tokens of a turn's stream: `tokens[0]` is event `first`, the last is event `seq`."""

    seq: int
    first: int
    tokens: list[str]


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """How a turn's stream ends: the entry written after its last token (event `seq`)."""

    seq: int
    status: str
    # COMPLETE / STOPPED: the stored reply, as the list holds it.
    reply_json: str | None = None
    # FAILED: the error's code and message.
    code: str | None = None
    message: str | None = None
    # False for a FAILED end, and for a STOPPED one that stored nothing (`reply_json` is
    # then the reply that stays: a regenerate stopped before its first token).
    stored: bool = True


def _entry(entry_id: Any, fields: Mapping[Any, Any]) -> TokenEntry | TurnEnd:
    """A stream entry as the turn scripts write it (`scripts/_stream.lua`)."""
    seq = int(str(entry_id).partition("-")[0])
    values = {str(k): str(v) for k, v in fields.items()}
    if "t" in values:
        try:
            tokens = json.loads(values["t"])
            first = int(values["f"])
        except (ValueError, KeyError, RecursionError):
            tokens, first = [], seq + 1  # not written by this server: nothing in it
        if not isinstance(tokens, list):
            tokens = []
        return TokenEntry(seq=seq, first=first, tokens=[str(t) for t in tokens])
    status = values.get("s", "FAILED")
    return TurnEnd(
        seq=seq,
        status=status,
        reply_json=values.get("m"),
        code=values.get("c"),
        message=values.get("e"),
        stored=status in ("COMPLETE", "STOPPED") and "u" not in values,
    )


# Most entries a turn's stream keeps (approximately; writes are batched, see `turns`).
TURN_STREAM_CAP = 10_000


class SessionStore:
    """Sessions in Redis. Every method checks ids before any key is built."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        default_system_prompt: str,
        history_window: int,
        ttl_seconds: int,
        lock_seconds: float,
        max_prompt_chars: int = 32000,
        replay_seconds: int = 300,
        blocking: Redis | RedisCluster | None = None,
    ) -> None:
        self._redis = redis
        # Blocking stream reads (XREAD BLOCK) hold a connection each: a pool of their own.
        self._blocking = blocking if blocking is not None else redis
        # On a cluster the index is in another slot than a session's keys: no MULTI
        # and no script may span both, so the index is written in a step of its own.
        self._single = isinstance(redis, Redis)
        self._default_prompt = default_system_prompt
        self._window = history_window
        self._ttl = ttl_seconds
        self._lock_ms = int(lock_seconds * 1000)
        self._replay_ms = int(replay_seconds * 1000)
        self._max_prompt = max_prompt_chars
        self._last_stamp = 0
        # Index entries a cluster could not write after their commit: (index, id) -> score.
        self._index_backlog: dict[tuple[str, str], int] = {}
        self._begin = Script(redis, "begin_turn")
        self._commit = Script(redis, "commit_turn")
        self._release = Script(redis, "release_lock")
        self._renew = Script(redis, "renew_lock")
        self._adopt = Script(redis, "adopt")
        self._abandon = Script(redis, "abandon_turn")
        self._stop = Script(redis, "stop_turn")
        self._summarize = Script(redis, "summarize")
        self._flush = Script(redis, "flush_turn")
        self._read = Script(redis, "read_session")
        self._history = Script(redis, "read_history")
        self._delete = Script(redis, "delete_session")
        self._move = Script(redis, "move_owner")

    def _now(self) -> int:
        # Strictly increasing within the process, so "most recent first" is exact
        # even for two sessions created in the same microsecond.
        stamp = max(time.time_ns() // 1000, self._last_stamp + 1)
        self._last_stamp = stamp
        return stamp

    @property
    def _alive_seconds(self) -> int:
        """A session's time to live while a turn runs: its TTL counts from the turn's
        end, and a process that dies mid-turn leaves it to expire a lock's life later."""
        return self._ttl + math.ceil(self._lock_ms / 1000) if self._ttl else 0

    async def create(
        self,
        *,
        title: str | None = None,
        system_prompt: str | None = None,
        owner: str | None = None,
        session_id: str | None = None,
    ) -> SessionInfo:
        """A new session (with a new id unless one chosen by `new_session_id` is given);
        owned by `owner` (a user id), or by nobody when None."""
        title, system_prompt = self.check_fields(title, system_prompt)
        prompt = system_prompt if system_prompt is not None else self._default_prompt
        session_id = check_session_id(session_id) if session_id else new_session_id()
        now = self._now()
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
        async with self._redis.pipeline(transaction=self._single) as pipe:
            pipe.hset(meta_key(session_id), mapping=fields)
            if self._ttl:
                pipe.expire(meta_key(session_id), self._ttl)
            pipe.zadd(INDEX_KEY, {session_id: now})
            if owner is not None:
                pipe.zadd(owner_index_key(owner), {session_id: now})
            await pipe.execute()
        created = _from_micros(now)
        return SessionInfo(
            id=session_id,
            title=title or None,
            system_prompt=prompt,
            created_at=created,
            updated_at=created,
            message_count=0,
            owner_id=owner,
        )

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
        if found is None and await self._adopt_one(session_id):
            found = await self._read_info(session_id, who)
        return found

    async def _read_info(
        self, session_id: str, who: Identity | None, fields: tuple[str, ...] = ()
    ) -> SessionInfo | None:
        result = await self._read(
            keys={"meta": meta_key(session_id), "messages": messages_key(session_id)},
            args={**_caller(who), "fields": " ".join(fields)},
        )
        return self._read_result(session_id, result)

    def _read_result(self, session_id: str, result: Any) -> SessionInfo | None:
        outcome = int(result["outcome"])
        _check_types(outcome)
        if outcome != 1:
            return None
        flat = [str(v) for v in result["fields"]]
        meta = dict(zip(flat[::2], flat[1::2], strict=True))
        usage = Usage(
            input_tokens=int(result["input_tokens"]), output_tokens=int(result["output_tokens"])
        )
        return self._info(session_id, meta, int(result["length"]), usage)

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

    async def delete(self, session_id: str, *, who: Identity = ANONYMOUS) -> bool:
        """Delete the session and everything kept for it (its turns' events, their
        records, the running turn's lock and record, its index entries). False when
        there is no such session, or `who` may not use it."""
        check_session_id(session_id)
        window = int(time.time() // 60)
        counters = [turn_rate_key(session_id, w) for w in (window - 1, window, window + 1)]
        args: dict[str, EncodableT] = {
            **_caller(who),
            "session_id": session_id,
            "tag": session_tag(session_id),
            "extra": " ".join(counters),
        }
        keys = {
            "meta": meta_key(session_id),
            "messages": messages_key(session_id),
            "lock": lock_key(session_id),
            "active": active_turn_key(session_id),
            "turn_ids": turn_ids_key(session_id),
        }
        if self._single:
            keys["index"] = INDEX_KEY
            args["turn_prefix"] = TURN_SESSION_PREFIX
            args["owner_prefix"] = OWNER_INDEX_PREFIX
        result = await self._delete(keys=keys, args=args)
        outcome = int(result["outcome"])
        _check_types(outcome)
        if outcome != 1:
            return False
        for entry in [e for e in self._index_backlog if e[1] == session_id]:
            del self._index_backlog[entry]
        if not self._single:
            # Other slots: the indexes and the turn ids' records.
            owner = result["owner"]
            await self._redis.zrem(INDEX_KEY, session_id)
            if owner:
                await self._redis.zrem(owner_index_key(str(owner)), session_id)
            for turn_id in result["turn_ids"] or []:
                await self._redis.delete(turn_session_key(str(turn_id)))
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
        raw, length = await self._read_history(session_id, who, -1 if last is None else last)
        return decode_newest_first(raw, length)

    async def turns(self, session_id: str, *, who: Identity = ANONYMOUS) -> list[TurnPair]:
        """The session's turns, oldest first; NotFound when there is no session."""
        check_session_id(session_id)
        raw, _ = await self._read_history(session_id, who, -1)
        return pair_turns(decode_newest_first(raw))

    async def _read_history(
        self, session_id: str, who: Identity, newest: int
    ) -> tuple[list[Any], int]:
        """The newest `newest` elements (-1: all) and the list's length, read only once
        the owner is checked, in the same step (a refused caller reads nothing)."""
        result = await self._history(
            keys={"meta": meta_key(session_id), "messages": messages_key(session_id)},
            args={**_caller(who), "newest": newest},
        )
        outcome = int(result["outcome"])
        _check_types(outcome)
        if outcome != 1:
            raise NotFound(_NOT_FOUND)
        return list(result["elements"] or []), int(result["length"])

    async def _prune_expired(self, index: str) -> None:
        """Drop index entries of sessions that expired (their TTL): only those whose
        metadata is gone, a bounded batch at a time, so a session that exists is never
        left out of a listing, however old its last activity."""
        if not self._ttl:
            return
        oldest = self._now() - self._ttl * 1_000_000
        stale = await self._redis.zrangebyscore(index, "-inf", f"({oldest}", start=0, num=200)
        if not stale:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id in stale:
                pipe.exists(meta_key(str(session_id)))
            alive = await pipe.execute()
        gone = [str(sid) for sid, found in zip(stale, alive, strict=True) if not found]
        if gone:
            await self._redis.zrem(index, *gone)

    async def page(
        self,
        *,
        first: int,
        after: str | None,
        owner: str | None = None,
        who: Identity | None = None,
    ) -> SessionPage:
        """A page of sessions, most recently active first, with their metadata: every
        session, or those `owner` owns. Given `who`, the sessions they may not use are
        left out (the admin listing is open to all without ADMIN_TOKEN: nobody else's
        title or messages show there), at no extra cost: the owner is read anyway."""
        if first < 0:
            raise BadInput("first must not be negative")
        first = min(first, MAX_PAGE)
        index = INDEX_KEY if owner is None else owner_index_key(owner)
        await self._prune_expired(index)
        entries, has_next, total = await self._index_slice(index, first, after)
        replies = await self._each(
            self._read,
            [
                (
                    {"meta": meta_key(session_id), "messages": messages_key(session_id)},
                    {"admin": "*", "user": "", "fields": " ".join(_LISTED_FIELDS)},
                )
                for session_id, _ in entries
            ],
        )
        sessions, cursors = [], []
        for (session_id, score), reply in zip(entries, replies, strict=True):
            if isinstance(reply, BaseException):
                raise reply
            info = self._read_result(session_id, reply)
            if info is not None and (who is None or who.may_use(info.owner_id)):
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
    ) -> IdPage:
        """Session ids, most recently active first: all of them, or one page; of every
        session, or of those `owner` owns."""
        index = INDEX_KEY if owner is None else owner_index_key(owner)
        await self._prune_expired(index)
        if limit is None:
            if cursor is not None:
                raise BadInput("cursor needs limit")
            raw = await self._redis.zrevrange(index, 0, -1)
            return IdPage(ids=[str(r) for r in raw], next_cursor=None)
        if limit < 1:
            raise BadInput("limit must be at least 1")
        limit = min(limit, MAX_PAGE)
        entries, has_next, _ = await self._index_slice(index, limit, cursor)
        next_cursor = (
            encode_cursor(entries[-1][1], entries[-1][0]) if has_next and entries else None
        )
        return IdPage(ids=[session_id for session_id, _ in entries], next_cursor=next_cursor)

    async def _index_slice(
        self, index: str, count: int, after: str | None
    ) -> tuple[list[tuple[str, float]], bool, int]:
        """`count` index entries after the cursor (keyset paging, stable under inserts)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(index)
            if after is None:
                pipe.zrevrange(index, 0, count, withscores=True)
            else:
                score, after_id = decode_cursor(after)
                # Entries sharing the cursor's score, then strictly older ones.
                pipe.zrevrangebyscore(index, score, score, withscores=True)
                pipe.zrevrangebyscore(
                    index, f"({score}", "-inf", start=0, num=count + 1, withscores=True
                )
            results = await pipe.execute()
        total = int(results[0])
        rows: list[tuple[str, float]] = []
        if after is None:
            rows = [(str(m), s) for m, s in results[1]]
        else:
            ties = [(str(m), s) for m, s in results[1]]
            rows = [(m, s) for m, s in ties if m < after_id]
            rows += [(str(m), s) for m, s in results[2]]
        return rows[:count], len(rows) > count, total

    async def begin_turn(
        self,
        session_id: str,
        *,
        who: Identity = ANONYMOUS,
        turn_id: str | None = None,
        message: str = "",
        regenerate: bool = False,
    ) -> TurnStart:
        """Take the session's lock for turn `turn_id` (a new id when None) and read what
        the model needs, in one round trip; NotFound as for a missing session when `who`
        may not use it. When a turn with this id is already on the session (running, or
        ended and still kept), nothing is taken: the result says `joined`."""
        check_session_id(session_id)
        chosen = turn_id is not None
        turn_id = check_turn_id(turn_id) if turn_id is not None else str(uuid.uuid4())
        token = secrets.token_hex(16)
        keep_ms = self._replay_ms + self._lock_ms
        keys = {
            "lock": lock_key(session_id),
            "meta": meta_key(session_id),
            "messages": messages_key(session_id),
            "active": active_turn_key(session_id),
            "stream": turn_stream_key(session_id, turn_id),
            "turn_ids": turn_ids_key(session_id),
        }
        if self._single:
            keys["turn_session"] = turn_session_key(turn_id)
        elif chosen:
            await self._claim_turn_id(session_id, turn_id, keep_ms)
        else:
            # A new random id collides with nothing: its record is for later reuse checks
            # only, and a node that refuses it (in a slot none of the session's keys is
            # in) must not fail the turn.
            try:
                await self._claim_turn_id(session_id, turn_id, keep_ms)
            except Exception as exc:
                logger.warning("turn id %s not recorded: %s", turn_id, type(exc).__name__)
        result = await self._begin(
            keys=keys,
            args={
                "token": token,
                "lock_ms": self._lock_ms,
                "window": self._window,
                "alive_s": self._alive_seconds,
                "now": self._now(),
                "session_id": session_id,
                **_caller(who),
                "turn_id": turn_id,
                "message": message,
                "keep_ms": keep_ms,
                "regenerate": "1" if regenerate else "0",
            },
        )
        outcome = int(result["outcome"])
        _check_types(outcome)
        if outcome == 0:
            raise NotFound(_NOT_FOUND)
        if outcome == -1:
            raise SessionBusy("a turn is already running on this session")
        if outcome == -2:
            raise BadInput("that turn id belongs to another session")
        if outcome == -3:
            raise BadInput("nothing to regenerate: the conversation does not end with a reply")
        if outcome == 2:
            return TurnStart(token="", system_prompt="", window=[], turn_id=turn_id, joined=True)
        prompt = result["prompt"]
        owner = str(result["owner"]) if result["owner"] is not None else None
        length = int(result["length"])
        skip = int(result["skip"])
        if prompt is None:
            # A list written by another LangChain program and not adopted yet.
            try:
                await self._adopt_one(session_id)
            except BaseException:
                await self.release_lock(session_id, token)
                raise
        return TurnStart(
            token=token,
            system_prompt=str(prompt) if prompt else self._default_prompt,
            # A regenerate's window starts below the reply and the message it replaces.
            window=decode_newest_first(result["window"] or [], length - skip),
            owner=owner,
            turn_id=turn_id,
            length=length,
            replaces=str(result["reply"]) if regenerate and result["reply"] else None,
            asked=str(result["asked"]) if regenerate and result["asked"] else None,
            summary=_summary(result["summary"], result["summary_at"]),
            skip=skip,
        )

    async def _claim_turn_id(self, session_id: str, turn_id: str, ms: int) -> None:
        """On a cluster (the id's key is in another slot than the session's): record
        the turn id's session first, refusing an id another session holds."""
        key = turn_session_key(turn_id)
        try:
            claimed = await self._redis.set(key, session_id, nx=True, px=ms)
            home = None if claimed else await self._redis.get(key)
        except ResponseError as exc:  # the key's node refuses writes (out of memory, ...)
            raise StoreUnavailable(f"the turn id cannot be recorded: {exc}") from exc
        if home is not None and home != session_id:
            raise BadInput("that turn id belongs to another session")

    async def renew_lock(self, session_id: str, token: str, turn_id: str) -> bool:
        """Keep the turn's lock, its record, its stream, its id's session, and the
        session itself (a running turn keeps its session alive)."""
        keep_ms = self._replay_ms + self._lock_ms
        keys = {
            "lock": lock_key(session_id),
            "active": active_turn_key(session_id),
            "stream": turn_stream_key(session_id, turn_id),
            "turn_ids": turn_ids_key(session_id),
            "meta": meta_key(session_id),
            "messages": messages_key(session_id),
        }
        if self._single:
            keys["turn_session"] = turn_session_key(turn_id)
        held = bool(
            await self._renew(
                keys=keys,
                args={
                    "token": token,
                    "lock_ms": self._lock_ms,
                    "keep_ms": keep_ms,
                    "alive_s": self._alive_seconds,
                    "turn_id": turn_id,
                    "session_id": session_id,
                    "now_ms": time.time_ns() // 1_000_000,
                },
            )
        )
        if held and not self._single:
            with contextlib.suppress(Exception):  # in another slot; a later renewal retries
                await self._redis.set(turn_session_key(turn_id), session_id, px=keep_ms)
        return held

    async def release_lock(self, session_id: str, token: str) -> None:
        """Free the lock and the active turn's record, if the lock is still `token`'s."""
        await self._release(
            keys={"lock": lock_key(session_id), "active": active_turn_key(session_id)},
            args={"token": token},
        )

    async def commit_turn(
        self,
        session_id: str,
        token: str,
        *,
        user_json: str,
        reply_json: str,
        first_message: str,
        owner: str | None = None,
        turn_id: str,
        pending: tuple[int, list[str]] = (1, []),
        status: str = "COMPLETE",
        usage: Usage | None = None,
        replaces: str | None = None,
    ) -> int:
        """Store a finished turn atomically, and end its stream with the done entry
        (after the tokens in `pending`: the first one's seq, the tokens); the outcome
        of `scripts/commit_turn.lua`. A retry after a reply lost on the wire stores
        nothing twice and answers as the first try did."""
        title = " ".join(first_message.split())[:AUTO_TITLE_CHARS]
        keys = {
            "messages": messages_key(session_id),
            "meta": meta_key(session_id),
            "lock": lock_key(session_id),
            "active": active_turn_key(session_id),
            "stream": turn_stream_key(session_id, turn_id),
            "turn_ids": turn_ids_key(session_id),
        }
        if self._single:
            keys["turn_session"] = turn_session_key(turn_id)
            keys["index"] = INDEX_KEY
            if owner is not None:
                keys["owner_index"] = owner_index_key(owner)
        first, tokens = pending
        now = self._now()
        result = int(
            await self._commit(
                keys=keys,
                args={
                    "token": token,
                    "turn_id": turn_id,
                    "user_json": user_json,
                    "reply_json": reply_json,
                    "now": now,
                    "ttl": self._ttl,
                    "session_id": session_id,
                    "title": title,
                    **_token_args(first, tokens),
                    "done_seq": first + len(tokens),
                    "status": status,
                    "keep_ms": self._replay_ms,
                    "cap": TURN_STREAM_CAP,
                    "input_tokens": "" if usage is None else usage.input_tokens,
                    "output_tokens": "" if usage is None else usage.output_tokens,
                    "replaces": replaces or "",
                },
            )
        )
        _check_types(result)
        if result == 1 and not self._single:
            await self._index(session_id, now, owner=owner)
            with contextlib.suppress(Exception):
                await self._redis.set(turn_session_key(turn_id), session_id, px=self._replay_ms)
        return result

    async def turn_stored(self, session_id: str, turn_id: str) -> bool | None:
        """Whether turn `turn_id` was stored: its stream's end says COMPLETE or STOPPED
        (written in the same step as the turn). None while it has no end yet."""
        rows: Any = await self._redis.xrevrange(turn_stream_key(session_id, turn_id), count=1)
        if not rows:
            return None
        entry = _entry(rows[0][0], rows[0][1])
        if not isinstance(entry, TurnEnd):
            return None
        return entry.stored

    async def abandon_turn(
        self,
        session_id: str,
        token: str,
        *,
        turn_id: str,
        pending: tuple[int, list[str]],
        code: str = "",
        message: str = "",
        kept_reply: str | None = None,
    ) -> int:
        """End a turn that stores nothing: free the lock (if still held) and end its
        stream, FAILED with the error's code and message, or, given `kept_reply` (the
        reply that stays, as the list holds it), STOPPED. 1 ended here, 0 it had ended
        already, 2 the session is gone (nothing written)."""
        first, tokens = pending
        result = int(
            await self._abandon(
                keys={
                    "lock": lock_key(session_id),
                    "active": active_turn_key(session_id),
                    "stream": turn_stream_key(session_id, turn_id),
                    "meta": meta_key(session_id),
                },
                args={
                    "token": token,
                    **_token_args(first, tokens),
                    "end_seq": first + len(tokens),
                    "status": "FAILED" if kept_reply is None else "STOPPED",
                    "code": code,
                    "message": message,
                    "reply": kept_reply or "",
                    "keep_ms": self._replay_ms,
                    "cap": TURN_STREAM_CAP,
                },
            )
        )
        _check_types(result)
        return result

    async def flush_turns(
        self, batch: list[tuple[str, str, int, list[str]]]
    ) -> list[tuple[bool, int]]:
        """For each (session id, turn id, first seq, new tokens) of running turns: append
        the tokens (if any) to the turn's stream as one entry, and look whether a stop
        was asked for. Each answer: (the tokens are in the stream, 1 a stop was asked for
        or 2 the session is gone, else 0). On one Redis one pipeline of script calls (what
        the client spends per command is most of the writer's CPU); a cluster pipeline
        takes no scripts, so there the calls go at once, each on its node."""
        calls: list[tuple[dict[str, str], dict[str, EncodableT]]] = [
            (
                {
                    "stream": turn_stream_key(session_id, turn_id),
                    "active": active_turn_key(session_id),
                    "meta": meta_key(session_id),
                },
                {
                    **_token_args(first, tokens),
                    "cap": TURN_STREAM_CAP,
                    "keep_ms": self._replay_ms + self._lock_ms,
                    "turn_id": turn_id,
                },
            )
            for session_id, turn_id, first, tokens in batch
        ]
        answers: list[tuple[bool, int]] = []
        for result in await self._each(self._flush, calls):
            if isinstance(result, BaseException):
                answers.append((False, 0))
            else:
                answers.append((bool(int(result["written"])), int(result["stop"])))
        return answers

    async def _each(
        self, script: Script, calls: list[tuple[dict[str, str], dict[str, EncodableT]]]
    ) -> list[Any]:
        """One script called for each (keys, args): on one Redis in one pipeline; a
        cluster pipeline takes no scripts, so there the calls go at once, each to its
        node. Each result by name, or the exception it raised."""
        if not calls:
            return []
        if self._single:
            async with self._redis.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    await script(keys=keys, args=args, client=pipe)
                raw = await pipe.execute(raise_on_error=False)
            return [r if isinstance(r, BaseException) else script.named(r) for r in raw]
        return list(
            await asyncio.gather(
                *(script(keys=keys, args=args) for keys, args in calls), return_exceptions=True
            )
        )

    async def stop_turn(
        self, session_id: str, turn_id: str | None, *, who: Identity = ANONYMOUS
    ) -> str | None:
        """Ask the running turn (the one named, if any) to stop: its id, or None when
        nothing (or not that turn) is running. NotFound for a turn id never seen here."""
        if turn_id is not None:
            turn_id = check_turn_id(turn_id)
        await self.check_usable(session_id, who=who)
        result = await self._stop(
            keys={
                "active": active_turn_key(session_id),
                "lock": lock_key(session_id),
                "stream": turn_stream_key(session_id, turn_id) if turn_id else meta_key(session_id),
            },
            args={"turn_id": turn_id or ""},
        )
        outcome = int(result["outcome"])
        _check_types(outcome)
        if outcome < 0:
            raise NotFound("no turn with that id on this session")
        return str(result["turn_id"]) if outcome == 1 else None

    async def active_turn(self, session_id: str, *, who: Identity = ANONYMOUS) -> ActiveTurn | None:
        """The turn running on the session, if any (NotFound when `who` may not use it)."""
        check_session_id(session_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(meta_key(session_id), messages_key(session_id))
            pipe.hget(meta_key(session_id), "owner")
            pipe.hmget(active_turn_key(session_id), ["turn_id", "token", "started_at", "message"])
            pipe.get(lock_key(session_id))
            exists, owner, active, held = await pipe.execute()
        if not exists or not who.may_use(owner):
            raise NotFound(_NOT_FOUND)
        turn_id, token, started, message = active
        if turn_id is None or held is None or held != token:
            return None
        return ActiveTurn(
            turn_id=str(turn_id), started_at=_from_micros(started), message=str(message or "")
        )

    async def turn_running(self, session_id: str, turn_id: str) -> bool:
        """Whether turn `turn_id` holds the session's lock (its process is alive)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(active_turn_key(session_id), ["turn_id", "token"])
            pipe.get(lock_key(session_id))
            (running_id, token), held = await pipe.execute()
        return running_id == turn_id and held is not None and held == token

    async def session_exists(self, session_id: str) -> bool:
        return bool(await self._redis.exists(meta_key(session_id), messages_key(session_id)))

    async def turn_entries(
        self, session_id: str, turn_id: str, after: int, *, block_ms: int | None = None
    ) -> list[TokenEntry | TurnEnd]:
        """The turn's stream entries whose last event comes after seq `after`, at most
        a bounded batch; with `block_ms`, waits that long for one (on the blocking pool).
        """
        key = turn_stream_key(session_id, turn_id)
        rows: Any
        if block_ms is None:
            rows = await self._redis.xrange(key, min=f"({after}-0", count=_ENTRIES_PER_READ)
        else:
            reply: Any = await self._blocking.xread(
                {key: f"{after}-0"}, count=_ENTRIES_PER_READ, block=block_ms
            )
            rows = reply[0][1] if reply else []  # RESP2: [[key, entries]]
        return [_entry(entry_id, fields) for entry_id, fields in rows or []]

    async def summary_state(self, session_id: str) -> SummaryState:
        """Where the session's summary is and what it covers, the list's length, and
        the session's epoch (moved by whatever takes messages back)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(
                meta_key(session_id), ["summary_at", "summary_covers", "summary_stale", "epoch"]
            )
            pipe.llen(messages_key(session_id))
            (at, covers, stale, epoch), length = await pipe.execute()
        return SummaryState(
            at=_whole(at),
            covers=_whole(covers, -1),
            length=int(length),
            stale=stale is not None,
            epoch=_whole(epoch, 0),
        )

    async def messages_between(self, session_id: str, first: int, last: int) -> list[StoredMessage]:
        """Messages at positions `first` to `last` (from the oldest), oldest first. The
        indexes count from the list's oldest end, which messages added meanwhile (at
        the newest end) do not move."""
        if last < first:
            return []
        raw = await self._redis.lrange(messages_key(session_id), -(last + 1), -(first + 1))
        return decode_newest_first(raw, last + 1)

    async def store_summary(
        self, session_id: str, *, text_json: str, covers: int, at: int | None, epoch: int
    ) -> bool:
        """Keep a summary in the list: in the place of the old one (`at`), or as the newest
        message when there is none yet (only while no turn runs, whose new messages'
        positions it would move). Only while the session's epoch is still `epoch`: a
        summary of messages taken back since is never kept. Whether it was kept."""
        result = await self._summarize(
            keys={
                "messages": messages_key(session_id),
                "meta": meta_key(session_id),
                "lock": lock_key(session_id),
            },
            args={
                "summary": text_json,
                "covers": covers,
                "at": -1 if at is None else at,
                "epoch": epoch,
            },
        )
        return bool(int(result))

    async def turn_exists(self, session_id: str, turn_id: str) -> bool:
        """Whether the session has turn `turn_id`, running or ended and still kept."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(turn_stream_key(session_id, turn_id))
            pipe.hget(active_turn_key(session_id), "turn_id")
            kept, running = await pipe.execute()
        return bool(kept) or running == turn_id

    async def _index(self, session_id: str, score: int, *, owner: str | None) -> None:
        """Move a session's index entries on a cluster, after the step that stored it.

        The turn is stored whatever happens here: a failure is kept in a backlog that
        `repair_index` writes later, never reported as a failed turn (whose sender would
        then store it twice).
        """
        indexes = [INDEX_KEY] if owner is None else [INDEX_KEY, owner_index_key(owner)]
        for index in indexes:
            try:
                await self._redis.zadd(index, {session_id: score}, gt=True)
            except Exception as exc:
                logger.warning(
                    "index entry of session %s left for repair: %s",
                    session_id,
                    type(exc).__name__,
                )
                entry = (index, session_id)
                self._index_backlog[entry] = max(score, self._index_backlog.get(entry, 0))

    async def repair_index(self) -> int:
        """Write the index entries that failed after their commit; how many remain."""
        while self._index_backlog:
            (index, session_id), score = next(iter(self._index_backlog.items()))
            # Deleted meanwhile (perhaps by another process): no entry to bring back.
            if await self._redis.exists(meta_key(session_id)):
                await self._redis.zadd(index, {session_id: score}, gt=True)
            if self._index_backlog.get((index, session_id)) == score:
                del self._index_backlog[(index, session_id)]
        return len(self._index_backlog)

    async def move_owner(self, old: str, new: str) -> int:
        """Give every session `old` owns to `new` (a legacy guest id's to its prefixed
        one), a batch at a time; how many moved."""
        moved = 0
        source, target = owner_index_key(old), owner_index_key(new)
        for _ in range(MAX_OWNED_BATCHES):
            entries: Any = await self._redis.zrange(source, 0, 499, withscores=True)
            if not entries:
                break
            scores = {str(member): float(score) for member, score in entries}
            ids = list(scores)
            done = await self._each(
                self._move,
                [({"meta": meta_key(sid)}, {"old": old, "new": new}) for sid in ids],
            )
            mine = {
                sid: scores[sid]
                for sid, result in zip(ids, done, strict=True)
                if not isinstance(result, BaseException) and int(result)
            }
            if mine:
                await self._redis.zadd(target, mine)
            await self._redis.zrem(source, *ids)
            moved += len(mine)
        return moved

    def _adopt_keys(self, session_id: str) -> dict[str, str]:
        keys = {"messages": messages_key(session_id), "meta": meta_key(session_id)}
        return {**keys, "index": INDEX_KEY} if self._single else keys

    def _adopt_args(self, session_id: str, now: int) -> dict[str, EncodableT]:
        return {
            "now": now,
            "session_id": session_id,
            "prompt": self._default_prompt,
            "ttl": self._ttl,
        }

    async def _adopt_one(self, session_id: str) -> bool:
        now = self._now()
        adopted = bool(
            await self._adopt(
                keys=self._adopt_keys(session_id), args=self._adopt_args(session_id, now)
            )
        )
        if adopted and not self._single:
            await self._redis.zadd(INDEX_KEY, {session_id: now}, nx=True)
        return adopted

    async def adopt_orphans(self, *, batch: int = 500, pause: float = 0.01) -> int:
        """Give every `message_store:<uuid>` without metadata its metadata and index entry.

        Runs in the background at start: SCAN (every primary, on a cluster) in bounded
        batches, one pipelined round of scripts per batch, a short pause between
        batches to leave room for traffic.
        """
        adopted = 0
        found: list[str] = []
        async for key in self._redis.scan_iter(match=f"{MESSAGES_PREFIX}*", count=batch):
            session_id = str(key)[len(MESSAGES_PREFIX) :]
            if is_session_id(session_id):
                found.append(session_id)
            if len(found) >= batch:
                adopted += await self._adopt_batch(found)
                found = []
                await asyncio.sleep(pause)
        if found:
            adopted += await self._adopt_batch(found)
        return adopted

    async def _adopt_batch(self, ids: list[str]) -> int:
        now = self._now()
        results: list[int] = []
        # A bounded group at a time (on a cluster the calls of a group go at once).
        for start in range(0, len(ids), 50):
            group = ids[start : start + 50]
            done = await self._each(
                self._adopt, [(self._adopt_keys(sid), self._adopt_args(sid, now)) for sid in group]
            )
            for result in done:
                if isinstance(result, BaseException):
                    raise result
                results.append(int(result))
        if self._single:
            return sum(results)
        newly = {sid: now for sid, done in zip(ids, results, strict=True) if done}
        if newly:
            await self._redis.zadd(INDEX_KEY, newly, nx=True)
        return sum(results)

    @staticmethod
    def _info(
        session_id: str, meta: Mapping[str, str], count: int, usage: Usage = NO_USAGE
    ) -> SessionInfo:
        return SessionInfo(
            id=session_id,
            title=meta.get("title") or None,
            system_prompt=meta.get("system_prompt"),
            created_at=_from_micros(meta.get("created_at")),
            updated_at=_from_micros(meta.get("updated_at")),
            message_count=count,
            owner_id=meta.get("owner") or None,
            usage=usage,
        )


@dataclass(frozen=True, slots=True)
class SummaryState:
    at: int | None  # the summary's position, None when there is none
    covers: int  # the last position it covers (-1: none)
    length: int  # the list's length
    stale: bool  # a rewind took back what it covers
    epoch: int  # moved by whatever takes messages back


def _whole(value: Any, default: int | None = None) -> Any:
    """A whole number another program may have left as anything: the default if not."""
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _caller(who: Identity | None) -> dict[str, str]:
    if who is None:
        return {"admin": "*", "user": ""}
    return {"admin": "1" if who.is_admin else "0", "user": who.user_id or ""}


def _check_types(outcome: int) -> None:
    if outcome == -9:
        raise DataConflict(
            "a key of this session holds a value of another type (another program wrote "
            "it); nothing was changed"
        )
