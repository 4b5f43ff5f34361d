-- messages: elements of a session's list (LangChain's message_to_dict JSON), read
-- without trusting them.
-- INCLUDE numbers
local function decoded(raw)
  if type(raw) ~= 'string' then return nil end
  local ok, data = pcall(cjson.decode, raw)
  if ok and type(data) == 'table' then return data end
  return nil
end
-- The element's type ('human', 'ai', 'system', ...), or nil.
local function kind_of(raw)
  local data = decoded(raw)
  if data and type(data['type']) == 'string' then return data['type'] end
  return nil
end
-- Whether the element is a reply asking for tool calls (LangChain's tool_calls or
-- invalid_tool_calls, not empty): their results must follow it directly.
local function asks_for_tools(raw)
  local data = decoded(raw)
  local kind = data and data['type']
  local fields = data and type(data['data']) == 'table' and data['data']
  if not fields or (kind ~= 'ai' and kind ~= 'AIMessageChunk') then return false end
  for _, name in ipairs({'tool_calls', 'invalid_tool_calls'}) do
    local calls = fields[name]
    if type(calls) == 'table' and next(calls) ~= nil then return true end
  end
  return false
end
-- The element's id: its own message_id, or its position (counted from the oldest).
local function id_at(raw, position)
  local data = decoded(raw)
  if data and type(data['data']) == 'table' then
    local extra = data['data']['additional_kwargs']
    if type(extra) == 'table' and type(extra['message_id']) == 'string'
        and extra['message_id'] ~= '' then
      return extra['message_id']
    end
  end
  return tostring(position)
end
-- The tokens a stored element added to its session's usage: a reply this server stored
-- (it carries a message_id) with the provider's counts; 0, 0 for anything else.
local function counted(raw)
  local data = decoded(raw)
  local fields = data and type(data['data']) == 'table' and data['data']
  local extra = fields and type(fields['additional_kwargs']) == 'table'
    and fields['additional_kwargs']
  local counts = extra and type(extra['message_id']) == 'string' and fields['usage_metadata']
  if type(counts) == 'table' then
    local tokens_in = json_count(counts['input_tokens'])
    local tokens_out = json_count(counts['output_tokens'])
    if tokens_in and tokens_out then return tokens_in, tokens_out end
  end
  return 0, 0
end
