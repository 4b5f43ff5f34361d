-- stream: a turn's events as a Redis Stream. Entry '<seq>-0' is the one whose last
-- event is number seq; token entries hold f (the first token's number) and t (the
-- tokens, a JSON list), the end entry s (COMPLETE, STOPPED or FAILED) and more.
-- INCLUDE numbers
-- The number of the stream's last entry (0 when there is none); when that entry is an
-- end, its status (else false); and whether that end stored nothing (u: a regenerate
-- stopped before its first token).
local function last_entry(key)
  local rows = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #rows == 0 then return 0, false, false end
  local seq = whole(string.match(rows[1][1], '^(%d+)%-')) or 0
  local fields = rows[1][2]
  local status, unstored = false, false
  for i = 1, #fields, 2 do
    if fields[i] == 's' then status = fields[i + 1] end
    if fields[i] == 'u' then unstored = true end
  end
  return seq, status, unstored
end
-- Appends the tokens numbered first..last as one entry, unless the stream holds them
-- already (a retried write): the stream's top entry number afterwards.
local function append_tokens(key, first, last, tokens, cap, top)
  if tokens ~= '' and last > top then
    redis.call('XADD', key, 'MAXLEN', '~', cap, last .. '-0', 'f', first, 't', tokens)
    return last
  end
  return top
end
