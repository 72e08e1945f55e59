-- The WMS shipped an order (or one warehouse's parcel of a split order): the reserved units of
-- that warehouse leave on hand and become sales in transit.
-- KEYS[1] stock hash of the sku, KEYS[2] its ledger stream; ARGV[1] reservation id (order id,
-- or an exchange's id); ARGV[2] (optional) warehouse: only its part ships ('' = all parts);
-- ARGV[3] (optional) seq (effect_fence in common.lua): applied once, never after a later one;
-- ARGV[4] (optional, with a warehouse) the units the WMS says left. Units beyond what the
-- reservation holds there left all the same: they come off on hand too, into sales in
-- transit, and u:ID records them, a violation `./oms verify` reports (a unit shipped that no
-- reservation covered is a bug or a hand edit, and the books must not keep it as sellable).
-- Returns {'committed'|'none', allocation committed, movements}; 'none' when nothing of it is
-- reserved or shipped now (a replayed shipment changes nothing).
KIND = 'commit'
local id, seq = ARGV[1], ARGV[3] or ''
local current = redis.call('HGET', KEYS[1], 'r:' .. id)
if not first_time(id, seq) then
  return {'none', current or ''}
end
local active = current and current ~= '-'
local picked, rest = {}, {}
if active then
  picked, rest = split_parts(current, ARGV[2] or '')
end
local shipped = tonumber(ARGV[4] or '')
local wh = ARGV[2] or ''
local held = 0
for _, p in ipairs(picked) do held = held + p[2] end
local beyond = (shipped and wh ~= '') and math.max(shipped - held, 0) or 0
if #picked == 0 and beyond == 0 then
  return {'none', current or ''}
end
local moves = {}
for _, p in ipairs(picked) do
  redis.call('HINCRBY', KEYS[1], 'reserved:' .. p[1], -p[2])
  redis.call('HINCRBY', KEYS[1], 'on_hand:' .. p[1], -p[2])
  redis.call('HINCRBY', KEYS[1], 'sit:' .. p[1], p[2])
  moves[#moves + 1] = movement(p[1], -p[2], -p[2], 0, p[2])
end
if beyond > 0 then
  KIND = 'commit_unreserved'
  redis.call('HINCRBY', KEYS[1], 'on_hand:' .. wh, -beyond)
  redis.call('HINCRBY', KEYS[1], 'sit:' .. wh, beyond)
  moves[#moves + 1] = movement(wh, -beyond, 0, 0, beyond)
  picked[#picked + 1] = {wh, beyond}
  redis.call('HSET', KEYS[1], 'u:' .. id,
    add_parts(redis.call('HGET', KEYS[1], 'u:' .. id), {{wh, beyond}}))
end
if active then
  redis.call('HSET', KEYS[1], 'r:' .. id, #rest > 0 and format_alloc(rest) or '-')
end
redis.call('HSET', KEYS[1], 's:' .. id,
  add_parts(redis.call('HGET', KEYS[1], 's:' .. id), picked))
return {'committed', format_alloc(picked), moves}
