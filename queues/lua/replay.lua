-- replay: move dead letters back to the handler's own retry stream, one batch of ids a call.
-- KEYS[1]  the handler's dead-letter stream (seawall:{stream}:dlq:<handler>)
-- KEYS[2]  the handler's retry stream (seawall:{stream}:retry:<handler>)
-- KEYS[3]  the dead letters' counts by error type (seawall:{stream}:dlq-counts:<handler>):
--          HINCRBY -1 for each one moved (the field is removed when it reaches 0)
-- ARGV[1..] dead-letter entry ids
-- Returns the ids replayed. Ids that no longer exist are skipped, so a replay killed
-- half-way and run again neither loses nor doubles a message.
--
-- The redelivery keeps the original fields, minus the dead-letter metadata (dlq_*),
-- first_failed_at and any earlier replayed_from; attempt is reset to 1; origin_entry_id
-- is kept (taken from dlq_entry_id when the message failed on its first delivery);
-- replayed_from is set to the dead letter's id. Never re-XADDed to the user's stream:
-- that would hand the message again to every other handler on it.
-- (error_type_of() and uncount_dead_letter() come from fields_lib.lua, put in front.)
local replayed = {}
for _, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found == 1 then
    local src = found[1][2]
    local out = {}
    local origin = nil
    local dlq_origin = nil
    for i = 1, #src, 2 do
      local name, value = src[i], src[i + 1]
      if name == 'dlq_entry_id' then
        dlq_origin = value
      elseif name == 'origin_entry_id' then
        origin = value
      end
      if string.sub(name, 1, 4) ~= 'dlq_' and name ~= 'attempt' and name ~= 'first_failed_at'
          and name ~= 'replayed_from' and name ~= 'origin_entry_id' then
        out[#out + 1] = name
        out[#out + 1] = value
      end
    end
    out[#out + 1] = 'attempt'
    out[#out + 1] = '1'
    origin = origin or dlq_origin
    if origin then
      out[#out + 1] = 'origin_entry_id'
      out[#out + 1] = origin
    end
    out[#out + 1] = 'replayed_from'
    out[#out + 1] = id
    redis.call('XADD', KEYS[2], '*', unpack(out))
    redis.call('XDEL', KEYS[1], id)
    uncount_dead_letter(KEYS[3], error_type_of(src))
    replayed[#replayed + 1] = id
  end
end
return replayed
