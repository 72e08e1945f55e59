-- The stock work a saved decision left pending (docs/decisions/0013-decide-then-do.md) is
-- carried out: mark it done, but only if the record is still that version (a newer save
-- carries its own pending work, or none), and take the order off the pending index.
-- KEYS[1] order hash, KEYS[2] pending zset; ARGV[1] the version carried out, ARGV[2] order id
-- Returns 1 when marked, 0 when the record moved on.
if tonumber(redis.call('HGET', KEYS[1], 'version') or '0') ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'done', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
