-- Compare-and-set of one or more order records, all or nothing: the writes only land if nobody
-- saved a newer version of ANY of them since we read them (two workers can briefly own one
-- partition during a rebalance; a merged shipment changes several orders in one step).
--
-- Per record i (0-based), KEYS[11i+1..11i+11]: order hash (fields version, doc, done, out:*),
-- channel order number index, held zset, closing zset, merge group set, merge due zset, pending
-- zset, unpaid zset, backorder zset, backorder skus hash, deadline zset; ARGV[13i+1..13i+13]:
--   expected version (0: must not exist), new record JSON, order id,
--   '1' if the order now waits for a person (held, WMS exception), 'u' if it is held as unpaid,
--   else '0', now (unix seconds),
--   close-due score ('' = not closing), merge: '' no group | 'join:<due>' | 'leave',
--   '1' if the record carries stock work still to do (its pending decision) else '0',
--   the saving input's id, its outputs to add to field out:<input id> (lines; '' = none),
--   a JSON array of input ids whose kept outputs go (their out: fields are deleted),
--   backorder: '' (not held out of stock) | '<score> <JSON {sku: units}>',
--   ship-by deadline ('' = none runs: shipped, cancelled, not paid yet)
-- Returns 1 when saved, 0 on a version conflict (then nothing was written).
local n = #KEYS / 11
for i = 0, n - 1 do
  local current = tonumber(redis.call('HGET', KEYS[11 * i + 1], 'version') or '0')
  if current ~= tonumber(ARGV[13 * i + 1]) then
    return 0
  end
end
for i = 0, n - 1 do
  local k, a = 11 * i, 13 * i
  local oid = ARGV[a + 3]
  redis.call('HSET', KEYS[k + 1], 'version', tonumber(ARGV[a + 1]) + 1, 'doc', ARGV[a + 2])
  redis.call('SADD', KEYS[k + 2], oid)
  if ARGV[a + 4] ~= '0' then
    -- NX: the score stays the time the order was first held, which timeouts are measured from.
    redis.call('ZADD', KEYS[k + 3], 'NX', ARGV[a + 5], oid)
  else
    redis.call('ZREM', KEYS[k + 3], oid)
  end
  if ARGV[a + 4] == 'u' then
    redis.call('ZADD', KEYS[k + 8], 'NX', ARGV[a + 5], oid)
  else
    redis.call('ZREM', KEYS[k + 8], oid)
  end
  local backorder = ARGV[a + 12]
  if backorder ~= '' then
    -- NX: the score stays the first hold's, so retries go first held, first served.
    local space = string.find(backorder, ' ', 1, true)
    redis.call('ZADD', KEYS[k + 9], 'NX', string.sub(backorder, 1, space - 1), oid)
    redis.call('HSET', KEYS[k + 10], oid, string.sub(backorder, space + 1))
  else
    redis.call('ZREM', KEYS[k + 9], oid)
    redis.call('HDEL', KEYS[k + 10], oid)
  end
  if ARGV[a + 13] ~= '' then
    redis.call('ZADD', KEYS[k + 11], ARGV[a + 13], oid)
  else
    redis.call('ZREM', KEYS[k + 11], oid)
  end
  if ARGV[a + 6] ~= '' then
    redis.call('ZADD', KEYS[k + 4], ARGV[a + 6], oid)
  else
    redis.call('ZREM', KEYS[k + 4], oid)
  end
  local merge = ARGV[a + 7]
  if merge ~= '' then
    local group = KEYS[k + 5]
    if string.sub(merge, 1, 5) == 'join:' then
      -- The first member of an empty group opens its window; later ones join it.
      if redis.call('SCARD', group) == 0 then
        redis.call('ZADD', KEYS[k + 6], string.sub(merge, 6), group)
      end
      redis.call('SADD', group, oid)
    else
      redis.call('SREM', group, oid)
      if redis.call('SCARD', group) == 0 then
        redis.call('ZREM', KEYS[k + 6], group)
      end
    end
  end
  -- NX: the score stays when the work was first left pending, which the sweeper waits from.
  if ARGV[a + 8] == '1' then
    redis.call('ZADD', KEYS[k + 7], 'NX', ARGV[a + 5], oid)
  else
    redis.call('ZREM', KEYS[k + 7], oid)
  end
  -- The saving input's outputs, kept beside the record for its redeliveries.
  if ARGV[a + 10] ~= '' then
    local field = 'out:' .. ARGV[a + 9]
    local kept = redis.call('HGET', KEYS[k + 1], field)
    redis.call('HSET', KEYS[k + 1], field, kept and (kept .. '\n' .. ARGV[a + 10]) or ARGV[a + 10])
  end
  for _, gone in ipairs(cjson.decode(ARGV[a + 11])) do
    redis.call('HDEL', KEYS[k + 1], 'out:' .. gone)
  end
end
return 1
