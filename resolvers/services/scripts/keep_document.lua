-- Keeps a persisted GraphQL document (APQ) under its hash; past the most kept, drops the
-- least recently used documents with their entries.
-- KEYS[1] document: the document's key
-- KEYS[2] index: the kept documents' hashes by last use
-- ARGV[1] hash: the document's SHA-256
-- ARGV[2] document: its text
-- ARGV[3] ttl: how long it is kept after its last use (s)
-- ARGV[4] now: milliseconds since the epoch
-- ARGV[5] most: most documents kept
-- ARGV[6] prefix: what begins a document's key
-- RETURNS kept
-- kept: 1 kept, 0 not (the index holds a value of another type).
-- INCLUDE keys
-- INCLUDE numbers

if not holds(KEYS[2], 'zset') then return 0 end
local over = redis.call('ZCARD', KEYS[2]) + 1 - (whole(ARGV[5]) or 0)
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then over = over - 1 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
if over > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #oldest, 2 do redis.call('DEL', ARGV[6] .. oldest[i]) end
end
return 1
