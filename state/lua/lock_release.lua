-- Compare-and-delete: only the owner releases. A plain DEL after a lapsed lease would free the
-- lock of whoever took it over.
-- KEYS[1] lock key; ARGV[1] owner token
-- Returns 1 when released, 0 when the caller was not the owner.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
