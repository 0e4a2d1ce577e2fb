-- KEYS[1]   seawall:{<stream>}:breaker:<handler>   hash: one handler's circuit breaker
-- ARGV[1]   now_ms: the caller's clock in ms, or "" for the Redis server's clock
-- ARGV[2]   lease id from breaker_acquire.lua
-- ARGV[3]   lease_ttl_ms: the lease now expires this long from now (never sooner than it did)
--
-- A prober whose probes are still running keeps its half-open lease alive, so that a lease
-- can be short (a prober that died frees its permits soon) while a probe may run as long as
-- the handler's timeout allows. Only a live lease of a half-open breaker is renewed: an
-- expired one may already have been replaced by another prober's lease.
--
-- Returns 1 if the lease was renewed, 0 if it is gone (expired, released, or the breaker
-- moved on).

local key = KEYS[1]
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local field = 'lease:' .. ARGV[2]
local ttl = tonumber(ARGV[3])

if redis.call('HGET', key, 'state') ~= 'half_open' then
  return 0
end
local raw = redis.call('HGET', key, field)
if not raw then
  return 0
end
local sep = string.find(raw, ':', 1, true)
local permits = string.sub(raw, 1, sep - 1)
local expires = tonumber(string.sub(raw, sep + 1))
if expires <= now then
  return 0
end
if now + ttl > expires then
  redis.call('HSET', key, field, permits .. ':' .. string.format('%d', now + ttl))
end
return 1
