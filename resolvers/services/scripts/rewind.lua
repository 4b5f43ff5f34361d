-- Forgets a message and everything after it, at once: the rest of the path and every
-- branch below them.
-- KEYS[1] messages: the session's list
-- KEYS[2] meta: the session's metadata
-- KEYS[3] lock: the session's lock
-- KEYS[4] tree: the messages off the active path
-- KEYS[5] kids: the children of messages with a child off the path
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] position: the message's position (from the oldest)
-- ARGV[4] id: the message's id
-- RETURNS {outcome}
-- outcome: 1 forgotten, 0 no session the caller may use, -1 a turn is running, -2 no
-- message with that id on the path, -9 a key holds a value of another type.
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers
-- INCLUDE tree

local messages, meta, tree, kids = KEYS[1], KEYS[2], KEYS[4], KEYS[5]
if not (holds(messages, 'list') and holds(meta, 'hash') and holds(tree, 'hash')
    and holds(kids, 'hash')) then
  return {-9}
end
if redis.call('EXISTS', messages, meta) == 0 then return {0} end
if refuses(redis.call('HGET', meta, 'owner'), ARGV[1], ARGV[2]) then return {0} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {-1} end
local n = redis.call('LLEN', messages)
local p = whole(ARGV[3])
if p == nil or p >= n or path_id(messages, n, p) ~= ARGV[4] then return {-2} end

-- The session's usage is a sum over its replies: the forgotten ones' counts leave it,
-- on the path and off it.
local tokens_in, tokens_out, _, placed = usage_of(messages, meta, tree)
local tail = redis.call('LRANGE', messages, 0, n - p - 1)
local plan = placed and plan_forget(messages, tree, kids, n, p, tail)
local gone = {}
for _, raw in ipairs(tail) do gone[#gone + 1] = raw end
for _, raw in ipairs(plan and plan.raws or {}) do gone[#gone + 1] = raw end
for _, raw in ipairs(gone) do
  local gone_in, gone_out = counted(raw)
  tokens_in, tokens_out = tokens_in - gone_in, tokens_out - gone_out
end
local change = path_change(meta, p, placed)

if p == 0 then redis.call('DEL', messages) else redis.call('LTRIM', messages, n - p, -1) end
redis.call('HSET', meta, 'input_tokens', bounded(tokens_in), 'output_tokens', bounded(tokens_out))
change(messages)
if plan then
  write_forget(tree, kids, plan)
else
  -- The list was cleared or rewritten by another program: the branches' places are gone.
  redis.call('DEL', tree, kids)
end
return {1}
