-- A session's metadata, message count and usage, for one the caller may use.
-- KEYS[1] meta: the session's metadata
-- KEYS[2] messages: the session's list
-- ARGV[1] admin: '1' when the caller is an admin ('*' reads without a check: a listing
-- that filters by owner itself)
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] fields: the metadata fields wanted, separated by spaces ('' all of them)
-- RETURNS {outcome, fields, length, input_tokens, output_tokens}
-- outcome: 1 (fields a flat list of names and values), 0 no session the caller may use
-- (or only a list without metadata: not adopted yet), -9 a key of another type.
-- INCLUDE keys
-- INCLUDE session

local meta, messages = KEYS[1], KEYS[2]
if not (holds(meta, 'hash') and holds(messages, 'list')) then return {-9} end
if redis.call('EXISTS', meta) == 0 then return {0} end
if ARGV[1] ~= '*' and refuses(redis.call('HGET', meta, 'owner'), ARGV[1], ARGV[2]) then
  return {0}
end
local fields = {}
if ARGV[3] == '' then
  fields = redis.call('HGETALL', meta)
else
  local names = {}
  for name in string.gmatch(ARGV[3], '%S+') do names[#names + 1] = name end
  local values = redis.call('HMGET', meta, unpack(names))
  for i, name in ipairs(names) do
    if values[i] then
      fields[#fields + 1] = name
      fields[#fields + 1] = values[i]
    end
  end
end
local tokens_in, tokens_out = usage_of(messages, meta)
return {1, fields, redis.call('LLEN', messages), tokens_in, tokens_out}
