-- fields_lib: unpacking a stream entry's fields sent as one argument (queues/scripts.py
-- puts this file in front of the scripts that need it: commit, relay, dead_letter and
-- every saga script). queues.commit.pack_fields packs them as "<len>:<bytes>" for each
-- name and value in turn: one argument per entry is far cheaper for the client to send
-- than two per field.
local function unpacked(packed)
  local fields, at, size = {}, 1, #packed
  while at <= size do
    local colon = string.find(packed, ':', at, true)
    local length = tonumber(string.sub(packed, at, colon - 1))
    fields[#fields + 1] = string.sub(packed, colon + 1, colon + length)
    at = colon + length + 1
  end
  return fields
end
