-- KEYS[1]   seawall:{<stream>}:breaker:<handler>       hash: one handler's circuit breaker
-- KEYS[2]   seawall:{<stream>}:breaker-log:<handler>   stream: its transitions (capped)
-- ARGV[1]   now_ms: the caller's clock in ms, or "" for the Redis server's clock
-- ARGV[2]   window: size of the count-based sliding window
-- ARGV[3]   min_calls: calls the window needs before the rates can open the breaker
-- ARGV[4]   failure_rate: open when failures / calls >= this (0 < r <= 1)
-- ARGV[5]   slow_call_rate: open when slow calls / calls >= this (0 < r <= 1)
-- ARGV[6]   open_for_ms: how long the breaker stays open before it lets probes through
-- ARGV[7]   half_open_calls: probes (fleet-wide) that decide between closed and open again
-- ARGV[8]   lease id from breaker_acquire.lua ("" = none); this call releases that lease
-- ARGV[9]   outcome codes, one digit each, oldest first ("" for none): 0 success,
--           1 failure, 2 slow success, 3 slow failure, 4 ignored
--
-- Records one read batch of outcomes and makes the transitions they cause, atomically: the
-- same machine as workers/breaker.py (`record`). Closed: outcomes enter the window; once it
-- holds min_calls, a failure or slow rate at its threshold opens the breaker (the rest of the
-- batch is then ignored). Half-open: only outcomes carried by a live lease are probes, at most
-- the lease's permits of them; a failed probe reopens, half_open_calls good probes close (or
-- reopen when too many were slow). Open, forced open, disabled: outcomes are ignored.
--
-- A transition is appended to KEYS[2] (from, to, reason, at): failure_rate or slow_call_rate
-- (closed -> open), probe_failed or probes_slow (half_open -> open), probes_succeeded
-- (half_open -> closed).
--
-- Returns {state, changed (0/1), open_until_ms (0 = none), calls, failures, slow} where the
-- last three describe the window.
--
-- Hash fields: state, window (one digit per outcome, oldest first), opened_at, open_until,
-- probe_calls, probe_slow, lease_seq, and "lease:<id>" = "<permits>:<expires_ms>" per lease.

local key = KEYS[1]
local log = KEYS[2]
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = tonumber(ARGV[2])
local min_calls = tonumber(ARGV[3])
local failure_rate = tonumber(ARGV[4])
local slow_call_rate = tonumber(ARGV[5])
local open_for = tonumber(ARGV[6])
local half_open_calls = tonumber(ARGV[7])
local lease = ARGV[8]
local codes = ARGV[9] or ''
if string.find(codes, '[^01234]') then
  return redis.error_reply('ERR breaker_record: outcome codes must be digits 0-4: ' .. codes)
end

local function int(x)
  return string.format('%d', x)
end

local function count(w)
  local failures, slow = 0, 0
  for i = 1, #w do
    local c = string.byte(w, i) - 48
    if c == 1 or c == 3 then failures = failures + 1 end
    if c == 2 or c == 3 then slow = slow + 1 end
  end
  return failures, slow
end

local function drop_leases()
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 6) == 'lease:' then redis.call('HDEL', key, f) end
  end
end

local function log_transition(from, to, reason)
  redis.call('XADD', log, 'MAXLEN', '~', 100, '*',
             'from', from, 'to', to, 'reason', reason, 'at', int(now))
end

local function open_now()
  drop_leases()
  redis.call('HSET', key, 'state', 'open', 'opened_at', int(now),
             'open_until', int(now + open_for), 'probe_calls', '0', 'probe_slow', '0')
end

local function close_now()
  drop_leases()
  redis.call('HSET', key, 'state', 'closed', 'window', '', 'probe_calls', '0', 'probe_slow', '0')
  redis.call('HDEL', key, 'opened_at', 'open_until')
end

local state = redis.call('HGET', key, 'state') or 'closed'
local before = state

if state == 'closed' then
  local w = redis.call('HGET', key, 'window') or ''
  local trip = false  -- or why it trips: 'failure_rate' or 'slow_call_rate'
  local counted = string.gsub(codes, '4', '')
  if not string.find(counted, '[123]') then
    -- Plain successes only (the usual batch): they can only lower both rates, so the one
    -- moment that may trip the breaker is the window reaching min_calls, before any trim.
    local grown = w .. counted
    if #w < min_calls and #grown >= min_calls then
      local at = string.sub(grown, 1, min_calls)
      local failures, slow = count(at)
      if failures / #at >= failure_rate then
        trip = 'failure_rate'
      elseif slow / #at >= slow_call_rate then
        trip = 'slow_call_rate'
      end
      if trip then w = at end
    end
    if not trip then w = string.sub(grown, -window) end
  else
    for i = 1, #counted do
      local c = string.sub(counted, i, i)
      w = w .. c
      if #w > window then w = string.sub(w, #w - window + 1) end
      -- A plain success can only lower both rates, so only a failure or a slow call (or
      -- the window reaching min_calls) can trip the breaker.
      if #w >= min_calls and (c ~= '0' or #w == min_calls) then
        local failures, slow = count(w)
        if failures / #w >= failure_rate then
          trip = 'failure_rate'
        elseif slow / #w >= slow_call_rate then
          trip = 'slow_call_rate'
        end
        if trip then break end
      end
    end
  end
  redis.call('HSET', key, 'state', 'closed', 'window', w)
  if trip then
    open_now()
    log_transition('closed', 'open', trip)
  end
  if lease ~= '' then redis.call('HDEL', key, 'lease:' .. lease) end
elseif state == 'half_open' and lease ~= '' then
  local raw = redis.call('HGET', key, 'lease:' .. lease)
  if raw then
    local sep = string.find(raw, ':', 1, true)
    local permits = tonumber(string.sub(raw, 1, sep - 1))
    local calls = tonumber(redis.call('HGET', key, 'probe_calls') or '0')
    local slow = tonumber(redis.call('HGET', key, 'probe_slow') or '0')
    local settled = false
    for i = 1, #codes do
      if permits <= 0 then break end
      permits = permits - 1
      local c = string.sub(codes, i, i)
      if c == '1' or c == '3' then
        open_now()
        log_transition('half_open', 'open', 'probe_failed')
        settled = true
        break
      elseif c == '0' or c == '2' then
        calls = calls + 1
        if c == '2' then slow = slow + 1 end
        if calls >= half_open_calls then
          if slow / calls >= slow_call_rate then
            open_now()
            log_transition('half_open', 'open', 'probes_slow')
          else
            close_now()
            log_transition('half_open', 'closed', 'probes_succeeded')
          end
          settled = true
          break
        end
      end
    end
    if not settled then
      redis.call('HDEL', key, 'lease:' .. lease)
      redis.call('HSET', key, 'probe_calls', int(calls), 'probe_slow', int(slow))
    end
  end
end

local after = redis.call('HGET', key, 'state') or 'closed'
local w = redis.call('HGET', key, 'window') or ''
local failures, slow = count(w)
local changed = 0
if after ~= before then changed = 1 end
return {after, changed, tonumber(redis.call('HGET', key, 'open_until') or '0'), #w, failures, slow}
