-- Stores a new session unless `capacity` live sessions are indexed already.
-- KEYS: session key, index.
-- ARGV: now_ms, now_ns, capacity, key prefix, id, payload, etag, last_modified,
--       last_modified_ns, expires, expires_ns, expire_at (ms, for PEXPIREAT).
-- Returns {0, dropped} when created, {1, expires_ms, expires_ns, dropped} with the oldest live
-- session when full; dropped counts the ended sessions trimmed on the way.
local now_ms, now_ns = tonumber(ARGV[1]), tonumber(ARGV[2])
local dropped = trim(KEYS[2], ARGV[4], ARGV[1], now_ms, now_ns)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #first == 0 then
    return {1, now_ms, now_ns, dropped}
  end
  local oldest = first[2]
  local min_ns = nil
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], oldest, oldest)) do
    local ns = tonumber(redis.call('HGET', ARGV[4] .. 'session:' .. id, 'expires_ns')) or 0
    if not min_ns or ns < min_ns then
      min_ns = ns
    end
  end
  return {1, tonumber(oldest), min_ns or 0, dropped}
end
redis.call('HSET', KEYS[1], 'payload', ARGV[6], 'etag', ARGV[7],
  'last_modified', ARGV[8], 'last_modified_ns', ARGV[9],
  'expires', ARGV[10], 'expires_ns', ARGV[11])
redis.call('PEXPIREAT', KEYS[1], ARGV[12])
redis.call('ZADD', KEYS[2], ARGV[10], ARGV[5])
return {0, dropped}
