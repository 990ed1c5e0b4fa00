-- Removes a session, live or not.
-- KEYS: session key, index. ARGV: now_ms, now_ns, id.
-- Returns 1 when a live session was removed, 2 when an ended one was, else 0.
local expires = redis.call('HMGET', KEYS[1], 'expires', 'expires_ns')
local removed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
if removed == 1 and is_expired(expires[1], expires[2], tonumber(ARGV[1]), tonumber(ARGV[2])) == false then
  return 1
end
if removed == 1 then
  return 2
end
return 0
