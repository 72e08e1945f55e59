-- The WMS shipped an order (or one warehouse's parcel of a split order): the reserved units of
-- that warehouse leave on hand and become sales in transit.
-- KEYS[1] stock hash of the sku, KEYS[2] its ledger stream; ARGV[1] reservation id (order id,
-- or an exchange's id); ARGV[2] (optional) warehouse: only its part ships ('' = all parts);
-- ARGV[3] (optional) seq (effect_fence in common.lua): applied once, never after a later one.
-- Returns {'committed'|'none', allocation committed, movements}; 'none' when nothing of it is
-- reserved (already committed or released), so a replayed shipment changes nothing.
KIND = 'commit'
local id, seq = ARGV[1], ARGV[3] or ''
local current = redis.call('HGET', KEYS[1], 'r:' .. id)
local fence = effect_fence(id, seq)
if fence == 'stale' or fence == 'done' then
  return {'none', current or ''}
end
mark_effect(id, seq)
if not current or current == '-' then
  return {'none', current or ''}
end
local picked, rest = split_parts(current, ARGV[2] or '')
if #picked == 0 then
  return {'none', ''}
end
local moves = {}
for i, p in ipairs(picked) do
  redis.call('HINCRBY', KEYS[1], 'reserved:' .. p[1], -p[2])
  redis.call('HINCRBY', KEYS[1], 'on_hand:' .. p[1], -p[2])
  redis.call('HINCRBY', KEYS[1], 'sit:' .. p[1], p[2])
  moves[i] = movement(p[1], -p[2], -p[2], 0, p[2])
end
redis.call('HSET', KEYS[1], 'r:' .. id, #rest > 0 and format_alloc(rest) or '-')
redis.call('HSET', KEYS[1], 's:' .. id,
  add_parts(redis.call('HGET', KEYS[1], 's:' .. id), picked))
return {'committed', format_alloc(picked), moves}
