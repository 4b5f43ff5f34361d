-- A page of messages back from one of them, checked by its whole id, without reading
-- the whole list.
-- KEYS[1] messages: the session's list
-- KEYS[2] meta: the session's metadata
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] last: most messages in the page
-- ARGV[4] position: the position of the message the page ends before (-1: the newest)
-- ARGV[5] id: that message's id
-- RETURNS {outcome, length, elements, newest, below}
-- outcome: 1 (elements newest first, newest the position of the first of them, below
-- the element below the oldest of them, false at the start), 0 no session the caller
-- may use, -2 no message with that id, -9 a key of another type.
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers

local messages, meta = KEYS[1], KEYS[2]
if not (holds(messages, 'list') and holds(meta, 'hash')) then return {-9} end
if redis.call('EXISTS', messages, meta) == 0 then return {0} end
if refuses(redis.call('HGET', meta, 'owner'), ARGV[1], ARGV[2]) then return {0} end
local n = redis.call('LLEN', messages)
local upto = n
local p = whole(ARGV[4])
if p >= 0 then
  if p >= n or id_at(redis.call('LINDEX', messages, n - 1 - p), p) ~= ARGV[5] then
    return {-2}
  end
  upto = p
end
local from = math.max(0, upto - whole(ARGV[3]))
if upto <= from then return {1, n, {}, upto - 1} end
local below = false
if from > 0 then below = redis.call('LINDEX', messages, n - from) end
return {1, n, redis.call('LRANGE', messages, n - upto, n - 1 - from), upto - 1, below}
