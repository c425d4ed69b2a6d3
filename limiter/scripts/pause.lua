-- Pauses a bucket until a moment (unix us): no replica's reservation that
-- includes it goes before then. A pause only ever extends.
-- KEYS[1] the bucket hash; ARGV[1] until (us), ARGV[2] key TTL (ms).
-- Returns 1 when the pause was extended, 0 when a longer one stood.
local p = tonumber(redis.call('HGET', KEYS[1], 'p')) or 0
local u = tonumber(ARGV[1])
if u <= p then
  return 0
end
redis.call('HSET', KEYS[1], 'p', string.format('%.0f', u))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
