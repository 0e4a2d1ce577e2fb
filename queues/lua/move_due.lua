-- move_due: move the retries whose time has come from the delayed zset to the retry stream.
-- KEYS[1]  the handler's delayed zset (seawall:{stream}:delayed:<handler>)
-- KEYS[2]  the handler's retry stream (seawall:{stream}:retry:<handler>)
-- ARGV[1]  now, in ms: members with score <= now are due
-- ARGV[2]  at most this many members are moved per call
-- Returns {moved, next_due}: how many were moved, and the score (ms, as a string) of the
-- earliest member left, or -1 when the zset is empty.
--
-- Each member is XADDed and ZREMed in the same script, so a retry is never lost nor
-- delivered twice, however many processes run this at once. A member that is not valid
-- JSON (nothing seawall wrote) is still moved, as a message without a payload, so it ends
-- in the dead letters with its raw text instead of blocking the zset forever.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local ok, decoded = pcall(cjson.decode, member)
  local fields = nil
  if ok and type(decoded) == 'table' and type(decoded[4]) == 'table' then
    fields = decoded[4]
  end
  if fields == nil or #fields == 0 or #fields % 2 == 1 then
    fields = {'seawall_bad_delayed_member', member}
  end
  redis.call('XADD', KEYS[2], '*', unpack(fields))
  redis.call('ZREM', KEYS[1], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if #nxt == 2 then
  next_due = nxt[2]
end
return {#due, next_due}
