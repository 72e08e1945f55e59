-- The WMS shipped an order: its reserved units leave on hand and become sales in transit.
-- KEYS[1] stock hash of the sku, KEYS[2] its ledger stream; ARGV[1] order id
-- Returns {'committed'|'none', allocation, movements}; 'none' when nothing is reserved
-- (already committed or released), so a replayed shipment changes nothing.
KIND = 'commit'
local current = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
if not current or current == '-' then
  return {'none', current or ''}
end
local moves = {}
for i, p in ipairs(parse_alloc(current)) do
  redis.call('HINCRBY', KEYS[1], 'reserved:' .. p[1], -p[2])
  redis.call('HINCRBY', KEYS[1], 'on_hand:' .. p[1], -p[2])
  redis.call('HINCRBY', KEYS[1], 'sit:' .. p[1], p[2])
  moves[i] = movement(p[1], -p[2], -p[2], 0, p[2])
end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], '-')
redis.call('HSET', KEYS[1], 's:' .. ARGV[1], current)
return {'committed', current, moves}
