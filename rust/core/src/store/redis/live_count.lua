-- How many live sessions are indexed, after dropping the ended ones: {live, dropped}.
-- KEYS: index. ARGV: now_ms, now_ns, key prefix.
local dropped = trim(KEYS[1], ARGV[3], ARGV[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
return {redis.call('ZCARD', KEYS[1]), dropped}
