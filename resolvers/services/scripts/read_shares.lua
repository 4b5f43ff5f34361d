-- A session's share links, for a caller who may use the session.
-- KEYS[1] meta: the session's metadata
-- KEYS[2] shares: the session's shares
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- RETURNS {outcome, shares}
-- outcome: 1 (shares a flat list of ids and their creation times, oldest first), 0 no
-- session the caller may use, -9 a key of another type.
-- INCLUDE keys
-- INCLUDE session

local meta, shares = KEYS[1], KEYS[2]
if not (holds(meta, 'hash') and holds(shares, 'zset')) then return {-9} end
if redis.call('EXISTS', meta) == 0 then return {0} end
if refuses(redis.call('HGET', meta, 'owner'), ARGV[1], ARGV[2]) then return {0} end
return {1, redis.call('ZRANGE', shares, 0, -1, 'WITHSCORES')}
