-- Counts a new session against its client's cap, atomically across processes.
-- KEYS[1]: the client's sorted set (member session id, score expiry in ms).
-- KEYS[2]: the session's owner key. ARGV: now ms, session id, expires ms, max, client.
-- Returns {1} when counted, {0, oldest expiry in ms} when the client is at its cap.
local now = tonumber(ARGV[1])
local expires = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2])}
end
redis.call('ZADD', KEYS[1], expires, ARGV[2])
-- Sessions all live one TTL, so the newest expires last: the set can go when it does.
redis.call('PEXPIREAT', KEYS[1], expires)
redis.call('SET', KEYS[2], ARGV[5], 'PXAT', expires)
return {1}
