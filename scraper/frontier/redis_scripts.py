"""The shared frontier's Lua scripts: each step of a crawl shared through Redis is one
atomic script (see `shared.py` for the keys). Every script takes the key prefix first.

Connection shares: each live process (`procs`: owner -> join order, `alive`: owner ->
expiry) may have at most its share of `crawl.per_host` requests in flight to a host,
the shares adding up to `per_host`. `own:{owner}` (hash) holds a process's counts per
host: `f:{host}` requests in flight, `t:{host}` tokens, `c:{host}` tokens being given back.

Connections: a process's pool keeps the connections it opened, so in-flight shares alone
do not bound connections (a process that started alone opened `per_host` of them before
the others joined). Each connection a process may hold is a token (`conns`: host ->
tokens held by all processes, at most `per_host`). A process takes a request for a host
only when it has a token to spare, or one is free. A process holding more tokens than
its share gives the excess back: the requests it takes then are
marked `close` (the lease's owner is stored as `!owner`), sent with `Connection: close`,
and the token is freed when that lease ends, its connection closed; another process may
take it 100 ms later (`conn_freed`: host -> ms), once the server has closed its end too.
A process that leaves, or is gone (its `alive` expired, see REAP), frees its tokens.

A lease is one field of the `lease` hash: id -> its host, owner and member on three lines
(member: the queue entry `seq|payload`, put back as it was if the lease ends unacked).

Commands per page are kept few: one hash per lease, one per process, per-call caches of
a host's state in ADD, the replay checks (`took:`, `acked:`) only on a resent call.
"""

from __future__ import annotations

# A payload starts with '1' when it counts against crawl.max_pages (a first attempt): it
# goes to the origin's `q:` queue. Retries and redirect hops ('0') go to its `f:` queue,
# taken first, and still taken once the budget is spent; `free` counts them.
_QUEUE_OF = """
local function queue_of(p, host, payload)
  if string.sub(payload, 1, 1) == '1' then return p .. 'q:' .. host end
  return p .. 'f:' .. host
end
local function queued_for(p, host, spent)
  local left = redis.call('ZCARD', p .. 'f:' .. host)
  if not spent then left = left + redis.call('ZCARD', p .. 'q:' .. host) end
  return left
end
"""

# A lease's end: its slot freed for the host and its owner. Expects p, id, per_host.
_END_LEASE = _QUEUE_OF + """
local function end_lease(p, id, per_host)
  local record = redis.call('HGET', p .. 'lease', id)
  if not record then return nil end
  local a = string.find(record, '\\n', 1, true)
  local b = string.find(record, '\\n', a + 1, true)
  local host = string.sub(record, 1, a - 1)
  local owner = string.sub(record, a + 1, b - 1)
  redis.call('ZREM', p .. 'leases', id)
  redis.call('HDEL', p .. 'lease', id)
  local closing = string.sub(owner, 1, 1) == '!'
  if closing then owner = string.sub(owner, 2) end
  local own = p .. 'own:' .. owner
  if closing and tonumber(redis.call('HGET', own, 't:' .. host) or '0') > 0 then
    -- a closing request: its connection is closed, its token freed
    redis.call('HINCRBY', own, 't:' .. host, -1)
    redis.call('HINCRBY', own, 'c:' .. host, -1)
    redis.call('HINCRBY', p .. 'conns', host, -1)
    local clock = redis.call('TIME')
    redis.call('HSET', p .. 'conn_freed', host, clock[1] * 1000 + math.floor(clock[2] / 1000))
  end
  redis.call('HINCRBY', own, 'f:' .. host, -1)
  return host, redis.call('HINCRBY', p .. 'active', host, -1), string.sub(record, b + 1)
end
-- A process that left or is gone frees its tokens (its connections are closed); its
-- requests in flight are counted until their leases end (`everything`: none left).
local function free_tokens(p, owner, everything)
  local own = p .. 'own:' .. owner
  local fields = redis.call('HGETALL', own)
  for i = 1, #fields, 2 do
    local kind = string.sub(fields[i], 1, 2)
    if kind == 't:' then
      redis.call('HINCRBY', p .. 'conns', string.sub(fields[i], 3), -tonumber(fields[i + 1]))
    end
    if kind ~= 'f:' then redis.call('HDEL', own, fields[i]) end
  end
  if everything then redis.call('DEL', own) end
end
local function requeue(p, host, member, per_host, active)
  local payload = string.sub(member, string.find(member, '|', 1, true) + 1)
  redis.call('ZADD', queue_of(p, host, payload), 0, member)
  redis.call('INCR', p .. 'queued')
  if string.sub(payload, 1, 1) == '1' then
    redis.call('DECR', p .. 'started')  -- not done: it may start again within the budget
  else
    redis.call('INCR', p .. 'free')
  end
  if active < per_host then
    local nxt = tonumber(redis.call('HGET', p .. 'next', host) or '0')
    redis.call('ZADD', p .. 'ready', nxt, host)
  end
end
"""

ADD = _QUEUE_OF + """
-- ARGV: prefix, now_ms, per_host, then quads (fingerprint or '', origin, payload, priority)
local p, now, per_host = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local queued, duplicates, free = 0, 0, 0
local seq = redis.call('INCRBY', p .. 'seq', (#ARGV - 3) / 4) - (#ARGV - 3) / 4
local seen_hosts = {}
for i = 4, #ARGV, 4 do
  local fp, host, payload, priority = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  seq = seq + 1
  if fp == '' or redis.call('SADD', p .. 'seen', fp) == 1 then
    redis.call('ZADD', queue_of(p, host, payload), -priority * 4294967296 + seq,
               seq .. '|' .. payload)
    queued = queued + 1
    if string.sub(payload, 1, 1) ~= '1' then free = free + 1 end
    if not seen_hosts[host] then
      seen_hosts[host] = true
      local active = tonumber(redis.call('HGET', p .. 'active', host) or '0')
      if active < per_host then
        local nxt = tonumber(redis.call('HGET', p .. 'next', host) or '0')
        redis.call('ZADD', p .. 'ready', 'NX', math.max(nxt, 0), host)
      end
    end
  else
    duplicates = duplicates + 1
  end
end
if queued > 0 then redis.call('INCRBY', p .. 'queued', queued) end
if free > 0 then redis.call('INCRBY', p .. 'free', free) end
return {queued, duplicates}
"""

TAKE = _QUEUE_OF + """
-- ARGV: prefix, now_ms, per_host, default_delay_ms, lease_expiry_ms, owner, max_pages,
--       want, alive_until_ms, take_id, replay ('1': sent again)
-- Returns {n, id1, payload1, close1, ..., due or false, queued, leases, spent, free}
-- (due, queued, leases and free only when nothing was taken: -1 otherwise);
-- spent: crawl.max_pages first attempts have started (then only `f:` queues are taken).
-- close: 1 when the request is to close its connection (a token given back).
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
  reply[#reply + 1] = tonumber(redis.call('GET', p .. 'free') or '0')
  return reply
end
local function payload_of(member)
  return string.sub(member, string.find(member, '|', 1, true) + 1)
end
if ARGV[11] == '1' then
  local took = redis.call('GET', took_key)
  if took then
    local reply = {0}
    for id in string.gmatch(took, '[^,]+') do
      local record = redis.call('HGET', p .. 'lease', id)
      if record then
        local a = string.find(record, '\\n', 1, true)
        local b = string.find(record, '\\n', a + 1, true)
        reply[1] = reply[1] + 1
        reply[#reply + 1] = tonumber(id)
        reply[#reply + 1] = payload_of(string.sub(record, b + 1))
        reply[#reply + 1] = string.sub(record, a + 1, a + 1) == '!' and 1 or 0
      end
    end
    if reply[1] > 0 then
      for _, v in ipairs({false, -1, -1, 0, -1}) do reply[#reply + 1] = v end
      return reply
    end
    return tail(reply)
  end
end
local rank = redis.call('ZRANK', p .. 'procs', owner)
if not rank then  -- not joined yet, or taken for gone (see REAP): join
  redis.call('ZADD', p .. 'alive', alive_until, owner)
  redis.call('ZADD', p .. 'procs', redis.call('INCR', p .. 'proc_seq'), owner)
  rank = redis.call('ZRANK', p .. 'procs', owner)
end
local n = redis.call('ZCARD', p .. 'procs')
local function share_of(host)
  -- per_host // n each, the remainder to ranks picked per host (so that with more
  -- processes than per_host every process still has some hosts)
  local spin = 0
  for i = 1, #host do spin = spin + string.byte(host, i) end
  local share = math.floor(per_host / n)
  if (rank + spin) % n < per_host % n then share = share + 1 end
  return share
end
local function budget_spent()
  return max_pages > 0 and tonumber(redis.call('GET', p .. 'started') or '0') >= max_pages
end
local spent = budget_spent()
local function pop(host)  -- retries and redirect hops first; new pages within the budget
  local popped = redis.call('ZPOPMIN', p .. 'f:' .. host)
  if popped[1] then
    redis.call('DECR', p .. 'free')
    return popped
  end
  if spent then return popped end
  return redis.call('ZPOPMIN', p .. 'q:' .. host)
end
local own = p .. 'own:' .. owner
local reply = {0}
local taken = 0
local hosts = redis.call('ZRANGEBYSCORE', p .. 'ready', '-inf', now, 'LIMIT', 0, 64)
for _, host in ipairs(hosts) do
  -- several requests from one host in one take when its starts need no spacing
  local again = true
  while again and taken < want do
    again = false
    local active = tonumber(redis.call('HGET', p .. 'active', host) or '0')
    local popped = nil
    local close = 0
    if active < per_host then
      local counts = redis.call('HMGET', own, 'f:' .. host, 't:' .. host, 'c:' .. host)
      local mine = tonumber(counts[1] or '0')
      local share = share_of(host)
      if mine < share then
        -- a token for the connection: one to spare, else a free one
        local usable = tonumber(counts[2] or '0') - tonumber(counts[3] or '0')
        local acquired = false
        if mine >= usable and tonumber(redis.call('HGET', p .. 'conns', host) or '0') < per_host
            and tonumber(redis.call('HGET', p .. 'conn_freed', host) or '0') <= now - 100 then
          acquired = true
          usable = usable + 1
        end
        if mine < usable then
          popped = pop(host)
          if popped[1] then
            if acquired then
              redis.call('HINCRBY', own, 't:' .. host, 1)
              redis.call('HINCRBY', p .. 'conns', host, 1)
            end
            if usable > share then  -- more tokens than the share: give one back
              close = 1
              redis.call('HINCRBY', own, 'c:' .. host, 1)
            end
          end
        end
      end
    end
    if popped and popped[1] then
      active = redis.call('HINCRBY', p .. 'active', host, 1)
      redis.call('HINCRBY', own, 'f:' .. host, 1)
      redis.call('DECR', p .. 'queued')
      local delay = tonumber(redis.call('HGET', p .. 'delay', host) or default_delay)
      redis.call('HSET', p .. 'next', host, now + delay)
      local id = redis.call('INCR', p .. 'lease_seq')
      redis.call('ZADD', p .. 'leases', expiry, id)
      redis.call('HSET', p .. 'lease', id,
                 host .. '\\n' .. (close == 1 and '!' or '') .. owner .. '\\n' .. popped[1])
      local payload = payload_of(popped[1])
      if string.sub(payload, 1, 1) == '1' then
        redis.call('INCR', p .. 'started')
        spent = budget_spent()  -- crawl.max_pages holds for every request taken
      end
      if active >= per_host or queued_for(p, host, spent) == 0 then
        redis.call('ZREM', p .. 'ready', host)
      else
        redis.call('ZADD', p .. 'ready', now + delay, host)
        again = delay <= 0
      end
      taken = taken + 1
      reply[#reply + 1] = id
      reply[#reply + 1] = payload
      reply[#reply + 1] = close
    elseif active >= per_host or queued_for(p, host, spent) == 0 then
      redis.call('ZREM', p .. 'ready', host)  -- full or empty: re-added by ack or add
    end  -- else: this process's share is used; the host stays ready for the others
  end
end
reply[1] = taken
if taken == 0 then
  reply = tail(reply)
  reply[#reply - 1] = spent and 1 or 0
  return reply
end
local ids = {}
for i = 2, #reply, 3 do ids[#ids + 1] = reply[i] end
redis.call('SET', took_key, table.concat(ids, ','), 'PX', 600000)
for _, v in ipairs({false, -1, -1, spent and 1 or 0, -1}) do reply[#reply + 1] = v end
return reply
"""

ACK = _END_LEASE + """
-- ARGV: prefix, now_ms, per_host, lease_id, replay ('1': sent again), retry_payload or '',
--       retry_priority, pause_until_ms, delay_ms (-1: unchanged), n_items, items...,
--       stat pairs (name, amount)...
-- Idempotent: an ack sent again (its reply was lost in an outage) answers 1 again.
local p, now, per_host, id = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if ARGV[5] == '1' and redis.call('EXISTS', p .. 'acked:' .. id) == 1 then return 1 end
local host, active = end_lease(p, id, per_host)
if not host then return 0 end  -- the lease expired and was reaped: results dropped
local retry, retry_priority = ARGV[6], tonumber(ARGV[7])
local pause_until, delay, n_items = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
if retry ~= '' then
  local seq = redis.call('INCR', p .. 'seq')
  redis.call('ZADD', p .. 'f:' .. host, -retry_priority * 4294967296 + seq, seq .. '|' .. retry)
  redis.call('INCR', p .. 'queued')
  redis.call('INCR', p .. 'free')
end
if delay >= 0 then redis.call('HSET', p .. 'delay', host, delay) end
local nxt = tonumber(redis.call('HGET', p .. 'next', host) or '0')
if pause_until > nxt then
  nxt = pause_until
  redis.call('HSET', p .. 'next', host, nxt)
end
if active < per_host and queued_for(p, host, false) > 0 then
  redis.call('ZADD', p .. 'ready', nxt, host)
end
for i = 11, 10 + n_items do
  redis.call('XADD', p .. 'items', '*', 'item', ARGV[i])
end
for i = 11 + n_items, #ARGV, 2 do
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
  local host, active, member = end_lease(p, ARGV[i], per_host)
  if host then requeue(p, host, member, per_host, active) end
end
return 1
"""

REAP = _END_LEASE + """
-- Return expired leases (their process died or stalled) to their queues; forget the
-- processes gone (their `alive` expired) and free their tokens.
local p, now, per_host = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', p .. 'alive', '-inf', now)) do
  redis.call('ZREM', p .. 'alive', gone)
  redis.call('ZREM', p .. 'procs', gone)
  free_tokens(p, gone, false)
end
local expired = redis.call('ZRANGEBYSCORE', p .. 'leases', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  local host, active, member = end_lease(p, id, per_host)
  if host then
    requeue(p, host, member, per_host, active)
    redis.call('HINCRBY', p .. 'stats', 'leases_reaped', 1)
  end
end
return #expired
"""

RENEW = """
-- ARGV: prefix, lease expiry, alive_until, owner, lease ids...
-- Also how a process joins the crawl (at open, before its first take, so that the
-- others' shares make room for it at once) or joins again after it was taken for gone.
local p, expiry = ARGV[1], tonumber(ARGV[2])
redis.call('ZADD', p .. 'alive', tonumber(ARGV[3]), ARGV[4])
if redis.call('ZSCORE', p .. 'procs', ARGV[4]) == false then
  redis.call('ZADD', p .. 'procs', redis.call('INCR', p .. 'proc_seq'), ARGV[4])
end
for i = 5, #ARGV do redis.call('ZADD', p .. 'leases', 'XX', expiry, ARGV[i]) end
return 1
"""

LEAVE = _END_LEASE + """
-- A process that ends (holding no lease) leaves the share count at once and frees its
-- tokens (ARGV: prefix, owner).
local p, owner = ARGV[1], ARGV[2]
redis.call('ZREM', p .. 'alive', owner)
redis.call('ZREM', p .. 'procs', owner)
free_tokens(p, owner, true)
return 1
"""
