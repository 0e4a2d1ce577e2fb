-- relay: write follow-ups taken from an outbox to their target stream (one slot: the
-- target's). The outbox entries are XDELed afterwards by the caller, in the same pipeline.
-- KEYS[1]   the target stream
-- ARGV[1..] the follow-ups, each one argument: its fields packed as "<len>:<bytes>" for
--           each name and value in turn (as commit.lua received them)
-- Returns how many were written.
-- (unpacked() comes from fields_lib.lua, which queues/scripts.py puts in front.)
for i = 1, #ARGV do
  redis.call('XADD', KEYS[1], '*', unpack(unpacked(ARGV[i])))
end
return #ARGV
