-- KEYS[1..n]   seawall:{<stream>}:done:<handler>:<message id>   idempotency markers
--
-- Which of a fetched batch's messages an idempotent handler already completed, in one call
-- (a pipeline of EXISTS would cost one command per message on the client).
--
-- Returns one integer per key, in order: 1 if the marker exists, else 0.

local found = {}
for i = 1, #KEYS do
  found[i] = redis.call('EXISTS', KEYS[i])
end
return found
