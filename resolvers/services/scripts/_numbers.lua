-- numbers: values another program may have left in a key, read strictly.
-- Redis hands Lua numbers back to commands as '%.17g' writes them: whole numbers up to
-- 2^53 go out exactly, without an exponent.
local MAX_COUNT = 2147483647
local MAX_EXACT = 9007199254740991
-- A whole number in decimal (an optional minus, at most 16 digits), or nil.
local function whole(value)
  if type(value) ~= 'string' or #value > 17 or not string.match(value, '^%-?%d+$') then
    return nil
  end
  local n = tonumber(value)
  if n == nil or n > MAX_EXACT or n < -MAX_EXACT then return nil end
  return n
end
-- A count (0 to 2^31-1), or nil.
local function count(value)
  local n = whole(value)
  if n ~= nil and n >= 0 and n <= MAX_COUNT then return n end
  return nil
end
-- A count that a JSON document holds as a number, or nil.
local function json_count(value)
  if type(value) ~= 'number' or value ~= value or value < 0 or value > MAX_COUNT
      or value ~= math.floor(value) then
    return nil
  end
  return value
end
-- A sum of counts, kept within 0 to 2^31-1.
local function bounded(n)
  if n < 0 then return 0 end
  if n > MAX_COUNT then return MAX_COUNT end
  return n
end
