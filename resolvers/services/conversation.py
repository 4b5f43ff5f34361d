"""Changing a conversation after the fact: renaming a session or changing its prompt,
paging back through its messages by id, and rewinding it to before a message.

Message ids name a position in the list (see `history.message_id`), so a page or a
rewind finds its message with one `LINDEX` and checks the whole id there, in the same
script that reads or trims: never a read of the whole list.
"""

from __future__ import annotations

from redis.asyncio import Redis, RedisCluster

from resolvers.services.context import ContextPlan, plan_context
from resolvers.services.errors import BadInput, NotFound, SessionBusy
from resolvers.services.history import Role, StoredMessage, decode_newest_first, position_of
from resolvers.services.identity import ANONYMOUS, Identity
from resolvers.services.keys import lock_key, messages_key, meta_key
from resolvers.services.sessions import COUNTED_LUA, MAX_PAGE, SessionInfo, SessionStore
from resolvers.services.validation import check_session_id

# The id of the element `raw` at `position`: its own `message_id`, or its position.
_ID_AT_LUA = """
local function id_at(raw, position)
  local ok, data = pcall(cjson.decode, raw)
  if ok and type(data) == 'table' and type(data['data']) == 'table' then
    local extra = data['data']['additional_kwargs']
    if type(extra) == 'table' and type(extra['message_id']) == 'string'
        and extra['message_id'] ~= '' then
      return extra['message_id']
    end
  end
  return tostring(position)
end
local function owner_refuses(owner)
  return owner and ARGV[1] ~= '1' and owner ~= ARGV[2]
end
"""

# KEYS: messages, meta. ARGV: '1' admin, caller's user id, last, position of `before`
# (-1: none), its id. Returns {0} no session (or not the caller's), {-2} no message with
# that id, or {1, list length, the elements before it (newest first), newest position}.
_PAGE = (
    _ID_AT_LUA
    + """
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then return {0} end
if owner_refuses(redis.call('HGET', KEYS[2], 'owner')) then return {0} end
local n = redis.call('LLEN', KEYS[1])
local upto = n
local p = tonumber(ARGV[4])
if p >= 0 then
  if p >= n or id_at(redis.call('LINDEX', KEYS[1], n - 1 - p), p) ~= ARGV[5] then
    return {-2}
  end
  upto = p
end
local from = math.max(0, upto - tonumber(ARGV[3]))
if upto <= from then return {1, n, {}, upto - 1} end
return {1, n, redis.call('LRANGE', KEYS[1], n - upto, n - 1 - from), upto - 1}
"""
)

# KEYS: messages, meta, lock. ARGV: '1' admin, caller's user id, position, id. Returns
# {0} no session (or not the caller's), {-1} a turn is running, {-2} no message with that
# id, {1} the message and every later one forgotten.
_REWIND = (
    _ID_AT_LUA
    + COUNTED_LUA
    + """
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then return {0} end
if owner_refuses(redis.call('HGET', KEYS[2], 'owner')) then return {0} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {-1} end
local n = redis.call('LLEN', KEYS[1])
local p = tonumber(ARGV[3])
if p >= n or id_at(redis.call('LINDEX', KEYS[1], n - 1 - p), p) ~= ARGV[4] then
  return {-2}
end
-- The session's usage is a sum over its replies: the forgotten ones' counts leave it.
local spent_in, spent_out = 0, 0
for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, n - p - 1)) do
  local tokens_in, tokens_out = counted(raw)
  spent_in = spent_in + tokens_in
  spent_out = spent_out + tokens_out
end
if spent_in ~= 0 or spent_out ~= 0 then
  redis.call('HINCRBY', KEYS[2], 'input_tokens', -spent_in)
  redis.call('HINCRBY', KEYS[2], 'output_tokens', -spent_out)
end
if p == 0 then redis.call('DEL', KEYS[1]) else redis.call('LTRIM', KEYS[1], n - p, -1) end
-- A summary that was forgotten goes with its place; one that covered forgotten messages
-- covers no more than what is left.
local at = tonumber(redis.call('HGET', KEYS[2], 'summary_at') or '')
if at and at >= p then redis.call('HDEL', KEYS[2], 'summary_at', 'summary_covers') end
-- One kept that summarized forgotten messages is stale: not sent, and rebuilt anew.
local covers = tonumber(redis.call('HGET', KEYS[2], 'summary_covers') or '')
if covers and covers >= p and redis.call('HEXISTS', KEYS[2], 'summary_at') == 1 then
  redis.call('HSET', KEYS[2], 'summary_stale', '1', 'summary_covers', -1)
end
return {1}
"""
)

# KEYS: meta. ARGV: '1' admin, caller's user id, title ('' keep, '-' clear, '=<title>'
# set), prompt ('' keep, '=<prompt>' set). Returns {0} no session (or not the caller's),
# {1} changed.
_UPDATE = (
    _ID_AT_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
if owner_refuses(redis.call('HGET', KEYS[1], 'owner')) then return {0} end
if ARGV[3] == '-' then redis.call('HDEL', KEYS[1], 'title') end
if string.sub(ARGV[3], 1, 1) == '=' then
  redis.call('HSET', KEYS[1], 'title', string.sub(ARGV[3], 2))
end
if string.sub(ARGV[4], 1, 1) == '=' then
  redis.call('HSET', KEYS[1], 'system_prompt', string.sub(ARGV[4], 2))
end
return {1}
"""
)

_NO_SESSION = "no session with that id"
_NO_MESSAGE = "no message with that id in this session"


class Conversations:
    """Edits and reads of a session's conversation; ownership as for every session
    operation (NotFound for a session `who` may not use)."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        sessions: SessionStore,
        *,
        history_window: int = 40,
        history_tokens: int = 8000,
        summaries: bool = False,
    ) -> None:
        self._redis = redis
        self._sessions = sessions
        self._window = history_window
        self._history_tokens = history_tokens
        self._summaries = summaries
        self._page = redis.register_script(_PAGE)
        self._rewind = redis.register_script(_REWIND)
        self._update = redis.register_script(_UPDATE)

    async def update(
        self,
        session_id: str,
        *,
        title: str | None,
        system_prompt: str | None,
        who: Identity = ANONYMOUS,
    ) -> SessionInfo:
        """Change the title and the system prompt (None: unchanged; a blank title
        clears it, a blank prompt restores the default); the session as it now is."""
        title, system_prompt = self._sessions.check_fields(title, system_prompt)
        await self._sessions.require(session_id, who=who)  # adopts a foreign list first
        title_arg = "" if title is None else ("=" + title if title.strip() else "-")
        prompt_arg = "" if system_prompt is None else "=" + system_prompt
        outcome = await self._update(
            keys=[meta_key(session_id)], args=[*_caller(who), title_arg, prompt_arg]
        )
        if int(outcome[0]) == 0:
            raise NotFound(_NO_SESSION)
        return await self._sessions.require(session_id, who=who)

    async def page(
        self,
        session_id: str,
        *,
        last: int,
        before: str | None,
        who: Identity = ANONYMOUS,
    ) -> list[StoredMessage]:
        """The last `last` messages before the message `before` (all the latest when
        None), oldest first, in one round trip whatever the session's length."""
        check_session_id(session_id)
        if not 0 <= last <= MAX_PAGE:
            raise BadInput(f"last must be from 0 to {MAX_PAGE}")
        position = -1 if before is None else _position(before)
        result = await self._page(
            keys=[messages_key(session_id), meta_key(session_id)],
            args=[*_caller(who), last, position, before or ""],
        )
        outcome = int(result[0])
        if outcome == 0:
            raise NotFound(_NO_SESSION)
        if outcome == -2:
            raise BadInput(_NO_MESSAGE)
        return decode_newest_first(result[2], int(result[3]) + 1)

    async def context(self, session_id: str, *, who: Identity = ANONYMOUS) -> ContextPlan:
        """What the next turn would send: the same choice the turn makes, on the same
        reads (the system prompt, the window, the list's length)."""
        check_session_id(session_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(meta_key(session_id), messages_key(session_id))
            pipe.hmget(
                meta_key(session_id), ["owner", "system_prompt", "summary_at", "summary_stale"]
            )
            pipe.llen(messages_key(session_id))
            if self._window:
                pipe.lrange(messages_key(session_id), 0, self._window - 1)
            exists, (owner, prompt, at, stale), length, *read = await pipe.execute()
        if not exists or not who.may_use(owner):
            raise NotFound(_NO_SESSION)
        length = int(length)
        window = decode_newest_first(read[0] if read else [], length)
        summary = None
        if self._summaries and at is not None and stale is None and int(at) < length:
            found = await self._sessions.messages_between(session_id, int(at), int(at))
            summary = found[0] if found and found[0].role is Role.SYSTEM else None
        return plan_context(
            self._sessions.prompt_or_default(prompt),
            window,
            total=length,
            max_tokens=self._history_tokens,
            summary=summary,
        )

    async def rewind(
        self, session_id: str, message_id: str, *, who: Identity = ANONYMOUS
    ) -> SessionInfo:
        """Forget the message `message_id` and every later one, at once; SessionBusy
        while a turn runs. The session as it now is."""
        check_session_id(session_id)
        position = _position(message_id)
        result = await self._rewind(
            keys=[messages_key(session_id), meta_key(session_id), lock_key(session_id)],
            args=[*_caller(who), position, message_id],
        )
        outcome = int(result[0])
        if outcome == 0:
            raise NotFound(_NO_SESSION)
        if outcome == -1:
            raise SessionBusy("a turn is running on this session; stop it or wait")
        if outcome == -2:
            raise BadInput(_NO_MESSAGE)
        return await self._sessions.require(session_id, who=who)


def _caller(who: Identity) -> list[str]:
    return ["1" if who.is_admin else "0", who.user_id or ""]


# Longer than any id this server gives (a position, a dot, eight hex digits).
MAX_MESSAGE_ID_CHARS = 64


def _position(message_id: str) -> int:
    if not isinstance(message_id, str) or len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise BadInput("message id is not one this server gave")
    position = position_of(message_id)
    if position is None:
        raise BadInput("message id is not one this server gave")
    return position
