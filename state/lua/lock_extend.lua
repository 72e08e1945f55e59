-- Push the expiry of a lock out to a full TTL again, only for its owner: a holder whose lease
-- already lapsed (and maybe went to someone else) must not revive it.
-- KEYS[1] lock key; ARGV[1] owner token, ARGV[2] TTL in milliseconds
-- Returns 1 when extended, 0 when the caller is not the owner (any more).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
