-- Compare-and-set of a session's content.
-- KEYS: session key.
-- ARGV: now_ms, now_ns, '1' for If-Match: * (else '0'), payload, etag, last_modified,
--       last_modified_ns, then the opaque tags of If-Match.
-- Returns {0} when no live session has this key, {1, expires, expires_ns} when replaced,
-- {2, payload, etag, last_modified, last_modified_ns, expires, expires_ns} when the
-- precondition failed, {3} when the stored hash is incomplete.
local current = redis.call('HMGET', KEYS[1], 'payload', 'etag', 'last_modified',
  'last_modified_ns', 'expires', 'expires_ns')
local expired = is_expired(current[5], current[6], tonumber(ARGV[1]), tonumber(ARGV[2]))
if expired == nil then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return {3}
  end
  return {0}
end
if expired then
  return {0}
end
local matches = ARGV[3] == '1'
for i = 8, #ARGV do
  if matches then
    break
  end
  matches = ARGV[i] == current[2]
end
if not matches then
  return {2, current[1], current[2], current[3], current[4], current[5], current[6]}
end
redis.call('HSET', KEYS[1], 'payload', ARGV[4], 'etag', ARGV[5],
  'last_modified', ARGV[6], 'last_modified_ns', ARGV[7])
return {1, current[5], current[6]}
