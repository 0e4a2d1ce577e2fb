-- KEYS[1]   seawall:{<stream>}:breaker:<handler>       hash: one handler's circuit breaker
-- KEYS[2]   seawall:{<stream>}:breaker-log:<handler>   stream: its transitions (capped)
-- ARGV[1]   operation: force_open | close | reset | disable
-- ARGV[2]   now_ms: the caller's clock in ms, or "" for the Redis server's clock
-- ARGV[3]   force_open only: stay open this many ms, then turn half-open ("" = until closed)
--
-- An operator's command, applied atomically whatever the fleet is doing:
--   force_open  FORCED_OPEN; outstanding probe leases are revoked; the window is kept
--   close       CLOSED with an empty window (otherwise the next failure would reopen it)
--   reset       forget everything, as if the breaker were new (the lease counter is kept, so
--               a lease granted before the reset can never be mistaken for a later one)
--   disable     DISABLED: always lets consumers read, records nothing, until close or reset
--
-- When the state changes, the transition is appended to KEYS[2] (from, to, reason, at) with
-- the reason forced_open, forced_close, reset or disabled.
--
-- Returns {state, open_until_ms (0 = none)}.

local key = KEYS[1]
local log = KEYS[2]
local op = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local duration = tonumber(ARGV[3])

local function int(x)
  return string.format('%d', x)
end

local before = redis.call('HGET', key, 'state') or 'closed'

-- Appended when the operation changed the state.
local function log_transition(to, reason)
  if to ~= before then
    redis.call('XADD', log, 'MAXLEN', '~', 100, '*',
               'from', before, 'to', to, 'reason', reason, 'at', int(now))
  end
end

local function drop_leases()
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 6) == 'lease:' then redis.call('HDEL', key, f) end
  end
end

if op == 'force_open' then
  drop_leases()
  redis.call('HSET', key, 'state', 'forced_open', 'opened_at', int(now),
             'probe_calls', '0', 'probe_slow', '0')
  log_transition('forced_open', 'forced_open')
  if duration then
    redis.call('HSET', key, 'open_until', int(now + duration))
    return {'forced_open', now + duration}
  end
  redis.call('HDEL', key, 'open_until')
  return {'forced_open', 0}
elseif op == 'close' or op == 'disable' then
  drop_leases()
  local state = 'closed'
  if op == 'disable' then state = 'disabled' end
  redis.call('HSET', key, 'state', state, 'window', '', 'probe_calls', '0', 'probe_slow', '0')
  redis.call('HDEL', key, 'opened_at', 'open_until')
  if op == 'disable' then
    log_transition(state, 'disabled')
  else
    log_transition(state, 'forced_close')
  end
  return {state, 0}
elseif op == 'reset' then
  local seq = redis.call('HGET', key, 'lease_seq')
  redis.call('DEL', key)
  if seq then redis.call('HSET', key, 'lease_seq', seq) end
  log_transition('closed', 'reset')
  return {'closed', 0}
end
return redis.error_reply('ERR breaker_admin: unknown operation ' .. tostring(op))
