"""A crawl shared by many processes on many machines through Redis (redis-py).

Every key of a crawl lives under `scraper:{name}:`. Lua scripts (`redis_scripts.py`) make
each step atomic, so no request is handed out twice and none is lost, and the per-host
limits hold for the whole crawl rather than per process:

- `q:{origin}` (sorted set): the origin's queued requests, highest priority first;
  `ready` (sorted set): origins with work and a free slot, scored by their next start
  time (ms); `next` / `active` / `delay` (hashes): per-origin next start, requests in
  flight, delay between starts. `crawl.per_host` and `crawl.delay` (and robots.txt
  Crawl-delay) are enforced in `take`; `started` counts first attempts against
  `crawl.max_pages`.
- `procs` / `alive` / `own:{owner}` / `conns`: the live processes, each one's requests
  in flight and connection tokens per origin: a process takes at most its share of
  `per_host` for an origin, and holds at most as many connections as it has tokens, so
  the connections of all processes to an origin stay within `per_host`; one holding more
  than its share gives connections back (`Connection: close`). See `redis_scripts`.
- `seen` (set): fingerprints, for dedup across all processes.
- `leases` (sorted set: lease id -> expiry), `lease` (hash: id -> host, owner, request):
  a request handed out is leased with a visibility timeout that its process renews while
  it works; `reap` returns expired leases (a process died) to their queues. `seq`: queue
  order and lease ids.
- `items` (stream): items are added in the same script that acknowledges their request,
  so after any crash each item is in the stream exactly once; `scraper export` drains it.
- `steps:{owner}` (hash: one field per thread of the process): the last step of each
  thread, so that a step resent after a lost reply (an ack, children, a take) changes
  nothing and hands out what it took the first time.
- `stats` (hash), `queued` (counter): progress for `scraper status`; `sessions` (hash):
  the sessions' cookies, so that another process or machine stays logged in.
The crawl is over when nothing is queued and no lease is held anywhere.

Round trips: acknowledging a request, queueing its children and taking the next request
are one script (STEP), one round trip per page, sent on the thread's own connection
(`_send`: redis-py's connection, so TLS, ACL and unix sockets, without its client and
pool layers). Requests are stored compact (`codec.dump_compact`). A process's waiting
workers are woken by its own acks; one of them at a time polls for the others' changes.

Outages: every Redis call goes through one retrying path (`_retrying`): while Redis is
unreachable (restarting, failing over, loading its data) workers wait and retry with
backoff and jitter, for up to `frontier.outage_grace`; past it the crawl stops with
finish_reason `error`, and running it again resumes it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import ConfigError, StoreError
from ..request import Request
from ..settings import mask_password
from ..stats import Stats
from ..urls import origin
from . import redis_scripts as scripts
from .admission import Admission
from .base import ExportWriter, FrontierOptions, Item, Outcome
from .codec import dump_compact, fingerprint, load_request
from .pacing import HostPacing

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between polls when no origin is ready and leases are out elsewhere
SURPLUS_WAIT = 1.0  # longest wait of an idle worker while another one polls
TAKE_AHEAD = 4  # requests an ack may take for workers waiting, besides its own next
SENT_CACHE = 200_000  # fingerprints a process remembers having sent (then starts over)
OUTAGE_FIRST_WAIT = 0.05  # then doubling, with jitter, up to OUTAGE_MAX_WAIT
OUTAGE_MAX_WAIT = 2.0
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)
T = TypeVar("T")


def connect(url: str) -> redis.Redis:
    """A client for `url` (redis://, rediss:// with TLS, unix://; ACL user and password
    in the URL), checked with a PING. The password is never shown."""
    try:
        # No retries inside redis-py: `RedisFrontier._retrying` is the one retrying path,
        # so that the grace is kept and an outage is reported once.
        client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5,
                                      health_check_interval=30, retry=Retry(NoBackoff(), 0))
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        message = mask_password(str(exc)) if str(exc) else type(exc).__name__
        raise ConfigError(f"frontier.backend = {mask_password(url)!r}: cannot reach Redis: "
                          f"{message}") from None
    return client


class _Script:
    """A Lua script called by its digest (EVALSHA), its arguments packed here."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._head = [b"EVALSHA", hashlib.sha1(source.encode()).hexdigest().encode(), b"0"]

    def call(self, prefix: bytes, args: list[Any]) -> bytes:
        return pack_command([*self._head, prefix, *args])


def pack_command(args: list[Any]) -> bytes:
    """A command in the Redis protocol: each argument (bytes, str as UTF-8, a number) as
    a bulk string."""
    parts = []
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"*%d\r\n%b" % (len(parts), b"".join(parts))


class _StepReply(NamedTuple):
    acked: int  # 1, 0 (the lease had expired: results dropped), -1 (no ack in the step)
    queued: int  # requests queued by the step
    duplicates: int  # requests seen before (by any process)
    taken: list[Request]
    due: float | None  # nothing taken: when the first ready host is due (ms), if any
    left: int  # nothing taken: requests queued in the crawl (else -1)
    leases: int  # nothing taken: leases held in the crawl (else -1)
    spent: int  # 1: crawl.max_pages first attempts have started
    free: int  # nothing taken: queued retries and redirect hops (else -1)


NO_ACK = ["", "", 0, 0, -1, 0, 0]  # STEP arguments of a step without an ack
NO_ADD = [0]  # without requests to queue
NO_TAKE = [0, 0, 0, 0, 0]  # without a take


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
    keeps_unfinished = True  # a request not acked is leased again

    def __init__(self, options: FrontierOptions, stats: Stats, *, url: str, name: str,
                 spider: Any, lease_timeout: float, cleanup: bool,
                 outage_grace: float = 60.0) -> None:
        self._options = options
        self._stats = stats
        self._feeders = 0  # start-request feeders still running (`feeding`)
        self._admission = Admission(options, stats)
        self._redis = connect(url)
        self._prefix = key_prefix(name)
        self._spider = spider
        self._lease_ms = int(lease_timeout * 1000)
        self._cleanup = cleanup
        self._grace = outage_grace
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._step_script = _Script(scripts.STEP)
        self._reap_script = _Script(scripts.REAP)
        self._release_script = _Script(scripts.RELEASE)
        self._renew_script = _Script(scripts.RENEW)
        self._leave_script = _Script(scripts.LEAVE)
        self._scripts = (self._step_script, self._reap_script, self._release_script,
                         self._renew_script, self._leave_script)
        self._load_scripts()
        # Each thread talks to Redis on a connection of its own (`_send`), and has a slot
        # of its own for the record that makes its steps idempotent (STEP).
        self._link = threading.local()
        self._links: list[Any] = []
        self._slots = itertools.count(1)
        self._step_ids = itertools.count(1)
        self._prefix_bytes = self._prefix.encode()
        self._held: set[int] = set()  # leases of this process: renewed while held
        self._ahead: deque[Request] = deque()  # taken with an ack, not handed out yet
        self._sent: set[str] = set()  # fingerprints this process already sent to Redis
        self._pacing: dict[str, HostPacing] = {}
        self._lock = threading.Lock()
        self._in_flight = 0
        self._stop_event = threading.Event()
        # Workers with nothing to take wait for this process's own changes (a request
        # finished here: its slot is free, its children queued) rather than for the poll.
        self._changed = threading.Condition(threading.Lock())
        self._generation = 0
        self._waiting = 0  # workers waiting in `next`
        # The last take found a host ready but not for this process (its share or its
        # connections in use): children queued here are then no work for its idle
        # workers, only a slot freed is.
        self._share_used = False
        self._polling = False  # a waiting worker polls for the others' changes (`next`)
        self._closing = threading.Event()
        self._exhausted = False
        self._finished = False
        self._paced = options.delay > 0 or options.autothrottle_target > 0
        self._outage_since: float | None = None
        self._wake_heartbeat = threading.Event()  # renew now: Redis is back, or closing
        self._reap_from = 0.0  # monotonic: no reaping before (just after an outage)
        self._last_counts = {"queued": 0, "leases": 0, "seen": 0}
        self.round_trips = 0
        now = self._now_ms()  # join the crawl: the others' shares make room at once
        self._script(self._renew_script, [now + self._lease_ms, now + self._lease_ms,
                                          self._owner])
        self._heartbeat = threading.Thread(target=self._beat, name="scraper-redis-heartbeat",
                                           daemon=True)
        self._heartbeat.start()

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    # -- the one path to Redis -----------------------------------------------------------

    def _retrying(self, call: Callable[[], T], *, retry: bool = True,
                  resend: Callable[[], None] | None = None) -> T:
        """Run `call` (one round trip); ride out an outage for up to the grace. `resend`:
        called before the call is sent again (a STEP then looks for what the lost attempt
        did)."""
        attempt = reloads = 0
        reload = False
        while True:
            with self._lock:
                self.round_trips += 1
            try:
                if reload:
                    self._load_scripts()
                    reload = False
                result = call()
            except redis.exceptions.NoScriptError as exc:
                # Redis restarted without its script cache. In a pipeline some scripts
                # may have run (another process was loading them): sent again, the
                # scripts must look for what they did.
                reloads += 1
                if reloads > 5:
                    raise StoreError(f"Redis frontier {self._prefix}", exc) from exc
                reload = True
                if resend is not None:
                    resend()
                continue
            except TRANSIENT as exc:
                if not retry:
                    raise StoreError(f"Redis frontier {self._prefix}", exc) from exc
                wait = self._outage(exc, attempt)
                attempt += 1
                if resend is not None:
                    resend()
                if self._closing.wait(wait):
                    raise StoreError(f"Redis frontier {self._prefix}",
                                     "closed during an outage") from exc
                continue
            except redis.RedisError as exc:
                raise StoreError(f"Redis frontier {self._prefix}", exc) from exc
            if self._outage_since is not None:
                self._back()
            return result

    def _back(self) -> None:
        """Redis answers again: renew this process's leases at once, and reap nobody's
        for one lease timeout, so that every process has the time to renew its leases
        before any is taken for expired (their expiry passed during the outage)."""
        with self._lock:
            if self._outage_since is None:
                return
            log.warning("Redis is back after %.1fs", time.monotonic() - self._outage_since)
            self._outage_since = None
            self._reap_from = time.monotonic() + self._lease_ms / 1000
        self._wake_heartbeat.set()

    def _outage(self, exc: Exception, attempt: int) -> float:
        """Note an outage; the wait before the next try, or StoreError past the grace."""
        now = time.monotonic()
        with self._lock:
            if self._outage_since is None:
                self._outage_since = now
                log.warning("Redis unreachable (%s): retrying for up to %.0fs "
                            "(frontier.outage_grace)", exc, self._grace)
            since = self._outage_since
        if now - since > self._grace:
            raise StoreError(f"Redis frontier {self._prefix}",
                             f"unreachable for more than frontier.outage_grace "
                             f"({self._grace:.0f}s): {exc}") from exc
        wait = min(OUTAGE_MAX_WAIT, OUTAGE_FIRST_WAIT * 2 ** attempt)
        wait = wait / 2 + random.uniform(0, wait / 2)
        return min(wait, max(0.01, since + self._grace - now))  # one last try at the end

    def _load_scripts(self) -> None:
        for script in self._scripts:
            self._redis.script_load(script.source)

    def _send(self, packed: bytes) -> Any:
        """One command, packed, on this thread's connection, and its reply. redis-py's
        connection (TLS, ACL, unix sockets, health checks), without its client and pool
        layers: a page's round trip is one script call, packed here at once."""
        link = self._link
        connection = getattr(link, "connection", None)
        if connection is None:
            connection = link.connection = self._redis.connection_pool.make_connection()
            with self._lock:
                self._links.append(connection)
        try:
            connection.send_packed_command([packed])
            return connection.read_response()
        except redis.ResponseError:
            raise  # the reply was read: the connection is in step
        except BaseException:
            connection.disconnect()  # a reply may be left unread: start afresh
            raise

    def _script(self, script: _Script, args: list[Any], *, retry: bool = True) -> Any:
        """Run one script by its digest (no SCRIPT EXISTS check per round trip; a missing
        script is loaded by `_retrying`)."""
        return self._retrying(lambda: self._send(script.call(self._prefix_bytes, args)),
                              retry=retry)

    # -- the step: ack, children, next requests ------------------------------------------

    def _encode(self, request: Request) -> str:
        counts = request.attempt == 1 and not request.redirect_chain
        return ("1" if counts else "0") + dump_compact(self._spider, request)

    def _add_args(self, requests: Iterable[Request]) -> tuple[list[Any], list[str], int]:
        """The STEP's ADD arguments for the requests not sent before by this process:
        (args, their fingerprints, duplicates dropped here)."""
        args: list[Any] = [0]
        keys: list[str] = []
        local_duplicates = 0
        sent = self._sent
        strip = self._options.strip_session_ids
        for request in self._admission.admit(requests):
            key = ""  # dont_filter: no dedup
            if not request.dont_filter:
                key = fingerprint(request, strip)
                if key in sent:
                    local_duplicates += 1
                    continue
                keys.append(key)
            args += [key, origin(request.url), self._encode(request), request.priority]
        args[0] = (len(args) - 1) // 4
        return args, keys, local_duplicates

    def _sent_now(self, keys: list[str], duplicates: int) -> None:
        with self._lock:
            if len(self._sent) + len(keys) > SENT_CACHE:
                self._sent.clear()  # bounded memory; Redis stays the authority on what was seen
            self._sent.update(keys)  # only once Redis has them
        if duplicates:
            self._stats.inc("filtered_duplicate", duplicates)

    def _take_args(self, want: int) -> list[Any]:
        options = self._options
        expiry = self._now_ms() + self._lease_ms
        return [want, int(options.delay * 1000), expiry, options.max_pages, expiry]

    def _step(self, ack: list[Any], add: list[Any], take: list[Any]) -> _StepReply:
        """One STEP round trip (see `redis_scripts.STEP`). Its own id makes it idempotent:
        sent again after a lost reply, it answers what it did the first time."""
        link = self._link
        slot = getattr(link, "slot", None)
        if slot is None:
            slot = link.slot = str(next(self._slots))
        args = [self._now_ms(), self._options.per_host, self._owner, slot,
                next(self._step_ids), "0", *ack, *add, *take]
        script = self._step_script

        def resend() -> None:
            args[5] = "1"

        reply = self._retrying(lambda: self._send(script.call(self._prefix_bytes, args)),
                               resend=resend)
        return self._parse_step(reply)

    def _parse_step(self, reply: bytes) -> _StepReply:
        head, _, body = reply.partition(b"\n")
        acked, queued, duplicates, count, due, left, leases, spent, free = head.split(b" ")
        requests = []
        position = 0
        spider = self._spider
        for _ in range(int(count)):
            end = body.index(b"\n", position)
            lease_id, close, length = body[position:end].split(b" ")
            position = end + 1 + int(length)
            request = load_request(spider, body[end + 2:position].decode(), int(lease_id))
            if close != b"0":  # this process gives a connection to the host back (see TAKE)
                request.headers = {**(request.headers or {}), "Connection": "close"}
                self._stats.inc("connections_given_back")
            requests.append(request)
        if requests:
            with self._lock:
                self._held.update(r.store_id for r in requests if r.store_id is not None)
        return _StepReply(int(acked), int(queued), int(duplicates), requests,
                          None if due == b"-" else float(due), int(left), int(leases),
                          int(spent), int(free))

    def add(self, requests: Iterable[Request]) -> int:
        """Queue requests not seen by any process. Fingerprints this process already sent
        are dropped here, without a round trip (most links on a page were seen before)."""
        args, keys, local_duplicates = self._add_args(requests)
        queued = duplicates = 0
        if args[0]:
            reply = self._step(NO_ACK, args, NO_TAKE)
            queued, duplicates = reply.queued, reply.duplicates
            if queued and not self._share_used:
                self._changed_here(queued)
        self._sent_now(keys, duplicates + local_duplicates)
        return queued

    # -- handing out ---------------------------------------------------------------------

    def _hand_out(self, request: Request) -> Request:
        with self._lock:
            self._in_flight += 1
        return request

    def _changed_here(self, waking: int) -> None:
        """Wake up to `waking` workers waiting in `next` (-1: all of them)."""
        with self._changed:
            self._generation += 1
            if waking < 0:
                self._changed.notify_all()
            else:
                self._changed.notify(waking)

    def next(self) -> Request | None:
        waited = False
        while not self._stop_event.is_set():
            try:
                return self._hand_out(self._ahead.popleft())
            except IndexError:
                pass
            generation = self._generation
            reply = self._step(NO_ACK, NO_ADD, self._take_args(1))
            requests, due = reply.taken, reply.due
            self._share_used = not requests and bool(due) and int(due) <= self._now_ms()
            if requests:
                self._ahead.extend(requests[1:])
                if waited:  # work came from elsewhere: one more waiting worker tries, and
                    self._changed_here(1)  # so on
                return self._hand_out(requests[0])
            with self._lock:
                idle = self._in_flight == 0 and not self._ahead
            # Over when nothing is leased anywhere and nothing may start: the queue is
            # empty (and no start request is still being read), or `crawl.max_pages` is
            # spent and no retry or redirect hop is left.
            if idle and reply.leases == 0 and (
                    (reply.left == 0 and not self._feeders) or (reply.spent and reply.free == 0)):
                self._exhausted = bool(reply.spent) and reply.left > 0
                self._finish_crawl()
                return None
            # Nothing to take now. This process's own changes (an ack: a slot freed,
            # children queued) wake its waiting workers (`_changed`); the other
            # processes' changes are polled for, by one waiting worker at a time (the
            # others would poll for the same thing), every POLL, or when the first
            # host is due. A worker that then takes a request wakes one more.
            now = self._now_ms()
            wait = POLL if not due or int(due) <= now else min(POLL * 4, (int(due) - now) / 1000)
            self._stats.inc("redis_idle_polls")
            waited = True
            with self._changed:
                if self._generation == generation and not self._stop_event.is_set():
                    polling = not self._polling
                    if polling:
                        self._polling = True
                    else:
                        wait = SURPLUS_WAIT
                    self._waiting += 1
                    self._changed.wait(max(wait, 0.005))
                    self._waiting -= 1
                    if polling:
                        self._polling = False
        return None

    def allow_domain(self, domain: str) -> None:
        self._admission.allow(domain)

    def feeding(self, active: bool) -> None:
        with self._lock:
            self._feeders += 1 if active else -1

    def use_connections(self, pool: Any) -> None:
        """Connections per host are shared through Redis; no working set of hosts here."""

    def _finish_crawl(self) -> None:
        self._finished = True  # `frontier.cleanup`: the keys go at close
        self.stop()

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

    def _ack_args(self, request: Request, outcome: Outcome) -> list[Any]:
        now = self._now_ms()
        retry = outcome.retry
        pause_until = 0
        if retry is not None:
            pause_until = int((time.time() + max(0.0, outcome.retry_at - time.monotonic()))
                              * 1000)
        pause, delay = self._pace(origin(request.url), outcome)
        if pause:
            pause_until = max(pause_until, now + int(pause * 1000))
        items = outcome.items
        # Stats for `scraper status` (the items are counted in their stream).
        return [request.store_id, self._encode(retry) if retry is not None else "",
                retry.priority if retry is not None else 0, pause_until, delay, len(items),
                *(json.dumps(item, default=str) for item in items), 1, "requests_done", 1]

    def finish(self, request: Request, outcome: Outcome) -> list[Item]:
        """Acknowledge the lease (items, stats, pacing and the retry), queue the children
        and, unless stopping, take the next request: one script, one round trip."""
        lease_id = request.store_id
        try:
            if lease_id is None:
                return []
            if outcome.requeue:  # cancelled by a stop: back to the queue, nothing recorded
                self._script(self._release_script, [self._options.per_host, lease_id])
                return []
            add_args, keys, local_duplicates = self._add_args(outcome.children)
            ack_args = self._ack_args(request, outcome)
            # Taking ahead saves a round trip; with a politeness delay it would let a
            # request start later than its lease's time, and the next one on time.
            take = not self._stop_event.is_set() and not self._ahead and not self._paced
            # Taken with the ack: the next request of this worker, and one for each
            # worker waiting in `next` (a few), which then makes no round trip of its own.
            with self._changed:
                waiting = self._waiting
            take_args = self._take_args(1 + min(waiting, TAKE_AHEAD)) if take else NO_TAKE
            try:
                reply = self._step(ack_args, add_args, take_args)
            except StoreError:
                self._ack_unknown(request, outcome)
                raise
            self._sent_now(keys, reply.duplicates + local_duplicates)
            taken = reply.taken
            self._ahead.extend(taken)
            if not take:  # its slot is free, its children queued: wake workers
                self._changed_here(1 + len(keys))
            elif len(taken) > 1:  # taken for workers waiting: wake them
                self._changed_here(len(taken) - 1)
            if reply.acked != 1:
                log.warning("lease of %s had expired: its results were dropped (another "
                            "process runs it again)", request.url)
                return []
            return list(outcome.items)
        finally:
            if lease_id is not None:
                with self._lock:
                    self._held.discard(lease_id)
                    self._in_flight -= 1

    def _ack_unknown(self, request: Request, outcome: Outcome) -> None:
        """Redis went away for good while this ack was out: if Redis applied it before
        (its reply lost), its items are in the stream but in no process's output, and the
        request is not run again. No process can know: each such ack is logged (the
        stream, `scraper export`, has every item exactly once)."""
        if self._outage_since is None:
            return
        self._stats.inc("redis_acks_unknown")
        log.warning("ack of %s not confirmed before Redis went away: if Redis applied it, "
                    "its %d item(s) are in the crawl's stream only (scraper export)",
                    request.url, len(outcome.items))

    def export(self, target: str, write: ExportWriter, stream: str = "") -> int:
        raise TypeError("the shared frontier's items are in its stream: `scraper export`")

    def stop(self) -> None:
        self._stop_event.set()
        self._changed_here(-1)

    def close(self) -> None:
        self._stop_event.set()
        ahead = [r.store_id for r in self._ahead if r.store_id is not None]
        self._ahead.clear()
        if ahead:  # taken ahead, never started: back to their queues for the others
            try:
                self._script(self._release_script, [self._options.per_host, *ahead],
                             retry=False)
                with self._lock:
                    self._held.difference_update(ahead)
            except StoreError as exc:
                log.warning("could not hand back %d requests (their leases expire): %s",
                            len(ahead), exc)
        self._closing.set()
        self._wake_heartbeat.set()
        self._heartbeat.join(timeout=2)
        with self._lock:
            holding = bool(self._held)
        if not holding:  # leases still held (left behind) keep their owner's share
            try:
                self._script(self._leave_script, [self._owner], retry=False)
            except StoreError as exc:
                log.debug("could not leave the crawl's process list: %s", exc)
        self._stats.inc("redis_round_trips", self.round_trips)  # heartbeat's included
        if self._finished and self._cleanup:
            try:
                self.cleanup()
            except redis.RedisError as exc:
                log.warning("frontier.cleanup: could not delete the crawl's keys: %s", exc)
        with self._lock:
            links, self._links = self._links, []
        for connection in links:
            connection.disconnect()
        self._redis.close()

    def _beat(self) -> None:
        """Renew this process's leases and reap expired ones, every third of a timeout."""
        interval = max(self._lease_ms / 3000, 0.05)
        while True:
            self._wake_heartbeat.wait(interval)
            self._wake_heartbeat.clear()
            if self._closing.is_set():
                return
            try:
                with self._lock:
                    held = list(self._held)
                now = self._now_ms()
                self._script(self._renew_script, [now + self._lease_ms, now + self._lease_ms,
                                                  self._owner, *held])
                if time.monotonic() >= self._reap_from:
                    self._script(self._reap_script, [self._now_ms(), self._options.per_host])
            except StoreError as exc:
                if not self._closing.is_set():
                    log.warning("Redis heartbeat failed: %s", exc)

    # -- robots.txt and status -----------------------------------------------------------

    def open_host(self, origin: str, delay: float | None = None) -> None:
        with self._lock:
            pacing = self._pacing.setdefault(origin, HostPacing(self._options.delay))
            pacing.raise_floor(delay)
        if delay:
            # The largest delay any process learnt holds for all of them.
            key = self._prefix + "delay"
            wanted = int(max(delay, self._options.delay) * 1000)
            current = self._retrying(lambda: self._redis.hget(key, origin))
            if current is None or int(current) < wanted:
                self._retrying(lambda: self._redis.hset(key, origin, wanted))

    def refresh_robots(self, origin: str) -> None:
        """Each process refreshes its own copy (see the robots component's inline read)."""

    # -- sessions (the cookies component keeps them here, for every process) -------------

    def load_session(self, name: str) -> str | None:
        key = self._prefix + "sessions"
        value = self._retrying(lambda: self._redis.hget(key, name))
        return value.decode() if value is not None else None

    def save_session(self, name: str, value: str) -> None:
        """Keep a session for the other processes; when Redis is gone for good (past the
        grace, the crawl is stopping) it is only logged: a session can be opened again,
        and saving it must not turn a clean stop into a crash."""
        key = self._prefix + "sessions"
        try:
            self._retrying(lambda: self._redis.hset(key, name, value))
        except StoreError as exc:
            log.warning("session %r not saved in Redis: %s", name, exc)

    @property
    def budget_exhausted(self) -> bool:
        return self._exhausted

    def counts(self) -> dict[str, int]:
        """Counts from Redis, or the last ones read while it is unreachable (progress
        reports must not wait for an outage)."""
        with self._lock:
            in_flight = self._in_flight

        def read() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(self._prefix + "queued")
            pipe.zcard(self._prefix + "leases")
            pipe.scard(self._prefix + "seen")
            return list(pipe.execute())

        try:
            queued, leases, seen = self._retrying(read, retry=False)
            self._last_counts = {"queued": int(queued or 0), "leases": int(leases),
                                 "seen": int(seen)}
        except StoreError as exc:
            log.debug("counts from before the outage: %s", exc)
        return {**self._last_counts, "in_flight": in_flight}

    def queued_left(self) -> int:
        """Queued in Redis, and taken ahead here but not started (handed back at close)."""
        return self.counts()["queued"] + len(self._ahead)

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
    owners = [record.split(b"\n", 2)[1].lstrip(b"!")
              for record in client.hvals(prefix + "lease")]
    in_stream = int(client.xlen(prefix + "items"))  # 0 when there is no stream
    return {
        "crawl": name,
        "queued": int(client.get(prefix + "queued") or 0),
        "leases": int(client.zcard(prefix + "leases")),
        "seen": int(client.scard(prefix + "seen")),
        "items_in_stream": in_stream,
        "processes": sorted({o.decode() for o in owners}),
        **stats,
        "items": in_stream,  # every item acknowledged is in the stream, exactly once
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
