-- Adds one dead-letter record unless its id is indexed already, so a
-- record moved from the spool twice is stored once.
-- KEYS[1] the stream, KEYS[2] the id index hash (record id -> entry id),
-- KEYS[3] the replay hash (unused here; every script takes the same keys).
-- ARGV[1] the record id, ARGV[2] MAXLEN (0: do not trim), ARGV[3..] the
-- entry's field/value pairs.
-- Returns {1, entry id} when added, {0, entry id} when it was there.
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then
  return {0, existing}
end
local sid
if tonumber(ARGV[2]) > 0 then
  sid = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
else
  sid = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
end
redis.call('HSET', KEYS[2], ARGV[1], sid)
return {1, sid}
