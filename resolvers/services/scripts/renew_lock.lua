-- Keeps a running turn's lock, and with it its record, its stream and its session.
-- KEYS[1] lock: the session's lock
-- KEYS[2] active: the running turn's record
-- KEYS[3] stream: the turn's events
-- KEYS[4] turn_ids: the session's turns
-- KEYS[5] meta: the session's metadata
-- KEYS[6] messages: the session's list
-- KEYS[7] tree: the session's messages off the active path
-- KEYS[8] kids: the session's children lists
-- KEYS[9] turn_session?: the turn id's session (one Redis only)
-- ARGV[1] token: the turn's lock token
-- ARGV[2] lock_ms: the lock's life
-- ARGV[3] keep_ms: how long the turn's events are kept after this renewal
-- ARGV[4] alive_s: the session's time to live while the turn runs (0: none)
-- ARGV[5] turn_id: the turn's id
-- ARGV[6] session_id: the session's id
-- ARGV[7] now_ms: milliseconds since the epoch
-- RETURNS held
-- held: 1 the lock is still this turn's (and was renewed), 0 not.
-- INCLUDE keys
-- INCLUDE numbers

if not (holds(KEYS[1], 'string') and holds(KEYS[4], 'zset')) then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local keep = whole(ARGV[3])
local alive = whole(ARGV[4]) or 0
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], keep)
redis.call('ZADD', KEYS[4], 'GT', whole(ARGV[7]) + keep, ARGV[5])
redis.call('PEXPIRE', KEYS[4], keep)
if alive > 0 then
  for i = 5, 8 do redis.call('EXPIRE', KEYS[i], alive) end
end
if KEYS[9] then redis.call('SET', KEYS[9], ARGV[6], 'PX', keep) end
return 1
