"""The in-process frontier core: per-host queues, politeness, the crawl's end.

A worker is handed only a request whose host has a free slot (`crawl.per_host`) and whose
politeness time has come (`crawl.delay`, `Retry-After`), so no worker waits on a busy
host while others have work. Hosts with work are kept in a round-robin `ready` deque or,
when their next start is in the future, in a heap; retries wait in a heap of their own.
Workers block on one condition variable with a timeout equal to the next due time; no
thread sleeps. The crawl is over when nothing is queued, delayed or in flight.

What is remembered across requests is the backing's: `MemoryBacking` (a compact seen
set, `seen.SeenSet`) for the memory frontier, `StoreBacking` (a `JobStore`) for the
durable SQLite frontier, which keeps a bounded window of its queued requests in memory.

The working set (with `use_connections`, i.e. always in a crawl): a host enters it when
its first request is handed out, reserving one connection of `http.max_connections`, and
one more each time more of its requests are in flight at once than it has reserved. A
host whose requests are all done leaves it for the idle list, keeping its reservation
and its warm pool; when a host needs a connection and the budget is spent, the host idle
longest is evicted: its pool is closed and its state forgotten (robots.txt is read again
if it comes back; a politeness wait still due is remembered). A host that finds no room
is parked until one drains, so hosts with warm pools are served first and new hosts
enter as others drain. Idle hosts beyond `MAX_IDLE_HOSTS` are evicted the same way, so
per-host state is bounded by the hosts with work.

Producers (`feeding`): while the start requests' feeder runs, an empty queue does not
end the crawl.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Protocol

from ..request import Request
from ..stats import Stats
from ..urls import origin
from .admission import Admission
from .base import (
    ROBOTS_META,
    ConnectionPool,
    ExportWriter,
    FrontierOptions,
    Item,
    Outcome,
    is_plain,
    uses_budget,
)
from .codec import fingerprint
from .jobstore import JobStore
from .pacing import HostPacing
from .seen import SeenSet, key_hash
from .spill import SpillFile

STORE_LOW_WATER = 1000  # a durable frontier's requests held in memory: refilled below this
STORE_BATCH = 1000
MAX_REFILL = 10_000  # spilled requests brought back into memory at a time
SEEN_RUN_BITS = 6  # seen hashes move to the spill file in 64 runs (key ranges)
MAX_IDLE_HOSTS = 10_000  # hosts with nothing to do whose state is kept


class _Host:
    __slots__ = ("active", "conns", "free", "gated", "key", "next_start", "pacing",
                 "park_entry", "plain", "queue", "retries", "robots_request", "scheduled",
                 "waiting_entry")

    def __init__(self, key: str, delay: float) -> None:
        self.key = key
        self.queue: list[tuple[int, int, Request]] = []
        # Retries and redirect hops: they do not use `crawl.max_pages`, so they still run
        # once the budget is spent; taken before new pages (work already started).
        self.free: list[tuple[int, int, Request]] = []
        # Plain requests (a GET of a URL, nothing else set: most followed links) are kept
        # as bare URL strings, by depth (shallowest first), then by the page they were
        # found on (their Referer, "" for none; pages in the order met): a fifth of a
        # Request's memory. Depths are few, so taking the shallowest is cheap.
        self.plain: dict[int, dict[str, deque[str]]] = {}
        self.active = 0
        self.pacing = HostPacing(delay)
        self.next_start = 0.0
        self.scheduled = False
        self.waiting_entry = -1  # the sequence number of its live entry in `_waiting`
        self.gated = False  # waiting for robots.txt: only `robots_request` may start
        self.robots_request: Request | None = None
        self.conns = 0  # connections reserved in the budget (0: not in the working set)
        self.park_entry = -1  # the sequence number of its live entry in `_parked`
        self.retries = 0  # its requests waiting in `_delayed`

    def drained(self) -> bool:
        return not (self.active or self.queue or self.plain or self.free or self.retries
                    or self.robots_request is not None or self.scheduled)


class Backing(Protocol):
    """Where a local frontier remembers what it has seen and, if durable, its queue."""

    durable: bool
    low_water: int  # `refill` is called when fewer requests than this are in memory
    batch: int  # requests asked of `refill` at a time

    def admit(self, requests: list[Request], in_memory: int) -> tuple[list[Request], int]:
        """(requests to queue in memory now, duplicates); `in_memory`: requests queued in
        memory already."""

    def commit(self, request: Request, outcome: Outcome, children: list[Request],
               in_memory: int) -> tuple[list[Request], int, list[Item]]:
        """Store the outcome; (children to queue in memory now, duplicates, items kept)."""

    @property
    def refills(self) -> bool:
        """Whether requests wait outside memory for `refill`."""

    def refill(self, limit: int) -> list[Request]:
        """Up to `limit` stored requests to bring into memory."""

    def seen(self) -> int: ...

    def waiting(self) -> int:
        """Requests queued outside memory that the frontier's counts do not include."""

    def queued_left(self, in_memory: int) -> int: ...

    def close(self) -> None: ...


class MemoryBacking:
    """A compact seen set in memory; with a `SpillFile`, requests past `memory_queue`
    queued in memory and seen keys past `memory_seen` go to it (see `spill`)."""

    durable = False

    def __init__(self, strip_session_ids: bool = True, *, spill: SpillFile | None = None,
                 memory_queue: int = 0, memory_seen: int = 0,
                 stats: Stats | None = None) -> None:
        self._seen = SeenSet()
        self._strip = strip_session_ids
        self._spill = spill
        self._memory_queue = memory_queue if spill is not None else 0
        self._memory_seen = memory_seen if spill is not None else 0
        self._stats = stats
        self.low_water = max(1, self._memory_queue // 2)
        self.batch = max(1, min(self._memory_queue - self.low_water, MAX_REFILL))

    def admit(self, requests: list[Request], in_memory: int) -> tuple[list[Request], int]:
        spill = self._spill
        if spill is not None and spill.seen:
            fresh = self._admit_spilled(requests)
        else:
            fresh = []
            add = self._seen.add
            strip = self._strip
            for request in requests:
                if add(fingerprint(request, strip)) or request.dont_filter:
                    fresh.append(request)
        duplicates = len(requests) - len(fresh)
        if self._memory_seen and len(self._seen) >= self._memory_seen:
            self._spill_seen()
        if self._memory_queue and fresh:
            fresh = self._overflow(fresh, in_memory)
        return fresh, duplicates

    def _admit_spilled(self, requests: list[Request]) -> list[Request]:
        """Dedup against the memory set, then (one query) against the file."""
        assert self._spill is not None
        add = self._seen.add_hash
        strip = self._strip
        marks: list[int | None] = []  # per request: its hash if new to memory, else None
        for request in requests:
            h = key_hash(fingerprint(request, strip))
            marks.append(h if add(h) else None)
        on_disk = self._spill.seen_among([h for h in marks if h is not None])
        return [request for request, h in zip(requests, marks, strict=True)
                if (h is not None and h not in on_disk) or request.dont_filter]

    def _spill_seen(self) -> None:
        assert self._spill is not None
        moved = len(self._seen)
        self._spill.add_seen(self._seen.sorted_hashes(SEEN_RUN_BITS))
        self._seen.clear()
        if self._stats is not None:
            self._stats.inc("seen_spilled", moved)

    def _overflow(self, fresh: list[Request], in_memory: int) -> list[Request]:
        """The requests to keep in memory; the others go to the file (all new pages while
        some wait there already, so that none overtakes them)."""
        assert self._spill is not None
        if not self._spill.queued:
            room = self._memory_queue - in_memory
            if room >= len(fresh):
                return fresh
            keep, rest = fresh[:max(0, room)], fresh[max(0, room):]
        else:
            keep, rest = [], fresh
        to_spill = []
        for request in rest:
            (to_spill if uses_budget(request) else keep).append(request)
        if to_spill:
            keep.extend(self._spill.push(to_spill))
            if self._stats is not None:
                self._stats.inc("spilled", len(to_spill))
        return keep

    def commit(self, request: Request, outcome: Outcome, children: list[Request],
               in_memory: int) -> tuple[list[Request], int, list[Item]]:
        fresh, duplicates = self.admit(children, in_memory)
        return fresh, duplicates, list(outcome.items)

    @property
    def refills(self) -> bool:
        return self._spill is not None and self._spill.queued > 0

    def refill(self, limit: int) -> list[Request]:
        return self._spill.pop(limit) if self._spill is not None else []

    def seen(self) -> int:
        return len(self._seen) + (self._spill.seen if self._spill is not None else 0)

    def waiting(self) -> int:
        return self._spill.queued if self._spill is not None else 0

    def queued_left(self, in_memory: int) -> int:
        return in_memory + self.waiting()

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()


class StoreBacking:
    """The SQLite jobdir: a request row is deleted in the transaction that stores its
    children and items (see `JobStore`)."""

    durable = True
    refills = True
    low_water = STORE_LOW_WATER
    batch = STORE_BATCH

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def admit(self, requests: list[Request], in_memory: int) -> tuple[list[Request], int]:
        _, duplicates = self.store.add(requests)
        return [], duplicates

    def commit(self, request: Request, outcome: Outcome, children: list[Request],
               in_memory: int) -> tuple[list[Request], int, list[Item]]:
        if outcome.requeue:
            return [], 0, []
        _, duplicates, kept = self.store.commit(request, children, list(outcome.items),
                                                outcome.retry)
        return [], duplicates, kept

    def refill(self, limit: int) -> list[Request]:
        return self.store.take(limit)

    def seen(self) -> int:
        return self.store.seen_count()

    def waiting(self) -> int:
        return 0  # the store's count includes the requests in memory: see `queued_left`

    def queued_left(self, in_memory: int) -> int:
        return self.store.queued()

    def close(self) -> None:
        """The jobdir's store is closed by its owner."""


class LocalFrontier:
    """The memory frontier (`MemoryBacking`) or the SQLite one (`StoreBacking`)."""

    gates_robots = True

    def __init__(self, options: FrontierOptions, stats: Stats, backing: Backing) -> None:
        self._options = options
        self._stats = stats
        self._admission = Admission(options, stats)
        self._backing = backing
        self.exports_items = self.serializes_requests = backing.durable
        self.keeps_unfinished = backing.durable
        self._cond = threading.Condition(threading.Lock())
        self._hosts: dict[str, _Host] = {}
        self._ready: deque[_Host] = deque()
        self._waiting: list[tuple[float, int, _Host]] = []
        self._delayed: list[tuple[float, int, Request]] = []
        self._seq = itertools.count()
        self._queued = 0
        self._in_flight = 0
        self._stopped = False
        self._budget = options.max_pages or -1  # first attempts still allowed; -1: no limit
        self._free = 0  # queued requests that do not use the budget (`_Host.free`)
        self._exhausted = False
        self._feeders = 0
        # The working set (see the module's docstring).
        self._pool: ConnectionPool | None = None
        self._max_connections = 0  # 0: no budget
        self._reserved = 0  # connections reserved by hosts in the working set or idle
        self._hosts_active = 0
        self._peak_hosts_active = 0
        self._idle: OrderedDict[str, _Host] = OrderedDict()  # drained, oldest first
        self._parked: deque[tuple[int, _Host]] = deque()
        self._parked_live = 0
        self._paused_until: dict[str, float] = {}  # evicted hosts' politeness still due
        self._evicted_listeners: list[Callable[[str], None]] = []

    # -- configuration -------------------------------------------------------------------

    def use_connections(self, pool: ConnectionPool) -> None:
        with self._cond:
            self._pool = pool
            self._max_connections = max(1, pool.max_connections)

    def on_host_evicted(self, listener: Callable[[str], None]) -> None:
        """`listener(origin)` runs (under the frontier's lock: keep it short) when an idle
        host's state is forgotten, e.g. to drop its robots.txt rules."""
        self._evicted_listeners.append(listener)

    def allow_domain(self, domain: str) -> None:
        self._admission.allow(domain)

    def feeding(self, active: bool) -> None:
        with self._cond:
            self._feeders += 1 if active else -1
            self._cond.notify_all()

    # -- adding --------------------------------------------------------------------------

    def add(self, requests: Iterable[Request]) -> int:
        accepted = self._admission.admit(requests)
        if not accepted:
            return 0
        durable = self._backing.durable
        if durable:  # the store has its own lock: workers are not held while it writes
            fresh, duplicates = self._backing.admit(accepted, 0)
        with self._cond:
            if self._stopped:
                return 0
            if not durable:
                fresh, duplicates = self._backing.admit(accepted,
                                                        self._queued + len(self._delayed))
            for request in fresh:
                self._enqueue(request)
            self._refill()
            self._cond.notify(max(1, len(fresh)))
        if duplicates:
            self._stats.inc("filtered_duplicate", duplicates)
        return len(accepted) - duplicates

    def _refill(self) -> None:
        """Bring requests waiting outside memory (a durable frontier's store, a spill file)
        back in as the memory queue drains."""
        backing = self._backing
        if self._stopped or not backing.refills:
            return
        if self._queued + len(self._delayed) >= backing.low_water:
            return
        for request in backing.refill(backing.batch):
            self._enqueue(request)

    def _enqueue(self, request: Request) -> None:
        key = origin(request.url)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(key, self._options.delay)
            if self._paused_until:
                host.next_start = self._paused_until.pop(key, 0.0)
            if self._options.obey_robots:
                self._gate(host)
        elif key in self._idle:  # back from the idle list, its pool still warm
            del self._idle[key]
            if host.conns:
                self._entered(host)
        if request.meta.get(ROBOTS_META):
            host.robots_request = request  # a robots.txt retry
        elif not uses_budget(request):
            heapq.heappush(host.free, (-request.priority, next(self._seq), request))
            self._free += 1
        elif is_plain(request):
            groups = host.plain.get(request.depth)
            if groups is None:
                groups = host.plain[request.depth] = {}
            referer = request.referer or ""
            urls = groups.get(referer)
            if urls is None:
                urls = groups[referer] = deque()
            urls.append(request.url)
        else:
            heapq.heappush(host.queue, (-request.priority, next(self._seq), request))
        self._queued += 1
        if not host.scheduled and self._eligible(host):
            self._schedule(host, time.monotonic())

    def _gate(self, host: _Host) -> None:
        """Hold the host until its robots.txt is read; queue the robots.txt request."""
        host.gated = True
        host.robots_request = Request(f"{host.key}/robots.txt", meta={ROBOTS_META: True},
                                      dont_filter=True)
        self._queued += 1

    def _eligible(self, host: _Host) -> bool:
        if host.active >= self._options.per_host:
            return False
        if self._budget == 0:  # the budget is spent: only retries and redirect hops
            return bool(host.free) and (host.robots_request is not None or not host.gated)
        return host.robots_request is not None if host.gated else bool(
            host.free or host.queue or host.plain)

    def _schedule(self, host: _Host, now: float) -> None:
        host.scheduled = True
        if host.next_start <= now:
            self._ready.append(host)
        else:
            self._wait(host)

    def _wait(self, host: _Host) -> None:
        host.waiting_entry = next(self._seq)
        heapq.heappush(self._waiting, (host.next_start, host.waiting_entry, host))

    # -- the working set -----------------------------------------------------------------

    def _pick(self) -> _Host | None:
        """The next ready host that has a reserved connection free, or for which the
        budget has room; hosts that find none are parked."""
        ready = self._ready
        while True:
            if not ready:
                if not self._max_connections or not self._parked_live \
                        or not self._room(evict=False):
                    return None
                self._unpark(1)
                continue
            host = ready.popleft()
            if self._budget == 0 and not self._eligible(host):
                host.scheduled = False  # only new pages left, and the budget is spent
                continue
            if not self._max_connections or host.active < host.conns:
                return host  # a connection of its own is free (or was never needed)
            if self._room(evict=True):
                if not host.conns:
                    self._entered(host)
                host.conns += 1
                self._reserved += 1
                return host
            self._park(host)

    def _room(self, *, evict: bool) -> bool:
        """Whether one more connection fits; with `evict`, make room by evicting the host
        idle longest when the budget is spent."""
        if self._reserved < self._max_connections:
            return True
        if not self._idle:
            return False
        if evict:
            self._evict(next(iter(self._idle.values())))
        return True

    def _entered(self, host: _Host) -> None:
        self._hosts_active += 1
        if self._hosts_active > self._peak_hosts_active:
            self._peak_hosts_active = self._hosts_active

    def _park(self, host: _Host) -> None:
        host.park_entry = next(self._seq)
        self._parked.append((host.park_entry, host))
        self._parked_live += 1

    def _unpark(self, count: int) -> None:
        parked = self._parked
        while count > 0 and parked:
            entry, host = parked.popleft()
            if entry != host.park_entry:
                continue  # unparked already
            host.park_entry = -1
            self._parked_live -= 1
            self._ready.append(host)
            count -= 1

    def _unpark_host(self, host: _Host) -> None:
        """A parked host of the working set has a reserved connection free again."""
        host.park_entry = -1
        self._parked_live -= 1
        self._ready.append(host)

    def _drained(self, host: _Host) -> None:
        """The host has nothing queued, delayed or in flight."""
        if host.conns:
            self._hosts_active -= 1
            self._idle[host.key] = host
            if self._parked_live:
                self._unpark(host.conns)
        else:  # never handed out a request (all its requests were retried away...)
            self._idle[host.key] = host
        if len(self._idle) > MAX_IDLE_HOSTS:
            self._evict(next(iter(self._idle.values())))

    def _evict(self, host: _Host) -> None:
        """Forget an idle host: close its pool, drop its state."""
        key = host.key
        del self._idle[key]
        del self._hosts[key]
        self._reserved -= host.conns
        if host.next_start > time.monotonic():
            if len(self._paused_until) >= MAX_IDLE_HOSTS:
                now = time.monotonic()
                self._paused_until = {k: t for k, t in self._paused_until.items() if t > now}
            self._paused_until[key] = host.next_start
        if self._pool is not None and host.conns:
            self._pool.close_host(key)
        for listener in self._evicted_listeners:
            listener(key)

    # -- handing out ---------------------------------------------------------------------

    def next(self) -> Request | None:
        with self._cond:
            while True:
                if self._stopped:
                    return None
                now = time.monotonic()
                self._promote(now)
                if not self._ready:
                    self._refill()
                host = self._pick()
                if host is not None:
                    return self._take(host, now)
                if self._in_flight == 0 and not self._delayed and (
                    (self._queued == 0 and not self._feeders)
                    or (self._budget == 0 and self._free == 0)
                ):
                    self._exhausted = self._budget == 0 and (
                        self._queued + self._backing.waiting() > 0)
                    self._stopped = True
                    self._cond.notify_all()
                    return None
                self._cond.wait(self._next_due(now))

    def _promote(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            request = heapq.heappop(self._delayed)[2]
            host = self._hosts.get(origin(request.url))
            if host is not None:
                host.retries -= 1
            self._enqueue(request)
        while self._waiting and self._waiting[0][0] <= now:
            _, entry, host = heapq.heappop(self._waiting)
            if entry != host.waiting_entry:
                continue  # left the heap early (a cache hit): a stale entry
            if host.next_start > now:  # pushed back again (Retry-After) while waiting
                self._wait(host)
                break
            host.waiting_entry = -1
            self._ready.append(host)

    def _next_due(self, now: float) -> float | None:
        due = [entries[0][0] for entries in (self._waiting, self._delayed) if entries]
        return max(0.0, min(due) - now) if due else None

    def _take(self, host: _Host, now: float) -> Request:
        host.scheduled = False
        if host.gated:
            request = host.robots_request
            assert request is not None
            host.robots_request = None
        elif host.free:
            request = heapq.heappop(host.free)[2]
            self._free -= 1
        else:
            if host.queue and (not host.plain or host.queue[0][0] <= 0):
                request = heapq.heappop(host.queue)[2]
            else:
                depth = min(host.plain)
                groups = host.plain[depth]
                referer, urls = next(iter(groups.items()))
                request = Request(urls.popleft())
                request.depth = depth
                if referer:
                    request.referer = referer
                if not urls:
                    del groups[referer]
                    if not groups:
                        del host.plain[depth]
            if self._budget > 0:
                self._budget -= 1
        self._queued -= 1
        host.active += 1
        self._in_flight += 1
        if host.pacing.delay:
            host.next_start = now + host.pacing.delay
        if self._eligible(host):
            self._schedule(host, now)
        return request

    # -- finishing -----------------------------------------------------------------------

    def finish(self, request: Request, outcome: Outcome) -> list[Item]:
        key = origin(request.url)
        children = self._admission.admit(outcome.children) if not outcome.requeue else []
        fresh: list[Request] = []
        duplicates, kept = 0, []
        durable = self._backing.durable
        try:
            if durable:  # outside the lock, as in `add`
                fresh, duplicates, kept = self._backing.commit(request, outcome, children, 0)
        finally:
            with self._cond:
                try:
                    if not durable:
                        fresh, duplicates, kept = self._backing.commit(
                            request, outcome, children, self._queued + len(self._delayed))
                finally:  # the slot is released even when the store fails
                    self._release(key, outcome, fresh)
        if duplicates:
            self._stats.inc("filtered_duplicate", duplicates)
        return kept

    def _release(self, key: str, outcome: Outcome,
                 fresh: list[Request]) -> None:
        host = self._hosts[key]
        host.active -= 1  # before its children are queued: they may be its own
        self._in_flight -= 1
        if not self._stopped:
            for child in fresh:
                self._enqueue(child)
        now = time.monotonic()
        if not outcome.requeue:
            pause = host.pacing.observe(self._options, failed=outcome.host_failed,
                                        latency=outcome.latency, pause=outcome.host_pause)
            if pause:
                host.next_start = max(host.next_start, now + pause)
            elif not outcome.fetched:  # answered without the network (a cache hit)
                host.next_start = min(host.next_start, now)
                if host.waiting_entry >= 0:  # waiting for a delay this hit did not use
                    host.waiting_entry = -1
                    self._ready.append(host)
        if outcome.retry is not None and not self._stopped:
            heapq.heappush(self._delayed, (outcome.retry_at, next(self._seq), outcome.retry))
            retry_host = self._hosts.get(origin(outcome.retry.url))
            if retry_host is not None:
                retry_host.retries += 1
        if host.park_entry >= 0 and host.active < host.conns:
            self._unpark_host(host)
        elif not host.scheduled and self._eligible(host):
            self._schedule(host, now)
        self._refill()
        if host.drained() and not host.gated:
            self._drained(host)
        if self._in_flight == 0 or outcome.retry is not None:
            self._cond.notify_all()  # the crawl may be over, or a wait time changed
        else:
            self._cond.notify()

    def open_host(self, origin: str, delay: float | None = None) -> None:
        with self._cond:
            host = self._hosts[origin]
            host.gated = False
            host.pacing.raise_floor(delay)
            if not host.scheduled and self._eligible(host):
                self._schedule(host, time.monotonic())
            self._cond.notify()

    def refresh_robots(self, origin: str) -> None:
        with self._cond:
            host = self._hosts[origin]
            if host.gated or self._stopped:
                return
            self._gate(host)
            if not host.scheduled and self._eligible(host):
                self._schedule(host, time.monotonic())
            self._cond.notify()

    def export(self, target: str, write: ExportWriter, stream: str = "") -> int:
        if not isinstance(self._backing, StoreBacking):
            raise TypeError("the memory frontier keeps no items: the engine writes them")
        return self._backing.store.export(target, write, stream)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def close(self) -> None:
        """Closes a spill file (the jobdir's store is closed by its owner)."""
        with self._cond:
            self._backing.close()
            if self._peak_hosts_active:
                self._stats.maximum("hosts_active", self._peak_hosts_active)

    @property
    def budget_exhausted(self) -> bool:
        return self._exhausted or (
            self._budget == 0 and self._queued + self._backing.waiting() > 0)

    def counts(self) -> dict[str, int]:
        with self._cond:
            queued = self._queued + len(self._delayed) + self._backing.waiting()
            return {"queued": queued, "in_flight": self._in_flight,
                    "seen": self._backing.seen(), "hosts_active": self._hosts_active}

    def queued_left(self) -> int:
        with self._cond:
            return self._backing.queued_left(self._queued + len(self._delayed))
