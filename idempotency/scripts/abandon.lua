-- Releases a hold without an outcome, if the token still holds the key.
-- KEYS[1] the key's hash. ARGV[1] the hold token.
-- Returns 1, or 0 when the token does not hold the key.
local f = redis.call('HMGET', KEYS[1], 's', 't')
if f[1] ~= 'lock' or f[2] ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
