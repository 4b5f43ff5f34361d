-- tree: a session's branches, kept beside its list.
-- The list holds the active path (LangChain's layout, newest first): a message's parent
-- is the one below it. `tree` (a hash) holds every message off the path: its id ->
-- '<length of its parent's id>:<parent's id><element>'. `kids` (a hash) holds, for each
-- message that has a child off the path, its id ('' for the conversation's start) -> the
-- ids of all its children, oldest first, as a JSON list. A message without an entry has
-- at most one child: the next on the path. Ids carry their depth (see history.py), so
-- the path's message at a depth is one LINDEX.
-- INCLUDE messages
-- INCLUDE numbers

local function tree_entry(parent, raw)
  return #parent .. ':' .. parent .. raw
end
-- An off-path message's parent and element, or nil for a value this server did not write.
local function tree_parse(value)
  if type(value) ~= 'string' then return nil end
  local size = string.match(value, '^(%d+):')
  local length = size and whole(size)
  if length == nil or #size + 1 + length > #value then return nil end
  local from = #size + 2
  return string.sub(value, from, from + length - 1), string.sub(value, from + length)
end
-- A kids entry as a list of ids; nil when there is none, or it is not such a list.
local function id_list(value)
  local data = decoded(value)
  if not data or #data == 0 then return nil end
  local ids = {}
  for i = 1, #data do
    if type(data[i]) ~= 'string' then return nil end
    ids[i] = data[i]
  end
  return ids
end
-- The id of the path's message at `position` (n: the list's length).
local function path_id(messages, n, position)
  return id_at(redis.call('LINDEX', messages, n - 1 - position), position)
end
-- The id of the message the path's message at `position` follows ('' for the first).
local function parent_on_path(messages, n, position)
  if position == 0 then return '' end
  return path_id(messages, n, position - 1)
end
-- The depth an id names (its leading digits), or nil.
local function depth_of(id)
  local digits = type(id) == 'string' and string.match(id, '^(%d+)')
  return digits and whole(digits) or nil
end
-- Whether the element at `position` carries an id of its own that names its depth (ids
-- of other programs' elements are their positions, which another element takes too).
local function owns_id(raw, position)
  local id = id_at(raw, position)
  return id ~= tostring(position) and depth_of(id) == position
end

-- Moving the path's messages from `k` on off it: what it takes, read only. A message
-- off the path is found by its id alone, so each must carry one of its own that no
-- other message off the path has: `plan.unstamped` says one has only its position (an
-- element another program wrote; see `stamp_ids.lua`), `plan.clash` that its id is
-- taken.
local function plan_off_path(messages, tree, kids, n, k)
  local plan = {parent = parent_on_path(messages, n, k), moves = {}, listed = {}}
  if k >= n then return plan end
  local raws = redis.call('LRANGE', messages, 0, n - 1 - k)
  local parent = plan.parent
  for position = k, n - 1 do
    local raw = raws[n - position]
    local id = id_at(raw, position)
    if not owns_id(raw, position) then plan.unstamped = true end
    if redis.call('HEXISTS', tree, id) == 1 then plan.clash = true end
    plan.moves[#plan.moves + 1] = {id = id, parent = parent, raw = raw}
    parent = id
  end
  -- A moved message with a child has it off the path too: its children are listed.
  for i = 1, #plan.moves - 1 do
    if not id_list(redis.call('HGET', kids, plan.moves[i].id)) then
      plan.listed[#plan.listed + 1] = {plan.moves[i].id, plan.moves[i + 1].id}
    end
  end
  return plan
end
local function write_off_path(messages, tree, kids, plan, n, k)
  for _, move in ipairs(plan.moves) do
    redis.call('HSET', tree, move.id, tree_entry(move.parent, move.raw))
  end
  for _, entry in ipairs(plan.listed) do
    redis.call('HSET', kids, entry[1], cjson.encode({entry[2]}))
  end
  if k >= n then return end
  if k == 0 then redis.call('DEL', messages) else redis.call('LTRIM', messages, n - k, -1) end
end

-- The children of `parent` once `child` is added after them (`first`: its child on the
-- path until now, listed too when it was not, as a message another program appended
-- is not), or nil when nothing needs listing (a first child).
local function children_with(kids, parent, first, child)
  local listed = id_list(redis.call('HGET', kids, parent))
  if listed == nil then
    if first == nil then return nil end
    listed = {}
  end
  local seen = {}
  for _, id in ipairs(listed) do seen[id] = true end
  if first ~= nil and not seen[first] then listed[#listed + 1] = first end
  if child ~= nil and not seen[child] then listed[#listed + 1] = child end
  return listed
end
-- A session's time to live as its metadata has it (ms; 0: none), read before a script
-- recreates a key (a DEL then a push), and given back to the keys after.
local function life_of(meta)
  local ms = redis.call('PTTL', meta)
  if type(ms) == 'number' and ms > 0 then return ms end
  return 0
end
local function keep_life(ms, ...)
  if ms > 0 then
    for _, key in ipairs({...}) do redis.call('PEXPIRE', key, ms) end
  end
end

-- A summary written for a path that changed from `k` on: gone with its place, or stale
-- when it covers what changed. Read only; returns the writes as a function.
local function path_change(meta, k, held)
  local state = redis.call('HMGET', meta, 'epoch', 'summary_at', 'summary_covers')
  local epoch = (whole(state[1] or '0') or 0) + 1
  local at, covers = whole(state[2] or ''), whole(state[3] or '')
  local drop = not held or (at ~= nil and at >= k) or (state[2] and at == nil)
  local stale = not drop and at ~= nil and covers ~= nil and covers >= k
  return function(messages)
    redis.call('HSET', meta, 'epoch', epoch, 'list_mark', mark_of(messages))
    if drop then
      redis.call('HDEL', meta, 'summary_at', 'summary_covers', 'summary_stale')
    elseif stale then
      redis.call('HSET', meta, 'summary_stale', '1', 'summary_covers', -1)
    end
  end
end

-- Forgetting the path's message at `p` and everything below it, on the path and off it:
-- what it takes, read only. `tail` is the path from p on, newest first (LRANGE 0 n-1-p).
local function plan_forget(messages, tree, kids, n, p, tail)
  local plan = {parent = parent_on_path(messages, n, p), gone = {}, raws = {}, unlisted = {}}
  local on_path, queue = {}, {}
  for position = p, n - 1 do
    local id = id_at(tail[n - position], position)
    on_path[id] = true
    queue[#queue + 1] = id
  end
  local seen = {}
  local budget = redis.call('HLEN', tree) + n + 1
  local i = 1
  while i <= #queue and budget > 0 do
    local id = queue[i]
    i, budget = i + 1, budget - 1
    local listed = id_list(redis.call('HGET', kids, id))
    if listed then
      plan.unlisted[#plan.unlisted + 1] = id
      for _, child in ipairs(listed) do
        if not on_path[child] and not seen[child] then
          local parent, raw = tree_parse(redis.call('HGET', tree, child))
          -- Only a message that says it follows this one is below it.
          if parent == id then
            seen[child] = true
            plan.gone[#plan.gone + 1] = child
            plan.raws[#plan.raws + 1] = raw
            queue[#queue + 1] = child
          end
        end
      end
    end
  end
  local siblings = id_list(redis.call('HGET', kids, plan.parent))
  if siblings then
    local forgotten = id_at(tail[n - p], p)
    plan.siblings = {}
    for _, id in ipairs(siblings) do
      if id ~= forgotten then plan.siblings[#plan.siblings + 1] = id end
    end
  end
  return plan
end
local function write_forget(tree, kids, plan)
  for _, id in ipairs(plan.gone) do redis.call('HDEL', tree, id) end
  for _, id in ipairs(plan.unlisted) do redis.call('HDEL', kids, id) end
  if plan.siblings and #plan.siblings > 0 then
    redis.call('HSET', kids, plan.parent, cjson.encode(plan.siblings))
  elseif plan.siblings then
    redis.call('HDEL', kids, plan.parent)
  end
end
