-- Ends a turn that stores nothing: frees the lock if this turn still holds it, and ends
-- the stream, so followers anywhere learn at once how it ended: FAILED with the error,
-- or STOPPED with the reply that stays (a regenerate stopped before its first token
-- keeps the old reply). Writes nothing to the stream of a deleted session (a delete
-- leaves nothing behind) or of a turn that has ended already.
-- KEYS[1] lock: the session's lock
-- KEYS[2] active: the running turn's record
-- KEYS[3] stream: the turn's events
-- KEYS[4] meta: the session's metadata
-- ARGV[1] token: the turn's lock token ('' when its lock has expired)
-- ARGV[2] first: the number of the first token not yet in the stream
-- ARGV[3] last: the number of the last one
-- ARGV[4] tokens: those tokens as a JSON list ('' none)
-- ARGV[5] end_seq: the end event's number
-- ARGV[6] status: FAILED or STOPPED
-- ARGV[7] code: the error's code (FAILED)
-- ARGV[8] message: the error's message (FAILED)
-- ARGV[9] reply: the reply that stays, as the list holds it (STOPPED; '' none)
-- ARGV[10] keep_ms: how long the turn's events are kept
-- ARGV[11] cap: most entries a stream keeps
-- RETURNS outcome
-- outcome: 1 ended here, 0 it had ended already, 2 the session is gone (nothing
-- written), -9 a key holds a value of another type.
-- INCLUDE keys
-- INCLUDE stream
-- INCLUDE numbers

local lock, active, stream, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token = ARGV[1]
if not (holds(active, 'hash') and holds(stream, 'stream') and holds(lock, 'string')) then
  return -9
end
local gone = redis.call('EXISTS', meta) == 0
local top, ended = last_entry(stream)
local first, last, finish = whole(ARGV[2]), whole(ARGV[3]), whole(ARGV[5])

if token ~= '' and redis.call('GET', lock) == token then redis.call('DEL', lock) end
if token ~= '' and redis.call('HGET', active, 'token') == token then redis.call('DEL', active) end
if gone then return 2 end
if ended then return 0 end
top = append_tokens(stream, first, last, ARGV[4], ARGV[11], top)
if finish > top then
  if ARGV[6] == 'STOPPED' then
    redis.call('XADD', stream, 'MAXLEN', '~', ARGV[11], finish .. '-0', 's', 'STOPPED',
      'u', '1', 'm', ARGV[9])
  else
    redis.call('XADD', stream, 'MAXLEN', '~', ARGV[11], finish .. '-0',
      's', 'FAILED', 'c', ARGV[7], 'e', ARGV[8])
  end
end
redis.call('PEXPIRE', stream, ARGV[10])
return 1
