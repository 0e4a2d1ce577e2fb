-- saga_step: commit a batch of saga steps that returned: with each ack, record the step in
-- its saga's ledger and send its events, or, if the saga stopped going forward meanwhile,
-- compensate the step instead (a late step never advances its saga). All in one slot.
-- (saga_lib's header first, then:)
-- KEYS[KEY0]      the step's stream (seawall:{saga:<name>}:on:<stream>, or its retry stream)
-- KEYS[KEY0+1..]  per message: ledger, stack, timeline, completion marker; then the target
--                 streams of the saga's own events, referred to by index
-- ARGV[ARG0]      consumer group; ARGV[ARG0+1] "1" to XDEL acked entries (retry stream);
-- ARGV[ARG0+2]    ttl of completion markers (s); ARGV[ARG0+3] number of messages, then per
--                 message: entry id, saga id, step, index in KEYS of its ledger, memo (what
--                 its compensation will get), follow-up count, and per follow-up: index in
--                 KEYS of its target (0: the outbox, for a stream in another slot), "1" if
--                 the target is one of the saga's own step streams (the saga goes on), the
--                 target's name, its fields packed
-- Returns per message a code: 0 no longer pending (nothing done), 1 committed (followed by
-- the outbox ids of its outbox-bound follow-ups), 2 already committed (a duplicate), 3 late
-- (compensated instead), 4 no such saga (unknown or expired; acked, nothing sent).
local source = KEYS[KEY0]
local group = ARGV[ARG0]
local drop = ARGV[ARG0 + 1] == '1'
local ttl = ARGV[ARG0 + 2]
local count = tonumber(ARGV[ARG0 + 3])
local at = ARG0 + 4
local out = {}
for _ = 1, count do
  local entry_id, saga_id, step = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local base = tonumber(ARGV[at + 3])
  local memo = ARGV[at + 4]
  local follow_ups = tonumber(ARGV[at + 5])
  at = at + 6
  local ledger, stack, timeline, marker = KEYS[base], KEYS[base + 1], KEYS[base + 2],
                                          KEYS[base + 3]
  local code = 0
  if redis.call('XACK', source, group, entry_id) == 1 then
    if drop then
      redis.call('XDEL', source, entry_id)
    end
    redis.call('SET', marker, '1', 'NX', 'EX', ttl)
    local state = redis.call('HGET', ledger, 'state')
    if not state then
      code = 4
    elseif redis.call('HEXISTS', ledger, 'step:' .. step) == 1 then
      code = 2
    elseif state == 'running' then
      code = 1
      redis.call('HSET', ledger, 'step:' .. step, 'committed', 'memo:' .. step, memo,
                 'at:' .. step, NOW)
      redis.call('RPUSH', stack, step)
      note(timeline, 'committed', step, '')
    else
      code = 3
      redis.call('HSET', ledger, 'step:' .. step, 'late', 'memo:' .. step, memo)
      if UNDO[step] then
        undo_event(ledger, saga_id, step, memo, saga_id .. ':undo:' .. step, true)
      end
      note(timeline, 'late', step, 'finished after the saga stopped: compensating it')
    end
  end
  out[#out + 1] = code
  local forward = 0
  for _ = 1, follow_ups do
    local target = tonumber(ARGV[at])
    if code == 1 then
      if target > 0 then
        redis.call('XADD', KEYS[target], '*', unpack(unpacked(ARGV[at + 3])))
        if ARGV[at + 1] == '1' then
          forward = forward + 1
        end
      else
        out[#out + 1] = redis.call('XADD', KEYS[9], '*', 'seawall:target', ARGV[at + 2],
                                   'seawall:fields', ARGV[at + 3])
      end
    end
    at = at + 4
  end
  if code == 1 and forward == 0 then
    -- no event for another step of the saga: this was its last step
    finish(ledger, stack, timeline, saga_id, 'completed')
  end
end
return out
