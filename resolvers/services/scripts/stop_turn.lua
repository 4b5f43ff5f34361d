-- Asks the running turn to stop: the process running it watches the `stop` field.
-- KEYS[1] active: the running turn's record
-- KEYS[2] lock: the session's lock
-- KEYS[3] stream: the named turn's events (any key of the session's slot when none is named)
-- KEYS[4] meta: the session's metadata
-- KEYS[5] messages: the session's list
-- ARGV[1] turn_id: the turn to stop ('' the running one, whichever it is)
-- ARGV[2] admin: '1' when the caller is an admin
-- ARGV[3] user: the caller's user id ('' when anonymous)
-- RETURNS {outcome, turn_id}
-- outcome: 1 asked (turn_id the one asked), 0 nothing is running (or the named turn has
-- ended), -1 no such turn, -2 no session the caller may use, -9 a key holds a value of
-- another type.
-- INCLUDE keys
-- INCLUDE session

if not (holds(KEYS[1], 'hash') and holds(KEYS[4], 'hash') and holds(KEYS[2], 'string')) then
  return {-9}
end
if redis.call('EXISTS', KEYS[4], KEYS[5]) == 0 then return {-2} end
if refuses(redis.call('HGET', KEYS[4], 'owner'), ARGV[2], ARGV[3]) then return {-2} end
local running = redis.call('HMGET', KEYS[1], 'turn_id', 'token')
local alive = running[1] and running[2] and redis.call('GET', KEYS[2]) == running[2]
if alive and (ARGV[1] == '' or ARGV[1] == running[1]) then
  redis.call('HSET', KEYS[1], 'stop', '1')
  return {1, running[1]}
end
if ARGV[1] == '' or running[1] == ARGV[1] or redis.call('EXISTS', KEYS[3]) == 1 then
  return {0}
end
return {-1}
