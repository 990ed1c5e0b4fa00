-- Drops ended sessions, then counts the live ones.
-- KEYS: index. ARGV: now ('' for Redis's clock), key prefix, most sessions to drop.
-- Returns {now, dropped, live}.
local now = clock(ARGV[1])
local dropped = trim(KEYS[1], ARGV[2], now, tonumber(ARGV[3]))
return {now, dropped, live_count(KEYS[1], now)}
