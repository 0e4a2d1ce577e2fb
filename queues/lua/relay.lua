-- relay: write follow-ups taken from an outbox to their target stream (one slot: the
-- target's). The outbox entries are XDELed afterwards by the caller, in the same pipeline.
-- KEYS[1]   the target stream
-- ARGV[1..] the follow-ups, each one argument: its fields packed as "<len>:<bytes>" for
--           each name and value in turn (as commit.lua received them)
-- Returns how many were written.
local function unpacked(packed)
  -- (the same decoder as commit.lua's)
  local fields, at, size = {}, 1, #packed
  while at <= size do
    local colon = string.find(packed, ':', at, true)
    local length = tonumber(string.sub(packed, at, colon - 1))
    fields[#fields + 1] = string.sub(packed, colon + 1, colon + length)
    at = colon + length + 1
  end
  return fields
end

for i = 1, #ARGV do
  redis.call('XADD', KEYS[1], '*', unpack(unpacked(ARGV[i])))
end
return #ARGV
