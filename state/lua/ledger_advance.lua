-- Move the ledger shipper's per-sku cursors forward, checked by fencing token: a shipper whose
-- lease lapsed (GC pause, slow ClickHouse) and was taken over cannot move a cursor any more.
-- Cursors only ever grow, so a late writer can never make the next reader skip or trim
-- entries that are not in ClickHouse yet.
-- KEYS[1] cursor hash (field sku -> last shipped entry id, field '|fence' -> highest token)
-- ARGV[1] fencing token of the shipper's lease, ARGV[2..] sku, entry id pairs
-- Returns {'ok', n advanced} or {'stale_fence', newest token}
local token = tonumber(ARGV[1])
local fence = tonumber(redis.call('HGET', KEYS[1], '|fence') or '0')
if token < fence then
  return {'stale_fence', fence}
end
if token > fence then
  redis.call('HSET', KEYS[1], '|fence', token)
end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local advanced = 0
for i = 2, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  local newer = true
  if current then
    local cms, cseq = parse(current)
    local nms, nseq = parse(ARGV[i + 1])
    newer = nms > cms or (nms == cms and nseq > cseq)
  end
  if newer then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    advanced = advanced + 1
  end
end
return {'ok', advanced}
