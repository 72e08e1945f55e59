-- Give back what a reservation holds of one sku.
-- ARGV[2] = 'final' (cancel, unpaid timeout, failed routing): leaves a "-" tombstone so a late
-- replay can never reserve again. ARGV[2] = 'undo' (compensating a multi-sku reservation that
-- failed on another sku, or a sku an order no longer has): removes the field so the
-- reservation id may reserve again.
-- Either way the channel quota the reservation used (rq:ID, see stock_reserve.lua) goes back.
-- KEYS[1] stock hash of the sku, KEYS[2] its ledger stream; ARGV[1] reservation id;
-- ARGV[3] (optional) seq (effect_fence in common.lua): a final release runs once per seq; an
-- undo runs at the seq of the reserve attempt it compensates (or a newer one), never below.
-- Returns {'released'|'none', allocation, movements}
local id, seq = ARGV[1], ARGV[3] or ''
local current = redis.call('HGET', KEYS[1], 'r:' .. id)
local final = ARGV[2] == 'final'
KIND = final and 'release' or 'undo'
-- A final release runs once per seq, like every effect. An undo also runs at the very seq
-- it compensates ('done'): a saga's attempt reserved some skus at that seq and came up short
-- on another, and every worker carrying the attempt out reads the same decisions and undoes
-- the same parts (state/reservations.py never undoes once a later decision overtook it).
local fence = effect_fence(id, seq)
if fence == 'stale' or (final and fence == 'done') then
  return {'none', current or ''}
end
mark_effect(id, seq)
if not current or current == '-' then
  if final then redis.call('HSET', KEYS[1], 'r:' .. id, '-') end
  return {'none', current or ''}
end
local moves = unreserve(current)
give_quota_back(id)
if final then
  redis.call('HSET', KEYS[1], 'r:' .. id, '-')
else
  redis.call('HDEL', KEYS[1], 'r:' .. id)
end
return {'released', current, moves}
