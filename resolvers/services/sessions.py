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

from resolvers.services.errors import BadInput, NotFound, SessionBusy, StoreUnavailable
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
    active_turn_key,
    lock_key,
    messages_key,
    meta_key,
    owner_index_key,
    turn_session_key,
    turn_stream_key,
)
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

# The tokens a stored element added to its session's usage: a reply this server stored
# (it carries a message_id) with the provider's counts; 0, 0 for anything else.
COUNTED_LUA = """
local function counted(raw)
  local ok, data = pcall(cjson.decode, raw)
  local fields = ok and type(data) == 'table' and type(data['data']) == 'table' and data['data']
  local extra = fields and type(fields['additional_kwargs']) == 'table'
    and fields['additional_kwargs']
  local counts = extra and type(extra['message_id']) == 'string' and fields['usage_metadata']
  if type(counts) == 'table' and tonumber(counts['input_tokens'])
      and tonumber(counts['output_tokens']) then
    return tonumber(counts['input_tokens']), tonumber(counts['output_tokens'])
  end
  return 0, 0
end
"""

# Appends the tokens not yet in a turn's stream as one entry, then (optionally) an end
# entry. Entry ids are `<seq>-0`, seq the number of the entry's last event; an entry of
# tokens holds the first one's seq (`f`) and the tokens as a JSON list (`t`). A retried
# write (a reply lost on the wire) finds its ids taken and changes nothing.
_APPEND_LUA = """
local function append(key, first, last, tokens, maxlen)
  if tokens ~= '' then
    redis.pcall('XADD', key, 'MAXLEN', '~', maxlen, last .. '-0', 'f', first, 't', tokens)
  end
end
"""

# Writes a finished turn, only while the caller still holds the session's lock, and ends
# the turn's stream with the done entry in the same step.
# KEYS: messages, meta, lock, active turn, turn stream[, turn's session, index[, owner's
# index]] (the last three on one Redis only: on a cluster they live in other slots, and
# the caller writes them after a successful commit).
# ARGV: token, user json, reply json, now (us), ttl (s), session id, title guess,
# first seq, last seq, tokens json (or ''), done seq, status, replay ms, stream cap,
# the reply's input and output tokens ('' when the provider gave none), the reply it
# replaces ('' for a new turn; the user message is then not written).
# Returns 1 stored (also when this very turn was stored by an earlier try of the same
# call), 0 session deleted meanwhile, -1 lock lost, -3 the reply to replace is no longer
# the last message.
_COMMIT_TURN = (
    _APPEND_LUA
    + COUNTED_LUA
    + """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  if redis.call('HGET', KEYS[2], 'last_turn') == ARGV[1] then return 1 end
  return -1
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[3], KEYS[4])
  return 0
end
if ARGV[17] == '' then
  redis.call('LPUSH', KEYS[1], ARGV[2], ARGV[3])
else
  -- A regenerated reply takes the old one's place, if it is still the last message;
  -- the session's usage, a sum over its replies, loses the old one's.
  local place = 0
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[17] then
    local ok_top, top = pcall(cjson.decode, redis.call('LINDEX', KEYS[1], 0) or '')
    local below_summary = ok_top and type(top) == 'table' and top['type'] == 'system'
    if not below_summary or redis.call('LINDEX', KEYS[1], 1) ~= ARGV[17] then return -3 end
    place = 1
  end
  redis.call('LSET', KEYS[1], place, ARGV[3])
  local spent_in, spent_out = counted(ARGV[17])
  if spent_in ~= 0 or spent_out ~= 0 then
    redis.call('HINCRBY', KEYS[2], 'input_tokens', -spent_in)
    redis.call('HINCRBY', KEYS[2], 'output_tokens', -spent_out)
  end
end
redis.call('HSET', KEYS[2], 'updated_at', ARGV[4], 'last_turn', ARGV[1])
if ARGV[7] ~= '' then redis.call('HSETNX', KEYS[2], 'title', ARGV[7]) end
if ARGV[15] ~= '' then
  redis.call('HINCRBY', KEYS[2], 'input_tokens', ARGV[15])
  redis.call('HINCRBY', KEYS[2], 'output_tokens', ARGV[16])
end
if #KEYS >= 7 then redis.call('ZADD', KEYS[7], ARGV[4], ARGV[6]) end
if #KEYS >= 8 then redis.call('ZADD', KEYS[8], ARGV[4], ARGV[6]) end
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
append(KEYS[5], ARGV[8], ARGV[9], ARGV[10], ARGV[14])
redis.pcall('XADD', KEYS[5], 'MAXLEN', '~', ARGV[14], ARGV[11] .. '-0', 's', ARGV[12], 'm', ARGV[3])
redis.call('PEXPIRE', KEYS[5], ARGV[13])
if #KEYS >= 6 then redis.call('SET', KEYS[6], ARGV[6], 'PX', ARGV[13]) end
redis.call('DEL', KEYS[3], KEYS[4])
return 1
"""
)

# Ends a turn that will not be stored: frees the lock if this turn still holds it, and
# ends the stream with a FAILED entry (followers learn why at once).
# KEYS: lock, active turn, turn stream. ARGV: token, first seq, last seq, tokens json (or
# ''), end seq, code, message, replay ms, stream cap.
_FAIL_TURN = (
    _APPEND_LUA
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('HGET', KEYS[2], 'token') == ARGV[1] then redis.call('DEL', KEYS[2]) end
append(KEYS[3], ARGV[2], ARGV[3], ARGV[4], ARGV[9])
redis.pcall('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], ARGV[5] .. '-0',
  's', 'FAILED', 'c', ARGV[6], 'e', ARGV[7])
redis.call('PEXPIRE', KEYS[3], ARGV[8])
return 1
"""
)

# A running turn's new tokens, and a look for a stop, in one command (one Redis: a cluster
# pipeline takes no scripts). KEYS: turn stream, active turn. ARGV: first seq, last seq,
# tokens json (or '' to only look), stream cap, stream ms, turn id. Returns {written (0
# when Redis refused the entry: its id is taken), stop asked (1 or 0)}.
_FLUSH_TURN = """
local written = 1
if ARGV[3] ~= '' then
  local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], ARGV[2] .. '-0',
    'f', ARGV[1], 't', ARGV[3])
  if type(added) == 'table' and added.err then written = 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
local active = redis.call('HMGET', KEYS[2], 'turn_id', 'stop')
if active[1] == ARGV[6] and active[2] then return {written, 1} end
return {written, 0}
"""

# Asks the running turn to stop (its process watches the `stop` field). KEYS: active
# turn, lock, the named turn's stream (any key of the slot when no turn is named).
# ARGV: turn id or ''. Returns {1, turn id} asked, {0} nothing running (or the named turn
# has ended), {-1} no such turn.
_STOP_TURN = """
local active = redis.call('HMGET', KEYS[1], 'turn_id', 'token')
local running = active[1] and redis.call('GET', KEYS[2]) == active[2]
if running and (ARGV[1] == '' or ARGV[1] == active[1]) then
  redis.call('HSET', KEYS[1], 'stop', '1')
  return {1, active[1]}
end
if ARGV[1] == '' or active[1] == ARGV[1] or redis.call('EXISTS', KEYS[3]) == 1 then
  return {0}
end
return {-1}
"""

# Takes the session's lock for a new turn and reads what the model needs, in one step;
# or finds the turn with this id already there (to be joined, not run again).
# KEYS: lock, meta, messages, active turn, turn stream[, turn's session, index] (the last
# two on one Redis only). ARGV: token, lock ms, window, ttl (s), now (us), session id,
# caller's user id (or ''), '1' when the caller is an admin, the owners' index prefix,
# turn id, message, the turn's session key ms.
# Returns {0} no such session (or one the caller may not use), {-1} busy, {-2} the turn
# id belongs to another session, {2} the turn exists (join it), or {1, system prompt or
# false, window, owner or false, list length}. A retry of the same call (a reply lost on
# the wire) finds its own token and succeeds. With ARGV[13] '1' the turn regenerates the
# last reply: {-3} unless the list ends with a user message and a reply; the window then
# leaves both out, and the result adds the reply and the user message as stored.
# A started turn is activity: with a TTL, the keys' expiry and the index score move
# together, so the listing never drops a live session (on a cluster the caller moves
# the score, the index being in another slot).
_BEGIN_TURN = """
local function kind_at(index)
  local raw = redis.call('LINDEX', KEYS[3], index)
  local ok, data = pcall(cjson.decode, raw or '')
  if ok and type(data) == 'table' then return data['type'] end
  return nil
end
-- The reply to replace and its message: the newest two, or the two below a summary
-- written after them. Returns reply, asked, asked's text, how many messages they skip.
local function regenerable()
  local offset = 0
  if kind_at(0) == 'system' then offset = 1 end
  local reply = redis.call('LINDEX', KEYS[3], offset)
  local asked = redis.call('LINDEX', KEYS[3], offset + 1)
  if not reply or not asked then return nil end
  local ok_reply, r = pcall(cjson.decode, reply)
  local ok_asked, a = pcall(cjson.decode, asked)
  if not ok_reply or not ok_asked or type(r) ~= 'table' or type(a) ~= 'table' then
    return nil
  end
  if (r['type'] ~= 'ai' and r['type'] ~= 'AIMessageChunk') or a['type'] ~= 'human' then
    return nil
  end
  local text = ''
  if type(a['data']) == 'table' and type(a['data']['content']) == 'string' then
    text = a['data']['content']
  end
  return reply, asked, text, offset + 2
end
local held = redis.call('GET', KEYS[1])
if redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then
  if held == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[4]) end
  return {0}
end
local owner = redis.call('HGET', KEYS[2], 'owner')
if owner and ARGV[8] ~= '1' and owner ~= ARGV[7] then
  if held == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[4]) end
  return {0}
end
if #KEYS >= 6 then
  local home = redis.call('GET', KEYS[6])
  if home and home ~= ARGV[6] then return {-2} end
end
local regenerating = ARGV[13] == '1'
if held ~= ARGV[1] then
  if redis.call('EXISTS', KEYS[5]) == 1 then return {2} end
  if held and redis.call('HGET', KEYS[4], 'turn_id') == ARGV[10] then return {2} end
  if held then return {-1} end
  local message = ARGV[11]
  if regenerating then
    local reply, asked, text = regenerable()
    if not reply then return {-3} end
    message = text
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('DEL', KEYS[4])
  redis.call('HSET', KEYS[4], 'turn_id', ARGV[10], 'token', ARGV[1], 'started_at', ARGV[5],
    'message', message)
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
  if #KEYS >= 6 then redis.call('SET', KEYS[6], ARGV[6], 'PX', ARGV[12]) end
end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  if #KEYS >= 7 then
    redis.call('ZADD', KEYS[7], 'GT', ARGV[5], ARGV[6])
    -- One node only (a cluster's caller writes the indexes): the owner's index is named
    -- by what the hash holds.
    if owner then redis.call('ZADD', ARGV[9] .. owner, 'GT', ARGV[5], ARGV[6]) end
  end
end
local prompt = redis.call('HGET', KEYS[2], 'system_prompt')
local window = {}
local n = tonumber(ARGV[3])
local skip = 0
local reply, asked = false, false
if regenerating then
  local _
  reply, asked, _, skip = regenerable()
  skip = skip or 2
end
if n > 0 then window = redis.call('LRANGE', KEYS[3], skip, skip + n - 1) end
local length = redis.call('LLEN', KEYS[3])
local summary = false
local at = tonumber(redis.call('HGET', KEYS[2], 'summary_at') or '')
if at and at < length and not redis.call('HGET', KEYS[2], 'summary_stale') then
  summary = redis.call('LINDEX', KEYS[3], length - 1 - at)
end
return {1, prompt, window, owner, length, reply or false, asked or false, summary, at or false,
  skip}
"""

# Keeps a summary of trimmed history in the list. KEYS: messages, meta, lock. ARGV: the
# summary element, the last position it covers, the old summary's position (-1: none).
# Returns 1 kept, 0 not (the session is gone, its covered messages were rewound, or a turn
# runs and there is no summary to replace: a new element would move the positions the
# turn gave its messages).
_SUMMARIZE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local length = redis.call('LLEN', KEYS[1])
-- The messages it covers were rewound meanwhile: it summarizes what is gone.
if tonumber(ARGV[2]) >= length then return 0 end
local at = tonumber(ARGV[3])
local stored_at = redis.call('HGET', KEYS[2], 'summary_at')
-- Another process wrote one meanwhile, or covered more: this one is not needed.
if at < 0 and stored_at then return 0 end
if not redis.call('HGET', KEYS[2], 'summary_stale')
    and tonumber(ARGV[2]) <= tonumber(redis.call('HGET', KEYS[2], 'summary_covers') or '-1') then
  return 0
end
local function is_summary(raw)
  local ok, data = pcall(cjson.decode, raw or '')
  return ok and type(data) == 'table' and data['type'] == 'system'
end
if at >= 0 and at < length and redis.call('HGET', KEYS[2], 'summary_at') == ARGV[3]
    and is_summary(redis.call('LINDEX', KEYS[1], length - 1 - at)) then
  redis.call('LSET', KEYS[1], length - 1 - at, ARGV[1])
elseif redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('LPUSH', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[2], 'summary_at', length)
else
  return 0
end
redis.call('HSET', KEYS[2], 'summary_covers', ARGV[2])
redis.call('HDEL', KEYS[2], 'summary_stale')
return 1
"""

# KEYS: lock[, active turn]. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', unpack(KEYS)) end
return 0
"""

# KEYS: lock[, active turn, turn stream[, turn's session]]. ARGV: token, lock ms[, stream
# ms, session id].
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if #KEYS >= 3 then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
    redis.call('PEXPIRE', KEYS[3], ARGV[3])
  end
  if #KEYS >= 4 then redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[3]) end
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Gives a message list written by another LangChain program metadata and an index
# entry. KEYS: messages, meta[, index]. ARGV: now (us), session id, default prompt, ttl.
_ADOPT = """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'created_at', ARGV[1], 'updated_at', ARGV[1],
  'system_prompt', ARGV[3])
if #KEYS >= 3 then redis.call('ZADD', KEYS[3], 'NX', ARGV[1], ARGV[2]) end
if tonumber(ARGV[4]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return 1
"""


# Stream entries read at once (each holds many tokens).
_ENTRIES_PER_READ = 500


def _token_args(first: int, tokens: list[str]) -> list[EncodableT]:
    """The first seq, the last seq and the JSON list of tokens (or '' for none)."""
    if not tokens:
        return [first, first, ""]
    return [first, first + len(tokens) - 1, json.dumps(tokens, ensure_ascii=False)]


def _summary(raw: Any, at: Any) -> StoredMessage | None:
    """The summary element read with a turn's start (its id is its position)."""
    if raw is None or at is None:
        return None
    found = decode(str(raw), int(at))
    return found if found is not None and found.role is Role.SYSTEM else None


def _micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def _from_micros(value: bytes | str | int | None) -> datetime:
    return datetime.fromtimestamp(int(value or 0) / 1_000_000, tz=UTC)


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


def _entry(entry_id: Any, fields: Mapping[Any, Any]) -> TokenEntry | TurnEnd:
    """A stream entry as `_APPEND_LUA`, `flush_turns` and the end scripts write it."""
    seq = int(str(entry_id).partition("-")[0])
    values = {str(k): str(v) for k, v in fields.items()}
    if "t" in values:
        tokens = json.loads(values["t"])
        return TokenEntry(seq=seq, first=int(values["f"]), tokens=[str(t) for t in tokens])
    return TurnEnd(
        seq=seq,
        status=values.get("s", "FAILED"),
        reply_json=values.get("m"),
        code=values.get("c"),
        message=values.get("e"),
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
        self._begin = redis.register_script(_BEGIN_TURN)
        self._commit = redis.register_script(_COMMIT_TURN)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)
        self._adopt = redis.register_script(_ADOPT)
        self._fail = redis.register_script(_FAIL_TURN)
        self._stop = redis.register_script(_STOP_TURN)
        self._summarize = redis.register_script(_SUMMARIZE)
        self._flush = redis.register_script(_FLUSH_TURN)

    def _now(self) -> int:
        # Strictly increasing within the process, so "most recent first" is exact
        # even for two sessions created in the same microsecond.
        stamp = max(time.time_ns() // 1000, self._last_stamp + 1)
        self._last_stamp = stamp
        return stamp

    async def create(
        self,
        *,
        title: str | None = None,
        system_prompt: str | None = None,
        owner: str | None = None,
    ) -> SessionInfo:
        """A new session; owned by `owner` (a user id), or by nobody when None."""
        title, system_prompt = self.check_fields(title, system_prompt)
        prompt = system_prompt if system_prompt is not None else self._default_prompt
        session_id = str(uuid.uuid4())
        now = self._now()
        fields: dict[FieldT, EncodableT] = {
            "system_prompt": prompt,
            "created_at": now,
            "updated_at": now,
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
        meta, count = await self._read_meta(session_id)
        if not meta and await self._adopt_one(session_id):
            meta, count = await self._read_meta(session_id)
        if not meta or not who.may_use(meta.get("owner")):
            return None
        return self._info(session_id, meta, count)

    async def _read_meta(self, session_id: str) -> tuple[dict[str, str], int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(meta_key(session_id))
            pipe.llen(messages_key(session_id))
            meta, count = await pipe.execute()
        return meta, int(count)

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
        """False when there is no such session, or `who` may not use it."""
        usable, owner = await self._owner_if_usable(session_id, who)
        if not usable:
            return False
        for entry in [e for e in self._index_backlog if e[1] == session_id]:
            del self._index_backlog[entry]
        async with self._redis.pipeline(transaction=self._single) as pipe:
            pipe.delete(meta_key(session_id), messages_key(session_id))
            pipe.zrem(INDEX_KEY, session_id)
            if owner is not None:
                pipe.zrem(owner_index_key(owner), session_id)
            deleted = (await pipe.execute())[0]
        return bool(deleted)

    async def messages(
        self, session_id: str, *, last: int | None = None, who: Identity = ANONYMOUS
    ) -> list[StoredMessage]:
        """The last `last` messages (all when None), oldest first."""
        check_session_id(session_id)
        if last is not None and last < 0:
            raise BadInput("last must not be negative")
        if last == 0:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(meta_key(session_id), "owner")
            pipe.lrange(messages_key(session_id), 0, -1 if last is None else last - 1)
            pipe.llen(messages_key(session_id))
            owner, raw, length = await pipe.execute()
        if not who.may_use(owner):
            raise NotFound(_NOT_FOUND)
        return decode_newest_first(raw, int(length))

    async def turns(self, session_id: str, *, who: Identity = ANONYMOUS) -> list[TurnPair]:
        """The session's turns, oldest first; NotFound when there is no session."""
        check_session_id(session_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(meta_key(session_id), messages_key(session_id))
            pipe.hget(meta_key(session_id), "owner")
            pipe.lrange(messages_key(session_id), 0, -1)
            exists, owner, raw = await pipe.execute()
        if not exists or not who.may_use(owner):
            raise NotFound(_NOT_FOUND)
        return pair_turns(decode_newest_first(raw))

    async def _prune_expired(self, index: str) -> None:
        if self._ttl:
            oldest = self._now() - self._ttl * 1_000_000
            await self._redis.zremrangebyscore(index, "-inf", f"({oldest}")

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
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id, _ in entries:
                pipe.hmget(meta_key(session_id), _LISTED_FIELDS)
                pipe.llen(messages_key(session_id))
            replies = await pipe.execute() if entries else []
        sessions, cursors = [], []
        for (session_id, score), values, count in zip(
            entries, replies[::2], replies[1::2], strict=True
        ):
            meta = {k: v for k, v in zip(_LISTED_FIELDS, values, strict=True) if v is not None}
            if meta and (who is None or who.may_use(meta.get("owner"))):
                sessions.append(self._info(session_id, meta, int(count)))
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
        home_ms = self._replay_ms + self._lock_ms
        keys = [
            lock_key(session_id),
            meta_key(session_id),
            messages_key(session_id),
            active_turn_key(session_id),
            turn_stream_key(session_id, turn_id),
        ]
        if self._single:
            keys += [turn_session_key(turn_id), INDEX_KEY]
        elif chosen:
            await self._claim_turn_id(session_id, turn_id, home_ms)
        else:
            # A new random id collides with nothing: its record is for later reuse checks
            # only, and a node that refuses it (in a slot none of the session's keys is
            # in) must not fail the turn.
            try:
                await self._claim_turn_id(session_id, turn_id, home_ms)
            except Exception as exc:
                logger.warning("turn id %s not recorded: %s", turn_id, type(exc).__name__)
        now = self._now()
        result = await self._begin(
            keys=keys,
            args=[
                token,
                self._lock_ms,
                self._window,
                self._ttl,
                now,
                session_id,
                who.user_id or "",
                "1" if who.is_admin else "0",
                owner_index_key(""),
                turn_id,
                message,
                home_ms,
                "1" if regenerate else "0",
            ],
        )
        outcome = int(result[0])
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
        prompt, raw_window = result[1], result[2]
        owner = str(result[3]) if result[3] is not None else None
        length = int(result[4])
        if self._ttl and not self._single:
            await self._index(session_id, now, owner=owner)
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
            window=decode_newest_first(raw_window, length - int(result[9])),
            owner=owner,
            turn_id=turn_id,
            length=length,
            replaces=str(result[5]) if regenerate and result[5] is not None else None,
            asked=str(result[6]) if regenerate and result[6] is not None else None,
            summary=_summary(result[7], result[8]),
            skip=int(result[9]),
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

    async def renew_lock(self, session_id: str, token: str, turn_id: str | None = None) -> bool:
        """Keep the turn's lock (and, given its id, its record, stream and id's session)."""
        keys = [lock_key(session_id)]
        args: list[EncodableT] = [token, self._lock_ms]
        keep_ms = self._replay_ms + self._lock_ms
        if turn_id is not None:
            keys += [active_turn_key(session_id), turn_stream_key(session_id, turn_id)]
            args.append(keep_ms)
            if self._single:
                keys.append(turn_session_key(turn_id))
                args.append(session_id)
        held = bool(await self._renew(keys=keys, args=args))
        if held and turn_id is not None and not self._single:
            with contextlib.suppress(Exception):  # in another slot; a later renewal retries
                await self._redis.set(turn_session_key(turn_id), session_id, px=keep_ms)
        return held

    async def release_lock(self, session_id: str, token: str) -> None:
        """Free the lock and the active turn's record, if the lock is still `token`'s."""
        await self._release(keys=[lock_key(session_id), active_turn_key(session_id)], args=[token])

    async def commit_turn(
        self,
        session_id: str,
        token: str,
        *,
        user_json: str,
        reply_json: str,
        first_message: str,
        owner: str | None = None,
        turn_id: str | None = None,
        pending: tuple[int, list[str]] = (0, []),
        status: str = "COMPLETE",
        usage: Usage | None = None,
        replaces: str | None = None,
    ) -> int:
        """Store a finished turn atomically, and end its stream with the done entry
        (after the tokens in `pending`: the first one's seq, the tokens); see
        `_COMMIT_TURN` for the result."""
        title = " ".join(first_message.split())[:AUTO_TITLE_CHARS]
        turn_id = turn_id or str(uuid.uuid4())
        keys = [
            messages_key(session_id),
            meta_key(session_id),
            lock_key(session_id),
            active_turn_key(session_id),
            turn_stream_key(session_id, turn_id),
        ]
        if self._single:
            keys += [turn_session_key(turn_id), INDEX_KEY]
            if owner is not None:
                keys.append(owner_index_key(owner))
        first, tokens = pending
        now = self._now()
        result = int(
            await self._commit(
                keys=keys,
                args=[
                    token,
                    user_json,
                    reply_json,
                    now,
                    self._ttl,
                    session_id,
                    title,
                    *_token_args(first, tokens),
                    first + len(tokens),
                    status,
                    self._replay_ms,
                    TURN_STREAM_CAP,
                    "" if usage is None else usage.input_tokens,
                    "" if usage is None else usage.output_tokens,
                    replaces or "",
                ],
            )
        )
        if result == 1 and not self._single:
            await self._index(session_id, now, owner=owner)
            with contextlib.suppress(Exception):
                await self._redis.set(turn_session_key(turn_id), session_id, px=self._replay_ms)
        return result

    async def fail_turn(
        self,
        session_id: str,
        token: str,
        *,
        turn_id: str,
        pending: tuple[int, list[str]],
        code: str,
        message: str,
    ) -> None:
        """Free the lock (if still held) and end the turn's stream as FAILED."""
        first, tokens = pending
        await self._fail(
            keys=[
                lock_key(session_id),
                active_turn_key(session_id),
                turn_stream_key(session_id, turn_id),
            ],
            args=[
                token,
                *_token_args(first, tokens),
                first + len(tokens),
                code,
                message,
                self._replay_ms,
                TURN_STREAM_CAP,
            ],
        )

    async def flush_turns(
        self, batch: list[tuple[str, str, int, list[str]]]
    ) -> list[tuple[bool, bool]]:
        """For each (session id, turn id, first seq, new tokens) of running turns: append
        the tokens (if any) to the turn's stream as one entry, and look whether a stop
        was asked for. One pipeline for all of them (on a cluster, one per node). Each
        answer: (the tokens are in the stream, a stop was asked for).

        An entry whose id is taken (a write that landed although its reply was lost, or
        one after the turn's end) is refused by Redis and changes nothing.
        """
        if self._single:
            return await self._flush_turns_scripted(batch)
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id, turn_id, first, tokens in batch:
                stream = turn_stream_key(session_id, turn_id)
                if tokens:
                    fields: dict[FieldT, EncodableT] = {
                        "f": first,
                        "t": json.dumps(tokens, ensure_ascii=False),
                    }
                    last = first + len(tokens) - 1
                    pipe.xadd(
                        stream, fields, id=f"{last}-0", maxlen=TURN_STREAM_CAP, approximate=True
                    )
                    pipe.pexpire(stream, self._replay_ms + self._lock_ms)
                pipe.hmget(active_turn_key(session_id), ["turn_id", "stop"])
            results = iter(await pipe.execute(raise_on_error=False))
        answers: list[tuple[bool, bool]] = []
        for _, turn_id, _, tokens in batch:
            written = True
            if tokens:
                written = not isinstance(next(results), Exception)
                next(results)
            active = next(results)
            stop = isinstance(active, list) and active[0] == turn_id and active[1] is not None
            answers.append((written, stop))
        return answers

    async def _flush_turns_scripted(
        self, batch: list[tuple[str, str, int, list[str]]]
    ) -> list[tuple[bool, bool]]:
        """`flush_turns` on one Redis: one script call a turn instead of three commands
        (what the client spends per command is most of the writer's CPU)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id, turn_id, first, tokens in batch:
                await self._flush(
                    keys=[turn_stream_key(session_id, turn_id), active_turn_key(session_id)],
                    args=[
                        first,
                        first + len(tokens) - 1,
                        json.dumps(tokens, ensure_ascii=False) if tokens else "",
                        TURN_STREAM_CAP,
                        self._replay_ms + self._lock_ms,
                        turn_id,
                    ],
                    client=pipe,  # type: ignore[arg-type]  # redis-py accepts pipelines here
                )
            results = await pipe.execute(raise_on_error=False)
        answers: list[tuple[bool, bool]] = []
        for result in results:
            if isinstance(result, Exception):
                answers.append((False, False))
            else:
                answers.append((bool(int(result[0])), bool(int(result[1]))))
        return answers

    async def stop_turn(
        self, session_id: str, turn_id: str | None, *, who: Identity = ANONYMOUS
    ) -> str | None:
        """Ask the running turn (the one named, if any) to stop: its id, or None when
        nothing (or not that turn) is running. NotFound for a turn id never seen here."""
        if turn_id is not None:
            turn_id = check_turn_id(turn_id)
        await self.check_usable(session_id, who=who)
        result = await self._stop(
            keys=[
                active_turn_key(session_id),
                lock_key(session_id),
                turn_stream_key(session_id, turn_id) if turn_id else meta_key(session_id),
            ],
            args=[turn_id or ""],
        )
        outcome = int(result[0])
        if outcome < 0:
            raise NotFound("no turn with that id on this session")
        return str(result[1]) if outcome == 1 else None

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

    async def summary_state(self, session_id: str) -> tuple[int | None, int, int, bool]:
        """Where the session's summary is (its position, or None), the last position it
        covers (-1: none), the list's length, and whether a rewind made it stale."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(meta_key(session_id), ["summary_at", "summary_covers", "summary_stale"])
            pipe.llen(messages_key(session_id))
            (at, covers, stale), length = await pipe.execute()
        return (
            int(at) if at is not None else None,
            int(covers) if covers is not None else -1,
            int(length),
            stale is not None,
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
        self, session_id: str, *, text_json: str, covers: int, at: int | None
    ) -> bool:
        """Keep a summary in the list: in the place of the old one (`at`), or as the newest
        message when there is none yet (only while no turn runs, whose new messages'
        positions it would move). Whether it was kept."""
        result = await self._summarize(
            keys=[messages_key(session_id), meta_key(session_id), lock_key(session_id)],
            args=[text_json, covers, -1 if at is None else at],
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

    def _adopt_keys(self, session_id: str) -> list[str]:
        keys = [messages_key(session_id), meta_key(session_id)]
        return [*keys, INDEX_KEY] if self._single else keys

    async def _adopt_one(self, session_id: str) -> bool:
        now = self._now()
        adopted = bool(
            await self._adopt(
                keys=self._adopt_keys(session_id),
                args=[now, session_id, self._default_prompt, self._ttl],
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
        if self._single:
            async with self._redis.pipeline(transaction=False) as pipe:
                for session_id in ids:
                    await self._adopt(
                        keys=self._adopt_keys(session_id),
                        args=[now, session_id, self._default_prompt, self._ttl],
                        client=pipe,  # type: ignore[arg-type]  # redis-py accepts pipelines here
                    )
                return sum(int(r) for r in await pipe.execute())
        # A cluster pipeline refuses scripts: run them concurrently, a bounded group at a time.
        results: list[int] = []
        for start in range(0, len(ids), 50):
            group = ids[start : start + 50]
            done = await asyncio.gather(
                *(
                    self._adopt(
                        keys=self._adopt_keys(sid), args=[now, sid, self._default_prompt, self._ttl]
                    )
                    for sid in group
                )
            )
            results += [int(r) for r in done]
        newly = {sid: now for sid, done in zip(ids, results, strict=True) if done}
        if newly:
            await self._redis.zadd(INDEX_KEY, newly, nx=True)
        return sum(results)

    @staticmethod
    def _info(session_id: str, meta: Mapping[Any, Any], count: int) -> SessionInfo:
        fields = {str(k): str(v) for k, v in meta.items()}
        return SessionInfo(
            id=session_id,
            title=fields.get("title") or None,
            system_prompt=fields.get("system_prompt"),
            created_at=_from_micros(fields.get("created_at")),
            updated_at=_from_micros(fields.get("updated_at")),
            message_count=count,
            owner_id=fields.get("owner") or None,
            usage=Usage(
                input_tokens=int(fields.get("input_tokens") or 0),
                output_tokens=int(fields.get("output_tokens") or 0),
            ),
        )
