-- Gives a session to another owner, if it is still the old one's (a legacy guest id's
-- sessions moving to its prefixed id).
-- KEYS[1] meta: the session's metadata
-- ARGV[1] old: the owner it must have
-- ARGV[2] new: the owner it gets
-- RETURNS moved
-- moved: 1 moved, 0 not (another owner, no session, or a key of another type).
-- INCLUDE keys

if not holds(KEYS[1], 'hash') then return 0 end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return 1
