-- Stores a breaker's open-until hint and tells the other replicas, unless a
-- later hint stands: a hint only ever extends. The key expires when the
-- hint does, by Redis's clock.
-- KEYS[1] the hint key; ARGV[1] until (unix ms), ARGV[2] the hint as
-- stored and published (JSON), ARGV[3] the channel.
-- Returns 1 when the hint was stored and published, 0 when a hint ending
-- no earlier stood or this one is already over.
local u = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if u <= now then
  return 0
end
local cur = redis.call('GET', KEYS[1])
if cur then
  -- A value that does not decode, or has no numeric until_ms, is replaced.
  local ok, h = pcall(cjson.decode, cur)
  if ok and type(h) == 'table' and type(h.until_ms) == 'number' and h.until_ms >= u then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', string.format('%.0f', u - now))
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
