-- Shared by every script (prepended to each). A time is two integers: whole milliseconds
-- since the Unix epoch (exact in a Lua number up to 2^53) and the nanoseconds within that
-- millisecond, so that every comparison is as exact as the store's own SystemTime.

-- Whether a session expiring at (expires_ms, expires_ns) has ended at (now_ms, now_ns);
-- nil when the stored values are missing or not numbers.
local function is_expired(expires_ms, expires_ns, now_ms, now_ns)
  local ms, ns = tonumber(expires_ms), tonumber(expires_ns)
  if not ms or not ns then
    return nil
  end
  return now_ms > ms or (now_ms == ms and now_ns >= ns)
end

-- Drops the index entries and the keys of every session that has ended at now; returns how
-- many index entries were dropped. Scores are whole milliseconds, so entries scored before
-- now's millisecond have certainly ended, and those scored in it are checked one by one.
local function trim(index, prefix, now_ms_text, now_ms, now_ns)
  local ended = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. now_ms_text)
  for _, id in ipairs(ended) do
    redis.call('DEL', prefix .. 'session:' .. id)
  end
  local dropped = 0
  if #ended > 0 then
    dropped = redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. now_ms_text)
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, now_ms_text, now_ms_text)) do
    local key = prefix .. 'session:' .. id
    local ns = tonumber(redis.call('HGET', key, 'expires_ns'))
    if not ns or now_ns >= ns then
      redis.call('DEL', key)
      dropped = dropped + redis.call('ZREM', index, id)
    end
  end
  return dropped
end

