-- MSC4388 compare-and-swap of a session's data, with the idempotent retry: the presented
-- token equal to the current one (and a successor given) replaces the data and the token;
-- otherwise data equal to the current data byte for byte changes nothing and answers the
-- current token; anything else is a concurrent write. Never hashes: the caller computed the
-- successor token. The lifetime never changes.
-- KEYS: bucket, session key, index.
-- ARGV: now ('' for Redis's clock), rate ('' for no limit), burst, key prefix, member (the
--       index member, `msc4388:{id}`), max data, ttl (ms), presented token, successor token
--       ('' for none), data.
-- Returns {1, now, wait} when rate limited, {4, now} when no live session has this key,
-- {7, now, expires} when replaced, {12, now, token, last_modified, expires} for an idempotent
-- retry, {8, now, token, last_modified, expires} for a concurrent write, {10, now} for a hash
-- with fields missing, {11, now} for a session dropped as one this store cannot have written.
local now = clock(ARGV[1])
local wait = take_token(KEYS[1], now, ARGV[2], ARGV[3])
if wait > 0 then
  return {1, now, wait}
end
local meta, status = live_meta(KEYS[2], now, KEYS[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
if not meta then
  return {status, now}
end
if ARGV[9] ~= '' and ARGV[8] == meta[1] then
  redis.call('HSET', KEYS[2], 'payload', ARGV[10], 'etag', ARGV[9], 'last_modified', int(now))
  return {7, now, meta[3]}
end
if redis.call('HGET', KEYS[2], 'payload') == ARGV[10] then
  return {12, now, meta[1], meta[2], meta[3]}
end
return {8, now, meta[1], meta[2], meta[3]}
