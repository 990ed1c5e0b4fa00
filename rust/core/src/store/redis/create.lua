-- Creates a session unless the client's bucket is empty, the client has its quota of live
-- sessions, the store holds its capacity, or (once it is more than half full) one of the
-- client's prefix groups holds as many live sessions as are still free; never evicts.
-- KEYS: bucket, session key, index, client set, then one set per prefix group.
-- ARGV: now ('' for Redis's clock), rate ('' for no limit), burst, key prefix, id, payload,
--       etag, ttl (ms), capacity, quota ('' for none), client, group names (space-separated,
--       in the order of their KEYS; '' for none).
-- Returns {0, now, dropped} when created, {1, now, wait} when rate limited, {2, now, wait}
-- when the client is at its quota, {3, now, wait, dropped} when full (or a group is at its
-- share); wait is in ms, and dropped counts the ended sessions removed on the way.
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
local capacity = tonumber(ARGV[9])
local live = live_count(KEYS[3], now)
if live >= capacity then
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. int(now), '+inf', 'WITHSCORES',
    'LIMIT', 0, 1)
  return {3, now, tonumber(oldest[2] or now) - now, dropped}
end
local groups = #KEYS - 4
if groups > 0 and live * 2 > capacity then
  local free = capacity - live
  for i = 5, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', int(now))
    if redis.call('ZCARD', KEYS[i]) >= free then
      local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
      return {3, now, tonumber(oldest[2] or now) - now, dropped}
    end
  end
end
local expires = now + tonumber(ARGV[8])
redis.call('HSET', KEYS[2], 'payload', ARGV[6], 'etag', ARGV[7], 'last_modified', int(now),
  'expires', int(expires))
redis.call('PEXPIREAT', KEYS[2], int(expires))
redis.call('ZADD', KEYS[3], int(expires), ARGV[5])
if quota then
  redis.call('HSET', KEYS[2], 'owner', ARGV[11])
  own(KEYS[4], ARGV[5], now, expires)
end
if groups > 0 then
  redis.call('HSET', KEYS[2], 'groups', ARGV[12])
  for i = 5, #KEYS do
    own(KEYS[i], ARGV[5], now, expires)
  end
end
return {0, now, dropped}
