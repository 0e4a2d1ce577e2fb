-- fields_lib: unpacking a stream entry's fields sent as one argument, and counting the
-- dead letters added by error type (queues/scripts.py puts this file in front of the
-- scripts that need it: commit, relay, dead_letter and every saga script).
-- queues.commit.pack_fields packs the fields as "<len>:<bytes>" for each name and value in
-- turn: one argument per entry is far cheaper for the client to send
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

-- A dead letter was added with these (unpacked) fields: HINCRBY +1 its error type (field
-- dlq_error_type, "?" if none) in the hash of counts (seawall:{stream}:dlq-counts:<handler>).
local function count_dead_letter(counts, fields)
  local error_type = '?'
  for f = 1, #fields, 2 do
    if fields[f] == 'dlq_error_type' then
      error_type = fields[f + 1]
      break
    end
  end
  if error_type == '' then
    error_type = '?'
  end
  redis.call('HINCRBY', counts, error_type, 1)
end

-- The counts hash of a dead-letter stream, for the saga scripts, which get only the
-- stream: seawall:{stream}:dlq:<handler> -> seawall:{stream}:dlq-counts:<handler>, the same
-- slot (queues/keys.py HandlerKeys.dlq_counts builds the same name).
local function dlq_counts_key(dlq)
  local base, handler = string.match(dlq, '^(seawall:{[^{}]+}):dlq:(.+)$')
  return base .. ':dlq-counts:' .. handler
end
