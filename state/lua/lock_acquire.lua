-- Take a lock if it is free, and hand out the next fencing token with it, in one step: a token
-- is only ever issued together with a lease, and tokens only grow.
-- KEYS[1] lock key, KEYS[2] fencing counter (same hash tag: one slot)
-- ARGV[1] owner token (random per acquisition), ARGV[2] TTL in milliseconds
-- Returns the fencing token (> 0), or 0 when someone else holds the lock.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
