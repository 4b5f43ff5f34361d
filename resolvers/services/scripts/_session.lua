-- session: who may use a session, and its usage as the list holds it.
-- INCLUDE messages
-- Whether a session owned by `owner` is out of reach of the caller (user id `user`,
-- `admin` '1' for an admin).
local function refuses(owner, admin, user)
  return owner ~= false and owner ~= nil and admin ~= '1' and owner ~= user
end
-- What this server last left in the list: '<length>:<sha1 of the newest element>'.
local function mark_of(list)
  local n = redis.call('LLEN', list)
  if n == 0 then return '0:' end
  return n .. ':' .. redis.sha1hex(redis.call('LINDEX', list, 0))
end
-- Whether the list still holds what the mark saw, maybe with more appended after it (as
-- other LangChain programs do); a cleared or rewritten list does not. A session written
-- before marks were kept is taken as it is, unless its list is empty.
local function intact(list, mark)
  local n = redis.call('LLEN', list)
  if mark == false or mark == nil then return n > 0 end
  local kept, digest = string.match(mark, '^(%d+):(%x*)$')
  kept = kept and whole(kept)
  if kept == nil or kept > n then return false end
  if kept == 0 then return true end
  return redis.sha1hex(redis.call('LINDEX', list, n - kept)) == digest
end
-- The session's usage: the sum of its replies' counts. The kept sums while the list is
-- intact, else the sum over the list read anew (a program cleared or rewrote it, or the
-- sums are not counts), with the replies off the path in `tree` (an optional key) while
-- the list is intact. Returns tokens in, tokens out, whether the kept sums held, and
-- whether the list is intact (its branches keep their places).
local function usage_of(list, meta, tree)
  local kept = redis.call('HMGET', meta, 'input_tokens', 'output_tokens', 'list_mark')
  local tokens_in, tokens_out = count(kept[1] or '0'), count(kept[2] or '0')
  local placed = intact(list, kept[3])
  if tokens_in and tokens_out and placed then
    return tokens_in, tokens_out, true, true
  end
  local sum_in, sum_out = 0, 0
  local raws = redis.call('LRANGE', list, 0, -1)
  if placed and tree then
    for _, value in ipairs(redis.call('HVALS', tree)) do
      -- An off-path entry: '<length>:<parent><element>' (see _tree.lua).
      local size = string.match(value, '^(%d+):')
      local length = size and whole(size)
      if length and #size + 1 + length <= #value then
        raws[#raws + 1] = string.sub(value, #size + 2 + length)
      end
    end
  end
  for _, raw in ipairs(raws) do
    local more_in, more_out = counted(raw)
    sum_in, sum_out = sum_in + more_in, sum_out + more_out
  end
  return bounded(sum_in), bounded(sum_out), false, placed
end
