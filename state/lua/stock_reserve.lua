-- Reserve one sku for one order: the planned allocation exactly, or nothing.
-- Idempotent per (order, sku): an existing r:ORDER (active or closed) is returned unchanged.
-- KEYS[1] stock hash of the sku, KEYS[2] its ledger stream
-- ARGV[1] order id, ARGV[2] allocation "WH=qty,WH2=qty"
-- Returns {'reserved'|'existing'|'shortage', allocation, movements...}
KIND = 'reserve'
local existing = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
if existing then
  return {'existing', existing}
end
-- Parts naming one warehouse twice are merged first: each warehouse is checked for its total.
local parts, index = {}, {}
for _, p in ipairs(parse_alloc(ARGV[2])) do
  if index[p[1]] then
    parts[index[p[1]]][2] = parts[index[p[1]]][2] + p[2]
  else
    parts[#parts + 1] = {p[1], p[2]}
    index[p[1]] = #parts
  end
end
for _, p in ipairs(parts) do
  if num('on_hand:' .. p[1]) - num('reserved:' .. p[1]) < p[2] then
    return {'shortage', ''}
  end
end
local moves = {}
for i, p in ipairs(parts) do
  redis.call('HINCRBY', KEYS[1], 'reserved:' .. p[1], p[2])
  moves[i] = movement(p[1], 0, p[2], 0, 0)
end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], format_alloc(parts))
return {'reserved', format_alloc(parts), moves}
