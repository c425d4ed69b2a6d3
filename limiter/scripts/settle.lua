-- Settles what a replica did since its last call, for every bucket of one
-- hash tag, in one round trip: token and request corrections (actual minus
-- estimated; refunds pull a TAT back, never past now, overages push it
-- forward), clamps to what the provider reported left (a TAT only ever
-- moves forward), returned concurrency slots, and the renewal of this
-- replica's lease. In a re-sync after an outage (ARGV[4] = 1), a key that
-- does not exist means Redis lost its data: every limited TAT starts at
-- now + tolerance, empty and refilling at the rate, rather than a full
-- burst on top of what the replicas just sent. Otherwise a missing key is
-- a full bucket and stays missing unless something is charged to it.
--
-- KEYS: bucket hashes (see reserve.lua). ARGV[1] replica id, ARGV[2] lease
-- (ms), ARGV[3] key TTL (ms), ARGV[4] 1 for a re-sync; then nine values per
-- bucket: request
-- interval, request tolerance, token interval, token tolerance (us),
-- request delta, token delta, slots released, requests left and tokens
-- left as the provider reported them (-1: not reported); then, per
-- bucket, the count of requests this replica has in flight there to set
-- outright (-1: keep and subtract the released slots).
-- Returns the number of buckets written.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nowms = math.floor(now / 1000)
local rep = ARGV[1]
local lease = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local resync = ARGV[4] == '1'
local names = {'r', 't'}
local n = #KEYS
for i, key in ipairs(KEYS) do
  local base = 4 + (i - 1) * 9
  local fresh = resync and redis.call('EXISTS', key) == 0
  local st = redis.call('HMGET', key, 'r', 't')
  for d = 1, 2 do
    local iv = tonumber(ARGV[base + 2 * d - 1])
    if iv > 0 then
      local tol = tonumber(ARGV[base + 2 * d])
      local tat = tonumber(st[d]) or 0
      if fresh then tat = now + tol end
      local delta = tonumber(ARGV[base + 4 + d])
      if delta > 0 then
        tat = math.max(tat, now) + delta * iv
      elseif delta < 0 and tat > now then
        tat = math.max(now, tat + delta * iv)
      end
      local left = tonumber(ARGV[base + 7 + d])
      if left >= 0 then
        tat = math.max(tat, now + tol - left * iv)
      end
      if tat > 0 then
        -- Whole microseconds, rounded up: never more room than was given.
        redis.call('HSET', key, names[d], string.format('%.0f', math.ceil(tat)))
      end
    end
  end
  local set = tonumber(ARGV[4 + n * 9 + i])
  local released = tonumber(ARGV[base + 7])
  if set >= 0 then
    redis.call('HSET', key, 'c:' .. rep, set)
  elseif released > 0 then
    if redis.call('HINCRBY', key, 'c:' .. rep, -released) < 0 then
      redis.call('HSET', key, 'c:' .. rep, 0)
    end
  end
  if redis.call('HEXISTS', key, 'c:' .. rep) == 1 then
    redis.call('HSET', key, 'e:' .. rep, nowms + lease)
  end
  if redis.call('EXISTS', key) == 1 then
    redis.call('PEXPIRE', key, ttl)
  end
end
return n
