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

Commands per page are kept few (about 25 with one process): a page is one STEP, which
reads a host's state once and writes what changed once, one hash field per lease, one
record per step for its replay (checked only on a resent call).
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
# `drop_lease` is the part STEP shares (it keeps `active` and `f:` in its host state):
# the lease's record removed and, for a closing request, its connection token freed;
# it returns the host, the owner's `own:` key and the payload, or nil for no lease.
_END_LEASE = _QUEUE_OF + """
local function drop_lease(p, id)
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
  return host, own, string.sub(record, b + 1)
end
local function end_lease(p, id, per_host)
  local host, own, member = drop_lease(p, id)
  if not host then return nil end
  redis.call('HINCRBY', own, 'f:' .. host, -1)
  return host, redis.call('HINCRBY', p .. 'active', host, -1), member
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

# STEP: the three parts of a page's round trip in one script, sharing what they read:
# a host's `active` and `next`, and a process's requests in flight per host (`f:`), are
# read once per step and their changes written once at its end (an ack and a take on
# one host then cancel out: nothing written); `queued` and `free` likewise; sequence
# numbers (queue order and lease ids, one counter) are reserved with one INCRBY.
STEP = _END_LEASE + """
-- ARGV: prefix, now_ms, per_host, owner, slot, step id, replay ('1': sent again), then
--   ACK:  lease_id ('': no ack), retry_payload or '', retry_priority, pause_until_ms,
--         delay_ms (-1: unchanged), n_items, items..., n_stats, stat pairs (name, amount)
--   ADD:  n, then n quads (fingerprint or '', origin, payload, priority)
--   TAKE: want (0: no take), default_delay_ms, lease_expiry_ms, max_pages, alive_until_ms
-- Returns one string: a line "acked queued duplicates n due left leases spent free",
-- then n times a line "lease_id close length" and the payload (length bytes).
-- acked: 1, 0 (the lease expired and was reaped: its results dropped) or -1 (no ack).
-- due (the first ready host's time, or '-'), left (requests queued), leases and free
-- (queued retries and redirect hops) only when nothing was taken (-1 otherwise); spent:
-- crawl.max_pages first attempts have started (then only `f:` queues are taken).
-- close: 1 when the request is to close its connection (a token given back).
-- Idempotent: a step that changed anything records in `steps:{owner}` (field: the
-- caller's slot, one per thread) its id, its answers and its leases; sent again (its
-- reply was lost in an outage), it finds its record and answers the same, changing
-- nothing and handing out the leases it took (those still held). A step with no record
-- never ran (a script runs whole or not at all), so it runs.
local p, now, per_host, owner = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local steps, slot, step = p .. 'steps:' .. owner, ARGV[5], ARGV[6]
local own = p .. 'own:' .. owner
local function payload_of(member)
  return string.sub(member, string.find(member, '|', 1, true) + 1)
end

local function reply(acked, queued, duplicates, taken, tail)
  local parts = {acked, ' ', queued, ' ', duplicates, ' ', #taken / 3, ' ',
                 tail[1] or '-', ' ', tail[2], ' ', tail[3], ' ', tail[4], ' ', tail[5], '\\n'}
  for k = 1, #taken, 3 do
    parts[#parts + 1] = taken[k] .. ' ' .. taken[k + 2] .. ' ' .. #taken[k + 1] .. '\\n'
    parts[#parts + 1] = taken[k + 1]
  end
  return table.concat(parts)
end

if ARGV[7] == '1' then
  local record = redis.call('HGET', steps, slot)
  local prefix = step .. '|'
  if record and string.sub(record, 1, #prefix) == prefix then
    local fields, from = {}, #prefix + 1
    for _ = 1, 3 do
      local bar = string.find(record, '|', from, true)
      fields[#fields + 1] = string.sub(record, from, bar - 1)
      from = bar + 1
    end
    local taken = {}
    for id in string.gmatch(string.sub(record, from), '[^,]+') do
      local lease = redis.call('HGET', p .. 'lease', id)
      if lease then
        local a = string.find(lease, '\\n', 1, true)
        local b = string.find(lease, '\\n', a + 1, true)
        taken[#taken + 1] = id
        taken[#taken + 1] = payload_of(string.sub(lease, b + 1))
        taken[#taken + 1] = string.sub(lease, a + 1, a + 1) == '!' and 1 or 0
      end
    end
    return reply(fields[1], fields[2], fields[3], taken, {false, -1, -1, 0, -1})
  end
end

-- where each part's arguments are
local ack_at = 8
local n_items = tonumber(ARGV[ack_at + 5])
local add_at = ack_at + 7 + n_items + 2 * tonumber(ARGV[ack_at + 6 + n_items])
local n_add = tonumber(ARGV[add_at])
local take_at = add_at + 1 + 4 * n_add
local want = tonumber(ARGV[take_at])

-- sequence numbers: queue order and lease ids
local seq_next, seq_last = 1, 0
local function new_seq()
  if seq_next > seq_last then
    local need = n_add + want + 1
    seq_last = redis.call('INCRBY', p .. 'seq', need)
    seq_next = seq_last - need + 1
  end
  seq_next = seq_next + 1
  return seq_next - 1
end

-- what the step read of a host, and what it changed
local hosts = {}
local function host_state(host)
  local h = hosts[host]
  if not h then
    h = {active = tonumber(redis.call('HGET', p .. 'active', host) or '0'), moved = 0,
         mine = {}, readied = false}
    hosts[host] = h
  end
  return h
end
local function next_of(h, host)
  if h.nxt == nil then h.nxt = tonumber(redis.call('HGET', p .. 'next', host) or '0') end
  return h.nxt
end
local function mine_moved(h, key, by)  -- requests in flight of the owner `key` (own:...)
  h.mine[key] = (h.mine[key] or 0) + by
end
local queued_moved, free_moved = 0, 0

-- ACK
local acked = -1
local lease_id = ARGV[ack_at]
if lease_id ~= '' then
  acked = 0
  local host, holder_own = drop_lease(p, lease_id)
  if host then
    acked = 1
    local h = host_state(host)
    h.active = h.active - 1
    h.moved = h.moved - 1
    mine_moved(h, holder_own, -1)
    local retry = ARGV[ack_at + 1]
    if retry ~= '' then
      local seq = new_seq()
      redis.call('ZADD', p .. 'f:' .. host, -tonumber(ARGV[ack_at + 2]) * 4294967296 + seq,
                 seq .. '|' .. retry)
      queued_moved = queued_moved + 1
      free_moved = free_moved + 1
    end
    local delay = tonumber(ARGV[ack_at + 4])
    if delay >= 0 then redis.call('HSET', p .. 'delay', host, delay) end
    local nxt = next_of(h, host)
    local pause_until = tonumber(ARGV[ack_at + 3])
    if pause_until > nxt then
      h.nxt = pause_until
      redis.call('HSET', p .. 'next', host, pause_until)
    end
    if h.active < per_host then  -- a take finds it out if its queues are empty
      redis.call('ZADD', p .. 'ready', h.nxt, host)
      h.readied = true
    end
    for j = ack_at + 6, ack_at + 5 + n_items do
      redis.call('XADD', p .. 'items', '*', 'item', ARGV[j])
    end
    for j = ack_at + 7 + n_items, add_at - 1, 2 do
      redis.call('HINCRBY', p .. 'stats', ARGV[j], tonumber(ARGV[j + 1]))
    end
  end
end

-- ADD
local queued, duplicates = 0, 0
for j = add_at + 1, take_at - 1, 4 do
  local fp, host, payload = ARGV[j], ARGV[j + 1], ARGV[j + 2]
  if fp == '' or redis.call('SADD', p .. 'seen', fp) == 1 then
    local seq = new_seq()
    redis.call('ZADD', queue_of(p, host, payload), -tonumber(ARGV[j + 3]) * 4294967296 + seq,
               seq .. '|' .. payload)
    queued = queued + 1
    if string.sub(payload, 1, 1) ~= '1' then free_moved = free_moved + 1 end
    local h = host_state(host)
    if not h.readied then
      h.readied = true
      if h.active < per_host then
        redis.call('ZADD', p .. 'ready', 'NX', math.max(next_of(h, host), 0), host)
      end
    end
  else
    duplicates = duplicates + 1
  end
end
queued_moved = queued_moved + queued

-- TAKE
local taken = {}
local tail = {false, -1, -1, 0, -1}
if want > 0 then
  local default_delay, expiry = tonumber(ARGV[take_at + 1]), tonumber(ARGV[take_at + 2])
  local max_pages, alive_until = tonumber(ARGV[take_at + 3]), tonumber(ARGV[take_at + 4])
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
    for k = 1, #host do spin = spin + string.byte(host, k) end
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
      free_moved = free_moved - 1
      return popped
    end
    if spent then return popped end
    return redis.call('ZPOPMIN', p .. 'q:' .. host)
  end
  local started = 0
  for _, host in ipairs(redis.call('ZRANGEBYSCORE', p .. 'ready', '-inf', now, 'LIMIT', 0, 64)) do
    -- several requests from one host in one take when its starts need no spacing
    local again = true
    while again and #taken < 3 * want do
      again = false
      local h = host_state(host)
      local popped = nil
      local close = 0
      if h.active < per_host then
        local counts = redis.call('HMGET', own, 'f:' .. host, 't:' .. host, 'c:' .. host)
        local mine = tonumber(counts[1] or '0') + (h.mine[own] or 0)
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
        h.active = h.active + 1
        h.moved = h.moved + 1
        mine_moved(h, own, 1)
        queued_moved = queued_moved - 1
        local delay = tonumber(redis.call('HGET', p .. 'delay', host) or default_delay)
        h.nxt = now + delay
        redis.call('HSET', p .. 'next', host, h.nxt)
        local id = new_seq()
        redis.call('ZADD', p .. 'leases', expiry, id)
        redis.call('HSET', p .. 'lease', id,
                   host .. '\\n' .. (close == 1 and '!' or '') .. owner .. '\\n' .. popped[1])
        local payload = payload_of(popped[1])
        if string.sub(payload, 1, 1) == '1' then
          started = started + 1
          if max_pages > 0 then  -- crawl.max_pages holds for every request taken
            spent = redis.call('INCRBY', p .. 'started', started) >= max_pages
            started = 0
          end
        end
        if h.active >= per_host then
          redis.call('ZREM', p .. 'ready', host)
        else  -- a take finds it out if its queues are empty
          redis.call('ZADD', p .. 'ready', h.nxt, host)
          again = delay <= 0
        end
        taken[#taken + 1] = id
        taken[#taken + 1] = payload
        taken[#taken + 1] = close
      elseif h.active >= per_host or queued_for(p, host, spent) == 0 then
        redis.call('ZREM', p .. 'ready', host)  -- full or empty: re-added by ack or add
      end  -- else: this process's share is used; the host stays ready for the others
    end
  end
  if started > 0 then redis.call('INCRBY', p .. 'started', started) end
  if #taken == 0 then
    local first = redis.call('ZRANGE', p .. 'ready', 0, 0, 'WITHSCORES')
    local left = tonumber(redis.call('GET', p .. 'queued') or '0') + queued_moved
    local free = tonumber(redis.call('GET', p .. 'free') or '0') + free_moved
    tail = {first[2] or false, left, redis.call('ZCARD', p .. 'leases'), spent and 1 or 0, free}
  else
    tail[4] = spent and 1 or 0
  end
end

-- what changed, written once
for host, h in pairs(hosts) do
  if h.moved ~= 0 then redis.call('HINCRBY', p .. 'active', host, h.moved) end
  for key, by in pairs(h.mine) do
    if by ~= 0 then redis.call('HINCRBY', key, 'f:' .. host, by) end
  end
end
if queued_moved ~= 0 then redis.call('INCRBY', p .. 'queued', queued_moved) end
if free_moved ~= 0 then redis.call('INCRBY', p .. 'free', free_moved) end
if acked ~= -1 or queued > 0 or #taken > 0 then
  local ids = {}
  for k = 1, #taken, 3 do ids[#ids + 1] = taken[k] end
  redis.call('HSET', steps, slot, table.concat({step, acked, queued, duplicates,
                                                table.concat(ids, ',')}, '|'))
end
return reply(acked, queued, duplicates, taken, tail)
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
redis.call('DEL', p .. 'steps:' .. owner)
free_tokens(p, owner, true)
return 1
"""
