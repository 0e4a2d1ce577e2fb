-- KEYS[1..n]   seawall:{<stream>}:done:<handler>:<message id>   idempotency markers
-- ARGV[1]      ttl: seconds each marker lives
--
-- Records that an idempotent handler completed these messages (SET NX EX each), in one
-- call. Sent in the ack pipeline ahead of the XACKs, so a marker never comes after its ack.
--
-- Returns how many markers were new.

local ttl = ARGV[1]
local created = 0
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ttl) then created = created + 1 end
end
return created
