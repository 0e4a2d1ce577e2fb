-- saga_undone: a batch of compensations returned: ack each, record the step compensated
-- and, in a chain, send the next compensation (or finish the saga compensated).
-- (saga_lib's header first, then:)
-- KEYS[KEY0]      the compensation's stream (or its retry stream)
-- KEYS[KEY0+1..]  per message: ledger, stack, timeline, completion marker
-- ARGV[ARG0]      consumer group; ARGV[ARG0+1] "1" to XDEL acked entries; ARGV[ARG0+2]
--                 ttl of completion markers (s); ARGV[ARG0+3] number of messages, then per
--                 message: entry id, saga id, step, index in KEYS of its ledger, "1" for
--                 a late step's compensation (outside the chain)
-- Returns per message 1 if acked here, 0 if it was no longer pending.
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
  local late = ARGV[at + 4] == '1'
  at = at + 5
  local ledger, stack, timeline, marker = KEYS[base], KEYS[base + 1], KEYS[base + 2],
                                          KEYS[base + 3]
  local acked = redis.call('XACK', source, group, entry_id)
  out[#out + 1] = acked
  if acked == 1 then
    if drop then
      redis.call('XDEL', source, entry_id)
    end
    redis.call('SET', marker, '1', 'NX', 'EX', ttl)
    local state = redis.call('HGET', ledger, 'state')
    if state and redis.call('HGET', ledger, 'step:' .. step) ~= 'compensated' then
      redis.call('HSET', ledger, 'step:' .. step, 'compensated')
      note(timeline, 'compensated', step, late and 'late step' or '')
      if not late and state == 'failed'
          and redis.call('HGET', ledger, 'failed_step') == step then
        -- the failed compensation was replayed from the dead letters and succeeded: the
        -- chain resumes as after `seawall saga retry`
        set_state(ledger, saga_id, 'compensating')
        restore_cause(ledger)
        for _, key in ipairs({ledger, stack, timeline}) do
          redis.call('PERSIST', key)
        end
        state = 'compensating'
        redis.call('HSET', ledger, 'undoing', step)
      end
      if not late and (state == 'compensating' or state == 'timed_out')
          and redis.call('HGET', ledger, 'undoing') == step then
        undo_next(ledger, stack, timeline, saga_id)
      end
    end
  end
end
return out
