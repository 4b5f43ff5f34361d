-- window: what a turn sends of the history, read in the step that starts it.
-- INCLUDE session
-- INCLUDE numbers
-- The newest `n` messages below the newest `skip` (newest first), the list's length,
-- and the summary of trimmed history with its position, while the list holds what it
-- was written for (else false, false).
local function window_of(meta, messages, n, skip)
  local length = redis.call('LLEN', messages)
  local window = {}
  if n > 0 then window = redis.call('LRANGE', messages, skip, skip + n - 1) end
  local summary, summary_at = false, false
  local state = redis.call('HMGET', meta, 'summary_at', 'summary_stale', 'list_mark')
  local at = whole(state[1] or '')
  if at and at >= 0 and at < length and not state[2] and intact(messages, state[3]) then
    local raw = redis.call('LINDEX', messages, length - 1 - at)
    if kind_of(raw) == 'system' then summary, summary_at = raw, at end
  end
  return window, length, summary, summary_at
end
