-- saga_start: begin a saga once per saga id and send its first step's event, atomically.
-- (saga_lib's header first, then:)
-- KEYS[KEY0]      the saga's ledger; KEYS[KEY0+1] its timeline
-- KEYS[KEY0+2]    the stream of the first step (seawall:{saga:<name>}:on:<stream>)
-- ARGV[ARG0]      saga id; ARGV[ARG0+1] deadline in ms (0: none)
-- ARGV[ARG0+2]    the first event's fields, packed ("<len>:<bytes>" per name and value)
-- Returns 1 if started; 0 if this saga id is running or finished within the retention.
local ledger, timeline, first = KEYS[KEY0], KEYS[KEY0 + 1], KEYS[KEY0 + 2]
local saga_id = ARGV[ARG0]
local deadline = tonumber(ARGV[ARG0 + 1])
if redis.call('EXISTS', ledger) == 1 then
  return 0
end
redis.call('HSET', ledger, 'saga', SAGA, 'saga_id', saga_id, 'started_at', NOW,
           'deadline_ms', deadline)
local fields = unpacked(ARGV[ARG0 + 2])
for i = 1, #fields - 1, 2 do
  if fields[i] == 'traceparent' then
    redis.call('HSET', ledger, 'traceparent', fields[i + 1])
  end
end
set_state(ledger, saga_id, 'running')
if deadline > 0 then
  redis.call('ZADD', KEYS[7], deadline, saga_id)
end
note(timeline, 'started', '', '')
redis.call('XADD', first, '*', unpack(fields))
return 1
