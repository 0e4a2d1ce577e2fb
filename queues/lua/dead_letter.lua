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
-- ARGV[4 .. 3+S]  the shared parts: fields that many dead letters of the batch have in
--          common (handler, stream, consumer, host, the error, its traceback, the reason),
--          each packed (fields_lib.lua's text or binary packing): a flood of one failure
--          sends and unpacks them once per batch, not once per message
-- ARGV[4+S ..] for each entry, three: its id; the number of its shared part (1..S), 0 for
--          none; its own fields packed (the original ones, the entry id of origin,
--          attempts, times; every field when it has no shared part)
-- Returns, per entry, the dead letter's id, or false (nil) if the entry was no longer
-- pending (already acked): the message is then kept once, where it is, never twice.
-- (unpacked() and error_type_field() come from fields_lib.lua, which queues/scripts.py
-- puts in front.)
local parts = tonumber(ARGV[3])
local shared, shared_size, shared_type = {}, {}, {}
for s = 1, parts do
  shared[s] = unpacked(ARGV[3 + s])
  shared_size[s] = #shared[s]
  shared_type[s] = error_type_field(shared[s])
end
local out, counted, types = {}, {}, {}
for i = 4 + parts, #ARGV, 3 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 0 then
    out[#out + 1] = false
  else
    if ARGV[2] == '1' then
      redis.call('XDEL', KEYS[1], ARGV[i])
    end
    local fields = unpacked(ARGV[i + 2])
    local s = tonumber(ARGV[i + 1])
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
