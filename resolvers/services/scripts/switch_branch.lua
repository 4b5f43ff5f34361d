-- Makes the path through a message active: the path up to it, then down its newest
-- children. The old path's messages from where the two part move off it; the cost is
-- the two paths' parts, never the whole tree.
-- KEYS[1] messages: the session's list
-- KEYS[2] meta: the session's metadata
-- KEYS[3] lock: the session's lock
-- KEYS[4] tree: the messages off the active path
-- KEYS[5] kids: the children of messages with a child off the path
-- ARGV[1] admin: '1' when the caller is an admin
-- ARGV[2] user: the caller's user id ('' when anonymous)
-- ARGV[3] position: the message's depth (from its id)
-- ARGV[4] id: the message's id
-- RETURNS {outcome, moved}
-- outcome: 1 switched (moved: the messages that left the path, 0 when it was the path
-- already), 0 no session the caller may use, -1 a turn is running, -2 no message with
-- that id in the session, -5 messages another program wrote are on the part that would
-- leave the path and need ids of their own first (moved: the position they start
-- from), -9 a key holds a value another program wrote (a type, or an id twice).
-- INCLUDE keys
-- INCLUDE session
-- INCLUDE numbers
-- INCLUDE tree

local messages, meta, tree, kids = KEYS[1], KEYS[2], KEYS[4], KEYS[5]
if not (holds(messages, 'list') and holds(meta, 'hash') and holds(tree, 'hash')
    and holds(kids, 'hash')) then
  return {-9}
end
if redis.call('EXISTS', messages, meta) == 0 then return {0} end
if refuses(redis.call('HGET', meta, 'owner'), ARGV[1], ARGV[2]) then return {0} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {-1} end
local n = redis.call('LLEN', messages)
local target, d = ARGV[4], whole(ARGV[3])
if d == nil or d < 0 then return {-2} end
local held = intact(messages, redis.call('HGET', meta, 'list_mark'))
local function on_path(depth, id)
  return depth < n and path_id(messages, n, depth) == id
end

-- Up from the target to where it meets the path (-1: at the start). Each step goes one
-- level up (a parent's id names the depth above), so the walk ends within `d` steps,
-- and within the tree's size.
local path, seen = {}, {}
local id, depth = target, d
local steps = redis.call('HLEN', tree) + 1
while depth >= 0 and not on_path(depth, id) do
  -- A list rewritten by another program has lost its branches' places.
  if not held or steps == 0 then return {-2} end
  steps = steps - 1
  local parent, raw = tree_parse(redis.call('HGET', tree, id))
  if parent == nil or seen[id] then return {-2} end
  if depth == 0 and parent ~= '' then return {-2} end
  if depth > 0 and depth_of(parent) ~= depth - 1 then return {-2} end
  path[depth], seen[id] = {id = id, raw = raw}, true
  id, depth = parent, depth - 1
end
local k = depth + 1
-- Down from the target along the newest children.
local current, at, current_on = target, d, k > d
steps = redis.call('HLEN', tree) + n + 1
while held and steps > 0 do
  steps = steps - 1
  local listed = id_list(redis.call('HGET', kids, current))
  local child = listed and listed[#listed]
  if not child and current_on and at + 1 < n then child = path_id(messages, n, at + 1) end
  if not child then break end
  if current_on and on_path(at + 1, child) then
    current, at = child, at + 1
  else
    local parent, raw = tree_parse(redis.call('HGET', tree, child))
    if parent ~= current or seen[child] or depth_of(child) ~= at + 1 then break end
    if current_on then k = at + 1 end
    path[at + 1], seen[child] = {id = child, raw = raw}, true
    current, at, current_on = child, at + 1, false
  end
end
if path[k] == nil then return {1, 0} end

local plan = plan_off_path(messages, tree, kids, n, k)
-- Messages of another program's on the part that leaves: they need ids of their own
-- first (the caller stamps them from `k` on and asks again).
if plan.unstamped then return {-5, k} end
if plan.clash then return {-9} end
local siblings = children_with(kids, plan.parent, plan.moves[1] and plan.moves[1].id, path[k].id)
local change = path_change(meta, k, held)
local life = life_of(meta)

write_off_path(messages, tree, kids, plan, n, k)
if siblings then redis.call('HSET', kids, plan.parent, cjson.encode(siblings)) end
local depth_now = k
while path[depth_now] do
  redis.call('HDEL', tree, path[depth_now].id)
  redis.call('LPUSH', messages, path[depth_now].raw)
  depth_now = depth_now + 1
end
change(messages)
-- The list may have been made anew (a switch at the first message): the session's life.
keep_life(life, messages, tree, kids)
return {1, #plan.moves}
