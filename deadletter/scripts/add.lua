-- Adds one dead-letter record unless its id is indexed already, so a
-- record moved from the spool twice is stored once. With a MAXLEN it first
-- trims the oldest entries itself, with their index fields and replay
-- marks: XADD MAXLEN would trim the stream only, and the hashes would keep
-- a field per trimmed record forever.
-- KEYS[1] the stream, KEYS[2] the id index hash (record id -> entry id),
-- KEYS[3] the replay hash (record id -> mark).
-- ARGV[1] the record id, ARGV[2] MAXLEN (0: do not trim), ARGV[3] the most
-- entries one call trims, ARGV[4..] the entry's field/value pairs.
-- Returns {1, entry id} when added, {0, entry id} when it was there.
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then
  return {0, existing}
end
local maxlen = tonumber(ARGV[2])
if maxlen > 0 then
  -- Room for the entry about to be added. The batch cap keeps one call
  -- short after an operator lowers MAXLEN a lot: later adds trim the rest.
  local excess = redis.call('XLEN', KEYS[1]) - (maxlen - 1)
  if excess > 0 then
    local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(excess, tonumber(ARGV[3])))
    local sids, rids = {}, {}
    for _, e in ipairs(old) do
      sids[#sids + 1] = e[1]
      local fields = e[2]
      for i = 1, #fields - 1, 2 do
        if fields[i] == 'id' then
          -- Only an index field that points at this very entry goes: an
          -- entry written by hand may carry the id of a record stored
          -- elsewhere in the stream.
          if redis.call('HGET', KEYS[2], fields[i + 1]) == e[1] then
            rids[#rids + 1] = fields[i + 1]
          end
          break
        end
      end
    end
    if #rids > 0 then
      redis.call('HDEL', KEYS[2], unpack(rids))
      redis.call('HDEL', KEYS[3], unpack(rids))
    end
    if #sids > 0 then
      redis.call('XDEL', KEYS[1], unpack(sids))
    end
  end
end
local sid = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
redis.call('HSET', KEYS[2], ARGV[1], sid)
return {1, sid}
