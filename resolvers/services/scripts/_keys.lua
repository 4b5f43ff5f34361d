-- keys: what a key holds, so a write never meets a value of another type.
-- True when the key is missing or holds `wanted` ('hash', 'list', 'stream', ...).
local function holds(key, wanted)
  local found = redis.call('TYPE', key)
  found = type(found) == 'table' and found['ok'] or found
  return found == 'none' or found == wanted
end
