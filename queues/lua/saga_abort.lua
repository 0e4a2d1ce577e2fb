-- saga_abort: stop a running saga and compensate what it committed, last first; only one
-- caller wins (compare-and-set on the state). Used by deadline sweepers (only if the
-- deadline has passed) and by `seawall saga abort`.
-- (saga_lib's header first, then:)
-- KEYS[KEY0]      ledger; KEYS[KEY0+1] stack; KEYS[KEY0+2] timeline
-- ARGV[ARG0]      saga id; ARGV[ARG0+1] cause ("timed_out" or "aborted"); ARGV[ARG0+2]
--                 "1": only if its deadline has passed (a sweeper)
-- Returns 1 if this call stopped it, 0 if it was not running (or not due).
local ledger, stack, timeline = KEYS[KEY0], KEYS[KEY0 + 1], KEYS[KEY0 + 2]
local saga_id, cause = ARGV[ARG0], ARGV[ARG0 + 1]
if redis.call('HGET', ledger, 'state') ~= 'running' then
  redis.call('ZREM', KEYS[7], saga_id)
  return 0
end
if ARGV[ARG0 + 2] == '1' then
  local deadline = tonumber(redis.call('HGET', ledger, 'deadline_ms') or '0')
  if deadline == 0 or deadline > NOW then
    return 0
  end
end
turn_back(ledger, stack, timeline, saga_id, cause == 'timed_out' and 'timed_out'
          or 'compensating', cause, nil)
return 1
