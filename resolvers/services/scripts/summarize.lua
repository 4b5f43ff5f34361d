-- Keeps a summary of trimmed history in the list: in the old summary's place, or as the
-- newest message when there is none yet (only while no turn runs: a new element would
-- move the positions a running turn gave its messages).
-- KEYS[1] messages: the session's list
-- KEYS[2] meta: the session's metadata
-- KEYS[3] lock: the session's lock
-- ARGV[1] summary: the summary's element (a system message, LangChain's layout)
-- ARGV[2] covers: the last position it covers
-- ARGV[3] at: the old summary's position (-1: none)
-- ARGV[4] epoch: the session's epoch when the summarized messages were read
-- ARGV[5] position: the position the summary's id names (its own, which it keeps off
-- the path as every message does): where it must land
-- RETURNS kept
-- kept: 1 kept, 0 not (the session is gone; its messages were rewound, replaced or
-- rewritten since they were read; another summary covers as much; it would land
-- elsewhere than its id says; or a turn runs, or the path ends with a reply whose tool
-- calls wait for their results, and there is no summary to replace: a new one would
-- come between the calls and their results).
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers

local messages, meta = KEYS[1], KEYS[2]
if not (holds(messages, 'list') and holds(meta, 'hash')) then return 0 end
if redis.call('EXISTS', meta) == 0 then return 0 end
local state = redis.call('HMGET', meta, 'epoch', 'summary_at', 'summary_covers', 'summary_stale',
  'list_mark')
-- Read from another version of the conversation than the one there now: what it
-- summarizes may be gone.
if (whole(state[1] or '0') or -1) ~= whole(ARGV[4]) then return 0 end
if not intact(messages, state[5]) then return 0 end
local length = redis.call('LLEN', messages)
local covers, at = whole(ARGV[2]), whole(ARGV[3])
if covers == nil or at == nil or covers >= length then return 0 end
local stored_at = whole(state[2] or '')
if at < 0 and stored_at then return 0 end
if not state[4] and covers <= (whole(state[3] or '') or -1) then return 0 end
local place = false
local lands = at
if at < 0 then lands = length end
if whole(ARGV[5]) ~= lands then return 0 end
if at >= 0 then
  if stored_at ~= at or at >= length
      or kind_of(redis.call('LINDEX', messages, length - 1 - at)) ~= 'system' then
    return 0
  end
  place = length - 1 - at
elseif redis.call('EXISTS', KEYS[3]) == 1 or asks_for_tools(redis.call('LINDEX', messages, 0)) then
  return 0
end

if place then
  redis.call('LSET', messages, place, ARGV[1])
else
  redis.call('LPUSH', messages, ARGV[1])
  redis.call('HSET', meta, 'summary_at', length)
end
redis.call('HSET', meta, 'summary_covers', covers, 'list_mark', mark_of(messages))
redis.call('HDEL', meta, 'summary_stale')
return 1
