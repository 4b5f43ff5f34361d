-- A running turn's new tokens written to its stream, and a look for a stop asked for, in
-- one command.
-- KEYS[1] stream: the turn's events
-- KEYS[2] active: the running turn's record
-- KEYS[3] meta: the session's metadata
-- ARGV[1] first: the number of the first new token
-- ARGV[2] last: the number of the last one
-- ARGV[3] tokens: the new tokens as a JSON list ('' only to look)
-- ARGV[4] cap: most entries a stream keeps
-- ARGV[5] keep_ms: how long the stream is kept
-- ARGV[6] turn_id: the turn's id
-- RETURNS {written, stop}
-- written: 1 the tokens are in the stream (written now, or by an earlier try), 0 not.
-- stop: 1 a stop was asked for, 2 the session is gone (the turn must end), 0 neither.
-- INCLUDE keys
-- INCLUDE stream
-- INCLUDE numbers

local stream, active = KEYS[1], KEYS[2]
if not (holds(stream, 'stream') and holds(active, 'hash')) then return {0, 0} end
if redis.call('EXISTS', KEYS[3]) == 0 then return {0, 2} end
local running = redis.call('HMGET', active, 'turn_id', 'stop')
local stop = 0
if running[1] == ARGV[6] and running[2] then stop = 1 end
if ARGV[3] ~= '' then
  local top = last_entry(stream)
  append_tokens(stream, whole(ARGV[1]), whole(ARGV[2]), ARGV[3], ARGV[4], top)
  redis.call('PEXPIRE', stream, ARGV[5])
end
return {1, stop}
