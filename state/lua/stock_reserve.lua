-- Reserve one sku for a batch of reservation ids (orders, or exchanges' replacements), each the
-- planned allocation exactly, or nothing; one call per sku per batch, the reservations decided
-- in the order given (as separate calls in a row would be).
-- KEYS[1] stock hash of the sku, KEYS[2] its ledger stream
-- ARGV: 4 per reservation: reservation id, allocation "WH=qty,WH2=qty" ('' = no plan fits:
-- only record the decision, see below), the selling shop "CHANNEL/SHOP" ('' = none): its
-- channel quota of this sku is quota:SHOP, else the channel pool quota:CHANNEL/*
-- (state/channel_stock.py writes both; a number = units still sellable, 'none' = unlimited,
-- absent = unlimited). A limited quota must cover the units, else 'shortage' and nothing
-- changes; on success it is decremented and rq:ID = 'KEY=units' records what to give back.
-- Then the attempt's seq (effect_fence in common.lua; '' = unfenced).
--
-- Fenced, every (reservation, sku, seq) is decided once and the decision is kept in e:ID, so
-- any number of workers carrying out the same saved decision see the same outcome per sku:
-- a second call with the same seq answers what the first decided ('existing' or 'shortage'),
-- a call below a later seq answers 'stale' and changes nothing. An active reservation of other
-- units (an order changed since) is replaced within the same step.
-- Unfenced (and for an active reservation of the same units when fenced): idempotent per
-- (reservation, sku): an existing r:ID (active or closed '-') is returned unchanged.
-- Returns one reply per reservation: {'reserved'|'existing'|'shortage', allocation, movements
-- or 'quota'}, a fourth element 'none' when the decision at this seq was an empty plan
-- (nothing planned: final, see below), or {'stale', allocation, the seq that overtook this one}
local function reserve(id, alloc, shop, seq)
  KIND, REF = 'reserve', id
  local fence, planned_nothing, last = effect_fence(id, seq)
  local existing = redis.call('HGET', KEYS[1], 'r:' .. id)
  if fence == 'stale' then
    return {'stale', existing or '', tostring(last)}
  end
  if fence == 'done' then
    if existing then return {'existing', existing} end
    if planned_nothing then return {'shortage', '', {}, 'none'} end
    return {'shortage', ''}
  end
  -- Parts naming one warehouse twice are merged first: each warehouse is checked for its total.
  local parts, units = merge_parts({parse_alloc(alloc)}), 0
  for _, p in ipairs(parts) do units = units + p[2] end
  local moves = {}
  if existing then
    local held = 0
    for _, p in ipairs(parse_alloc(existing)) do held = held + p[2] end
    if existing == '-' or fence == 'free' or held == units then
      mark_effect(id, seq)
      return {'existing', existing}
    end
    -- The reservation is of other units than asked now: give it back in this same step.
    KIND = 'undo'
    moves = unreserve(existing)
    give_quota_back(id)
    redis.call('HDEL', KEYS[1], 'r:' .. id)
    KIND = 'reserve'
  end
  if #parts == 0 then
    -- Nothing planned: the requester's snapshot had no way to serve the order. Recorded, so every
    -- worker at this seq reads the same verdict, and final (state/reservations.py: a request
    -- every sku of which says 'none' is short, with no further attempt).
    mark_effect(id, seq, ':n')
    return {'shortage', '', moves, 'none'}
  end
  mark_effect(id, seq)
  for _, p in ipairs(parts) do
    if num('on_hand:' .. p[1]) - num('reserved:' .. p[1]) < p[2] then
      return {'shortage', '', moves}
    end
  end
  local qkey = nil
  if shop ~= '' then
    qkey = shop
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
  for _, p in ipairs(parts) do
    redis.call('HINCRBY', KEYS[1], 'reserved:' .. p[1], p[2])
    moves[#moves + 1] = movement(p[1], 0, p[2], 0, 0)
  end
  redis.call('HSET', KEYS[1], 'r:' .. id, format_alloc(parts))
  if qkey then
    redis.call('HINCRBY', KEYS[1], 'quota:' .. qkey, -units)
    redis.call('HSET', KEYS[1], 'rq:' .. id, qkey .. '=' .. units)
  end
  return {'reserved', format_alloc(parts), moves}
end

local replies = {}
for i = 1, #ARGV, 4 do
  replies[#replies + 1] = reserve(ARGV[i], ARGV[i + 1] or '', ARGV[i + 2] or '', ARGV[i + 3] or '')
end
return replies
