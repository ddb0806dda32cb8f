"""The shared frontier's Lua scripts: each step of a crawl shared through Redis is one
atomic script (see `shared.py` for the keys). Every script takes the key prefix first.

Connection shares: each live process (`procs`: owner -> join order, `alive`: owner ->
expiry) may have at most its share of `crawl.per_host` requests in flight to a host
(`owned:{owner}`: host -> in flight), the shares adding up to `per_host`, so that the
connections its pool opens stay within its share and the processes' connections to a
host together within `per_host`.
"""

from __future__ import annotations

# A lease's end: its slot freed for the host and its owner. Expects p, id, per_host.
_END_LEASE = """
local function end_lease(p, id, per_host)
  local host = redis.call('HGET', p .. 'lease_host', id)
  if not host then return nil end
  local owner = redis.call('HGET', p .. 'lease_owner', id)
  redis.call('ZREM', p .. 'leases', id)
  redis.call('HDEL', p .. 'lease', id)
  redis.call('HDEL', p .. 'lease_host', id)
  redis.call('HDEL', p .. 'lease_owner', id)
  if owner then redis.call('HINCRBY', p .. 'owned:' .. owner, host, -1) end
  return host, redis.call('HINCRBY', p .. 'active', host, -1)
end
local function requeue(p, host, member, per_host, active)
  redis.call('ZADD', p .. 'q:' .. host, 0, member)
  redis.call('INCR', p .. 'queued')
  if active < per_host then
    local nxt = tonumber(redis.call('HGET', p .. 'next', host) or '0')
    redis.call('ZADD', p .. 'ready', nxt, host)
  end
end
"""

ADD = """
-- ARGV: prefix, now_ms, per_host, then quads (fingerprint or '', origin, payload, priority)
local p, now, per_host = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local queued, duplicates = 0, 0
for i = 4, #ARGV, 4 do
  local fp, host, payload, priority = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if fp == '' or redis.call('SADD', p .. 'seen', fp) == 1 then
    local seq = redis.call('INCR', p .. 'seq')
    redis.call('ZADD', p .. 'q:' .. host, -priority * 4294967296 + seq, seq .. '|' .. payload)
    redis.call('INCR', p .. 'queued')
    queued = queued + 1
    local active = tonumber(redis.call('HGET', p .. 'active', host) or '0')
    if active < per_host then
      local nxt = tonumber(redis.call('HGET', p .. 'next', host) or '0')
      redis.call('ZADD', p .. 'ready', 'NX', math.max(nxt, 0), host)
    end
  else
    duplicates = duplicates + 1
  end
end
return {queued, duplicates}
"""

TAKE = """
-- ARGV: prefix, now_ms, per_host, default_delay_ms, lease_expiry_ms, owner, max_pages,
--       want, alive_until_ms, take_id
-- Returns {n, id1, payload1, ..., due or false, queued, leases, exhausted}.
-- A payload starts with '1' when it counts against crawl.max_pages (a first attempt).
-- Idempotent: a take sent again with the same take_id (its reply was lost in an outage)
-- answers the leases it gave the first time (those still held), and takes nothing new.
local p, now, per_host = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local default_delay, expiry, owner = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local max_pages, want, alive_until = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local took_key = p .. 'took:' .. ARGV[10]
local function tail(reply)
  local first = redis.call('ZRANGE', p .. 'ready', 0, 0, 'WITHSCORES')
  reply[#reply + 1] = first[2] or false
  reply[#reply + 1] = tonumber(redis.call('GET', p .. 'queued') or '0')
  reply[#reply + 1] = redis.call('ZCARD', p .. 'leases')
  reply[#reply + 1] = 0
  return reply
end
local took = redis.call('GET', took_key)
if took then
  local reply = {0}
  for id in string.gmatch(took, '[^,]+') do
    local member = redis.call('HGET', p .. 'lease', id)
    if member then
      reply[1] = reply[1] + 1
      reply[#reply + 1] = tonumber(id)
      reply[#reply + 1] = string.sub(member, string.find(member, '|', 1, true) + 1)
    end
  end
  return tail(reply)
end
redis.call('ZADD', p .. 'alive', alive_until, owner)
if redis.call('ZSCORE', p .. 'procs', owner) == false then
  redis.call('ZADD', p .. 'procs', redis.call('INCR', p .. 'proc_seq'), owner)
end
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', p .. 'alive', '-inf', now)) do
  redis.call('ZREM', p .. 'alive', gone)
  redis.call('ZREM', p .. 'procs', gone)
end
local n = redis.call('ZCARD', p .. 'procs')
local rank = redis.call('ZRANK', p .. 'procs', owner)
local function share_of(host)
  -- per_host // n each, the remainder to ranks picked per host (so that with more
  -- processes than per_host every process still has some hosts)
  local spin = 0
  for i = 1, #host do spin = spin + string.byte(host, i) end
  local share = math.floor(per_host / n)
  if (rank + spin) % n < per_host % n then share = share + 1 end
  return share
end
local queued = tonumber(redis.call('GET', p .. 'queued') or '0')
local leases = redis.call('ZCARD', p .. 'leases')
if max_pages > 0 and tonumber(redis.call('GET', p .. 'started') or '0') >= max_pages then
  return {0, false, queued, leases, 1}
end
local reply = {0}
local taken = 0
do
  local hosts = redis.call('ZRANGEBYSCORE', p .. 'ready', '-inf', now, 'LIMIT', 0, 64)
  for _, host in ipairs(hosts) do
    if taken >= want then break end
    local active = tonumber(redis.call('HGET', p .. 'active', host) or '0')
    local mine = tonumber(redis.call('HGET', p .. 'owned:' .. owner, host) or '0')
    local popped = nil
    if active < per_host and mine < share_of(host) then
      popped = redis.call('ZPOPMIN', p .. 'q:' .. host)
    end
    if popped and popped[1] then
      active = redis.call('HINCRBY', p .. 'active', host, 1)
      redis.call('HINCRBY', p .. 'owned:' .. owner, host, 1)
      redis.call('DECR', p .. 'queued')
      local delay = tonumber(redis.call('HGET', p .. 'delay', host) or default_delay)
      redis.call('HSET', p .. 'next', host, now + delay)
      local id = redis.call('INCR', p .. 'lease_seq')
      redis.call('ZADD', p .. 'leases', expiry, id)
      redis.call('HSET', p .. 'lease', id, popped[1])
      redis.call('HSET', p .. 'lease_host', id, host)
      redis.call('HSET', p .. 'lease_owner', id, owner)
      if active >= per_host or redis.call('ZCARD', p .. 'q:' .. host) == 0 then
        redis.call('ZREM', p .. 'ready', host)
      else
        redis.call('ZADD', p .. 'ready', now + delay, host)
      end
      local payload = string.sub(popped[1], string.find(popped[1], '|', 1, true) + 1)
      if string.sub(payload, 1, 1) == '1' then redis.call('INCR', p .. 'started') end
      taken = taken + 1
      reply[#reply + 1] = id
      reply[#reply + 1] = payload
    elseif active >= per_host or redis.call('ZCARD', p .. 'q:' .. host) == 0 then
      redis.call('ZREM', p .. 'ready', host)  -- full or empty: re-added by ack or add
    end  -- else: this process's share is used; the host stays ready for the others
  end
end
reply[1] = taken
if taken > 0 then
  local ids = {}
  for i = 2, #reply, 2 do ids[#ids + 1] = reply[i] end
  redis.call('SET', took_key, table.concat(ids, ','), 'PX', 600000)
end
return tail(reply)
"""

ACK = _END_LEASE + """
-- ARGV: prefix, now_ms, per_host, lease_id, retry_payload or '', retry_priority,
--       pause_until_ms, delay_ms (-1: unchanged), n_items, items...,
--       stat pairs (name, amount)...
-- Idempotent: an ack sent again (its reply was lost in an outage) answers 1 again.
local p, now, per_host, id = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if redis.call('EXISTS', p .. 'acked:' .. id) == 1 then return 1 end
local host, active = end_lease(p, id, per_host)
if not host then return 0 end  -- the lease expired and was reaped: results dropped
local retry, retry_priority = ARGV[5], tonumber(ARGV[6])
local pause_until, delay, n_items = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
if retry ~= '' then
  local seq = redis.call('INCR', p .. 'seq')
  redis.call('ZADD', p .. 'q:' .. host, -retry_priority * 4294967296 + seq, seq .. '|' .. retry)
  redis.call('INCR', p .. 'queued')
end
if delay >= 0 then redis.call('HSET', p .. 'delay', host, delay) end
local nxt = tonumber(redis.call('HGET', p .. 'next', host) or '0')
if pause_until > nxt then
  nxt = pause_until
  redis.call('HSET', p .. 'next', host, nxt)
end
if active < per_host and redis.call('ZCARD', p .. 'q:' .. host) > 0 then
  redis.call('ZADD', p .. 'ready', nxt, host)
end
for i = 10, 9 + n_items do
  redis.call('XADD', p .. 'items', '*', 'item', ARGV[i])
end
for i = 10 + n_items, #ARGV, 2 do
  redis.call('HINCRBY', p .. 'stats', ARGV[i], tonumber(ARGV[i + 1]))
end
redis.call('SET', p .. 'acked:' .. id, 1, 'PX', 3600000)
return 1
"""

RELEASE = _END_LEASE + """
-- A request cancelled by a stop (or taken ahead and not started) goes back to its queue.
-- ARGV: prefix, per_host, lease ids...
local p, per_host = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV do
  local member = redis.call('HGET', p .. 'lease', ARGV[i])
  local host, active = end_lease(p, ARGV[i], per_host)
  if host then requeue(p, host, member, per_host, active) end
end
return 1
"""

REAP = _END_LEASE + """
-- Return expired leases (their process died or stalled) to their queues.
local p, now, per_host = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', p .. 'leases', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  local member = redis.call('HGET', p .. 'lease', id)
  local host, active = end_lease(p, id, per_host)
  if host then
    requeue(p, host, member, per_host, active)
    redis.call('HINCRBY', p .. 'stats', 'leases_reaped', 1)
  end
end
return #expired
"""

RENEW = """
-- ARGV: prefix, lease expiry, alive_until, owner, lease ids...
local p, expiry = ARGV[1], tonumber(ARGV[2])
redis.call('ZADD', p .. 'alive', tonumber(ARGV[3]), ARGV[4])
for i = 5, #ARGV do redis.call('ZADD', p .. 'leases', 'XX', expiry, ARGV[i]) end
return 1
"""

LEAVE = """
-- A process that ends leaves the share count at once (ARGV: prefix, owner).
redis.call('ZREM', ARGV[1] .. 'alive', ARGV[2])
redis.call('ZREM', ARGV[1] .. 'procs', ARGV[2])
redis.call('DEL', ARGV[1] .. 'owned:' .. ARGV[2])
return 1
"""
