-- Changes a session's title, system prompt and flags (pinned, archived); on one Redis
-- its entries in its owner's indexes follow its flags in the same step.
-- KEYS[1] meta: the session's metadata
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] title: '' keep, '-' clear, '=<title>' set (a user's: no longer the server's)
-- ARGV[4] prompt: '' keep, '=<prompt>' set
-- ARGV[5] pinned: '' keep, '0' unpin, '1' pin
-- ARGV[6] archived: '' keep, '0' restore, '1' archive
-- ARGV[7] session_id: the session's id
-- ARGV[8] owner_prefix?: what begins the name of an owner's main index (one Redis only)
-- ARGV[9] archived_prefix?: what begins the name of an owner's archived index
-- ARGV[10] pinned_prefix?: what begins the name of an owner's pinned index
-- RETURNS {outcome, owner, score}
-- outcome: 1 changed (with its owner and its score, for the caller to move its index
-- entries where they live in other slots), 0 no session the caller may use, -9 a key of
-- another type.
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers
-- INCLUDE index

local meta = KEYS[1]
if not holds(meta, 'hash') then return {-9} end
if redis.call('EXISTS', meta) == 0 then return {0} end
local owner = redis.call('HGET', meta, 'owner')
if refuses(owner, ARGV[1], ARGV[2]) then return {0} end
local score = whole(redis.call('HGET', meta, 'updated_at') or '') or 0
local indexes = false
if owner and ARGV[8] then
  indexes = {ARGV[8] .. owner, ARGV[9] .. owner, ARGV[10] .. owner}
  for _, index in ipairs(indexes) do
    if not holds(index, 'zset') then return {-9} end
  end
end

if ARGV[3] == '-' then redis.call('HDEL', meta, 'title', 'title_auto') end
if string.sub(ARGV[3], 1, 1) == '=' then
  redis.call('HSET', meta, 'title', string.sub(ARGV[3], 2))
  redis.call('HDEL', meta, 'title_auto')
end
if string.sub(ARGV[4], 1, 1) == '=' then
  redis.call('HSET', meta, 'system_prompt', string.sub(ARGV[4], 2))
end
for _, flag in ipairs({{'pinned', ARGV[5]}, {'archived', ARGV[6]}}) do
  if flag[2] == '1' then redis.call('HSET', meta, flag[1], '1') end
  if flag[2] == '0' then redis.call('HDEL', meta, flag[1]) end
end
if indexes then file_owned(meta, ARGV[7], score, indexes[1], indexes[2], indexes[3]) end
return {1, owner, score}
