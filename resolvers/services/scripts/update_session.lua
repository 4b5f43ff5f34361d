-- Changes a session's title and system prompt.
-- KEYS[1] meta: the session's metadata
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] title: '' keep, '-' clear, '=<title>' set
-- ARGV[4] prompt: '' keep, '=<prompt>' set
-- RETURNS {outcome}
-- outcome: 1 changed, 0 no session the caller may use, -9 a key of another type.
-- INCLUDE keys
-- INCLUDE session

if not holds(KEYS[1], 'hash') then return {-9} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
if refuses(redis.call('HGET', KEYS[1], 'owner'), ARGV[1], ARGV[2]) then return {0} end
if ARGV[3] == '-' then redis.call('HDEL', KEYS[1], 'title') end
if string.sub(ARGV[3], 1, 1) == '=' then
  redis.call('HSET', KEYS[1], 'title', string.sub(ARGV[3], 2))
end
if string.sub(ARGV[4], 1, 1) == '=' then
  redis.call('HSET', KEYS[1], 'system_prompt', string.sub(ARGV[4], 2))
end
return {1}
