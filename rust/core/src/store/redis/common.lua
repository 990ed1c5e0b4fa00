-- Shared by every script (prepended to each). Times are whole milliseconds since the Unix
-- epoch (exact in a Lua number). They come from Redis's own clock, so that every process
-- sharing this Redis agrees on expiry and token refill whatever its own clock says, unless
-- the caller passes a time (ARGV[1]; the tests drive a manual clock through it).

-- Redis before 5.0 replicates scripts verbatim and refuses writes after TIME without this;
-- later versions treat it as a no-op.
if redis.replicate_commands then
  redis.replicate_commands()
end

local function clock(given)
  if given ~= '' then
    return tonumber(given)
  end
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- An integer as Redis arguments want it: tostring would write large ones in exponent form.
local function int(n)
  return string.format('%d', n)
end

-- One token-bucket step, the same arithmetic as rate_limit/bucket.rs. Returns 0 when a token
-- was taken, else the milliseconds until one is available. An empty rate means no limit.
local function take_token(key, now, rate_text, burst_text)
  if rate_text == '' then
    return 0
  end
  local rate, burst = tonumber(rate_text), tonumber(burst_text)
  local state = redis.call('HMGET', key, 'tokens', 'updated')
  local tokens = tonumber(state[1]) or burst
  local updated = tonumber(state[2]) or now
  if now > updated then
    tokens = math.min(burst, tokens + (now - updated) / 1000 * rate)
    updated = now
  end
  local wait = 0
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = math.max(1, math.ceil((1 - tokens) / rate * 1000))
  end
  redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'updated', int(updated))
  -- Once full again a bucket says nothing: let Redis drop it then, so memory stays bounded.
  redis.call('PEXPIRE', key, math.ceil((burst - tokens) / rate * 1000) + 1000)
  return wait
end

-- Whether the tag list in ARGV from `first` on ('1' for `*`, else '0', then the opaque tags)
-- names `etag`.
local function matches(etag, first)
  if ARGV[first] == '1' then
    return true
  end
  for i = first + 1, #ARGV do
    if ARGV[i] == etag then
      return true
    end
  end
  return false
end

-- Removes session `id` (whose hash fields `owner` and `groups` are given) from the sets of
-- its client and of its prefix groups.
local function unown(prefix, id, owner, groups)
  if owner then
    redis.call('ZREM', prefix .. 'client:' .. owner, id)
  end
  if groups then
    for name in string.gmatch(groups, '%S+') do
      redis.call('ZREM', prefix .. 'group:' .. name, id)
    end
  end
end

-- Removes session `id` from everywhere: its key, its index entry, its client's and groups'
-- sets.
local function drop(index, prefix, id)
  local key = prefix .. 'session:' .. id
  local fields = redis.call('HMGET', key, 'owner', 'groups')
  unown(prefix, id, fields[1], fields[2])
  redis.call('DEL', key)
  redis.call('ZREM', index, id)
end

-- Drops up to `limit` sessions that have ended at `now`; returns how many.
local function trim(index, prefix, now, limit)
  local ended = redis.call('ZRANGEBYSCORE', index, '-inf', int(now), 'LIMIT', 0, limit)
  for _, id in ipairs(ended) do
    drop(index, prefix, id)
  end
  return #ended
end

-- The validators of a live session and its payload's length in bytes:
-- {etag, last_modified, expires, length}, or nil and the status
-- to answer (4: no live session, 10: a hash with fields missing, 11: a session this store
-- cannot have written, with a payload over `max` bytes or an expiry beyond now + `ttl`,
-- which is dropped). `index`, `prefix` and `id` locate it for the drop.
local function live_meta(key, now, index, prefix, id, max, ttl)
  local meta = redis.call('HMGET', key, 'etag', 'last_modified', 'expires')
  if not meta[1] and not meta[2] and not meta[3] then
    -- No session, unless a hash with none of these fields is there: not one the store wrote.
    if redis.call('EXISTS', key) == 0 then
      return nil, 4
    end
    return nil, 10
  end
  local expires = tonumber(meta[3])
  if not meta[1] or not tonumber(meta[2]) or not expires then
    return nil, 10
  end
  if expires <= now then
    return nil, 4
  end
  local length = redis.call('HSTRLEN', key, 'payload')
  if expires > now + tonumber(ttl) or length > tonumber(max) then
    drop(index, prefix, id)
    return nil, 11
  end
  meta[4] = length
  return meta
end

-- Adds `id`, ending at `expires`, to the sorted set `set`, which then expires with its
-- newest member (keeping a later expiry if one is set).
local function own(set, id, now, expires)
  redis.call('ZADD', set, int(expires), id)
  local left = redis.call('PTTL', set)
  if left < 0 or now + left < expires then
    redis.call('PEXPIREAT', set, int(expires))
  end
end

-- How many sessions of the index are live at `now`.
local function live_count(index, now)
  return redis.call('ZCARD', index) - redis.call('ZCOUNT', index, '-inf', int(now))
end
