-- KEYS[1]   seawall:{<stream>}:breaker:<handler>       hash: one handler's circuit breaker
-- KEYS[2]   seawall:{<stream>}:breaker-log:<handler>   stream: its transitions (capped)
-- ARGV[1]   now_ms: the caller's clock in ms, or "" for the Redis server's clock
-- ARGV[2]   window                (unused here; every breaker script takes the same config)
-- ARGV[3]   min_calls             (unused here)
-- ARGV[4]   failure_rate          (unused here)
-- ARGV[5]   slow_call_rate: a settled half-open reopens when slow probes / probes >= this
-- ARGV[6]   open_for_ms: how long a reopened breaker stays open
-- ARGV[7]   half_open_calls: probe permits granted fleet-wide per half-open period
-- ARGV[8]   lease_ttl_ms: a probe lease expires after this (the handler's timeout + margin)
-- ARGV[9]   want: most permits the caller can use now ("" = as many as are free)
--
-- Asked by a consumer before each read: may it read, and how much? Closed and disabled: yes,
-- without limit. Open and forced open: no, until open_until (none when forced open without a
-- duration); then the breaker turns half-open. Half-open: leases expired by now are reclaimed
-- (their prober died), and of the half_open_calls permits not yet used or leased, up to `want`
-- go into one new lease. The caller passes the lease id to breaker_record.lua, which releases
-- it, even when it read nothing.
--
-- Each transition is appended to KEYS[2] (from, to, reason, at): open_elapsed (open or
-- forced open -> half_open); probes_succeeded or probes_slow when a half-open breaker that
-- already has its probes settles here (half_open_calls was lowered by a redeploy).
--
-- Returns {state, may_read (0/1), permits (-1 = no limit), open_until_ms (0 = none),
--          lease id ("" = none), retry_in_ms (-1 = until an operator acts)}.

local key = KEYS[1]
local log = KEYS[2]
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local slow_call_rate = tonumber(ARGV[5])
local open_for = tonumber(ARGV[6])
local half_open_calls = tonumber(ARGV[7])
local lease_ttl = tonumber(ARGV[8])
local want = tonumber(ARGV[9])

local function int(x)
  return string.format('%d', x)
end

local function log_transition(from, to, reason)
  redis.call('XADD', log, 'MAXLEN', '~', 100, '*',
             'from', from, 'to', to, 'reason', reason, 'at', int(now))
end

local function drop_leases()
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 6) == 'lease:' then redis.call('HDEL', key, f) end
  end
end

local state = redis.call('HGET', key, 'state') or 'closed'
if state == 'closed' or state == 'disabled' then
  return {state, 1, -1, 0, '', 0}
end

local open_until = tonumber(redis.call('HGET', key, 'open_until') or '')
if state == 'open' or state == 'forced_open' then
  if not open_until then
    return {state, 0, 0, 0, '', -1}
  end
  if now < open_until then
    return {state, 0, 0, open_until, '', open_until - now}
  end
  drop_leases()
  redis.call('HSET', key, 'state', 'half_open', 'probe_calls', '0', 'probe_slow', '0')
  log_transition(state, 'half_open', 'open_elapsed')
  state = 'half_open'
end

-- half-open: reclaim expired leases, then lease out what is free
local outstanding, earliest = 0, nil
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local f = fields[i]
  if string.sub(f, 1, 6) == 'lease:' then
    local raw = fields[i + 1]
    local sep = string.find(raw, ':', 1, true)
    local permits = tonumber(string.sub(raw, 1, sep - 1))
    local expires = tonumber(string.sub(raw, sep + 1))
    if expires <= now then
      redis.call('HDEL', key, f)
    else
      outstanding = outstanding + permits
      if not earliest or expires < earliest then earliest = expires end
    end
  end
end

local calls = tonumber(redis.call('HGET', key, 'probe_calls') or '0')
local slow = tonumber(redis.call('HGET', key, 'probe_slow') or '0')
if calls >= half_open_calls then
  -- enough probes already (half_open_calls was lowered by a redeploy): settle now
  drop_leases()
  if slow / calls >= slow_call_rate then
    redis.call('HSET', key, 'state', 'open', 'opened_at', int(now),
               'open_until', int(now + open_for), 'probe_calls', '0', 'probe_slow', '0')
    log_transition('half_open', 'open', 'probes_slow')
    return {'open', 0, 0, now + open_for, '', open_for}
  end
  redis.call('HSET', key, 'state', 'closed', 'window', '', 'probe_calls', '0', 'probe_slow', '0')
  redis.call('HDEL', key, 'opened_at', 'open_until')
  log_transition('half_open', 'closed', 'probes_succeeded')
  return {'closed', 1, -1, 0, '', 0}
end

local free = half_open_calls - calls - outstanding
if free <= 0 then
  return {state, 0, 0, open_until or 0, '', (earliest or now) - now}
end
local grant = free
if want and want < grant then grant = want end
if grant < 1 then
  return {state, 0, 0, open_until or 0, '', 0}
end
local id = int(redis.call('HINCRBY', key, 'lease_seq', 1))
redis.call('HSET', key, 'lease:' .. id, int(grant) .. ':' .. int(now + lease_ttl))
return {state, 1, grant, open_until or 0, id, 0}
