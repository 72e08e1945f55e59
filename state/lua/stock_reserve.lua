-- Reserve one sku for one order: the planned allocation exactly, or nothing.
-- Idempotent per (order, sku): an existing r:ORDER (active or closed) is returned unchanged.
-- KEYS[1] stock hash of the sku, KEYS[2] its ledger stream
-- ARGV[1] order id, ARGV[2] allocation "WH=qty,WH2=qty",
-- ARGV[3] (optional, '' = none) the selling shop "CHANNEL/SHOP": its channel quota of this sku is
-- quota:SHOP, else the channel pool quota:CHANNEL/* (state/channel_stock.py writes both; a
-- number = units still sellable, 'none' = unlimited, absent = unlimited). A limited quota must
-- cover the order's units of the sku, else 'shortage' and nothing changes; on success it is
-- decremented and rq:ORDER = 'KEY=units' records what to give back on release. Not stock: no
-- ledger entry.
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
local qkey, units = nil, 0
if (ARGV[3] or '') ~= '' then
  for _, p in ipairs(parts) do units = units + p[2] end
  qkey = ARGV[3]
  local quota = redis.call('HGET', KEYS[1], 'quota:' .. qkey)
  if not quota then
    local channel = string.match(qkey, '^([^/]+)/')
    qkey = channel and (channel .. '/*') or qkey
    quota = redis.call('HGET', KEYS[1], 'quota:' .. qkey)
  end
  quota = tonumber(quota or 'none')
  if quota == nil then
    qkey = nil
  elseif quota < units then
    return {'shortage', '', 'quota'}
  end
end
local moves = {}
for i, p in ipairs(parts) do
  redis.call('HINCRBY', KEYS[1], 'reserved:' .. p[1], p[2])
  moves[i] = movement(p[1], 0, p[2], 0, 0)
end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], format_alloc(parts))
if qkey then
  redis.call('HINCRBY', KEYS[1], 'quota:' .. qkey, -units)
  redis.call('HSET', KEYS[1], 'rq:' .. ARGV[1], qkey .. '=' .. units)
end
return {'reserved', format_alloc(parts), moves}
