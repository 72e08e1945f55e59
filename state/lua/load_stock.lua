-- Set on-hand quantities from a stock file, all rows or none. A row may not set on hand
-- below what is already reserved there: that would turn accepted orders into oversells.
--
-- KEYS[1]      the sku registry set
-- KEYS[2..n+1] stock hash of the sku of each row
-- ARGV[1..n]   'sku|warehouse|qty' for each row, aligned with KEYS[2..]
-- Returns {'ok', rows} or {'error', 'row i: ...'}.
local rows = {}
for i = 1, #ARGV do
  local sku, wh, qty = string.match(ARGV[i], '^(.*)|(.*)|(-?%d+)$')
  qty = tonumber(qty)
  local reserved = tonumber(redis.call('HGET', KEYS[1 + i], 'reserved:' .. wh) or '0')
  if qty < reserved then
    return {'error', 'row ' .. i .. ': ' .. sku .. ' at ' .. wh .. ' has ' .. reserved ..
      ' reserved, cannot set on hand to ' .. qty}
  end
  rows[i] = {sku, wh, qty}
end
for i, r in ipairs(rows) do
  redis.call('HSET', KEYS[1 + i], 'on_hand:' .. r[2], r[3])
  redis.call('SADD', KEYS[1], r[1])
end
return {'ok', tostring(#rows)}
