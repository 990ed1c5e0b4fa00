-- Drops every session that has ended; returns how many index entries were dropped.
-- KEYS: index. ARGV: now_ms, now_ns, key prefix.
return trim(KEYS[1], ARGV[3], ARGV[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
