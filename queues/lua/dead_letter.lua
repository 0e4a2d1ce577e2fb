-- dead_letter: ack a batch of failed entries of one stream and append each to the handler's
-- dead-letter stream, atomically per entry (one call per batch: a flood of invalid
-- messages is dead-lettered at about the speed of acks).
-- KEYS[1]  source stream the entries were read from (the user's stream or the retry stream)
-- KEYS[2]  the handler's dead-letter stream (seawall:{stream}:dlq:<handler>)
-- KEYS[3]  its counts by error type (seawall:{stream}:dlq-counts:<handler>), a hash
--          error type -> dead letters: HINCRBY +1 for each one added, the type being
--          its dlq_error_type field ("?" if none)
-- ARGV[1]  consumer group (the handler's name)
-- ARGV[2]  "1" to XDEL each entry after its ack (only for the handler's own retry stream)
-- ARGV[3..] for each entry: its id, then the dead letter's fields packed as "<len>:<bytes>"
--           for each name and value in turn (queues.commit.pack_fields)
-- Returns, per entry, the dead letter's id, or false (nil) if the entry was no longer
-- pending (already acked): the message is then kept once, where it is, never twice.
-- (unpacked() and count_dead_letter() come from fields_lib.lua, which queues/scripts.py
-- puts in front.)
local out = {}
for i = 3, #ARGV, 2 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 0 then
    out[#out + 1] = false
  else
    if ARGV[2] == '1' then
      redis.call('XDEL', KEYS[1], ARGV[i])
    end
    local fields = unpacked(ARGV[i + 1])
    out[#out + 1] = redis.call('XADD', KEYS[2], '*', unpack(fields))
    count_dead_letter(KEYS[3], fields)
  end
end
return out
