-- Decides whether a request may go on every bucket of one quota scope,
-- and commits it when it may go within the commit window: the shared
-- form of Local.ReserveAt (limiter/local.go spells the arithmetic out).
-- Integer microseconds of Redis TIME; the buckets of one call share a hash
-- tag, so this runs on a Redis Cluster.
--
-- KEYS: one hash per bucket, fields r and t (request and token TAT), p
-- (paused until), c:<replica> (its requests in flight) and e:<replica>
-- (when that count's lease expires, ms).
-- ARGV[1] replica id, ARGV[2] request cost, ARGV[3] token cost, ARGV[4]
-- commit window (us), ARGV[5] headroom (fraction of the tolerance to leave),
-- ARGV[6] lease (ms), ARGV[7] key TTL (ms); then five values per bucket:
-- request interval, request tolerance, token interval, token tolerance (us;
-- interval 0: unlimited; an interval may be fractional, for rates above one
-- unit a microsecond) and max concurrency (0: unlimited). Stored TATs are
-- rounded up to whole microseconds, and waits too: rounding never admits
-- more.
-- Returns {status, wait us, bucket index (0-based, -1: none), paused-until
-- us (0: none), its bucket index}; status 0 committed, 1 wait (nothing
-- committed), 2 busy (concurrency), 3 never fits.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nowms = math.floor(now / 1000)
local rep = ARGV[1]
local cost = {tonumber(ARGV[2]), tonumber(ARGV[3])}
local commit = tonumber(ARGV[4])
local headroom = tonumber(ARGV[5])
local lease = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])
local names = {'r', 't'}

-- inflight sums the live replicas' counts, dropping expired leases.
local function inflight(key)
  local all = redis.call('HGETALL', key)
  local counts, exps = {}, {}
  for j = 1, #all, 2 do
    local kind, r = string.sub(all[j], 1, 2), string.sub(all[j], 3)
    if kind == 'c:' then
      counts[r] = tonumber(all[j + 1])
    elseif kind == 'e:' then
      exps[r] = tonumber(all[j + 1])
    end
  end
  local n = 0
  for r, c in pairs(counts) do
    if (exps[r] or 0) >= nowms then
      n = n + c
    else
      redis.call('HDEL', key, 'c:' .. r, 'e:' .. r)
    end
  end
  return n
end

local wait, worst, busy, pmax, pidx = 0, -1, -1, 0, -1
local tats = {}
for i, key in ipairs(KEYS) do
  local base = 7 + (i - 1) * 5
  local st = redis.call('HMGET', key, 'r', 't', 'p')
  tats[i] = {tonumber(st[1]) or 0, tonumber(st[2]) or 0}
  local p = tonumber(st[3]) or 0
  if p > now then
    if p > pmax then pmax, pidx = p, i - 1 end
    if p - now > wait then wait, worst = p - now, i - 1 end
  end
  for d = 1, 2 do
    local iv = tonumber(ARGV[base + 2 * d - 1])
    local tol = tonumber(ARGV[base + 2 * d])
    if iv > 0 and cost[d] > 0 then
      local ch = cost[d] * iv
      if ch > tol then
        return {3, 0, i - 1, pmax, pidx}
      end
      -- Headroom: leave that much of the tolerance free, or as much as
      -- the request's own size allows.
      local eff = math.max(math.floor(tol * (1 - headroom)), ch)
      local w = math.ceil(math.max(tats[i][d], now) + ch - eff - now)
      if w > wait then wait, worst = w, i - 1 end
    end
  end
  local maxc = tonumber(ARGV[base + 5])
  if busy < 0 and maxc > 0 and inflight(key) >= maxc then
    busy = i - 1
  end
end
if busy >= 0 then
  return {2, wait, busy, pmax, pidx}
end
if wait > commit then
  return {1, wait, worst, pmax, pidx}
end
-- Charged as an arrival at the send time s.
local s = now + wait
for i, key in ipairs(KEYS) do
  local base = 7 + (i - 1) * 5
  for d = 1, 2 do
    local iv = tonumber(ARGV[base + 2 * d - 1])
    if iv > 0 and cost[d] > 0 then
      redis.call('HSET', key, names[d], string.format('%.0f', math.ceil(math.max(tats[i][d], s) + cost[d] * iv)))
    end
  end
  if tonumber(ARGV[base + 5]) > 0 then
    redis.call('HINCRBY', key, 'c:' .. rep, 1)
    redis.call('HSET', key, 'e:' .. rep, nowms + lease)
  end
  redis.call('PEXPIRE', key, ttl)
end
return {0, wait, -1, pmax, pidx}
