-- fields_lib: unpacking a stream entry's fields sent as one argument, and counting the
-- dead letters by error type (queues/scripts.py puts this file in front of the
-- scripts that need it: commit, relay, dead_letter, replay, purge and every saga script).
-- One argument per entry is far cheaper for the client to send than two per field. Two
-- packings, told apart by their first byte:
-- * text (queues.commit.pack_fields): "<len>:<bytes>" for each name and value in turn;
-- * binary (queues.dead_letters.pack_pairs): a zero byte, the number of name/value pairs
--   (4 bytes, big-endian), then each name and value as a 4-byte big-endian length and its
--   bytes. struct.unpack splits a whole entry in one call: a dead letter's twenty-odd
--   fields cost a fraction of what the text packing's find/sub per field costs.
local BINARY_CHUNK = 200
local binary_formats = {}

-- The struct format of `pairs_` name/value pairs (made once per count).
local function binary_format(pairs_)
  local format = binary_formats[pairs_]
  if format == nil then
    format = '>' .. string.rep('I4c0', pairs_ * 2)
    binary_formats[pairs_] = format
  end
  return format
end

-- `count` name/value pairs of the binary packing, starting at byte `at` of `packed`: the
-- fields, and the position after them.
local function binary_pairs(packed, count, at)
  if count <= BINARY_CHUNK then
    local fields = {struct.unpack(binary_format(count), packed, at)}
    local after = fields[count * 2 + 1]  -- (struct.unpack's last value)
    fields[count * 2 + 1] = nil
    return fields, after
  end
  -- (in chunks: one call returning thousands of values would overflow Lua's stack)
  local fields, n = {}, 0
  while count > 0 do
    local step = math.min(count, BINARY_CHUNK)
    local chunk = {struct.unpack(binary_format(step), packed, at)}
    at = chunk[step * 2 + 1]
    for k = 1, step * 2 do
      fields[n + k] = chunk[k]
    end
    n = n + step * 2
    count = count - step
  end
  return fields, at
end

local function unpacked(packed)
  if string.byte(packed, 1) == 0 then
    local count = struct.unpack('>I4', packed, 2)
    return (binary_pairs(packed, count, 6))
  end
  local fields, n, at, size = {}, 0, 1, #packed
  while at <= size do
    local colon = string.find(packed, ':', at, true)
    local stop = colon + tonumber(string.sub(packed, at, colon - 1))
    n = n + 1
    fields[n] = string.sub(packed, colon + 1, stop)
    at = stop + 1
  end
  return fields
end

-- The error type the fields (unpacked, or as XRANGE returns them) name, nil if none.
local function error_type_field(fields)
  for f = 1, #fields, 2 do
    if fields[f] == 'dlq_error_type' then
      return fields[f + 1] ~= '' and fields[f + 1] or '?'
    end
  end
  return nil
end

-- The error type a dead letter's fields name, "?" if none: the field of its count in
-- seawall:{stream}:dlq-counts:<handler>.
local function error_type_of(fields)
  return error_type_field(fields) or '?'
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
