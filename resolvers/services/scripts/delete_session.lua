-- Deletes a session and everything kept for it in its slot: the list, the metadata, the
-- lock, the running turn's record, every turn's events, the turn counters and its
-- shares; on one Redis its index entries, its turn ids' and its shares' records too.
-- KEYS[1] meta: the session's metadata
-- KEYS[2] messages: the session's list
-- KEYS[3] lock: the session's lock
-- KEYS[4] active: the running turn's record
-- KEYS[5] turn_ids: the session's turns
-- KEYS[6] index?: every session by activity (one Redis only)
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] session_id: the session's id
-- ARGV[4] tag: the session's hash tag, which begins the names of its slot's keys
-- ARGV[5] extra: more keys of the slot to delete, separated by spaces (the turn counters)
-- ARGV[6] turn_prefix?: what begins the name of a turn id's record (one Redis only)
-- ARGV[7] owner_prefix?: what begins the name of an owner's index (one Redis only)
-- ARGV[8] archived_prefix?: what begins the name of an owner's archived index
-- ARGV[9] pinned_prefix?: what begins the name of an owner's pinned index
-- ARGV[10] share_prefix?: what begins the name of a share id's record
-- RETURNS {outcome, owner, turn_ids, share_ids}
-- outcome: 1 deleted (with the owner, turn ids and share ids it had, for the caller to
-- remove what lives in other slots), 0 no session the caller may use, -9 a key of
-- another type.
-- INCLUDE keys
-- INCLUDE session

local meta, messages, lock, active, turn_ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local shares = ARGV[4] .. ':shares'
if not (holds(meta, 'hash') and holds(turn_ids, 'zset') and holds(active, 'hash')
    and holds(shares, 'zset') and (not KEYS[6] or holds(KEYS[6], 'zset'))) then
  return {-9}
end
if redis.call('EXISTS', meta, messages) == 0 then return {0} end
local owner = redis.call('HGET', meta, 'owner')
if refuses(owner, ARGV[1], ARGV[2]) then return {0} end
local owner_indexes = {}
if owner and ARGV[7] then
  owner_indexes = {ARGV[7] .. owner, ARGV[8] .. owner, ARGV[9] .. owner}
  for _, index in ipairs(owner_indexes) do
    if not holds(index, 'zset') then return {-9} end
  end
end
local turns = redis.call('ZRANGE', turn_ids, 0, -1)
local running = redis.call('HGET', active, 'turn_id')
if running then turns[#turns + 1] = running end
local doomed = {meta, messages, lock, active, turn_ids, shares}
for _, turn_id in ipairs(turns) do
  doomed[#doomed + 1] = ARGV[4] .. ':turn:' .. turn_id
  if ARGV[6] then doomed[#doomed + 1] = ARGV[6] .. turn_id end
end
local share_ids = redis.call('ZRANGE', shares, 0, -1)
for _, share_id in ipairs(share_ids) do
  doomed[#doomed + 1] = ARGV[4] .. ':share:' .. share_id
  if ARGV[10] then doomed[#doomed + 1] = ARGV[10] .. share_id end
end
for key in string.gmatch(ARGV[5], '%S+') do doomed[#doomed + 1] = key end

for first = 1, #doomed, 500 do
  redis.call('DEL', unpack(doomed, first, math.min(first + 499, #doomed)))
end
if KEYS[6] then redis.call('ZREM', KEYS[6], ARGV[3]) end
for _, index in ipairs(owner_indexes) do redis.call('ZREM', index, ARGV[3]) end
return {1, owner, turns, share_ids}
