-- dead_letter: ack a batch of failed entries of one stream and append each to the handler's
-- dead-letter stream, atomically per entry (one call per batch: a flood of invalid
-- messages is dead-lettered at about the speed of acks).
-- KEYS[1]  source stream the entries were read from (the user's stream or the retry stream)
-- KEYS[2]  the handler's dead-letter stream (seawall:{stream}:dlq:<handler>)
-- KEYS[3]  its counts by error type (seawall:{stream}:dlq-counts:<handler>), a hash
--          error type -> dead letters: HINCRBY + the number added of each type (the
--          dlq_error_type field, "?" if none)
-- ARGV[1]  consumer group (the handler's name)
-- ARGV[2]  "1" to XDEL each entry after its ack (only for the handler's own retry stream)
-- ARGV[3]  S, the number of shared parts that follow
-- ARGV[4 .. 3+2S]  the shared parts, two each: a number, then fields that many dead
--          letters of the batch have in common (handler, stream, consumer, host, the
--          error, its traceback, the reason), packed (fields_lib.lua's text or binary
--          packing): a flood of one failure sends and unpacks them once per batch
-- ARGV[4+2S] the letters, one after the other, each (big-endian): the number of its shared
--          part (2 bytes, 0 for none), where its original fields are (1 byte: 0 among its
--          own fields, 1 in the source stream, to copy from the entry as stored), the
--          entry id (4-byte length, bytes), then its own fields as fields_lib's binary
--          pairs (4-byte count, then each name and value as a 4-byte length and bytes):
--          the original ones (unless copied), the entry id of origin, attempts, times;
--          every other field when it has no shared part. One argument for the batch: the
--          client packs one, not one per letter.
-- Returns, per letter, the dead letter's id; false (nil) if the entry was no longer
-- pending (already acked): the message is then kept once, where it is, never twice; or 0
-- for a letter to copy whose entry is no longer in the source stream (trimmed or deleted
-- while pending): it is left pending, for the client to send again with its fields.
-- (unpacked(), binary_pairs() and error_type_field() come from fields_lib.lua, which
-- queues/scripts.py puts in front.)
local parts = tonumber(ARGV[3])
local shared, shared_size, shared_type = {}, {}, {}
for s = 0, parts - 1 do
  local number, fields = tonumber(ARGV[4 + 2 * s]), unpacked(ARGV[5 + 2 * s])
  shared[number] = fields
  shared_size[number] = #fields
  shared_type[number] = error_type_field(fields)
end
local letters = ARGV[4 + 2 * parts]
local out, counted, types = {}, {}, {}
local at, size = 1, #letters
while at <= size do
  local s, origin, entry_id, count, start = struct.unpack('>I2BI4c0I4', letters, at)
  local fields, stored
  fields, at = binary_pairs(letters, count, start)
  if origin == 1 then
    stored = redis.call('XRANGE', KEYS[1], entry_id, entry_id)[1]
  end
  if origin == 1 and stored == nil then
    out[#out + 1] = 0
  elseif redis.call('XACK', KEYS[1], ARGV[1], entry_id) == 0 then
    out[#out + 1] = false
  else
    if stored ~= nil then
      -- the original fields first, as the entry holds them (stale dlq_* ones dropped)
      local original, kept, n = stored[2], {}, 0
      for f = 1, #original, 2 do
        if string.sub(original[f], 1, 4) ~= 'dlq_' then
          kept[n + 1], kept[n + 2] = original[f], original[f + 1]
          n = n + 2
        end
      end
      for k = 1, #fields do
        kept[n + k] = fields[k]
      end
      fields = kept
    end
    if ARGV[2] == '1' then
      redis.call('XDEL', KEYS[1], entry_id)
    end
    local error_type = nil
    if s > 0 then
      local common, n = shared[s], #fields
      for k = 1, shared_size[s] do
        fields[n + k] = common[k]
      end
      error_type = shared_type[s]
    end
    error_type = error_type or error_type_field(fields) or '?'
    out[#out + 1] = redis.call('XADD', KEYS[2], '*', unpack(fields))
    if counted[error_type] == nil then
      counted[error_type] = 1
      types[#types + 1] = error_type
    else
      counted[error_type] = counted[error_type] + 1
    end
  end
end
for _, error_type in ipairs(types) do
  redis.call('HINCRBY', KEYS[3], error_type, counted[error_type])
end
return out
