"""A turn's storage: the session's lock, the running turn's record, the turn's stream of
events, and the step that stores a finished turn (`scripts/commit_turn.lua`) or ends one
that stores nothing. Following and running turns is `turns.py`'s; this is what they
read and write.

Keys are in `keys.py`; every write that must be all or nothing is a script.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError
from redis.typing import EncodableT

from resolvers.services.adoption import Adoption
from resolvers.services.errors import BadInput, NotFound, SessionBusy, StoreUnavailable
from resolvers.services.history import (
    Reasoning,
    Role,
    StoredMessage,
    decode,
    decode_newest_first,
)
from resolvers.services.identity import ANONYMOUS, Identity
from resolvers.services.index import SessionIndex, from_micros, now_micros, owner_keys
from resolvers.services.keys import (
    INDEX_KEY,
    active_turn_key,
    kids_key,
    lock_key,
    messages_key,
    meta_key,
    tree_key,
    turn_ids_key,
    turn_session_key,
    turn_stream_key,
)
from resolvers.services.scripts import Script, caller, each, outcome_of
from resolvers.services.stamping import Stamper
from resolvers.services.usage import Usage
from resolvers.services.validation import check_session_id, check_turn_id, message_position

logger = logging.getLogger(__name__)

AUTO_TITLE_CHARS = 60
_NOT_FOUND = "no session with that id"
# Stream entries read at once (each holds many tokens).
_ENTRIES_PER_READ = 500


def _token_args(first: int, tokens: list[str]) -> dict[str, EncodableT]:
    """The first seq, the last seq and the JSON list of tokens (or '' for none)."""
    if not tokens:
        return {"first": first, "last": first, "tokens": ""}
    last = first + len(tokens) - 1
    # A piece of reasoning is kept as a list of its text, an answer's piece as its text.
    kept = [[t] if type(t) is Reasoning else t for t in tokens]
    return {"first": first, "last": last, "tokens": json.dumps(kept, ensure_ascii=False)}


def _path_id(result: Mapping[str, Any], mode: str, at: str | None) -> str:
    """The id of the message a branch starts at (the last reply's, read off the list,
    when a regenerate names none)."""
    if not mode:
        return ""
    if at is not None:
        return at
    fork_at = int(result["fork_at"])
    found = decode(str(result["reply"]), fork_at) if result["reply"] else None
    return found.id if found is not None else str(fork_at)


def _summary(raw: Any, at: Any) -> StoredMessage | None:
    """The summary element read with a turn's start (its id is its position)."""
    if raw is None or at is None:
        return None
    found = decode(str(raw), int(at))
    return found if found is not None and found.role is Role.SYSTEM else None


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
    # Regenerating: the reply the new one goes beside and its user message, as the list
    # holds them.
    replaces: str | None = None
    asked: str | None = None
    # Editing or regenerating: the position where the new branch starts (the message
    # edited or regenerated, which moves off the path with all after it) and its id.
    fork_at: int | None = None
    fork_id: str = ""
    # The id of the message the turn's first new message follows ('' for none).
    parent: str = ""
    # The summary of trimmed history kept in the list, if there is one.
    summary: StoredMessage | None = None
    # Newest messages left out of the window (from the branch's start on: a regenerate's
    # reply and its message, an edit's message, and all after them).
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
        return TokenEntry(seq=seq, first=first, tokens=[_piece(t) for t in tokens])
    status = values.get("s", "FAILED")
    return TurnEnd(
        seq=seq,
        status=status,
        reply_json=values.get("m"),
        code=values.get("c"),
        message=values.get("e"),
        stored=status != "FAILED" and "u" not in values,
    )


def _piece(kept: Any) -> str:
    """A piece of a reply as `_token_args` keeps it: text, or reasoning as a list of it."""
    if isinstance(kept, list):
        return Reasoning(kept[0]) if kept and isinstance(kept[0], str) else ""
    return str(kept)


# Most entries a turn's stream keeps (approximately; writes are batched, see `turns`).
TURN_STREAM_CAP = 10_000


class TurnStore:
    """Turns in Redis. Every method checks ids before any key is built."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        index: SessionIndex,
        adoption: Adoption,
        default_system_prompt: str,
        history_window: int,
        ttl_seconds: int,
        lock_seconds: float,
        replay_seconds: int = 300,
        blocking: Redis | RedisCluster | None = None,
    ) -> None:
        self._redis = redis
        # Blocking stream reads (XREAD BLOCK) hold a connection each: a pool of their own.
        self._blocking = blocking if blocking is not None else redis
        self._single = isinstance(redis, Redis)
        self._index = index
        self._adoption = adoption
        self._default_prompt = default_system_prompt
        self._window = history_window
        self._ttl = ttl_seconds
        self._lock_ms = int(lock_seconds * 1000)
        self._replay_ms = int(replay_seconds * 1000)
        self._begin = Script(redis, "begin_turn")
        self._stamper = Stamper(redis)
        self._commit = Script(redis, "commit_turn")
        self._release = Script(redis, "release_lock")
        self._renew = Script(redis, "renew_lock")
        self._abandon = Script(redis, "abandon_turn")
        self._stop = Script(redis, "stop_turn")
        self._flush = Script(redis, "flush_turn")

    @property
    def _alive_seconds(self) -> int:
        """A session's time to live while a turn runs: its TTL counts from the turn's
        end, and a process that dies mid-turn leaves it to expire a lock's life later."""
        return self._ttl + math.ceil(self._lock_ms / 1000) if self._ttl else 0

    async def begin_turn(
        self,
        session_id: str,
        *,
        who: Identity = ANONYMOUS,
        turn_id: str | None = None,
        message: str = "",
        mode: str = "",
        at: str | None = None,
    ) -> TurnStart:
        """Take the session's lock for turn `turn_id` (a new id when None) and read what
        the model needs, in one round trip; NotFound as for a missing session when `who`
        may not use it. When a turn with this id is already on the session (running, or
        ended and still kept), nothing is taken: the result says `joined`.

        `mode` "regenerate" (a new reply beside the reply `at`, the last when None) or
        "edit" (`message` beside the user message `at`) starts a branch; "" adds to the
        path."""
        check_session_id(session_id)
        position = -1 if at is None else message_position(at)
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
            "tree": tree_key(session_id),
            "kids": kids_key(session_id),
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
        args: dict[str, EncodableT] = {
            "token": token,
            "lock_ms": self._lock_ms,
            "window": self._window,
            "alive_s": self._alive_seconds,
            "now": now_micros(),
            "session_id": session_id,
            **caller(who),
            "turn_id": turn_id,
            "message": message,
            "keep_ms": keep_ms,
            "mode": mode,
            "position": position,
            "id": at or "",
        }
        result = await self._begin(keys=keys, args=args)
        if outcome_of(result) == -5:
            # Another program's messages would leave the path at the commit: they get ids
            # of their own first, then the turn begins (once more).
            given = await self._stamper.stamp(session_id, int(result["fork_at"]), who=who)
            if at is not None and position in given:
                at = given[position]  # the message named by its place has its own id now
            args.update(now=now_micros(), id=at or "")
            result = await self._begin(keys=keys, args=args)
        outcome = outcome_of(result)
        if outcome == -5:
            raise SessionBusy("another program changed this conversation meanwhile; try again")
        if outcome == 0:
            raise NotFound(_NOT_FOUND)
        if outcome == -1:
            raise SessionBusy("a turn is already running on this session")
        if outcome == -2:
            raise BadInput("that turn id belongs to another session")
        if outcome == -3 and mode == "edit":
            raise BadInput("only a user message can be edited")
        if outcome == -3:
            raise BadInput(
                "nothing to regenerate: that is not a reply to a user message"
                if at is not None
                else "nothing to regenerate: the conversation does not end with a reply"
            )
        if outcome == -4:
            raise BadInput("no message with that id on the session's active path")
        if outcome == 2:
            return TurnStart(token="", system_prompt="", window=[], turn_id=turn_id, joined=True)
        prompt = result["prompt"]
        owner = str(result["owner"]) if result["owner"] is not None else None
        length = int(result["length"])
        skip = int(result["skip"])
        if prompt is None:
            # A list written by another LangChain program and not adopted yet.
            try:
                await self._adoption.one(session_id)
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
            replaces=str(result["reply"]) if mode == "regenerate" and result["reply"] else None,
            asked=str(result["asked"]) if mode == "regenerate" and result["asked"] else None,
            fork_at=int(result["fork_at"]) if mode else None,
            fork_id=_path_id(result, mode, at),
            parent=str(result["parent"] or ""),
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
            "tree": tree_key(session_id),
            "kids": kids_key(session_id),
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
        asked: Sequence[str],
        reply_json: str,
        first_message: str,
        owner: str | None = None,
        turn_id: str,
        pending: tuple[int, list[str]] = (1, []),
        status: str = "COMPLETE",
        usage: Usage | None = None,
        fork_at: int | None = None,
        fork_id: str = "",
        first_id: str = "",
    ) -> int:
        """Store a finished turn atomically (`asked`: the elements it adds before its
        reply, oldest first), and end its stream with the done entry
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
            "tree": tree_key(session_id),
            "kids": kids_key(session_id),
        }
        if self._single:
            keys["turn_session"] = turn_session_key(turn_id)
            keys["index"] = INDEX_KEY
            if owner is not None:
                keys.update(owner_keys(owner))
        first, tokens = pending
        now = now_micros()
        result = int(
            await self._commit(
                keys=keys,
                args={
                    "token": token,
                    "turn_id": turn_id,
                    "asked": json.dumps(list(asked)) if asked else "",
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
                    "fork_at": -1 if fork_at is None else fork_at,
                    "fork_id": fork_id,
                    "first_id": first_id,
                },
            )
        )
        outcome_of(result)
        if result == 1 and not self._single:
            await self._index.place_after(session_id, now, owner=owner)
            with contextlib.suppress(Exception):
                await self._redis.set(turn_session_key(turn_id), session_id, px=self._replay_ms)
        return result

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
        outcome_of(result)
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
        for result in await each(self._flush, self._redis, calls):
            if isinstance(result, BaseException):
                answers.append((False, 0))
            else:
                answers.append((bool(int(result["written"])), int(result["stop"])))
        return answers

    async def stop_turn(
        self, session_id: str, turn_id: str | None, *, who: Identity = ANONYMOUS
    ) -> str | None:
        """Ask the running turn (the one named, if any) to stop: its id, or None when
        nothing (or not that turn) is running. NotFound for a turn id never seen here."""
        check_session_id(session_id)
        if turn_id is not None:
            turn_id = check_turn_id(turn_id)
        result = await self._stop(
            keys={
                "active": active_turn_key(session_id),
                "lock": lock_key(session_id),
                "stream": turn_stream_key(session_id, turn_id) if turn_id else meta_key(session_id),
                "meta": meta_key(session_id),
                "messages": messages_key(session_id),
            },
            args={"turn_id": turn_id or "", **caller(who)},
        )
        outcome = outcome_of(result)
        if outcome == -2:
            raise NotFound(_NOT_FOUND)
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
            turn_id=str(turn_id), started_at=from_micros(started), message=str(message or "")
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

    async def turn_exists(self, session_id: str, turn_id: str) -> bool:
        """Whether the session has turn `turn_id`, running or ended and still kept."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(turn_stream_key(session_id, turn_id))
            pipe.hget(active_turn_key(session_id), "turn_id")
            kept, running = await pipe.execute()
        return bool(kept) or running == turn_id
