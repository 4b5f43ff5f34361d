-- Revokes a share link of a session, for its owner or an admin. A share of a session
-- with no owner is revoked by an admin only: its id is all a reader holds, and it must
-- not be enough (deleting the session takes its shares too).
-- KEYS[1] meta: the session's metadata
-- KEYS[2] shares: the session's shares
-- KEYS[3] share: the share's snapshot
-- KEYS[4] pointer?: the share id's session (one Redis only)
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] share_id: the share's id
-- RETURNS {outcome}
-- outcome: 1 revoked, 0 no such share the caller may revoke, -9 a key of another type.
-- INCLUDE keys
-- INCLUDE session

local meta, shares, share = KEYS[1], KEYS[2], KEYS[3]
if not (holds(meta, 'hash') and holds(shares, 'zset') and holds(share, 'hash')
    and (not KEYS[4] or holds(KEYS[4], 'string'))) then
  return {-9}
end
if redis.call('EXISTS', meta) == 0 then return {0} end
local owner = redis.call('HGET', meta, 'owner')
if refuses(owner, ARGV[1], ARGV[2]) or (not owner and ARGV[1] ~= '1') then return {0} end
if not redis.call('ZSCORE', shares, ARGV[3]) then return {0} end
redis.call('ZREM', shares, ARGV[3])
redis.call('DEL', share)
if KEYS[4] then redis.call('DEL', KEYS[4]) end
return {1}
