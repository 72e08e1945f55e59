-- Units in transit for an order stop being ours: 'delivered' (signed for) or 'returned'
-- (they come back: on hand grows again when ARGV[3] = '1', i.e. the goods are sellable).
-- KEYS[1] stock hash of the sku, KEYS[2] its ledger stream; ARGV[1] reservation id;
-- ARGV[2] 'delivered'|'returned'; ARGV[3] '1'|'0'; ARGV[4] (optional) warehouse ('' = all);
-- ARGV[5] (optional) seq (effect_fence in common.lua): applied once, never after a later one.
-- Returns {'settled'|'none', allocation settled, movements}
local current = redis.call('HGET', KEYS[1], 's:' .. ARGV[1])
if not first_time(ARGV[1], ARGV[5] or '') then
  return {'none', ''}
end
if not current or current == '-' then
  return {'none', current or ''}
end
local picked, rest = split_parts(current, ARGV[4] or '')
if #picked == 0 then
  return {'none', ''}
end
local restock = ARGV[2] == 'returned' and ARGV[3] == '1'
KIND = ARGV[2]
local moves = {}
for i, p in ipairs(picked) do
  redis.call('HINCRBY', KEYS[1], 'sit:' .. p[1], -p[2])
  local back = 0
  if restock then
    redis.call('HINCRBY', KEYS[1], 'on_hand:' .. p[1], p[2])
    back = p[2]
  end
  moves[i] = movement(p[1], back, 0, 0, -p[2])
end
redis.call('HSET', KEYS[1], 's:' .. ARGV[1], #rest > 0 and format_alloc(rest) or '-')
return {'settled', format_alloc(picked), moves}
