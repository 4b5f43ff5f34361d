-- Gives a message list written by another LangChain program metadata (and an index
-- entry), so it is listed like any other session.
-- KEYS[1] messages: the session's list
-- KEYS[2] meta: the session's metadata
-- KEYS[3] index?: every session by activity (one Redis only)
-- ARGV[1] now: microseconds since the epoch
-- ARGV[2] session_id: the session's id
-- ARGV[3] prompt: the default system prompt
-- ARGV[4] ttl: the session's time to live in seconds (0: none)
-- RETURNS adopted
-- adopted: 1 adopted now, 0 not (it has metadata, no list, or keys of another type).
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers
-- INCLUDE index

local messages, meta = KEYS[1], KEYS[2]
if not (holds(messages, 'list') and holds(meta, 'hash') and (not KEYS[3] or holds(KEYS[3], 'zset'))) then
  return 0
end
if redis.call('EXISTS', meta) == 1 or redis.call('EXISTS', messages) == 0 then return 0 end
local tokens_in, tokens_out = usage_of(messages, meta)
local ttl = whole(ARGV[4]) or 0
redis.call('HSET', meta, 'created_at', ARGV[1], 'updated_at', ARGV[1], 'system_prompt', ARGV[3],
  'input_tokens', tokens_in, 'output_tokens', tokens_out, 'list_mark', mark_of(messages))
if KEYS[3] then place(KEYS[3], ARGV[2], ARGV[1]) end
if ttl > 0 then
  redis.call('EXPIRE', messages, ttl)
  redis.call('EXPIRE', meta, ttl)
end
return 1
