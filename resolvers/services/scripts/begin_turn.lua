-- Takes the session's lock for a new turn and reads what the model needs, in one step;
-- or finds the turn with this id already there, to be joined rather than run again.
-- KEYS[1] lock: the session's lock (the running turn's token)
-- KEYS[2] meta: the session's metadata
-- KEYS[3] messages: the session's list (LangChain's layout, newest first)
-- KEYS[4] active: the running turn's record
-- KEYS[5] stream: this turn's events
-- KEYS[6] turn_ids: the session's turns, each scored by when its events are forgotten (ms)
-- KEYS[7] tree: the session's messages off the active path
-- KEYS[8] kids: the session's children lists
-- KEYS[9] turn_session?: the turn id's session (one Redis; the caller claims it on a cluster)
-- ARGV[1] token: the lock's new token
-- ARGV[2] lock_ms: the lock's life
-- ARGV[3] window: most history messages to read
-- ARGV[4] alive_s: the session's time to live while the turn runs (0: none)
-- ARGV[5] now: microseconds since the epoch
-- ARGV[6] session_id: the session's id
-- ARGV[7] user: the caller's user id ('' when anonymous)
-- ARGV[8] admin: '1' when the caller is an admin
-- ARGV[9] turn_id: the turn's id
-- ARGV[10] message: the user's message, shown as the running turn's
-- ARGV[11] keep_ms: how long the turn's events are kept after the lock's last renewal
-- ARGV[12] mode: '' a new message after the path's last; 'regenerate' a new reply beside
-- the reply at `position`; 'edit' a new message beside the user message at `position`
-- ARGV[13] position: that message's position on the path (-1: the last reply)
-- ARGV[14] id: that message's id ('' with -1)
-- RETURNS {outcome, prompt, window, owner, length, reply, asked, summary, summary_at, skip, fork_at, parent}
-- outcome: 1 taken (a retry of this very call too), 0 no session the caller may use,
-- -1 busy, -2 the turn id is another session's, -3 that message cannot be regenerated
-- (not a reply after a user message or tools' results) or edited (not a user message), -4 no message with
-- that id on the path, -5 messages another program wrote are on the part that would
-- leave the path and need ids of their own first (fork_at: where they start), 2 the turn
-- is there already (join it), -9 a key holds a value of another type (or an id twice). The window ends below the turn's place (`skip` counts the newest it
-- leaves out: with regenerate the reply, its message (not tools' results) and all after; with edit the
-- message and all after); reply and asked are the regenerated reply and its message;
-- fork_at is where the new branch starts (-1 none: the turn adds to the path), parent
-- the id of the message the turn's first new message follows ('' for none).
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers
-- INCLUDE window
-- INCLUDE tree

local lock, meta, messages, active, stream, turn_ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local token = ARGV[1]
if not (holds(meta, 'hash') and holds(messages, 'list') and holds(active, 'hash')
    and holds(stream, 'stream') and holds(turn_ids, 'zset') and holds(lock, 'string')
    and holds(KEYS[7], 'hash') and holds(KEYS[8], 'hash')
    and (not KEYS[9] or holds(KEYS[9], 'string'))) then
  return {-9}
end
if redis.call('EXISTS', meta, messages) == 0 then return {0} end
local owner = redis.call('HGET', meta, 'owner')
if refuses(owner, ARGV[8], ARGV[7]) then return {0} end
if KEYS[9] then
  local home = redis.call('GET', KEYS[9])
  if home and home ~= ARGV[6] then return {-2} end
end
local held = redis.call('GET', lock)
local retried = held == token
if not retried then
  if redis.call('EXISTS', stream) == 1 then return {2} end
  if held and redis.call('HGET', active, 'turn_id') == ARGV[9] then return {2} end
  if held then return {-1} end
end

-- Where the turn goes: after the path's last message, or beside the one it regenerates
-- or edits (the last reply: the newest, or the one below a summary written after it).
local length = redis.call('LLEN', messages)
local skip, reply, asked, message = 0, false, false, ARGV[10]
local mode, fork_at = ARGV[12], whole(ARGV[13])
if mode ~= '' then
  if fork_at == nil then return {-4} end
  if fork_at < 0 then
    fork_at = length - 1
    if kind_of(redis.call('LINDEX', messages, 0)) == 'system' then fork_at = length - 2 end
  elseif fork_at >= length or path_id(messages, length, fork_at) ~= ARGV[14] then
    return {-4}
  end
  if fork_at < 0 then return {-3} end
  local found = redis.call('LINDEX', messages, length - 1 - fork_at)
  if mode == 'edit' then
    if kind_of(found) ~= 'human' then return {-3} end
    skip = length - fork_at
  else
    reply = found
    asked = fork_at > 0 and redis.call('LINDEX', messages, length - fork_at)
    local reply_kind, asked_data = kind_of(reply), decoded(asked)
    local asked_kind = type(asked_data) == 'table' and asked_data['type']
    if (reply_kind ~= 'ai' and reply_kind ~= 'AIMessageChunk')
        or (asked_kind ~= 'human' and asked_kind ~= 'tool') then
      return {-3}
    end
    message = ''
    if asked_kind == 'tool' then
      -- A reply to tools' results: they stay in the window, and are answered again.
      asked = false
      skip = length - fork_at
    else
      if type(asked_data['data']) == 'table' and type(asked_data['data']['content']) == 'string' then
        message = asked_data['data']['content']
      end
      skip = length - fork_at + 1
    end
  end
else
  fork_at = -1
end
-- What would move off the path at the commit: each message must carry an id of its own
-- (another program's need them stamped first: `stamp_ids.lua`), none taken off the path.
if fork_at >= 0 then
  local tail = redis.call('LRANGE', messages, 0, length - 1 - fork_at)
  for position = fork_at, length - 1 do
    local raw = tail[length - position]
    if not owns_id(raw, position) then
      return {-5, false, false, false, false, false, false, false, false, false, fork_at}
    end
    if redis.call('HEXISTS', KEYS[7], id_at(raw, position)) == 1 then return {-9} end
  end
end
local parent = ''
if fork_at >= 0 then
  parent = parent_on_path(messages, length, fork_at)
elseif length > 0 then
  parent = path_id(messages, length, length - 1)
end

local prompt = redis.call('HGET', meta, 'system_prompt')
local window, _, summary, summary_at = window_of(meta, messages, whole(ARGV[3]) or 0, skip)

if not retried then
  redis.call('SET', lock, token, 'PX', ARGV[2])
  redis.call('DEL', active)
  redis.call('HSET', active, 'turn_id', ARGV[9], 'token', token, 'started_at', ARGV[5],
    'message', message)
  redis.call('PEXPIRE', active, ARGV[2])
  local forget_at = math.floor(whole(ARGV[5]) / 1000) + whole(ARGV[11])
  redis.call('ZREMRANGEBYSCORE', turn_ids, '-inf', '(' .. math.floor(whole(ARGV[5]) / 1000))
  redis.call('ZADD', turn_ids, forget_at, ARGV[9])
  redis.call('PEXPIRE', turn_ids, ARGV[11])
  if KEYS[9] then redis.call('SET', KEYS[9], ARGV[6], 'PX', ARGV[11]) end
end
-- A running turn keeps its session: its keys live while the lock is renewed.
local alive = whole(ARGV[4]) or 0
if alive > 0 then
  for _, key in ipairs({meta, messages, KEYS[7], KEYS[8]}) do redis.call('EXPIRE', key, alive) end
end
return {1, prompt, window, owner, length, reply, asked, summary, summary_at, skip, fork_at, parent}
