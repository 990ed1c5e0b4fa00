-- One token-bucket step, atomically, for every process sharing this Redis: the same
-- arithmetic as rate_limit/bucket.rs. KEYS[1]: the bucket hash. ARGV: now in milliseconds,
-- tokens per second, burst. Returns {1} when allowed, {0, wait in milliseconds} otherwise.
local now = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
if now > updated then
  tokens = math.min(burst, tokens + (now - updated) / 1000 * rate)
  updated = now
end
local reply
if tokens >= 1 then
  tokens = tokens - 1
  reply = {1}
else
  reply = {0, math.max(1, math.ceil((1 - tokens) / rate * 1000))}
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'updated', tostring(updated))
-- Once full again a bucket says nothing: let Redis drop it then, so memory stays bounded.
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return reply
