-- A share link's snapshot, for anyone who has its id, while its session exists.
-- KEYS[1] meta: the session's metadata
-- KEYS[2] shares: the session's shares
-- KEYS[3] share: the share's snapshot
-- ARGV[1] share_id: the share's id
-- RETURNS {outcome, title, created_at, messages}
-- outcome: 1, 0 no such share (revoked, or its session is gone), -9 a key of another
-- type.
-- INCLUDE keys

local meta, shares, share = KEYS[1], KEYS[2], KEYS[3]
if not (holds(meta, 'hash') and holds(shares, 'zset') and holds(share, 'hash')) then
  return {-9}
end
if redis.call('EXISTS', meta) == 0 or not redis.call('ZSCORE', shares, ARGV[1]) then
  return {0}
end
local found = redis.call('HMGET', share, 'title', 'created_at', 'messages')
if not found[3] then return {0} end
return {1, found[1], found[2], found[3]}
