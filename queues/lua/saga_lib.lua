-- saga_lib: functions every saga script starts with (queues/scripts.py puts this file in
-- front of each). Every key of one saga type carries the tag {saga:<name>}: one slot.
--
-- Every saga script receives the same header first:
-- KEYS[1..6]  seawall:{saga:<name>}:state:<s> for running, completed, compensating,
--             timed_out, compensated, failed (zsets: saga id -> ms it entered the state)
-- KEYS[7]     seawall:{saga:<name>}:deadlines (zset: running saga id -> deadline ms)
-- KEYS[8]     seawall:{saga:<name>}:outcome (stream: finished sagas, for on_outcome)
-- KEYS[9]     seawall:{saga:<name>}:outbox (stream: follow-ups bound for other slots)
-- KEYS[10..9+n]  seawall:{saga:<name>}:undo:<step> of the n steps that have a compensation
-- ARGV[1]     the saga's name
-- ARGV[2]     n, then ARGV[3..2+n] those steps' names, in the same order
-- ARGV[3+n]   now, ms
-- ARGV[4+n]   how long a finished saga's ledger is kept, in seconds
-- ARGV[5+n]   "1" if the saga has an on_outcome handler (else no outcome stream is kept)
-- The script's own keys and arguments follow (KEY0 and ARG0 are where they start).
local STATES = {running = 1, completed = 2, compensating = 3, timed_out = 4,
                compensated = 5, failed = 6}
local SAGA = ARGV[1]
local STEPS = tonumber(ARGV[2])
local UNDO = {}
for i = 1, STEPS do
  UNDO[ARGV[2 + i]] = KEYS[9 + i]
end
local NOW = tonumber(ARGV[3 + STEPS])
local RETENTION = tonumber(ARGV[4 + STEPS])
local OUTCOMES = ARGV[5 + STEPS] == '1'
local KEY0 = 10 + STEPS
local ARG0 = 6 + STEPS

-- Compensation events carry the saga's trace context (kept from its start), so that a
-- saga's compensations join its trace like its steps do.
local function undo_event(ledger, saga_id, step, memo, id, late)
  local fields = {'payload', memo, 'id', id, 'saga', SAGA, 'saga_id', saga_id, 'step', step}
  local parent = redis.call('HGET', ledger, 'traceparent')
  if parent then
    fields[#fields + 1] = 'traceparent'
    fields[#fields + 1] = parent
  end
  if late then
    fields[#fields + 1] = 'late'
    fields[#fields + 1] = '1'
  end
  redis.call('XADD', UNDO[step], '*', unpack(fields))
end

local function note(timeline, event, step, detail)
  redis.call('XADD', timeline, 'MAXLEN', '~', 200, '*', 'event', event, 'step', step or '',
             'detail', detail or '', 'at', NOW)
end

local function set_state(ledger, saga_id, state)
  local before = redis.call('HGET', ledger, 'state')
  if before and STATES[before] then
    redis.call('ZREM', KEYS[STATES[before]], saga_id)
  end
  redis.call('ZADD', KEYS[STATES[state]], NOW, saga_id)
  redis.call('HSET', ledger, 'state', state, 'updated_at', NOW)
end

-- A finished saga: its outcome for on_outcome, and its ledger kept as a tombstone for the
-- retention, so that a late event finds "finished", not "unknown".
local function finish(ledger, stack, timeline, saga_id, state)
  local late_failed = redis.call('HGET', ledger, 'late_failed')
  if state == 'compensated' and late_failed then
    -- a late step's compensation failed meanwhile: not compensated, a person must look
    state = 'failed'
    redis.call('HSET', ledger, 'stopped_cause', redis.call('HGET', ledger, 'cause') or '',
               'stopped_step', redis.call('HGET', ledger, 'failed_step') or '',
               'failed_step', late_failed, 'cause', 'compensation_failed')
    redis.call('HDEL', ledger, 'late_failed')
  end
  set_state(ledger, saga_id, state)
  redis.call('ZREM', KEYS[7], saga_id)
  note(timeline, state, '', '')
  if OUTCOMES then
    local cause = redis.call('HGET', ledger, 'cause') or ''
    local failed_step = redis.call('HGET', ledger, 'failed_step') or ''
    local payload = cjson.encode({saga = SAGA, saga_id = saga_id, state = state,
                                  cause = cause, failed_step = failed_step})
    redis.call('XADD', KEYS[8], '*', 'payload', payload, 'id',
               saga_id .. ':outcome:' .. state .. ':' .. NOW, 'type', 'SagaOutcome',
               'saga', SAGA, 'saga_id', saga_id)
  end
  if state ~= 'failed' then
    for _, key in ipairs({ledger, stack, timeline}) do
      redis.call('EXPIRE', key, RETENTION)
    end
    -- forget finished sagas of this state older than the retention (amortised clean-up)
    redis.call('ZREMRANGEBYSCORE', KEYS[STATES[state]], '-inf', NOW - RETENTION * 1000)
  end
end

-- Compensate the last committed step still to undo, or finish the saga compensated.
-- A step without a compensation has nothing to undo and is passed over.
local function undo_next(ledger, stack, timeline, saga_id)
  local step = redis.call('RPOP', stack)
  while step and not UNDO[step] do
    note(timeline, 'nothing to undo', step, '')
    step = redis.call('RPOP', stack)
  end
  if not step then
    finish(ledger, stack, timeline, saga_id, 'compensated')
    return false
  end
  local memo = redis.call('HGET', ledger, 'memo:' .. step) or '{}'
  redis.call('HSET', ledger, 'step:' .. step, 'compensating', 'undoing', step)
  undo_event(ledger, saga_id, step, memo, saga_id .. ':undo:' .. step, false)
  note(timeline, 'compensating', step, '')
  return step
end

-- The saga stops going forward: compensate what committed, last first.
local function turn_back(ledger, stack, timeline, saga_id, state, cause, step)
  set_state(ledger, saga_id, state)
  redis.call('HSET', ledger, 'cause', cause)
  if step then
    redis.call('HSET', ledger, 'failed_step', step)
  end
  redis.call('ZREM', KEYS[7], saga_id)
  note(timeline, 'stopped', step or '', cause)
  return undo_next(ledger, stack, timeline, saga_id)
end

-- After a person answered a failed compensation: the saga's cause is again why it stopped
-- going forward, not the compensation's failure (kept aside by saga_undo_failed.lua).
local function restore_cause(ledger)
  local cause = redis.call('HGET', ledger, 'stopped_cause')
  if cause then
    redis.call('HSET', ledger, 'cause', cause, 'failed_step',
               redis.call('HGET', ledger, 'stopped_step') or '')
    redis.call('HDEL', ledger, 'stopped_cause', 'stopped_step')
  end
end
