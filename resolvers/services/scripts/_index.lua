-- index: the one way a script writes a session's index entries.
-- The rule (docs/architecture.md, "The index"): a session's score is its updated_at, in
-- every index that lists it (everyone's, and its owner's). Writers that move activity on
-- write it with ZADD GT, so two racing writers never move it back.
local function place(index, session_id, score)
  redis.call('ZADD', index, 'GT', score, session_id)
end
