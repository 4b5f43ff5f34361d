-- A session's messages, for a caller who may read them: the owner is checked before a
-- single message is read.
-- KEYS[1] meta: the session's metadata
-- KEYS[2] messages: the session's list
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] newest: how many of the newest messages (-1: all)
-- RETURNS {outcome, elements, length}
-- outcome: 1 (elements newest first), 0 no session the caller may use, -9 a key of
-- another type.
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers

local meta, messages = KEYS[1], KEYS[2]
if not (holds(meta, 'hash') and holds(messages, 'list')) then return {-9} end
if redis.call('EXISTS', meta, messages) == 0 then return {0} end
if refuses(redis.call('HGET', meta, 'owner'), ARGV[1], ARGV[2]) then return {0} end
local newest = whole(ARGV[3]) or -1
local elements = {}
if newest ~= 0 then elements = redis.call('LRANGE', messages, 0, newest < 0 and -1 or newest - 1) end
return {1, elements, redis.call('LLEN', messages)}
