-- Sets the replay mark of a stored record, replacing an earlier one. Stream
-- entries cannot be changed in place, so marks live in their own hash.
-- KEYS[1] the stream (unused), KEYS[2] the id index hash, KEYS[3] the
-- replay hash.
-- ARGV[1] the record id, ARGV[2] the mark as JSON.
-- Returns 1, or 0 when the record is not stored.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
