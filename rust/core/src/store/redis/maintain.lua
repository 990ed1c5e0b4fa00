-- Drops ended sessions, and sessions this store cannot have written (indexed to end beyond
-- now + ttl), then counts the live ones.
-- KEYS: index. ARGV: now ('' for Redis's clock), key prefix, most sessions to drop, ttl (ms).
-- Returns {now, dropped, live, discarded}.
local now = clock(ARGV[1])
local dropped = trim(KEYS[1], ARGV[2], now, tonumber(ARGV[3]))
local forged = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. int(now + tonumber(ARGV[4])), '+inf',
  'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(forged) do
  drop(KEYS[1], ARGV[2], id)
end
return {now, dropped, live_count(KEYS[1], now), #forged}
