-- Compare-and-set of an order record: the write only lands if nobody saved a newer version
-- since we read it (two workers can briefly own one partition during a rebalance).
--
-- KEYS[1] order hash (fields version, doc), KEYS[2] channel order number index, KEYS[3] held set
-- ARGV[1] expected version (0: must not exist), ARGV[2] new record JSON, ARGV[3] order id
-- ARGV[4] '1' if the order is now held, else '0'; ARGV[5] hold score (unix seconds)
-- Returns 1 when saved, 0 on a version conflict.
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'version', current + 1, 'doc', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if ARGV[4] == '1' then
  -- NX: the score stays the time the order was first held, which timeouts are measured from.
  redis.call('ZADD', KEYS[3], 'NX', ARGV[5], ARGV[3])
else
  redis.call('ZREM', KEYS[3], ARGV[3])
end
return 1
