-- Gives messages another program wrote ids of their own, in their places, before they
-- move off the path (a message off it is found by its id alone). Each is replaced only
-- while the list still holds it as it was read; the list's mark follows.
-- KEYS[1] messages: the session's list
-- KEYS[2] meta: the session's metadata
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] changes: a JSON list of [position, element as read, element with its id]
-- RETURNS outcome
-- outcome: 1 stamped, 0 no session the caller may use, -2 the list changed since it was
-- read (nothing stamped), -9 a key holds a value of another type.
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers

local messages, meta = KEYS[1], KEYS[2]
if not (holds(messages, 'list') and holds(meta, 'hash')) then return -9 end
if redis.call('EXISTS', messages, meta) == 0 then return 0 end
if refuses(redis.call('HGET', meta, 'owner'), ARGV[1], ARGV[2]) then return 0 end
local ok, changes = pcall(cjson.decode, ARGV[3])
if not ok or type(changes) ~= 'table' then return -2 end
local n = redis.call('LLEN', messages)
for _, change in ipairs(changes) do
  local position = type(change) == 'table' and change[1]
  if type(position) ~= 'number' or position < 0 or position >= n
      or position ~= math.floor(position) or type(change[2]) ~= 'string'
      or type(change[3]) ~= 'string'
      or redis.call('LINDEX', messages, n - 1 - position) ~= change[2] then
    return -2
  end
end
local mark = redis.call('HGET', meta, 'list_mark')
local kept = intact(messages, mark) and mark and whole(string.match(mark, '^(%d+):') or '')

for _, change in ipairs(changes) do
  redis.call('LSET', messages, n - 1 - change[1], change[3])
end
if kept and kept > 0 then
  redis.call('HSET', meta, 'list_mark', kept .. ':' .. redis.sha1hex(redis.call('LINDEX', messages, n - kept)))
end
return 1
