-- Reads buckets without changing them, for estimates and the status page.
-- KEYS: bucket hashes. Returns {now us, then per bucket: request TAT,
-- token TAT, paused until (0 when unset), requests in flight on live
-- leases}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nowms = math.floor(now / 1000)
local out = {now}
for _, key in ipairs(KEYS) do
  local st = redis.call('HMGET', key, 'r', 't', 'p')
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
    if (exps[r] or 0) >= nowms then n = n + c end
  end
  out[#out + 1] = tonumber(st[1]) or 0
  out[#out + 1] = tonumber(st[2]) or 0
  out[#out + 1] = tonumber(st[3]) or 0
  out[#out + 1] = n
end
return out
