-- Give back what an order holds of one sku.
-- ARGV[2] = 'final' (cancel, unpaid timeout, failed routing): leaves a "-" tombstone so a late
-- replay can never reserve again. ARGV[2] = 'undo' (compensating a multi-sku reservation that
-- failed on another sku): removes the field so the order may reserve again.
-- Either way the channel quota the reservation used (rq:ORDER = 'KEY=units', see
-- stock_reserve.lua) is given back to quota:KEY if that is still a limited quota.
-- KEYS[1] stock hash of the sku, KEYS[2] its ledger stream; ARGV[1] order id
-- Returns {'released'|'none', allocation, movements}
local current = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
local final = ARGV[2] == 'final'
KIND = final and 'release' or 'undo'
if not current or current == '-' then
  if final then redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], '-') end
  return {'none', current or ''}
end
local moves = {}
for i, p in ipairs(parse_alloc(current)) do
  redis.call('HINCRBY', KEYS[1], 'reserved:' .. p[1], -p[2])
  moves[i] = movement(p[1], 0, -p[2], 0, 0)
end
local used = redis.call('HGET', KEYS[1], 'rq:' .. ARGV[1])
if used then
  local qkey, units = string.match(used, '^(.*)=(%d+)$')
  if qkey and tonumber(redis.call('HGET', KEYS[1], 'quota:' .. qkey) or 'none') then
    redis.call('HINCRBY', KEYS[1], 'quota:' .. qkey, tonumber(units))
  end
  redis.call('HDEL', KEYS[1], 'rq:' .. ARGV[1])
end
if final then
  redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], '-')
else
  redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
end
return {'released', current, moves}
