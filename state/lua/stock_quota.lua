-- Set the channel quotas of one sku (a rebalance under the channel-quota lock, see
-- state/channel_stock.py). Quotas are not stock: no figure and no ledger entry changes.
-- KEYS[1] stock hash of the sku, KEYS[2] its ledger stream (untouched; same slot)
-- ARGV[1] fencing token of the channel-quota lock ('0': unfenced), checked against and kept in
--         field fence:quota like stock_apply.lua does per warehouse
-- ARGV[2] warehouses 'WH,WH2' whose available units (on hand - reserved) count for percent
-- ARGV[3..] 'KEY|mode|value', KEY a shop "CHANNEL/SHOP" or a channel pool "CHANNEL/*":
--   fixed    value units given to KEY. First time: quota = value. Later only the change of the
--            configured value is applied (quota += value - qset:KEY), so units already sold
--            stay sold; the quota may go negative when the value is cut below what was sold.
--   percent  quota = floor(value / 100 * available over ARGV[2]), recomputed every time.
--   none     quota = 'none': unlimited (a listed shared shop under a limited channel pool).
-- Keys with fields from an earlier call but not named now lose them (qkeys lists them, so the
-- hash, which holds every order, is never scanned).
-- Returns {'applied', available, KEY, quota, ...} or {'stale_fence', detail}
local token = tonumber(ARGV[1])
if token > 0 then
  if num('fence:quota') > token then
    return {'stale_fence', 'quotas were written with a newer fencing token'}
  end
  redis.call('HSET', KEYS[1], 'fence:quota', token)
end
local available = 0
for wh in string.gmatch(ARGV[2], '([^,]+)') do
  available = available + num('on_hand:' .. wh) - num('reserved:' .. wh)
end
if available < 0 then available = 0 end
local out = {'applied', available}
local named = {}
for i = 3, #ARGV do
  local key, mode, value = string.match(ARGV[i], '^(.+)|([a-z]+)|(%d+)$')
  value = tonumber(value)
  named[key] = true
  local quota
  if mode == 'fixed' then
    local given = tonumber(redis.call('HGET', KEYS[1], 'qset:' .. key) or 'none')
    local current = tonumber(redis.call('HGET', KEYS[1], 'quota:' .. key) or 'none')
    if given and current then
      quota = current + value - given
    else
      quota = value
    end
    redis.call('HSET', KEYS[1], 'qset:' .. key, value)
  elseif mode == 'percent' then
    quota = math.floor(value * available / 100)
    redis.call('HDEL', KEYS[1], 'qset:' .. key)
  else
    quota = 'none'
    redis.call('HDEL', KEYS[1], 'qset:' .. key)
  end
  redis.call('HSET', KEYS[1], 'quota:' .. key, quota)
  out[#out + 1] = key
  out[#out + 1] = tostring(quota)
end
for key in string.gmatch(redis.call('HGET', KEYS[1], 'qkeys') or '', '([^\n]+)') do
  if not named[key] then
    redis.call('HDEL', KEYS[1], 'quota:' .. key, 'qset:' .. key)
  end
end
local keys = {}
for i = 3, #ARGV do keys[#keys + 1] = string.match(ARGV[i], '^(.+)|[a-z]+|%d+$') end
if #keys > 0 then
  redis.call('HSET', KEYS[1], 'qkeys', table.concat(keys, '\n'))
else
  redis.call('HDEL', KEYS[1], 'qkeys')
end
return out
