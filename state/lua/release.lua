-- Give back the units an order holds. The reservation key stays, marked released, so a
-- replayed reserve of the same order returns 'existing' instead of reserving again.
--
-- KEYS[1]      reservation key of the order
-- KEYS[2..]    stock hash of each allocated sku, in the record's allocation order
-- ARGV[1]      order id (used when no reservation exists yet, to block a later reserve)
-- Returns {status, record_json}; status is 'released', 'already_released', 'none', or 'retry'
-- when KEYS do not match the allocations (the caller read a stale record; read and call again).
local raw = redis.call('GET', KEYS[1])
if not raw then
  local record = cjson.encode({order_id = ARGV[1], status = 'released', allocations = {}})
  redis.call('SET', KEYS[1], record)
  return {'none', record}
end
local record = cjson.decode(raw)
if record.status ~= 'reserved' then
  return {'already_released', raw}
end
if #KEYS - 1 ~= #record.allocations then
  return {'retry', raw}
end
for i, a in ipairs(record.allocations) do
  redis.call('HINCRBY', KEYS[1 + i], 'reserved:' .. a.warehouse, -a.quantity)
end
record.status = 'released'
local out = cjson.encode(record)
redis.call('SET', KEYS[1], out)
return {'released', out}
