-- retry_later: ack a failed entry and park it in the handler's delayed zset, atomically.
-- KEYS[1]  source stream the entry was read from (the user's stream or the retry stream)
-- KEYS[2]  the handler's delayed zset (seawall:{stream}:delayed:<handler>)
-- ARGV[1]  consumer group (the handler's name)
-- ARGV[2]  entry id on KEYS[1]
-- ARGV[3]  due time in ms (the zset score)
-- ARGV[4]  "1" to XDEL the entry after the ack (only for the handler's own retry stream)
-- ARGV[5..] the fields of the redelivery, flattened: name1, value1, name2, value2, ...
-- Returns 1 if scheduled, 0 if the entry was no longer pending (already acked: adding it
-- again would deliver it twice).
--
-- The zset member is JSON: [1, source stream, entry id, [name, value, ...]]. A stream entry
-- is acked at most once, so (source stream, entry id) makes the member unique even when
-- two messages carry identical fields. cjson passes bytes through, so any payload survives.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
if ARGV[4] == '1' then
  redis.call('XDEL', KEYS[1], ARGV[2])
end
local fields = {}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local member = cjson.encode({1, KEYS[1], ARGV[2], fields})
redis.call('ZADD', KEYS[2], ARGV[3], member)
return 1
