-- index: the one way a script writes a session's index entries.
-- The rule (docs/architecture.md, "The index"): a session's score is its updated_at, in
-- every index that lists it. Everyone's index lists every session; of its owner's three,
-- its flags choose: the main one unless it is archived, the archived one when it is, the
-- pinned one when it is pinned and not archived. Writers that move activity on write it
-- with ZADD GT, so two racing writers never move it back.
local function place(index, session_id, score)
  redis.call('ZADD', index, 'GT', score, session_id)
end
-- The owner's indexes that list the session by its flags in `meta`, and those that do
-- not (`main`, `archived`, `pinned`: the owner's three).
local function owner_lists(meta, main, archived, pinned)
  local flags = redis.call('HMGET', meta, 'pinned', 'archived')
  if flags[2] == '1' then return {archived}, {main, pinned} end
  if flags[1] == '1' then return {main, pinned}, {archived} end
  return {main}, {archived, pinned}
end
-- The session's entries in its owner's indexes, after activity or a change of its
-- flags: placed where its flags list it, removed where they do not.
local function file_owned(meta, session_id, score, main, archived, pinned)
  local listed, unlisted = owner_lists(meta, main, archived, pinned)
  for _, index in ipairs(listed) do place(index, session_id, score) end
  for _, index in ipairs(unlisted) do redis.call('ZREM', index, session_id) end
end
