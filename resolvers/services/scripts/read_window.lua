-- What the next turn of a session would send, read as a turn reads it: the system
-- prompt, the window and the summary (the context receipt).
-- KEYS[1] meta: the session's metadata
-- KEYS[2] messages: the session's list
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] window: most history messages to read
-- RETURNS {outcome, prompt, window, length, summary, summary_at}
-- outcome: 1, 0 no session the caller may use, -9 a key of another type.
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers
-- INCLUDE window

local meta, messages = KEYS[1], KEYS[2]
if not (holds(meta, 'hash') and holds(messages, 'list')) then return {-9} end
if redis.call('EXISTS', meta, messages) == 0 then return {0} end
if refuses(redis.call('HGET', meta, 'owner'), ARGV[1], ARGV[2]) then return {0} end
local window, length, summary, summary_at = window_of(meta, messages, whole(ARGV[3]) or 0, 0)
return {1, redis.call('HGET', meta, 'system_prompt'), window, length, summary, summary_at}
