-- saga_undo_failed: a batch of compensations failed for good: ack each into the dead
-- letters and, for one in the chain, mark its saga failed: it needs a person
-- (seawall saga retry / skip).
-- (saga_lib's header first, then:)
-- KEYS[KEY0]      the compensation's stream (or its retry stream); KEYS[KEY0+1] its dead
--                 letters; KEYS[KEY0+2] their counts by error type; KEYS[KEY0+3..] per
--                 message: ledger, stack, timeline
-- ARGV[ARG0]      consumer group; ARGV[ARG0+1] "1" to XDEL acked entries; ARGV[ARG0+2]
--                 number of messages, then per message: entry id, saga id, step, index in
--                 KEYS of its ledger, the dead letter's fields packed, error text, "1" for
--                 a late step's compensation
-- Returns per message 1 if acked here, 0 if it was no longer pending.
local source, dlq = KEYS[KEY0], KEYS[KEY0 + 1]
local dlq_counts = KEYS[KEY0 + 2]  -- its counts by error type, HINCRBY +1 per letter
local group = ARGV[ARG0]
local drop = ARGV[ARG0 + 1] == '1'
local count = tonumber(ARGV[ARG0 + 2])
local at = ARG0 + 3
local out = {}
for _ = 1, count do
  local entry_id, saga_id, step = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local base = tonumber(ARGV[at + 3])
  local letter, err, late = ARGV[at + 4], ARGV[at + 5], ARGV[at + 6] == '1'
  at = at + 7
  local ledger, stack, timeline = KEYS[base], KEYS[base + 1], KEYS[base + 2]
  local acked = redis.call('XACK', source, group, entry_id)
  out[#out + 1] = acked
  if acked == 1 then
    if drop then
      redis.call('XDEL', source, entry_id)
    end
    local fields = unpacked(letter)
    redis.call('XADD', dlq, '*', unpack(fields))
    count_dead_letter(dlq_counts, fields)
    local state = redis.call('HGET', ledger, 'state')
    if state then
      redis.call('HSET', ledger, 'step:' .. step, 'undo_failed', 'error:' .. step, err)
      note(timeline, 'compensation failed', step, err)
      if not late then
        redis.call('HSET', ledger, 'stopped_cause', redis.call('HGET', ledger, 'cause') or '',
                   'stopped_step', redis.call('HGET', ledger, 'failed_step') or '')
        redis.call('HSET', ledger, 'failed_step', step, 'cause', 'compensation_failed')
        finish(ledger, stack, timeline, saga_id, 'failed')
      elseif state == 'compensated' then
        -- the saga had finished compensated; with this step still applied it is not
        for _, key in ipairs({ledger, stack, timeline}) do
          redis.call('PERSIST', key)
        end
        redis.call('HSET', ledger, 'late_failed', step)
        finish(ledger, stack, timeline, saga_id, 'compensated')
      else
        -- still compensating: the saga ends failed instead of compensated (finish)
        redis.call('HSET', ledger, 'late_failed', step)
      end
    end
  end
end
return out
