-- Deletes a record: its stream entry, its index entry and its replay mark
-- together, so no reader sees one without the others.
-- KEYS[1] the stream, KEYS[2] the id index hash, KEYS[3] the replay hash.
-- ARGV[1] the record id.
-- Returns 1, or 0 when the record is not stored.
local sid = redis.call('HGET', KEYS[2], ARGV[1])
if not sid then
  return 0
end
redis.call('XDEL', KEYS[1], sid)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
