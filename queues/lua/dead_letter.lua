-- dead_letter: ack a failed entry and append it to the handler's dead-letter stream, atomically.
-- KEYS[1]  source stream the entry was read from (the user's stream or the retry stream)
-- KEYS[2]  the handler's dead-letter stream (seawall:{stream}:dlq:<handler>)
-- ARGV[1]  consumer group (the handler's name)
-- ARGV[2]  entry id on KEYS[1]
-- ARGV[3]  "1" to XDEL the entry after the ack (only for the handler's own retry stream)
-- ARGV[4..] the dead letter's fields, flattened: name1, value1, name2, value2, ...
-- Returns the dead letter's entry id, or false (nil) if the entry was no longer pending
-- (already acked): the message is then kept once, where it is, never twice.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return false
end
if ARGV[3] == '1' then
  redis.call('XDEL', KEYS[1], ARGV[2])
end
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
return redis.call('XADD', KEYS[2], '*', unpack(fields))
