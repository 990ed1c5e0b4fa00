-- Stops counting a session against its client. KEYS[1]: the session's owner key.
-- ARGV[1]: the key prefix; ARGV[2]: the session id.
local client = redis.call('GET', KEYS[1])
if client then
  redis.call('ZREM', ARGV[1] .. 'client:' .. client, ARGV[2])
  redis.call('DEL', KEYS[1])
end
return 0
