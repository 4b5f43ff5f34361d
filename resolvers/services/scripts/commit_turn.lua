-- Stores a finished turn, only while the caller still holds the session's lock, and ends
-- the turn's stream with its done entry in the same step.
-- KEYS[1] messages: the session's list
-- KEYS[2] meta: the session's metadata
-- KEYS[3] lock: the session's lock
-- KEYS[4] active: the running turn's record
-- KEYS[5] stream: the turn's events
-- KEYS[6] turn_ids: the session's turns
-- KEYS[7] turn_session?: the turn id's session (one Redis only)
-- KEYS[8] index?: every session by activity (one Redis only)
-- KEYS[9] owner_index?: the owner's sessions by activity (one Redis, owned sessions)
-- KEYS[10] archived_index?: the owner's archived sessions (with owner_index)
-- KEYS[11] pinned_index?: the owner's pinned sessions (with owner_index)
-- ARGV[1] token: the turn's lock token
-- ARGV[2] turn_id: the turn's id
-- ARGV[3] user_json: the user's message, as the list holds it
-- ARGV[4] reply_json: the reply, as the list holds it
-- ARGV[5] now: microseconds since the epoch
-- ARGV[6] ttl: the session's time to live in seconds (0: none)
-- ARGV[7] session_id: the session's id
-- ARGV[8] title: a title for a session that has none ('' none); marked as the server's
-- ARGV[9] first: the number of the first token not yet in the stream
-- ARGV[10] last: the number of the last one
-- ARGV[11] tokens: those tokens as a JSON list ('' none)
-- ARGV[12] done_seq: the done event's number
-- ARGV[13] status: COMPLETE or STOPPED
-- ARGV[14] keep_ms: how long the turn's events are kept
-- ARGV[15] cap: most entries a stream keeps
-- ARGV[16] input_tokens: the reply's input tokens ('' when the provider gave none)
-- ARGV[17] output_tokens: its output tokens ('' when the provider gave none)
-- ARGV[18] replaces: the reply a regenerated one replaces ('' for a new turn: the user
-- message is then written too)
-- RETURNS outcome
-- outcome: 1 stored (also when an earlier try of this very call stored it), 0 the
-- session was deleted meanwhile, -1 the lock is lost, -3 the reply to replace is no
-- longer the last message, -9 a key holds a value of another type. Nothing is written
-- unless it is 1.
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE stream
-- INCLUDE numbers
-- INCLUDE index

local messages, meta, lock, active, stream, turn_ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local replaces = ARGV[18]
if not (holds(messages, 'list') and holds(meta, 'hash') and holds(stream, 'stream')
    and holds(turn_ids, 'zset') and holds(lock, 'string') and (not KEYS[8] or holds(KEYS[8], 'zset'))
    and (not KEYS[9] or holds(KEYS[9], 'zset')) and (not KEYS[10] or holds(KEYS[10], 'zset'))
    and (not KEYS[11] or holds(KEYS[11], 'zset'))) then
  return -9
end
local top, ended, unstored = last_entry(stream)
local held = redis.call('GET', lock) == ARGV[1]
if redis.call('EXISTS', meta) == 0 then
  if held then redis.call('DEL', lock, active) end
  return 0
end
if not held then
  if (ended == 'COMPLETE' or ended == 'STOPPED') and not unstored then return 1 end
  return -1
end

-- Read and compute everything first.
local slot = false
if replaces ~= '' then
  if redis.call('LINDEX', messages, 0) == replaces then
    slot = 0
  elseif kind_of(redis.call('LINDEX', messages, 0)) == 'system'
      and redis.call('LINDEX', messages, 1) == replaces then
    slot = 1
  else
    return -3
  end
end
local tokens_in, tokens_out, usage_held = usage_of(messages, meta)
if replaces ~= '' then
  local gone_in, gone_out = counted(replaces)
  tokens_in, tokens_out = tokens_in - gone_in, tokens_out - gone_out
end
tokens_in = bounded(tokens_in + (count(ARGV[16]) or 0))
tokens_out = bounded(tokens_out + (count(ARGV[17]) or 0))
local epoch = whole(redis.call('HGET', meta, 'epoch') or '0') or 0
if replaces ~= '' or not usage_held then epoch = epoch + 1 end
local first, last, done = whole(ARGV[9]), whole(ARGV[10]), whole(ARGV[12])
local ttl = whole(ARGV[6]) or 0

-- Then write: nothing below can fail.
if replaces == '' then
  redis.call('LPUSH', messages, ARGV[3], ARGV[4])
else
  redis.call('LSET', messages, slot, ARGV[4])
end
redis.call('HSET', meta, 'updated_at', ARGV[5], 'last_turn', ARGV[2],
  'input_tokens', tokens_in, 'output_tokens', tokens_out, 'epoch', epoch,
  'list_mark', mark_of(messages))
if not usage_held then
  -- The list was cleared or rewritten by another program: the summary's place is gone.
  redis.call('HDEL', meta, 'summary_at', 'summary_covers', 'summary_stale')
end
if ARGV[8] ~= '' and redis.call('HSETNX', meta, 'title', ARGV[8]) == 1 then
  redis.call('HSET', meta, 'title_auto', '1')
end
if KEYS[8] then place(KEYS[8], ARGV[7], ARGV[5]) end
if KEYS[9] then file_owned(meta, ARGV[7], ARGV[5], KEYS[9], KEYS[10], KEYS[11]) end
if ttl > 0 then
  redis.call('EXPIRE', messages, ttl)
  redis.call('EXPIRE', meta, ttl)
end
top = append_tokens(stream, first, last, ARGV[11], ARGV[15], top)
if done > top then
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[15], done .. '-0', 's', ARGV[13], 'm', ARGV[4])
end
redis.call('PEXPIRE', stream, ARGV[14])
if KEYS[7] then redis.call('SET', KEYS[7], ARGV[7], 'PX', ARGV[14]) end
redis.call('DEL', lock, active)
return 1
