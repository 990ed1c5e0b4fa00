-- Creates a session unless the client's bucket is empty, the client has its quota of live
-- sessions or the store holds its capacity; never evicts.
-- KEYS: bucket, session key, index, client set.
-- ARGV: now ('' for Redis's clock), rate ('' for no limit), burst, key prefix, id, payload,
--       etag, ttl (ms), capacity, quota ('' for none), client.
-- Returns {0, now, dropped} when created, {1, now, wait} when rate limited, {2, now, wait}
-- when the client is at its quota, {3, now, wait, dropped} when full; wait is in ms, and
-- dropped counts the ended sessions removed on the way.
local now = clock(ARGV[1])
local wait = take_token(KEYS[1], now, ARGV[2], ARGV[3])
if wait > 0 then
  return {1, now, wait}
end
local quota = ARGV[10] ~= ''
if quota then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', int(now))
  if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[10]) then
    local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    return {2, now, tonumber(oldest[2]) - now}
  end
end
-- Bounded, so that one create never does much; the count below is exact regardless.
local dropped = trim(KEYS[3], ARGV[4], now, 100)
if live_count(KEYS[3], now) >= tonumber(ARGV[9]) then
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. int(now), '+inf', 'WITHSCORES',
    'LIMIT', 0, 1)
  return {3, now, tonumber(oldest[2] or now) - now, dropped}
end
local expires = now + tonumber(ARGV[8])
redis.call('HSET', KEYS[2], 'payload', ARGV[6], 'etag', ARGV[7], 'last_modified', int(now),
  'expires', int(expires))
redis.call('PEXPIREAT', KEYS[2], int(expires))
redis.call('ZADD', KEYS[3], int(expires), ARGV[5])
if quota then
  redis.call('HSET', KEYS[2], 'owner', ARGV[11])
  redis.call('ZADD', KEYS[4], int(expires), ARGV[5])
  -- The set can go when its last session ends; keep the later expiry if one is set.
  local left = redis.call('PTTL', KEYS[4])
  if left < 0 or now + left < expires then
    redis.call('PEXPIREAT', KEYS[4], int(expires))
  end
end
return {0, now, dropped}
