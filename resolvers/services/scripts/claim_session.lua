-- Counts a new session against its creator's limits (a user, or the address of an
-- anonymous caller), exactly across processes: sessions made this minute, and sessions
-- held.
-- KEYS[1] held: the creator's sessions (ids scored by creation, ms)
-- KEYS[2] made: sessions the creator made this minute
-- ARGV[1] session_id: the new session's id
-- ARGV[2] now_ms: milliseconds since the epoch
-- ARGV[3] most_held: most sessions held (0: no bound)
-- ARGV[4] per_minute: most sessions made a minute (0: no bound)
-- ARGV[5] window_s: how long the minute's count is kept
-- RETURNS {outcome, count}
-- outcome: 1 counted, -1 too many made this minute (count: how many), -2 too many held
-- (count: how many; some may be gone already: the caller prunes and asks again), -9 a
-- key holds a value of another type. Nothing is written unless it is 1.
-- INCLUDE keys
-- INCLUDE numbers

local held, made = KEYS[1], KEYS[2]
if not (holds(held, 'zset') and holds(made, 'string')) then return {-9, 0} end
local made_now = whole(redis.call('GET', made) or '0') or 0
local held_now = redis.call('ZCARD', held)
local per_minute, most = whole(ARGV[4]) or 0, whole(ARGV[3]) or 0
if per_minute > 0 and made_now >= per_minute then return {-1, made_now} end
if most > 0 and held_now >= most then return {-2, held_now} end

redis.call('ZADD', held, ARGV[2], ARGV[1])
redis.call('SET', made, math.max(made_now, 0) + 1, 'EX', ARGV[5])
return {1, held_now + 1}
