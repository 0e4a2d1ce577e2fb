-- saga_fail: a batch of saga steps failed for good (retries exhausted, or an abort): ack
-- each (into the dead letters if it is one), record the failure, and if its saga was going
-- forward, turn it back: compensate the committed steps, last first. All in one slot.
-- (saga_lib's header first, then:)
-- KEYS[KEY0]      the step's stream (or its retry stream); KEYS[KEY0+1] its dead letters
-- KEYS[KEY0+2]    their counts by error type (seawall:{...}:dlq-counts:<handler>)
-- KEYS[KEY0+3..]  per message: ledger, stack, timeline
-- ARGV[ARG0]      consumer group; ARGV[ARG0+1] "1" to XDEL acked entries; ARGV[ARG0+2]
--                 number of messages, then per message: entry id, saga id, step, index in
--                 KEYS of its ledger, the dead letter's fields packed ("" for an abort:
--                 no dead letter), cause ("step_failed" or "aborted"), error text, "1" if
--                 the step's own compensation runs too (opted in), and the memo it gets
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
  local letter, cause, err = ARGV[at + 4], ARGV[at + 5], ARGV[at + 6]
  local undo_self, memo = ARGV[at + 7] == '1', ARGV[at + 8]
  at = at + 9
  local ledger, stack, timeline = KEYS[base], KEYS[base + 1], KEYS[base + 2]
  local acked = redis.call('XACK', source, group, entry_id)
  out[#out + 1] = acked
  if acked == 1 then
    if drop then
      redis.call('XDEL', source, entry_id)
    end
    if letter ~= '' then
      local fields = unpacked(letter)
      redis.call('XADD', dlq, '*', unpack(fields))
      count_dead_letter(dlq_counts, fields)
    end
    local state = redis.call('HGET', ledger, 'state')
    if state and redis.call('HEXISTS', ledger, 'step:' .. step) == 0 then
      redis.call('HSET', ledger, 'step:' .. step, 'failed', 'error:' .. step, err)
      note(timeline, 'failed', step, err)
      if undo_self then
        redis.call('HSET', ledger, 'memo:' .. step, memo)
      end
      if state == 'running' then
        if undo_self then
          redis.call('RPUSH', stack, step)
        end
        turn_back(ledger, stack, timeline, saga_id, 'compensating', cause, step)
      elseif undo_self and UNDO[step] then
        undo_event(ledger, saga_id, step, memo, saga_id .. ':undo:' .. step, true)
      end
    end
  end
end
return out
