-- Compare-and-set of a session's content.
-- KEYS: bucket, session key, index.
-- ARGV: now ('' for Redis's clock), rate ('' for no limit), burst, payload, etag, key prefix,
--       id, max payload, ttl (ms), then If-Match ('1' for `*`, else '0', then its opaque tags).
-- Returns {1, now, wait} when rate limited, {4, now} when no live session has this key,
-- {7, now, expires} when replaced, {8, now, etag, last_modified, expires} when If-Match does
-- not name the current version, {10, now} for a hash with fields missing, {11, now} for a
-- session dropped as one this store cannot have written.
local now = clock(ARGV[1])
local wait = take_token(KEYS[1], now, ARGV[2], ARGV[3])
if wait > 0 then
  return {1, now, wait}
end
local meta, status = live_meta(KEYS[2], now, KEYS[3], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
if not meta then
  return {status, now}
end
if not matches(meta[1], 10) then
  return {8, now, meta[1], meta[2], meta[3]}
end
redis.call('HSET', KEYS[2], 'payload', ARGV[4], 'etag', ARGV[5], 'last_modified', int(now))
return {7, now, meta[3]}
