-- Record one order in a velocity set and count its window, in one call (state/velocity.py).
-- One key: Redis Cluster-safe. Replaces ZADD + ZREMRANGEBYSCORE + ZCOUNT + EXPIRE, which cost
-- four commands to pack and four replies to parse per key on the hot path.
-- KEYS[1] velocity set
-- ARGV[1] order id, ARGV[2] its created_at score, ARGV[3] drop members scored below this,
-- ARGV[4] count from this score, ARGV[5] key ttl seconds
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local n = redis.call('ZCOUNT', KEYS[1], ARGV[4], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return n
