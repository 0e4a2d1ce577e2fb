-- fields_lib: unpacking a stream entry's fields sent as one argument, and counting the
-- dead letters by error type (queues/scripts.py puts this file in front of the
-- scripts that need it: commit, relay, dead_letter, replay, purge and every saga script).
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

-- The error type a dead letter's fields (unpacked, or as XRANGE returns them) name, "?"
-- if none: the field of its count in seawall:{stream}:dlq-counts:<handler>.
local function error_type_of(fields)
  for f = 1, #fields, 2 do
    if fields[f] == 'dlq_error_type' then
      return fields[f + 1] ~= '' and fields[f + 1] or '?'
    end
  end
  return '?'
end

-- A dead letter with these fields was added to the stream whose counts are `counts`.
local function count_dead_letter(counts, fields)
  redis.call('HINCRBY', counts, error_type_of(fields), 1)
end

-- One of `error_type` left the stream whose counts are `counts` (replayed, purged).
local function uncount_dead_letter(counts, error_type)
  if redis.call('HINCRBY', counts, error_type, -1) <= 0 then
    redis.call('HDEL', counts, error_type)
  end
end
