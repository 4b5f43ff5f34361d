-- Gives a session the model's title, only while its title is still the server's (a
-- user's title is never replaced), and counts the request's tokens in its usage.
-- KEYS[1] meta: the session's metadata
-- KEYS[2] messages: the session's list
-- ARGV[1] title: the model's title
-- ARGV[2] input_tokens: the request's input tokens ('' when the provider gave none)
-- ARGV[3] output_tokens: its output tokens ('' when the provider gave none)
-- RETURNS named
-- named: 1 the title is the model's now, 0 not (no session, a title of the user's, or
-- a key of another type).
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers

local meta, messages = KEYS[1], KEYS[2]
if not (holds(meta, 'hash') and holds(messages, 'list')) then return 0 end
if redis.call('EXISTS', meta) == 0 or redis.call('HGET', meta, 'title_auto') ~= '1' then
  return 0
end
local tokens_in, tokens_out, held = usage_of(messages, meta)

redis.call('HSET', meta, 'title', ARGV[1])
-- The kept sums hold only while the list is as the server left it; a sum read anew from
-- the list cannot carry the title's tokens.
if held then
  redis.call('HSET', meta, 'input_tokens', bounded(tokens_in + (count(ARGV[2]) or 0)),
    'output_tokens', bounded(tokens_out + (count(ARGV[3]) or 0)))
end
return 1
