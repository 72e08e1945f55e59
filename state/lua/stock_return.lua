-- A return arrived at a warehouse: ARGV[3] units of this sku, once per receipt (ARGV[5]).
-- Units still counted in transit for the reservation (a parcel that never reached the buyer)
-- leave sales in transit; sellable units (ARGV[4] = '1') go back on hand. Unsellable units
-- after delivery change no figure (they are written off at the warehouse), but the receipt is
-- still recorded so a replay does nothing.
-- KEYS[1] stock hash, KEYS[2] ledger; ARGV[1] reservation id, ARGV[2] warehouse, ARGV[3] qty,
-- ARGV[4] '1'|'0' sellable, ARGV[5] receipt id, ARGV[6] (optional) seq (effect_fence in
-- common.lua): applied once, never after a later one
-- Returns {'returned'|'none', 'WH=qty' back on hand, movements}
KIND = 'returned'
local marker = 'op:' .. ARGV[5]
if redis.call('HEXISTS', KEYS[1], marker) == 1 or not first_time(ARGV[1], ARGV[6] or '') then
  return {'none', ''}
end
local wh, qty = ARGV[2], tonumber(ARGV[3])
local from_transit = 0
local shipped = redis.call('HGET', KEYS[1], 's:' .. ARGV[1])
if shipped and shipped ~= '-' then
  local parts = parse_alloc(shipped)
  for _, p in ipairs(parts) do
    if p[1] == wh then
      from_transit = math.min(qty, p[2])
      p[2] = p[2] - from_transit
    end
  end
  local left = {}
  for _, p in ipairs(parts) do if p[2] > 0 then left[#left + 1] = p end end
  redis.call('HSET', KEYS[1], 's:' .. ARGV[1], #left > 0 and format_alloc(left) or '-')
  redis.call('HINCRBY', KEYS[1], 'sit:' .. wh, -from_transit)
end
local back = ARGV[4] == '1' and qty or 0
if back > 0 then
  redis.call('HINCRBY', KEYS[1], 'on_hand:' .. wh, back)
end
redis.call('HSET', KEYS[1], marker, '1')
local moves = {movement(wh, back, 0, 0, -from_transit)}
return {'returned', wh .. '=' .. back, moves}
