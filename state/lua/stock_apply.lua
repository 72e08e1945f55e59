-- Apply one stock operation to one sku, once: set or add on hand / inbound per warehouse.
-- KEYS[1] stock hash of the sku, KEYS[2] its ledger stream
-- ARGV[1] operation id (idempotency), ARGV[2] kind (load, adjust, snapshot, receive...),
-- ARGV[3] fencing token ('0': unfenced), ARGV[4] actor, ARGV[5] reason (each '' for none:
-- fields of the ledger entries, never part of the operation id),
-- ARGV[6..] 'WH|field|mode|value' with field on_hand|inbound and mode set|add
-- A set may not take on hand below what is reserved (that would turn accepted orders into
-- oversells) and nothing may go below zero: then nothing is applied.
-- Kind 'dry-run:<kind>' checks everything and writes nothing (all skus of an operation are
-- checked before any is changed). Kind 'revert' (ARGV[1] = 'revert:X') undoes operation X on this sku and clears its marker.
-- Returns {'applied'|'duplicate'|'stale_fence'|'error', detail, movements}
if redis.call('HEXISTS', KEYS[1], 'op:' .. ARGV[1]) == 1 then
  return {'duplicate', ''}
end
KIND = ARGV[2]
local dry_run = string.sub(KIND, 1, 8) == 'dry-run:'
local token = tonumber(ARGV[3])
if ARGV[4] ~= '' then NOTE[#NOTE + 1] = 'actor'; NOTE[#NOTE + 1] = ARGV[4] end
if ARGV[5] ~= '' then NOTE[#NOTE + 1] = 'reason'; NOTE[#NOTE + 1] = ARGV[5] end
local changes = {}
local seen = {}
for i = 6, #ARGV do
  local wh, field, mode, value = string.match(ARGV[i], '^([^|]+)|([^|]+)|([^|]+)|(-?%d+)$')
  value = tonumber(value)
  if token > 0 and num('fence:' .. wh) > token then
    return {'stale_fence', wh .. ' was written with a newer fencing token'}
  end
  -- Two changes of one figure in one operation apply in order, the second on the first.
  local current = seen[field .. ':' .. wh] or num(field .. ':' .. wh)
  local target = value
  if mode == 'add' then target = current + value end
  if target < 0 then
    return {'error', wh .. ': ' .. field .. ' would be ' .. target}
  end
  if field == 'on_hand' and target < num('reserved:' .. wh) then
    return {'error', wh .. ': ' .. num('reserved:' .. wh) ..
      ' reserved, on hand cannot be ' .. target}
  end
  changes[#changes + 1] = {wh, field, target, target - current}
  seen[field .. ':' .. wh] = target
end
if dry_run then
  return {'ok', ''}
end
local moves = {}
for i, c in ipairs(changes) do
  redis.call('HSET', KEYS[1], c[2] .. ':' .. c[1], c[3])
  if token > 0 then redis.call('HSET', KEYS[1], 'fence:' .. c[1], token) end
  if c[2] == 'on_hand' then
    moves[i] = movement(c[1], c[4], 0, 0, 0)
  else
    moves[i] = movement(c[1], 0, 0, c[4], 0)
  end
end
if KIND == 'revert' then
  -- Undoing operation X (ARGV[1] = 'revert:X') also forgets that X was applied here, so a
  -- retry of X after its cause is fixed applies to every sku, not just the others.
  redis.call('HDEL', KEYS[1], 'op:' .. string.sub(ARGV[1], 8))
else
  redis.call('HSET', KEYS[1], 'op:' .. ARGV[1], '1')
end
return {'applied', '', moves}
