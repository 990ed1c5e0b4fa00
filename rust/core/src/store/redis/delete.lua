-- Removes a session, live or not, from every index.
-- KEYS: bucket, session key, index.
-- ARGV: now ('' for Redis's clock), rate ('' for no limit), burst, key prefix, id.
-- Returns {1, now, wait} when rate limited, {9, now} when a live session was removed,
-- {4, now, dropped} otherwise (dropped is 1 when an ended session was removed).
local now = clock(ARGV[1])
local wait = take_token(KEYS[1], now, ARGV[2], ARGV[3])
if wait > 0 then
  return {1, now, wait}
end
local meta = redis.call('HMGET', KEYS[2], 'expires', 'owner', 'groups')
local indexed = redis.call('ZREM', KEYS[3], ARGV[5])
unown(ARGV[4], ARGV[5], meta[2], meta[3])
if redis.call('DEL', KEYS[2]) == 0 then
  return {4, now, indexed}
end
local expires = tonumber(meta[1])
if expires and expires > now then
  return {9, now}
end
return {4, now, 1}
