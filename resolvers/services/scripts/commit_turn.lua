-- Stores a finished turn, only while the caller still holds the session's lock, and ends
-- the turn's stream with its done entry in the same step.
-- KEYS[1] messages: the session's list
-- KEYS[2] meta: the session's metadata
-- KEYS[3] lock: the session's lock
-- KEYS[4] active: the running turn's record
-- KEYS[5] stream: the turn's events
-- KEYS[6] turn_ids: the session's turns
-- KEYS[7] tree: the messages off the active path
-- KEYS[8] kids: the children of messages with a child off the path
-- KEYS[9] turn_session?: the turn id's session (one Redis only)
-- KEYS[10] index?: every session by activity (one Redis only)
-- KEYS[11] owner_index?: the owner's sessions by activity (one Redis, owned sessions)
-- KEYS[12] archived_index?: the owner's archived sessions (with owner_index)
-- KEYS[13] pinned_index?: the owner's pinned sessions (with owner_index)
-- ARGV[1] token: the turn's lock token
-- ARGV[2] turn_id: the turn's id
-- ARGV[3] asked: what the turn adds before its reply (the user's message, or tools'
-- results), oldest first, as a JSON list of the elements the list holds ('' none)
-- ARGV[4] reply_json: the reply, as the list holds it
-- ARGV[5] now: microseconds since the epoch
-- ARGV[6] ttl: the session's time to live in seconds (0: none)
-- ARGV[7] session_id: the session's id
-- ARGV[8] title: a title for a session that has none ('' none); marked as the server's
-- ARGV[9] first: the number of the first token not yet in the stream
-- ARGV[10] last: the number of the last one
-- ARGV[11] tokens: those tokens as a JSON list ('' none)
-- ARGV[12] done_seq: the done event's number
-- ARGV[13] status: COMPLETE or STOPPED
-- ARGV[14] keep_ms: how long the turn's events are kept
-- ARGV[15] cap: most entries a stream keeps
-- ARGV[16] input_tokens: the reply's input tokens ('' when the provider gave none)
-- ARGV[17] output_tokens: its output tokens ('' when the provider gave none)
-- ARGV[18] fork_at: where the turn's branch starts: the position of the message it
-- edits or regenerates, which moves off the path with all after it (-1: none, the turn
-- adds to the path)
-- ARGV[19] fork_id: that message's id ('' with -1)
-- ARGV[20] first_id: the id of the turn's first new message (the user's, or a
-- regenerate's reply)
-- RETURNS outcome
-- outcome: 1 stored (also when an earlier try of this very call stored it), 0 the
-- session was deleted meanwhile, -1 the lock is lost, -3 the message the branch starts
-- at is no longer there, or what would move off the path with it was written meanwhile
-- by another program, -9 a key holds a value of another type (or `asked` is not a list of
-- strings). Nothing is written unless
-- it is 1.
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE stream
-- INCLUDE numbers
-- INCLUDE index
-- INCLUDE tree

local messages, meta, lock, active, stream, turn_ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tree, kids = KEYS[7], KEYS[8]
if not (holds(messages, 'list') and holds(meta, 'hash') and holds(stream, 'stream')
    and holds(turn_ids, 'zset') and holds(lock, 'string') and holds(tree, 'hash')
    and holds(kids, 'hash') and (not KEYS[10] or holds(KEYS[10], 'zset'))
    and (not KEYS[12] or holds(KEYS[12], 'zset')) and (not KEYS[13] or holds(KEYS[13], 'zset'))
    and (not KEYS[11] or holds(KEYS[11], 'zset'))) then
  return -9
end
local top, ended, unstored = last_entry(stream)
local held = redis.call('GET', lock) == ARGV[1]
if redis.call('EXISTS', meta) == 0 then
  if held then redis.call('DEL', lock, active) end
  return 0
end
if not held then
  if ended and ended ~= 'FAILED' and not unstored then return 1 end
  return -1
end

-- Read and compute everything first.
local n = redis.call('LLEN', messages)
local fork_at = whole(ARGV[18]) or -1
if fork_at >= 0 and (fork_at >= n or path_id(messages, n, fork_at) ~= ARGV[19]) then
  return -3
end
-- Replies kept in every branch count: a branch moved off the path keeps its usage.
local tokens_in, tokens_out, usage_held, placed = usage_of(messages, meta, tree)
tokens_in = bounded(tokens_in + (count(ARGV[16]) or 0))
tokens_out = bounded(tokens_out + (count(ARGV[17]) or 0))
local epoch = whole(redis.call('HGET', meta, 'epoch') or '0') or 0
if fork_at >= 0 or not usage_held then epoch = epoch + 1 end
-- The branch: the path from fork_at moves off it, and the new message joins its
-- siblings; a new message after a last one with children off the path joins them.
local plan, siblings = nil, nil
if fork_at >= 0 then
  plan = plan_off_path(messages, tree, kids, n, fork_at)
  if plan.unstamped or plan.clash then return -3 end
  siblings = children_with(kids, plan.parent, plan.moves[1].id, ARGV[20])
elseif placed and redis.call('EXISTS', kids) == 1 then
  -- Only a session with branches lists children: a plain turn reads nothing more.
  local last = ''
  if n > 0 then last = path_id(messages, n, n - 1) end
  siblings = children_with(kids, last, nil, ARGV[20])
  plan = {parent = last}
end
local change = fork_at >= 0 and path_change(meta, fork_at, placed)
local pushed = {}
if ARGV[3] ~= '' then
  local ok, asked = pcall(cjson.decode, ARGV[3])
  if not ok or type(asked) ~= 'table' then return -9 end
  local entries = 0
  for _ in pairs(asked) do entries = entries + 1 end
  if entries ~= #asked then return -9 end -- an object, not a list
  for _, element in ipairs(asked) do
    if type(element) ~= 'string' then return -9 end
    pushed[#pushed + 1] = element
  end
end
pushed[#pushed + 1] = ARGV[4]
local first, last, done = whole(ARGV[9]), whole(ARGV[10]), whole(ARGV[12])
local ttl = whole(ARGV[6]) or 0

-- Then write: nothing below can fail.
if fork_at >= 0 then write_off_path(messages, tree, kids, plan, n, fork_at) end
if siblings then redis.call('HSET', kids, plan.parent, cjson.encode(siblings)) end
redis.call('LPUSH', messages, unpack(pushed))
redis.call('HSET', meta, 'updated_at', ARGV[5], 'last_turn', ARGV[2],
  'input_tokens', tokens_in, 'output_tokens', tokens_out, 'epoch', epoch,
  'list_mark', mark_of(messages))
if change then change(messages) end
if not placed then
  -- The list was cleared or rewritten by another program: the summary's place and the
  -- branches' are gone.
  redis.call('HDEL', meta, 'summary_at', 'summary_covers', 'summary_stale')
  redis.call('DEL', tree, kids)
end
if ARGV[8] ~= '' and redis.call('HSETNX', meta, 'title', ARGV[8]) == 1 then
  redis.call('HSET', meta, 'title_auto', '1')
end
if KEYS[10] then place(KEYS[10], ARGV[7], ARGV[5]) end
if KEYS[11] then file_owned(meta, ARGV[7], ARGV[5], KEYS[11], KEYS[12], KEYS[13]) end
if ttl > 0 then
  for _, key in ipairs({messages, meta, tree, kids}) do redis.call('EXPIRE', key, ttl) end
end
top = append_tokens(stream, first, last, ARGV[11], ARGV[15], top)
if done > top then
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[15], done .. '-0', 's', ARGV[13], 'm', ARGV[4])
end
redis.call('PEXPIRE', stream, ARGV[14])
if KEYS[9] then redis.call('SET', KEYS[9], ARGV[7], 'PX', ARGV[14]) end
redis.call('DEL', lock, active)
return 1
