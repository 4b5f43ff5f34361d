-- Keeps a copy of a session's conversation as it is now (its list, its title) as a share
-- link, for a caller who may use the session, within the most shares a session keeps.
-- KEYS[1] meta: the session's metadata
-- KEYS[2] messages: the session's list
-- KEYS[3] shares: the session's shares
-- KEYS[4] share: the new share's snapshot
-- KEYS[5] pointer?: the share id's session (one Redis only)
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] share_id: the new share's id
-- ARGV[4] session_id: the session's id
-- ARGV[5] now: microseconds since the epoch
-- ARGV[6] most: most shares a session keeps
-- RETURNS {outcome}
-- outcome: 1 kept, 0 no session the caller may use, -2 the session keeps as many shares
-- as it may, -9 a key of another type.
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers

local meta, messages, shares, share = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if not (holds(meta, 'hash') and holds(messages, 'list') and holds(shares, 'zset')
    and holds(share, 'hash') and (not KEYS[5] or holds(KEYS[5], 'string'))) then
  return {-9}
end
if redis.call('EXISTS', meta) == 0 then return {0} end
if refuses(redis.call('HGET', meta, 'owner'), ARGV[1], ARGV[2]) then return {0} end
if redis.call('ZCARD', shares) >= (whole(ARGV[6]) or 0) then return {-2} end
local elements = redis.call('LRANGE', messages, 0, -1)
-- cjson writes an empty table as an object: an empty conversation is an empty list.
local copy = '[]'
if #elements > 0 then copy = cjson.encode(elements) end
local fields = {'session_id', ARGV[4], 'created_at', ARGV[5], 'messages', copy}
local title = redis.call('HGET', meta, 'title')
if title then
  fields[#fields + 1] = 'title'
  fields[#fields + 1] = title
end

redis.call('DEL', share)
redis.call('HSET', share, unpack(fields))
redis.call('ZADD', shares, ARGV[5], ARGV[3])
if KEYS[5] then redis.call('SET', KEYS[5], ARGV[4]) end
return {1}
