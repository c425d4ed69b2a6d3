-- Claims an idempotency key, or tells who has it: create-or-inspect in one
-- step, so two replicas racing for a key cannot both hold it.
-- KEYS[1] the key's hash. ARGV[1] the request body's hash (hex), ARGV[2] a
-- new hold token, ARGV[3] '1' if the request streams, ARGV[4] LockTTL in
-- ms, ARGV[5] '1' to claim again a stored outcome that is not 2xx (a
-- dead-letter replay).
-- Returns {'acquired'}, {'lock', streams}, {'mismatch'},
-- {'done', status, headers, body, stream}, {'forgotten', status}, or
-- {'corrupt'} for a hash that is not one of ours.
local f = redis.call('HMGET', KEYS[1], 'h', 's', 'st', 'c')
local h, s = f[1], f[2]

local function hold()
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'h', ARGV[1], 's', 'lock', 't', ARGV[2], 'st', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'acquired'}
end

if not h or not s then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return hold()
  end
  return {'corrupt'}
end
if h ~= ARGV[1] then
  return {'mismatch'}
end
if s == 'lock' then
  return {'lock', f[3] or ''}
end
if s == 'done' or s == 'forgotten' then
  local c = f[4] or ''
  -- Only a well-formed status may be retried: Begin's caller cannot tell
  -- a garbled one from a success.
  if ARGV[5] == '1' and string.match(c, '^[1-9]%d%d$') and string.sub(c, 1, 1) ~= '2' then
    return hold()
  end
  if s == 'forgotten' then
    return {'forgotten', c}
  end
  local o = redis.call('HMGET', KEYS[1], 'hd', 'b', 'sm')
  return {'done', c, o[1] or '', o[2] or '', o[3] or ''}
end
return {'corrupt'}
