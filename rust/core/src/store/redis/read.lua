-- Reads a session.
-- KEYS: bucket, session key, index.
-- ARGV: now ('' for Redis's clock), rate ('' for no limit), burst, key prefix, id, max payload,
--       ttl (ms), then If-None-Match ('1' for `*`, else '0', then its opaque tags).
-- Returns {1, now, wait} when rate limited, {4, now} when no live session has this key,
-- {5, now, etag, last_modified, expires, length} when If-None-Match names the current
-- version (the payload stays in Redis), {6, now, etag, last_modified, expires, payload}
-- otherwise, {10, now} for a hash with fields missing, {11, now} for a session dropped as one
-- this store cannot have written.
local now = clock(ARGV[1])
local wait = take_token(KEYS[1], now, ARGV[2], ARGV[3])
if wait > 0 then
  return {1, now, wait}
end
local meta, status = live_meta(KEYS[2], now, KEYS[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
if not meta then
  return {status, now}
end
if matches(meta[1], 8) then
  return {5, now, meta[1], meta[2], meta[3], meta[4]}
end
return {6, now, meta[1], meta[2], meta[3], redis.call('HGET', KEYS[2], 'payload')}
