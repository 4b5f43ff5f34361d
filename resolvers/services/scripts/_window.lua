-- window: what a turn sends of the history, read in the step that starts it.
-- INCLUDE session
-- INCLUDE numbers
-- The newest `n` messages below the newest `skip` (newest first), the list's length,
-- and the summary of trimmed history with its position, while the list holds what it
-- was written for and it summarizes messages below the newest `skip` only (else false,
-- false).
local function window_of(meta, messages, n, skip)
  local length = redis.call('LLEN', messages)
  local window = {}
  if n > 0 then window = redis.call('LRANGE', messages, skip, skip + n - 1) end
  local summary, summary_at = false, false
  local state = redis.call('HMGET', meta, 'summary_at', 'summary_stale', 'list_mark',
    'summary_covers')
  local at, covers = whole(state[1] or ''), whole(state[4] or '') or -1
  -- Below the turn's place (an edit or a regenerate leaves the newest `skip` out): a
  -- summary there, or one of messages there, is of another branch.
  local below = length - skip
  if at and at >= 0 and at < below and covers < below and not state[2]
      and intact(messages, state[3]) then
    local raw = redis.call('LINDEX', messages, length - 1 - at)
    if kind_of(raw) == 'system' then summary, summary_at = raw, at end
  end
  return window, length, summary, summary_at
end
