-- Forgets a message and every later one, at once.
-- KEYS[1] messages: the session's list
-- KEYS[2] meta: the session's metadata
-- KEYS[3] lock: the session's lock
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] position: the message's position (from the oldest)
-- ARGV[4] id: the message's id
-- RETURNS {outcome}
-- outcome: 1 forgotten, 0 no session the caller may use, -1 a turn is running, -2 no
-- message with that id, -9 a key holds a value of another type.
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers

local messages, meta = KEYS[1], KEYS[2]
if not (holds(messages, 'list') and holds(meta, 'hash')) then return {-9} end
if redis.call('EXISTS', messages, meta) == 0 then return {0} end
if refuses(redis.call('HGET', meta, 'owner'), ARGV[1], ARGV[2]) then return {0} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {-1} end
local n = redis.call('LLEN', messages)
local p = whole(ARGV[3])
if p == nil or p >= n or id_at(redis.call('LINDEX', messages, n - 1 - p), p) ~= ARGV[4] then
  return {-2}
end

-- The session's usage is a sum over its replies: the forgotten ones' counts leave it.
local tokens_in, tokens_out, held = usage_of(messages, meta)
for _, raw in ipairs(redis.call('LRANGE', messages, 0, n - p - 1)) do
  local gone_in, gone_out = counted(raw)
  tokens_in, tokens_out = tokens_in - gone_in, tokens_out - gone_out
end
local state = redis.call('HMGET', meta, 'epoch', 'summary_at', 'summary_covers')
local epoch = (whole(state[1] or '0') or 0) + 1
local at, covers = whole(state[2] or ''), whole(state[3] or '')
-- A summary forgotten goes with its place; one kept that summarized forgotten messages
-- is stale: not sent, and rebuilt anew.
local drop_summary = not held or (at ~= nil and at >= p) or (state[2] and at == nil)
local stale = not drop_summary and at ~= nil and covers ~= nil and covers >= p

if p == 0 then redis.call('DEL', messages) else redis.call('LTRIM', messages, n - p, -1) end
redis.call('HSET', meta, 'input_tokens', bounded(tokens_in), 'output_tokens', bounded(tokens_out),
  'epoch', epoch, 'list_mark', mark_of(messages))
if drop_summary then
  redis.call('HDEL', meta, 'summary_at', 'summary_covers', 'summary_stale')
elseif stale then
  redis.call('HSET', meta, 'summary_stale', '1', 'summary_covers', -1)
end
return {1}
