"""A crawl shared by many processes on many machines through Redis (redis-py).

Every key of a crawl lives under `scraper:{name}:`. Lua scripts make each step atomic,
so no request is handed out twice and none is lost, and the per-host limits hold for
the whole crawl rather than per process:

- `q:{origin}` (sorted set): the origin's queued first attempts, highest priority first;
  `f:{origin}`: its retries and redirect hops (taken first, and after `crawl.max_pages`);
  `ready` (sorted set): origins with work and a free slot, scored by their next start
  time (ms); `next` / `active` / `delay` (hashes): per-origin next start, requests in
  flight, delay between starts. `crawl.per_host` and `crawl.delay` (and robots.txt
  Crawl-delay) are enforced in `take`.
- `seen` (set): fingerprints, for dedup across all processes.
- `leases` (sorted set: lease id -> expiry), `lease` / `lease_host` (hashes): a request
  handed out is leased with a visibility timeout that its process renews while it
  works; `reap` returns expired leases (a process died) to their queues.
- `items` (stream): items are added in the same script that acknowledges their request,
  so after any crash each item is in the stream exactly once; `scraper export` drains it.
- `stats` (hash), `queued` (counter): progress for `scraper status`.
The crawl is over when nothing is queued and no lease is held anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis

from ..errors import ConfigError, StoreError
from ..request import Request
from ..stats import Stats
from ..urls import origin
from .admission import Admission
from .base import ExportWriter, FrontierOptions, Item, Outcome
from .codec import dump_request, fingerprint, load_request
from .pacing import HostPacing

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between polls when no origin is ready and leases are out elsewhere
SENT_CACHE = 200_000  # fingerprints a process remembers having sent (then starts over)

# A payload starts with '1' when it counts against crawl.max_pages (a first attempt): it
# goes to the origin's `q:` queue. Retries and redirect hops ('0') go to its `f:` queue,
# taken first, and still taken once the budget is spent; `free` counts them.
_QUEUE_OF = """
local function queue_of(p, host, payload)
  if string.sub(payload, 1, 1) == '1' then return p .. 'q:' .. host end
  return p .. 'f:' .. host
end
"""

_ADD = _QUEUE_OF + """
-- KEYS: none (prefix in ARGV[1]); ARGV: prefix, now_ms, per_host, then triples
-- (fingerprint or '', origin, payload, priority)
local p, now, per_host = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local queued, duplicates = 0, 0
for i = 4, #ARGV, 4 do
  local fp, host, payload, priority = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if fp == '' or redis.call('SADD', p .. 'seen', fp) == 1 then
    local seq = redis.call('INCR', p .. 'seq')
    local queue = queue_of(p, host, payload)
    redis.call('ZADD', queue, -priority * 4294967296 + seq, seq .. '|' .. payload)
    redis.call('INCR', p .. 'queued')
    if string.sub(payload, 1, 1) ~= '1' then redis.call('INCR', p .. 'free') end
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

_TAKE = """
-- ARGV: prefix, now_ms, per_host, default_delay_ms, lease_expiry_ms, owner, max_pages
-- Once crawl.max_pages first attempts have started, only `f:` queues are taken from.
local p, now, per_host = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local default_delay, expiry, owner = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local max_pages = tonumber(ARGV[7])
local spent = max_pages > 0 and
  tonumber(redis.call('GET', p .. 'started') or '0') >= max_pages
local hosts = redis.call('ZRANGEBYSCORE', p .. 'ready', '-inf', now, 'LIMIT', 0, 20)
for _, host in ipairs(hosts) do
  local active = tonumber(redis.call('HGET', p .. 'active', host) or '0')
  local popped = nil
  if active < per_host then
    popped = redis.call('ZPOPMIN', p .. 'f:' .. host)
    if popped[1] then
      redis.call('DECR', p .. 'free')
    elseif not spent then
      popped = redis.call('ZPOPMIN', p .. 'q:' .. host)
    end
  end
  if popped and popped[1] then
    active = redis.call('HINCRBY', p .. 'active', host, 1)
    redis.call('DECR', p .. 'queued')
    local delay = tonumber(redis.call('HGET', p .. 'delay', host) or default_delay)
    redis.call('HSET', p .. 'next', host, now + delay)
    local id = redis.call('INCR', p .. 'lease_seq')
    redis.call('ZADD', p .. 'leases', expiry, id)
    redis.call('HSET', p .. 'lease', id, popped[1])
    redis.call('HSET', p .. 'lease_host', id, host)
    redis.call('HSET', p .. 'lease_owner', id, owner)
    local left = redis.call('ZCARD', p .. 'f:' .. host)
    if not spent then left = left + redis.call('ZCARD', p .. 'q:' .. host) end
    if active >= per_host or left == 0 then
      redis.call('ZREM', p .. 'ready', host)
    else
      redis.call('ZADD', p .. 'ready', now + delay, host)
    end
    local payload = string.sub(popped[1], string.find(popped[1], '|', 1, true) + 1)
    if string.sub(payload, 1, 1) == '1' then redis.call('INCR', p .. 'started') end
    return {id, payload}
  end
  redis.call('ZREM', p .. 'ready', host)  -- full or empty: re-added by ack or add
end
local first = redis.call('ZRANGE', p .. 'ready', 0, 0, 'WITHSCORES')
local due = first[2] or false
local queued = tonumber(redis.call('GET', p .. 'queued') or '0')
return {false, due, queued, redis.call('ZCARD', p .. 'leases'), spent and 1 or 0,
        tonumber(redis.call('GET', p .. 'free') or '0')}
"""

_ACK = """
-- ARGV: prefix, now_ms, per_host, lease_id, retry_payload or '', retry_priority,
--       pause_until_ms, delay_ms (-1: unchanged), n_items, items...,
--       stat pairs (name, amount)...
local p, now, per_host, id = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local host = redis.call('HGET', p .. 'lease_host', id)
if not host then return 0 end  -- the lease expired and was reaped: results dropped
local retry, retry_priority = ARGV[5], tonumber(ARGV[6])
local pause_until, delay, n_items = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
redis.call('ZREM', p .. 'leases', id)
redis.call('HDEL', p .. 'lease', id)
redis.call('HDEL', p .. 'lease_host', id)
redis.call('HDEL', p .. 'lease_owner', id)
local active = redis.call('HINCRBY', p .. 'active', host, -1)
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
if active < per_host and redis.call('ZCARD', p .. 'q:' .. host)
    + redis.call('ZCARD', p .. 'f:' .. host) > 0 then
  redis.call('ZADD', p .. 'ready', nxt, host)
end
for i = 10, 9 + n_items do
  redis.call('XADD', p .. 'items', '*', 'item', ARGV[i])
end
for i = 10 + n_items, #ARGV, 2 do
  redis.call('HINCRBY', p .. 'stats', ARGV[i], tonumber(ARGV[i + 1]))
end
return 1
"""

_RETURN_LEASE = """
  local member = redis.call('HGET', p .. 'lease', id)
  local host = redis.call('HGET', p .. 'lease_host', id)
  redis.call('ZREM', p .. 'leases', id)
  redis.call('HDEL', p .. 'lease', id)
  redis.call('HDEL', p .. 'lease_host', id)
  redis.call('HDEL', p .. 'lease_owner', id)
  if host then
    local active = redis.call('HINCRBY', p .. 'active', host, -1)
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
"""

_RELEASE = _QUEUE_OF + """
-- A request cancelled by a stop goes back to its queue now, for another process or run.
local p, per_host, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
""" + _RETURN_LEASE + """
  end
return 1
"""

_REAP = _QUEUE_OF + """
-- Return expired leases (their process died or stalled) to their queues.
local p, now, per_host = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', p .. 'leases', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
""" + _RETURN_LEASE + """
    redis.call('HINCRBY', p .. 'stats', 'leases_reaped', 1)
  end
end
return #expired
"""

_RENEW = """
local p, expiry = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV do redis.call('ZADD', p .. 'leases', 'XX', expiry, ARGV[i]) end
return 1
"""


def connect(url: str) -> redis.Redis:
    try:
        client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise ConfigError(f"frontier.backend = {url!r}: cannot reach Redis: {exc}") from None
    return client


def key_prefix(name: str) -> str:
    return f"scraper:{name}:"


class RedisFrontier:
    """The frontier protocol with the queue, dedup, leases, `crawl.max_pages` and the
    per-host limits in Redis, for every process of the crawl. URL admission (canonical
    form, offsite, depth, traps) and host pacing (autothrottle, failing-host backoff) are
    computed by each process and sent with its acknowledgements; robots.txt is read by
    each process inline (`gates_robots` is False)."""

    gates_robots = False
    exports_items = False  # the stream keeps them; each process also writes its own
    serializes_requests = True

    def __init__(self, options: FrontierOptions, stats: Stats, *, url: str, name: str,
                 spider: Any, lease_timeout: float, cleanup: bool) -> None:
        self._options = options
        self._stats = stats
        self._admission = Admission(options, stats)
        self._redis = connect(url)
        self._prefix = key_prefix(name)
        self._spider = spider
        self._lease_ms = int(lease_timeout * 1000)
        self._cleanup = cleanup
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._add_script = self._redis.register_script(_ADD)
        self._take_script = self._redis.register_script(_TAKE)
        self._ack_script = self._redis.register_script(_ACK)
        self._reap_script = self._redis.register_script(_REAP)
        self._release_script = self._redis.register_script(_RELEASE)
        self._renew_script = self._redis.register_script(_RENEW)
        self._held: set[int] = set()
        self._sent: set[str] = set()  # fingerprints this process already sent to Redis
        self._pacing: dict[str, HostPacing] = {}
        self._lock = threading.Lock()
        self._in_flight = 0
        self._stop_event = threading.Event()
        self._closing = threading.Event()
        self._exhausted = False
        self.round_trips = 0
        self._heartbeat = threading.Thread(target=self._beat, name="scraper-redis-heartbeat",
                                           daemon=True)
        self._heartbeat.start()

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    def _call(self, script: Any, args: list[Any]) -> Any:
        self.round_trips += 1
        try:
            return script(args=[self._prefix, *args])
        except redis.RedisError as exc:
            raise StoreError(f"Redis frontier {self._prefix}", exc) from exc

    # -- adding --------------------------------------------------------------------------

    def _encode(self, request: Request) -> str:
        counts = request.attempt == 1 and not request.redirect_chain
        return ("1" if counts else "0") + dump_request(self._spider, request)

    def add(self, requests: Iterable[Request]) -> int:
        """Queue requests not seen by any process. Fingerprints this process already sent
        are dropped here, without a round trip (most links on a page were seen before)."""
        accepted = []
        keys = []
        local_duplicates = 0
        sent = self._sent
        for request in self._admission.admit(requests):
            if not request.dont_filter:
                key = fingerprint(request)
                if key in sent:
                    local_duplicates += 1
                    continue
                keys.append(key)
            accepted.append(request)
        queued = duplicates = 0
        if accepted:
            args: list[Any] = [self._now_ms(), self._options.per_host]
            for request in accepted:
                args += ["" if request.dont_filter else fingerprint(request),
                         origin(request.url), self._encode(request), request.priority]
            queued, duplicates = self._call(self._add_script, args)
            with self._lock:
                if len(sent) + len(keys) > SENT_CACHE:
                    sent.clear()  # bounded memory; Redis stays the authority on what was seen
                sent.update(keys)  # only once Redis has them
        if duplicates or local_duplicates:
            self._stats.inc("filtered_duplicate", int(duplicates) + local_duplicates)
        return int(queued)

    # -- handing out ---------------------------------------------------------------------

    def next(self) -> Request | None:
        options = self._options
        while not self._stop_event.is_set():
            now = self._now_ms()
            reply = self._call(self._take_script, [
                now, options.per_host, int(options.delay * 1000), now + self._lease_ms,
                self._owner, options.max_pages])
            if reply[0]:
                lease_id = int(reply[0])
                request = load_request(self._spider, reply[1].decode()[1:], lease_id)
                with self._lock:
                    self._held.add(lease_id)
                    self._in_flight += 1
                return request
            _, due, queued, leases, exhausted, free = reply
            with self._lock:
                in_flight = self._in_flight
            if in_flight == 0 and int(leases) == 0 and (
                    int(queued) == 0 or (int(exhausted) and int(free) == 0)):
                self._exhausted = bool(int(exhausted)) and int(queued) > 0
                self._finish_crawl()
                return None
            wait = POLL if not due else min(POLL * 4, max(0.0, (int(due) - now) / 1000))
            self._stop_event.wait(max(wait, 0.005))
        return None

    def _finish_crawl(self) -> None:
        self._stop_event.set()
        if self._cleanup:
            self.cleanup()

    # -- finishing -----------------------------------------------------------------------

    def _pace(self, key: str, outcome: Outcome) -> tuple[float | None, int]:
        """This process's view of the host: (pause, new delay in ms or -1)."""
        with self._lock:
            pacing = self._pacing.get(key)
            if pacing is None:
                pacing = self._pacing[key] = HostPacing(self._options.delay)
            before = pacing.delay
            pause = pacing.observe(self._options, failed=outcome.host_failed,
                                   latency=outcome.latency, pause=outcome.host_pause)
            delay = int(pacing.delay * 1000) if pacing.delay != before else -1
        return pause, delay

    def finish(self, request: Request, outcome: Outcome) -> list[Item]:
        """Acknowledge the lease: children, items, stats, pacing and the retry in one
        script. Children go first: if this process dies before the ack, the request runs
        again and its children are then duplicates, so nothing is lost or doubled."""
        lease_id = request.store_id
        kept = list(outcome.items)
        try:
            if lease_id is None:
                return []
            if outcome.requeue:  # cancelled by a stop: back to the queue, nothing recorded
                self._call(self._release_script, [self._options.per_host, lease_id])
                return []
            self.add(outcome.children)
            now = self._now_ms()
            retry = outcome.retry
            pause_until = 0
            if retry is not None:
                pause_until = int((time.time() + max(0.0, outcome.retry_at - time.monotonic()))
                                  * 1000)
            pause, delay = self._pace(origin(request.url), outcome)
            if pause:
                pause_until = max(pause_until, now + int(pause * 1000))
            stats = ["requests_done", 1, "items", len(kept)]
            args = [now, self._options.per_host, lease_id,
                    self._encode(retry) if retry is not None else "",
                    retry.priority if retry is not None else 0, pause_until, delay, len(kept),
                    *(json.dumps(item, default=str) for item in kept), *stats]
            if not self._call(self._ack_script, args):
                log.warning("lease of %s had expired: its results were dropped (another "
                            "process runs it again)", request.url)
                return []
            return kept
        finally:
            if lease_id is not None:
                with self._lock:
                    self._held.discard(lease_id)
                    self._in_flight -= 1

    def export(self, target: str, write: ExportWriter) -> int:
        raise TypeError("the shared frontier's items are in its stream: `scraper export`")

    def stop(self) -> None:
        self._stop_event.set()

    def close(self) -> None:
        self._stop_event.set()
        self._closing.set()
        self._heartbeat.join(timeout=2)
        self._redis.close()

    def _beat(self) -> None:
        """Renew this process's leases and reap expired ones, every third of a timeout."""
        interval = max(self._lease_ms / 3000, 0.05)
        while not self._closing.wait(interval):
            try:
                with self._lock:
                    held = list(self._held)
                now = self._now_ms()
                if held:
                    self._call(self._renew_script, [now + self._lease_ms, *held])
                self._call(self._reap_script, [now, self._options.per_host])
            except StoreError as exc:
                log.warning("Redis heartbeat failed: %s", exc)

    # -- robots.txt and status -----------------------------------------------------------

    def open_host(self, origin: str, delay: float | None = None) -> None:
        with self._lock:
            pacing = self._pacing.setdefault(origin, HostPacing(self._options.delay))
            pacing.raise_floor(delay)
        if delay:
            # The largest delay any process learnt holds for all of them.
            try:
                current = self._redis.hget(self._prefix + "delay", origin)
                wanted = int(max(delay, self._options.delay) * 1000)
                if current is None or int(current) < wanted:
                    self._redis.hset(self._prefix + "delay", origin, wanted)
            except redis.RedisError as exc:
                raise StoreError(f"Redis frontier {self._prefix}", exc) from exc

    def refresh_robots(self, origin: str) -> None:
        """Each process refreshes its own copy (see the robots component's inline read)."""

    @property
    def budget_exhausted(self) -> bool:
        return self._exhausted

    def counts(self) -> dict[str, int]:
        with self._lock:
            in_flight = self._in_flight
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(self._prefix + "queued")
            pipe.zcard(self._prefix + "leases")
            pipe.scard(self._prefix + "seen")
            queued, leases, seen = pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"Redis frontier {self._prefix}", exc) from exc
        return {"queued": int(queued or 0), "in_flight": in_flight, "leases": int(leases),
                "seen": int(seen)}

    def queued_left(self) -> int:
        return self.counts()["queued"]

    def cleanup(self) -> None:
        """Delete the crawl's keys but the items stream and the stats."""
        keys = [k for k in self._redis.scan_iter(match=self._prefix + "*", count=1000)
                if k.decode().removeprefix(self._prefix) not in ("items", "stats")]
        for start in range(0, len(keys), 500):
            self._redis.delete(*keys[start:start + 500])


def status(url: str, name: str) -> dict[str, Any]:
    """A crawl's counters, read from Redis (for `scraper status`)."""
    client = connect(url)
    prefix = key_prefix(name)
    stats = {k.decode(): int(v) for k, v in client.hgetall(prefix + "stats").items()}
    owners = client.hvals(prefix + "lease_owner")
    return {
        "crawl": name,
        "queued": int(client.get(prefix + "queued") or 0),
        "leases": int(client.zcard(prefix + "leases")),
        "seen": int(client.scard(prefix + "seen")),
        "items_in_stream": int(client.xlen(prefix + "items")) if client.exists(
            prefix + "items") else 0,
        "processes": sorted({o.decode() for o in owners}),
        **stats,
    }


def drain_items(url: str, name: str) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """Every item in the crawl's stream after the last exported one: (stream id, item)."""
    client = connect(url)
    prefix = key_prefix(name)
    last = client.get(prefix + "exported") or b"0-0"
    while True:
        batch = client.xrange(prefix + "items", min=b"(" + last, count=1000)
        if not batch:
            return
        for entry_id, fields in batch:
            yield entry_id, json.loads(fields[b"item"])
            last = entry_id


def mark_exported(url: str, name: str, entry_id: bytes) -> None:
    connect(url).set(key_prefix(name) + "exported", entry_id)
