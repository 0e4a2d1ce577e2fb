-- purge: delete dead letters for good, one batch of ids a call, keeping the counts.
-- KEYS[1]  the handler's dead-letter stream (seawall:{stream}:dlq:<handler>)
-- KEYS[2]  its counts by error type (seawall:{stream}:dlq-counts:<handler>): HINCRBY -1
--          for each entry actually deleted (the field is removed when it reaches 0)
-- ARGV[1..] dead-letter entry ids
-- Returns how many were deleted. Ids that no longer exist are skipped and not counted.
-- (error_type_of() and uncount_dead_letter() come from fields_lib.lua, put in front.)
local removed = 0
for _, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found == 1 then
    if redis.call('XDEL', KEYS[1], id) == 1 then
      removed = removed + 1
      uncount_dead_letter(KEYS[2], error_type_of(found[1][2]))
    end
  end
end
return removed
