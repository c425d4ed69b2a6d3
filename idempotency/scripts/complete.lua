-- Stores a held key's outcome, if the token still holds it, and keeps it
-- for the retention.
-- KEYS[1] the key's hash. ARGV[1] the hold token, ARGV[2] Retention in ms,
-- ARGV[3..] the outcome's field/value pairs, 's' among them.
-- Returns 1, or 0 when the token does not hold the key.
local f = redis.call('HMGET', KEYS[1], 's', 't')
if f[1] ~= 'lock' or f[2] ~= ARGV[1] then
  return 0
end
redis.call('HDEL', KEYS[1], 't', 'st')
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
