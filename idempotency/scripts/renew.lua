-- Extends the holds a replica still has, in one call per provider: the
-- keys share the provider's hash tag, hence one Cluster slot.
-- KEYS the keys' hashes. ARGV[1] LockTTL in ms, ARGV[1+i] the token of
-- KEYS[i].
-- Returns, per key, 1 if renewed or 0 if the token no longer holds it
-- (completed, lapsed, lost in a Redis restart, or not a hash any more).
local renewed = {}
for i, k in ipairs(KEYS) do
  renewed[i] = 0
  local f = redis.pcall('HMGET', k, 's', 't')
  if type(f) == 'table' and not f.err and f[1] == 'lock' and f[2] == ARGV[i + 1] then
    redis.call('PEXPIRE', k, ARGV[1])
    renewed[i] = 1
  end
end
return renewed
