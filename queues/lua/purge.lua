-- purge: delete dead letters for good, one batch of ids a call, keeping the counts.
-- KEYS[1]  the handler's dead-letter stream (seawall:{stream}:dlq:<handler>)
-- KEYS[2]  its counts by error type (seawall:{stream}:dlq-counts:<handler>): HINCRBY -1
--          for each entry actually deleted (the field is removed when it reaches 0)
-- ARGV[1..] dead-letter entry ids
-- Returns how many were deleted. Ids that no longer exist are skipped and not counted.
local removed = 0
for _, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found == 1 then
    local src = found[1][2]
    local error_type = '?'
    for i = 1, #src, 2 do
      if src[i] == 'dlq_error_type' then
        error_type = src[i + 1]
        break
      end
    end
    if error_type == '' then
      error_type = '?'
    end
    if redis.call('XDEL', KEYS[1], id) == 1 then
      removed = removed + 1
      if redis.call('HINCRBY', KEYS[2], error_type, -1) <= 0 then
        redis.call('HDEL', KEYS[2], error_type)
      end
    end
  end
end
return removed
