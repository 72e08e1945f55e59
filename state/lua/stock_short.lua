-- The WMS could not find ARGV[3] units of this sku at warehouse ARGV[2] for a reservation:
-- those units do not exist, so on hand and reserved both fall by them (kind 'short_pick'), and
-- the rest of the reservation of this sku goes back to available with undo semantics (the
-- field is removed: the order may reserve again, elsewhere). The channel quota the reservation
-- charged goes back too: the re-reservation charges it again.
-- KEYS[1] stock hash, KEYS[2] ledger; ARGV[1] reservation id, ARGV[2] warehouse, ARGV[3] qty,
-- ARGV[4] (optional) seq (effect_fence in common.lua): applied once, never after a later one.
-- Returns {'shorted'|'none', allocation given back, movements}
local id, seq = ARGV[1], ARGV[4] or ''
local current = redis.call('HGET', KEYS[1], 'r:' .. id)
if not first_time(id, seq) then
  return {'none', current or ''}
end
if not current or current == '-' then
  return {'none', current or ''}
end
local moves = {}
local wh, wanted = ARGV[2], tonumber(ARGV[3])
for _, p in ipairs(parse_alloc(current)) do
  local short = 0
  if p[1] == wh then short = math.min(wanted, p[2]) end
  if short > 0 then
    KIND = 'short_pick'
    redis.call('HINCRBY', KEYS[1], 'on_hand:' .. wh, -short)
    redis.call('HINCRBY', KEYS[1], 'reserved:' .. wh, -short)
    moves[#moves + 1] = movement(wh, -short, -short, 0, 0)
  end
  if p[2] - short > 0 then
    KIND = 'undo'
    redis.call('HINCRBY', KEYS[1], 'reserved:' .. p[1], -(p[2] - short))
    moves[#moves + 1] = movement(p[1], 0, -(p[2] - short), 0, 0)
  end
end
give_quota_back(id)
redis.call('HDEL', KEYS[1], 'r:' .. id)
return {'shorted', current, moves}
