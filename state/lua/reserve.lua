-- Reserve every line of one order in the first candidate warehouse that can serve all of
-- them, or nothing. Idempotent per order: if the reservation key exists (reserved or already
-- released) its record is returned unchanged, so a replayed message never reserves twice.
--
-- KEYS[1]      reservation key of the order
-- KEYS[2..n+1] stock hash of each distinct sku (fields on_hand:<wh>, reserved:<wh>)
-- ARGV[1]      order id
-- ARGV[2]      n, the number of distinct skus
-- ARGV[3..n+2]     quantity of each sku, aligned with KEYS[2..]
-- ARGV[n+3..2n+2]  sku names, aligned with KEYS[2..]
-- ARGV[2n+3..]     candidate warehouses in priority order
-- Returns {status, record_json}; status is 'existing', 'reserved' or 'shortage'.
local existing = redis.call('GET', KEYS[1])
if existing then
  return {'existing', existing}
end

local n = tonumber(ARGV[2])
local function available(i, wh)
  local on_hand = tonumber(redis.call('HGET', KEYS[1 + i], 'on_hand:' .. wh) or '0')
  local reserved = tonumber(redis.call('HGET', KEYS[1 + i], 'reserved:' .. wh) or '0')
  return on_hand - reserved
end

for w = 2 * n + 3, #ARGV do
  local wh = ARGV[w]
  local fits = true
  for i = 1, n do
    if available(i, wh) < tonumber(ARGV[2 + i]) then
      fits = false
      break
    end
  end
  if fits then
    local allocations = {}
    for i = 1, n do
      redis.call('HINCRBY', KEYS[1 + i], 'reserved:' .. wh, ARGV[2 + i])
      allocations[i] = {sku = ARGV[n + 2 + i], warehouse = wh, quantity = tonumber(ARGV[2 + i])}
    end
    local record = cjson.encode({order_id = ARGV[1], status = 'reserved', allocations = allocations})
    redis.call('SET', KEYS[1], record)
    return {'reserved', record}
  end
end
return {'shortage', ''}
