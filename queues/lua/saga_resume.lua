-- saga_resume: an operator's answer to a failed saga (its compensation of `step` failed
-- for good): "retry" sends that compensation again with a fresh retry budget; "skip"
-- records that a person undid the step by hand and goes on with the next compensation.
-- (saga_lib's header first, then:)
-- KEYS[KEY0]      ledger; KEYS[KEY0+1] stack; KEYS[KEY0+2] timeline
-- ARGV[ARG0]      saga id; ARGV[ARG0+1] "retry" or "skip"; ARGV[ARG0+2] the step (for
--                 "skip": it must be the one whose compensation failed; "" for "retry");
--                 ARGV[ARG0+3] the operator's note
-- Returns the step acted on, or an error reply saying why nothing was done.
local ledger, stack, timeline = KEYS[KEY0], KEYS[KEY0 + 1], KEYS[KEY0 + 2]
local saga_id, action, wanted, text = ARGV[ARG0], ARGV[ARG0 + 1], ARGV[ARG0 + 2],
                                      ARGV[ARG0 + 3]
local state = redis.call('HGET', ledger, 'state')
if state ~= 'failed' then
  return redis.error_reply('saga ' .. saga_id .. ' is ' .. tostring(state or 'unknown') ..
                           ', not failed: nothing to ' .. action)
end
local step = redis.call('HGET', ledger, 'failed_step')
if action == 'skip' and wanted ~= step then
  return redis.error_reply('the compensation that failed is ' .. step .. "'s, not " ..
                           wanted .. "'s")
end
set_state(ledger, saga_id, 'compensating')
restore_cause(ledger)
redis.call('HDEL', ledger, 'late_failed')
for _, key in ipairs({ledger, stack, timeline}) do
  redis.call('PERSIST', key)
end
if action == 'retry' then
  local memo = redis.call('HGET', ledger, 'memo:' .. step) or '{}'
  redis.call('HSET', ledger, 'step:' .. step, 'compensating', 'undoing', step)
  undo_event(ledger, saga_id, step, memo, saga_id .. ':undo:' .. step .. ':' .. NOW, false)
  note(timeline, 'retried by an operator', step, text)
else
  redis.call('HSET', ledger, 'step:' .. step, 'skipped', 'note:' .. step, text)
  note(timeline, 'skipped by an operator', step, text)
  undo_next(ledger, stack, timeline, saga_id)
end
return step
