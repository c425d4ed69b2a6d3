-- Reads one record by id in one round trip, consistent with concurrent
-- marks and deletes.
-- KEYS[1] the stream, KEYS[2] the id index hash, KEYS[3] the replay hash.
-- ARGV[1] the record id.
-- Returns {entry id, {field, value, ...}, replay mark or ''}, or nil when
-- the id is not indexed or its entry is gone without its index field (a
-- Sluice that trimmed with XADD MAXLEN ~ left such fields behind).
local sid = redis.call('HGET', KEYS[2], ARGV[1])
if not sid then
  return nil
end
local entries = redis.call('XRANGE', KEYS[1], sid, sid)
if #entries == 0 then
  return nil
end
local mark = redis.call('HGET', KEYS[3], ARGV[1]) or ''
return {sid, entries[1][2], mark}
