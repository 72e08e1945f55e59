-- Shared helpers, prepended to every stock script by state/redis.py (Redis has no require).
-- All stock of one sku lives in one hash, KEYS[1] = <prefix>:stock:{sku}, and its ledger in one
-- stream, KEYS[2] = <prefix>:ledger:{sku}: both carry the hash tag {sku}, so every script
-- touches exactly one hash slot (Redis Cluster ready). Hash fields, per warehouse WH:
--   on_hand:WH   physical units in the warehouse
--   reserved:WH  units promised to open orders (sum of the r: fields naming WH)
--   inbound:WH   purchase in transit (ordered from suppliers, not yet received)
--   sit:WH       sales in transit (shipped, not yet signed for)
--   fence:WH     highest fencing token a locked operation (snapshot, recount) has written with
-- and per order ORDER:
--   r:ORDER      active reservation "WH=qty,WH2=qty" ; "-" once released or committed
--   s:ORDER      shipped units in transit "WH=qty,..." ; "-" once settled or returned
--   op:ID        "1" once stock operation ID (load, adjust, restock...) has been applied

local function num(field)
  return tonumber(redis.call('HGET', KEYS[1], field) or '0')
end

local function parse_alloc(text)
  local out = {}
  for wh, qty in string.gmatch(text or '', '([^=,]+)=(%d+)') do
    out[#out + 1] = {wh, tonumber(qty)}
  end
  return out
end

local function format_alloc(parts)
  local items = {}
  for i, p in ipairs(parts) do items[i] = p[1] .. '=' .. p[2] end
  return table.concat(items, ',')
end

-- Every change of a figure is one ledger entry, written in the same atomic step as the change,
-- so the ledger can never miss or double a movement. The reference (order id or operation id)
-- is ARGV[1], or REF for a script that moves stock for several references (stock_reserve.lua);
-- KIND the movement kind set by each script. NOTE: more field/value pairs of every entry (an
-- operator's change names its actor and reason apart from its reference).
local KIND = 'unknown'
local REF = nil
local NOTE = {}
local function movement(wh, on_hand, reserved, inbound, sit)
  if on_hand == 0 and reserved == 0 and inbound == 0 and sit == 0 then
    return {wh, 0, 0, 0, 0}
  end
  redis.call('XADD', KEYS[2], '*', 'wh', wh, 'kind', KIND, 'ref', REF or ARGV[1],
    'on_hand', on_hand, 'reserved', reserved, 'inbound', inbound, 'sit', sit, unpack(NOTE))
  return {wh, on_hand, reserved, inbound, sit}
end

-- Split "WH=qty,..." into the parts of warehouse `wh` ('' = every warehouse) and the rest.
local function split_parts(text, wh)
  local picked, rest = {}, {}
  for _, p in ipairs(parse_alloc(text)) do
    if wh == '' or p[1] == wh then picked[#picked + 1] = p else rest[#rest + 1] = p end
  end
  return picked, rest
end

-- The parts of several lists as one part per warehouse (units of a warehouse named twice
-- summed), in the order warehouses first appear.
local function merge_parts(lists)
  local out, index = {}, {}
  for _, list in ipairs(lists) do
    for _, p in ipairs(list) do
      if index[p[1]] then
        out[index[p[1]]][2] = out[index[p[1]]][2] + p[2]
      else
        out[#out + 1] = {p[1], p[2]}
        index[p[1]] = #out
      end
    end
  end
  return out
end

-- Add parts into an allocation text ('-' or absent counts as empty), one part per warehouse.
local function add_parts(text, parts)
  local existing = (text and text ~= '-') and parse_alloc(text) or {}
  return format_alloc(merge_parts({existing, parts}))
end

-- An order's stock effects are fenced by sequence number (docs/decisions/0013): each effect
-- carries the seq the order record gave it when the decision to make it was saved, and
-- e:SHIPMENT keeps the highest seq applied for that reservation id in this sku. An effect at or
-- below it was applied already, or was overtaken by a later decision: it changes nothing. So a
-- decision is carried out once per sku however many workers carry it out, and never after a
-- later one. SEQ '' (no fence) is for callers outside the order path (tests, the bench).
--   'new'   not seen: apply, then mark_effect
--   'done'  this very seq was applied: a reserve returns what it decided, others do nothing
--   'stale' a later seq was applied: do nothing
--   'free'  unfenced
-- The value of e:SHIPMENT is the seq, followed by ':n' when that seq's decision was a reserve
-- with nothing planned (stock_reserve.lua: the requester saw no way to serve the order); the
-- second result of effect_fence says so for 'done'; the third is the seq last applied.
local function effect_fence(shipment, seq)
  if not seq or seq == '' then return 'free', false, nil end
  local raw = redis.call('HGET', KEYS[1], 'e:' .. shipment) or '-1'
  local last = tonumber(string.match(raw, '^(-?%d+)'))
  local this = tonumber(seq)
  if last > this then return 'stale', false, last end
  if last == this then return 'done', string.sub(raw, -2) == ':n', last end
  return 'new', false, last
end

local function mark_effect(shipment, seq, note)
  if seq and seq ~= '' then redis.call('HSET', KEYS[1], 'e:' .. shipment, seq .. (note or '')) end
end

-- A post-save effect (commit, settle, return, short pick, final release) runs once per seq:
-- true (and marked) when this one is new or unfenced, false when applied or overtaken.
local function first_time(shipment, seq)
  local fence = effect_fence(shipment, seq)
  if fence == 'stale' or fence == 'done' then return false end
  mark_effect(shipment, seq)
  return true
end

-- Hand the channel quota a reservation charged (rq:SHIPMENT = 'KEY=units', stock_reserve.lua)
-- back to quota:KEY, if that is still a limited quota, and forget the charge.
local function give_quota_back(shipment)
  local used = redis.call('HGET', KEYS[1], 'rq:' .. shipment)
  if not used then return end
  local qkey, units = string.match(used, '^(.*)=(%d+)$')
  if qkey and tonumber(redis.call('HGET', KEYS[1], 'quota:' .. qkey) or 'none') then
    redis.call('HINCRBY', KEYS[1], 'quota:' .. qkey, tonumber(units))
  end
  redis.call('HDEL', KEYS[1], 'rq:' .. shipment)
end

-- Give back every unit a reservation holds of this sku (reserved falls; movements of KIND).
local function unreserve(current)
  local moves = {}
  for i, p in ipairs(parse_alloc(current)) do
    redis.call('HINCRBY', KEYS[1], 'reserved:' .. p[1], -p[2])
    moves[i] = movement(p[1], 0, -p[2], 0, 0)
  end
  return moves
end
