-- commit: ack a batch of messages one group read from one stream and, with each ack that
-- counts, write what the message's handler left to commit: its completion marker
-- (idempotent handlers) and its follow-up events. All of it or none of it is applied, so a
-- follow-up is visible only if its cause is acked, and an ack never lands without them.
-- KEYS[1]   the source stream (the user's stream or the handler's retry stream)
-- KEYS[2]   the user's stream's outbox (seawall:{stream}:outbox): follow-ups bound for a
--           stream in another hash slot wait there to be relayed (relay.lua)
-- KEYS[3..] completion markers and same-slot target streams, referred to by index below
-- ARGV[1]   consumer group (the handler's name)
-- ARGV[2]   "1" to XDEL each acked entry (only for the handler's own retry stream)
-- ARGV[3]   ttl of the completion markers, in seconds
-- ARGV[4]   number of messages, then for each message:
--             entry id, index in KEYS of its completion marker (0: none), follow-up count,
--             and for each follow-up: index in KEYS of its target stream (0: the outbox),
--             then the target's name, then its fields packed as "<len>:<bytes>" for each
--             name and value in turn (one argument: cheap to send, see queues/commit.py)
-- Returns, for each message, 1 if this call acked it (0: it was no longer pending, so its
-- follow-ups are not written: whoever acked it wrote them), each acked message followed by
-- the outbox entry ids of its outbox-bound follow-ups, in order.
-- (unpacked() comes from fields_lib.lua, which queues/scripts.py puts in front.)
local group = ARGV[1]
local drop = ARGV[2] == '1'
local ttl = ARGV[3]
local count = tonumber(ARGV[4])
local at = 5
local out = {}
for _ = 1, count do
  local entry_id = ARGV[at]
  local marker = tonumber(ARGV[at + 1])
  local follow_ups = tonumber(ARGV[at + 2])
  at = at + 3
  local acked = redis.call('XACK', KEYS[1], group, entry_id)
  out[#out + 1] = acked
  if acked == 1 then
    if drop then
      redis.call('XDEL', KEYS[1], entry_id)
    end
    if marker > 0 then
      redis.call('SET', KEYS[marker], '1', 'NX', 'EX', ttl)
    end
  end
  for _ = 1, follow_ups do
    local target = tonumber(ARGV[at])
    if acked == 1 then
      if target > 0 then
        redis.call('XADD', KEYS[target], '*', unpack(unpacked(ARGV[at + 2])))
      else
        out[#out + 1] = redis.call('XADD', KEYS[2], '*', 'seawall:target', ARGV[at + 1],
                                   'seawall:fields', ARGV[at + 2])
      end
    end
    at = at + 3
  end
end
return out
