"""The HTTP cache (`http.cache`): responses kept in SQLite, so that a spider can be
rerun, and its parser developed, without asking the site again.

- `replay` keeps every response (3xx and 404 too, so a replay is faithful; never a
  failure, a `retry.statuses` answer or a 304) and answers from it, whatever the
  caching headers say. For the author's loop: `scraper crawl NAME --cache`.
- `rfc9111` follows the caching headers as a private cache does (RFC 9111; one client,
  so `private` responses are kept): `no-store` is not kept; a response is fresh for
  `max-age`, else until `Expires`, less its age (`Age`, `Date`, the time it took); a
  stale one (or `no-cache`) is revalidated with `If-None-Match` / `If-Modified-Since`,
  and a 304 refreshes the stored entry and answers with it. No heuristic freshness: a
  response without `max-age` or `Expires` is revalidated every time (it is kept only
  when it has a validator). The `Vary`'d request headers are part of the key
  (`Accept-Encoding` aside: bodies are stored decoded); `Vary: *` is never kept.
- `http.cache_ttl` (seconds, 0 = forever): older entries are not used, in both modes.
- `http.cache_only`: never the network; a request with nothing stored fails with
  reason `cache_miss` (stored entries are used fresh or not).

Entries are keyed by method, canonical URL and a digest of the request body; bodies are
compressed with zstd (zlib where zstd is not installed). One SQLite file in
`http.cache_dir` (WAL, one connection behind a lock) serves every worker thread, every
spider of the project, and `scraper fetch`, `parse` and `shell` (`cached_fetch`).

In the chain the component sits after `retry` and `redirects` and before `robots`: a hit
answers before robots.txt is consulted and is not paced (`ctx.fetched` stays False), and
still goes back up through `redirects` (a stored 301 is followed) and `retry`. Only real
fetches are stored. robots.txt itself is read through the cache too (`CachedClient`), so
a replayed crawl sends no request at all.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..client import Client, FetchResult
from ..errors import ConfigError, FetchError
from ..frontier import ROBOTS_META
from ..response import Response
from ..settings import Settings
from ..stats import Stats
from ..urls import BadURL, canonicalize
from .base import Component, Context

try:  # Python 3.14+, else the backport urllib3[zstd] installs
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the Python version
    try:
        from backports import zstd  # type: ignore[import-not-found, no-redef]
    except ImportError:
        zstd = None

log = logging.getLogger(__name__)

CACHE_FILE = "cache.sqlite"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT NOT NULL,          -- sha256 of method, canonical URL and body digest
    variant TEXT NOT NULL,      -- the Vary'd request headers, as JSON ('' without Vary)
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    status INTEGER NOT NULL,
    headers TEXT NOT NULL,      -- JSON list of [name, value], as received
    body BLOB NOT NULL,
    codec TEXT NOT NULL,        -- 'zstd', 'zlib'
    stored_at REAL NOT NULL,    -- unix time the response (or its last 304) arrived
    initial_age REAL NOT NULL,  -- RFC 9111 corrected initial age, seconds
    PRIMARY KEY (key, variant)
) WITHOUT ROWID;
"""
UNCACHEABLE_STATUSES = frozenset({206, 304})
NOT_REFRESHED = frozenset({"content-length", "content-encoding", "transfer-encoding",
                           "content-range", "connection", "keep-alive"})
CACHE_META = "dont_cache"  # Request.meta key: this request bypasses the cache


class CacheMiss(FetchError):
    """`http.cache_only`: nothing stored for this request."""

    reason = "cache_miss"


class Headers(Mapping[str, str]):
    """Stored response headers: case-insensitive, repeated ones joined with ", " (as
    urllib3's headers read); `items()` keeps every pair in order."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        joined: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            key = name.lower()
            if key in joined:
                joined[key] = (joined[key][0], f"{joined[key][1]}, {value}")
            else:
                joined[key] = (name, value)
        self._joined = joined

    def __getitem__(self, name: str) -> str:
        return self._joined[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._joined

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._joined.values())

    def __len__(self) -> int:
        return len(self._joined)

    def items(self) -> Any:
        return list(self.pairs)

    def getlist(self, name: str) -> list[str]:
        key = name.lower()
        return [value for header, value in self.pairs if header.lower() == key]

    def __repr__(self) -> str:
        return f"Headers({self.pairs!r})"


@dataclass(slots=True)
class Stored:
    """One stored response."""

    url: str
    status: int
    headers: Headers
    body: bytes
    stored_at: float
    initial_age: float
    variant: str

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.stored_at)

    def result(self, elapsed: float) -> FetchResult:
        """The entry as the client returns a response (for `scraper fetch` and robots)."""
        return FetchResult(self.url, self.status, self.headers, self.body, elapsed, False,
                           {"connect": 0.0, "tls": 0.0, "wait": 0.0, "body": 0.0,
                            "total": elapsed})


@dataclass(slots=True)
class Decision:
    """What to do with a request: answer with `hit`, or send it (with `validators`
    added when a stale entry is to be revalidated)."""

    hit: Stored | None = None
    validators: dict[str, str] | None = None


def _cache_control(headers: Mapping[str, str]) -> dict[str, str | None]:
    """`Cache-Control` directives, lower-cased, with their values."""
    directives: dict[str, str | None] = {}
    for part in headers.get("cache-control", "").split(","):
        name, sep, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip().strip('"') if sep else None
    if "no-cache" in headers.get("pragma", "").lower() and "cache-control" not in headers:
        directives["no-cache"] = None
    return directives


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(int(value)))
    except ValueError:
        return None


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def freshness_lifetime(headers: Mapping[str, str]) -> float | None:
    """Seconds a response is fresh for (`max-age`, else `Expires` - `Date`); None when it
    gives no explicit lifetime (RFC 9111 4.2.1; private cache: s-maxage ignored)."""
    directives = _cache_control(headers)
    if "max-age" in directives:
        return _seconds(directives["max-age"]) or 0.0
    if "expires" in headers:
        expires = _http_date(headers.get("expires"))
        if expires is None:
            return 0.0  # an invalid Expires means already expired
        date = _http_date(headers.get("date")) or time.time()
        return max(0.0, expires - date)
    return None


def initial_age(headers: Mapping[str, str], received: float, elapsed: float) -> float:
    """RFC 9111 4.2.3: the corrected initial age of a response received at `received`
    after a request that took `elapsed` seconds."""
    date = _http_date(headers.get("date"))
    apparent = max(0.0, received - date) if date is not None else 0.0
    corrected = (_seconds(headers.get("age")) or 0.0) + max(0.0, elapsed)
    return max(apparent, corrected)


def _vary(headers: Mapping[str, str]) -> list[str] | None:
    """The request header names a response varies on; None for `Vary: *`."""
    names = sorted({name.strip().lower() for name in headers.get("vary", "").split(",")
                    if name.strip()} - {"accept-encoding"})
    return None if "*" in names else names


class HttpCache:
    """The cache's store and policy, shared by the chain's component, robots.txt reads
    and the CLI tools. Thread-safe: one SQLite connection behind a lock."""

    def __init__(self, settings: Settings, stats: Stats) -> None:
        http = settings.http
        self.mode = http.cache
        self.only = http.cache_only
        self.ttl = http.cache_ttl
        self.directory = Path(http.cache_dir)
        self.path = self.directory / CACHE_FILE
        self._sort_query = settings.crawl.sort_query
        self._base_headers = {"user-agent": http.user_agent,
                              **{k.lower(): v for k, v in http.headers.items()}}
        self._stats = stats
        self._lock = threading.Lock()
        self._warned = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ConfigError(f"http.cache_dir: {self.path} was written by another "
                                  f"version of scraper (schema {version}); remove it")
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"http.cache_dir: cannot use {self.path}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from exc

    # -- keys ----------------------------------------------------------------------------

    def _key(self, method: str, url: str, body: bytes | None) -> str | None:
        try:
            canonical = canonicalize(url, self._sort_query)
        except BadURL:
            return None
        digest = hashlib.sha256(body or b"").hexdigest()
        return hashlib.sha256(f"{method.upper()}\n{canonical}\n{digest}".encode()).hexdigest()

    def _variant(self, names: list[str], headers: Mapping[str, str] | None) -> str:
        if not names:
            return ""
        sent = {**self._base_headers, **{k.lower(): v for k, v in (headers or {}).items()}}
        return json.dumps([[name, sent.get(name, "")] for name in names])

    # -- the policy ----------------------------------------------------------------------

    def before(self, method: str, url: str, headers: Mapping[str, str] | None = None,
               body: bytes | None = None) -> Decision:
        """Look the request up. Raises `CacheMiss` in `cache_only` mode with nothing
        stored. Counts `cache_hits` and `cache_misses`."""
        key = self._key(method, url, body)
        stored = self._load(key, headers) if key is not None else None
        now = time.time()
        if stored is not None and self.ttl and now - stored.stored_at > self.ttl:
            stored = None
        if stored is not None and (self.only or self._fresh(stored, headers, now)):
            self._stats.inc("cache_hits")
            return Decision(hit=stored)
        self._stats.inc("cache_misses")
        if self.only:
            raise CacheMiss(f"not in the cache ({self.path}) and http.cache_only is set",
                            url)
        if stored is None or self.mode != "rfc9111":
            return Decision()
        return Decision(validators=self._validators(stored, headers))

    def _fresh(self, stored: Stored, headers: Mapping[str, str] | None, now: float) -> bool:
        if self.mode == "replay":
            return True
        request = _cache_control({k.lower(): v for k, v in (headers or {}).items()})
        if "no-cache" in request or "no-store" in request:
            return False
        response = _cache_control(stored.headers)
        if "no-cache" in response or "no-store" in response:
            return False
        lifetime = freshness_lifetime(stored.headers)
        if lifetime is None:
            return False
        age = stored.age(now)
        limit = _seconds(request.get("max-age")) if "max-age" in request else None
        return age < lifetime and (limit is None or age <= limit)

    @staticmethod
    def _validators(stored: Stored, headers: Mapping[str, str] | None) -> dict[str, str]:
        sent = {k.lower() for k in headers or {}}
        if "if-none-match" in sent or "if-modified-since" in sent:
            return {}  # the caller's own conditional request: leave it alone
        validators = {}
        if "etag" in stored.headers:
            validators["If-None-Match"] = stored.headers["etag"]
        if "last-modified" in stored.headers:
            validators["If-Modified-Since"] = stored.headers["last-modified"]
        return validators

    def after(self, method: str, url: str, headers: Mapping[str, str] | None,
              body: bytes | None, status: int, response_headers: Mapping[str, str],
              response_body: bytes, elapsed: float) -> Stored | None:
        """A response came from the network: store it if it may be kept. For a 304 that
        answers a revalidation, refresh the stored entry and return it (the caller
        answers with it); else None."""
        key = self._key(method, url, body)
        if key is None or self.only:
            return None
        now = time.time()
        received = Headers([(str(k), str(v)) for k, v in response_headers.items()])
        if status == 304:
            return self._refresh(key, method, headers, received, now, elapsed) \
                if self.mode == "rfc9111" else None
        if status in UNCACHEABLE_STATUSES or not self._storable(method, headers, received):
            return None
        names = _vary(received) if self.mode == "rfc9111" else []
        if names is None:
            return None
        self._save(key, self._variant(names, headers), method, url, status, received.pairs,
                   response_body, now, initial_age(received, now, elapsed))
        return None

    def _storable(self, method: str, headers: Mapping[str, str] | None,
                  response_headers: Mapping[str, str]) -> bool:
        if self.mode == "replay":
            return True
        if method.upper() not in ("GET", "HEAD"):
            return False
        request = _cache_control({k.lower(): v for k, v in (headers or {}).items()})
        response = _cache_control(response_headers)
        if "no-store" in request or "no-store" in response:
            return False
        return freshness_lifetime(response_headers) is not None \
            or "etag" in response_headers or "last-modified" in response_headers

    def _refresh(self, key: str, method: str, headers: Mapping[str, str] | None,
                 response_headers: Headers, now: float,
                 elapsed: float) -> Stored | None:
        """RFC 9111 4.3.4: a 304 selects the stored response its validators came from,
        whose headers it updates."""
        stored = self._load(key, headers)
        if stored is None:
            return None
        sent = {k.lower(): v for k, v in (headers or {}).items()}
        etag = stored.headers.get("etag")
        tags = [t.strip().removeprefix("W/") for t in sent.get("if-none-match", "").split(",")]
        matches = (etag is not None and etag.removeprefix("W/") in tags) or (
            "last-modified" in stored.headers
            and sent.get("if-modified-since") == stored.headers["last-modified"])
        if not matches:
            return None
        fresh = {name.lower() for name, _ in response_headers.items()} - NOT_REFRESHED
        pairs = [(n, v) for n, v in stored.headers.pairs if n.lower() not in fresh]
        pairs += [(n, v) for n, v in response_headers.items() if n.lower() not in NOT_REFRESHED]
        refreshed = Stored(stored.url, stored.status, Headers(pairs), stored.body, now,
                           initial_age(response_headers, now, elapsed), stored.variant)
        self._save(key, stored.variant, method, stored.url, stored.status, pairs,
                   stored.body, now, refreshed.initial_age)
        self._stats.inc("cache_revalidated")
        return refreshed

    # -- the store -----------------------------------------------------------------------

    def _load(self, key: str, headers: Mapping[str, str] | None) -> Stored | None:
        """The entry for `key` whose Vary'd headers match these request headers (in replay
        mode the newest entry when none does)."""
        try:
            with self._lock:
                if self._db is None:
                    return None
                rows = self._db.execute(
                    "SELECT variant, url, status, headers, body, codec, stored_at, "
                    "initial_age FROM responses WHERE key = ? ORDER BY stored_at DESC",
                    (key,)).fetchall()
        except sqlite3.Error as exc:
            self._warn("read", exc)
            return None
        chosen = None
        for row in rows:
            variant = row[0]
            names = [name for name, _ in json.loads(variant)] if variant else []
            if self._variant(names, headers) == variant:
                chosen = row
                break
        if chosen is None and rows and self.mode == "replay":
            chosen = rows[0]
        if chosen is None:
            return None
        variant, url, status, header_json, blob, codec, stored_at, age = chosen
        try:
            body = _decompress(codec, blob)
        except (ValueError, zlib.error) as exc:
            self._warn("decompress", exc)
            return None
        return Stored(url, status, Headers([(n, v) for n, v in json.loads(header_json)]),
                      body, stored_at, age, variant)

    def _save(self, key: str, variant: str, method: str, url: str, status: int,
              pairs: list[tuple[str, str]], body: bytes, stored_at: float,
              age: float) -> None:
        codec, blob = _compress(body)
        try:
            with self._lock:
                if self._db is None:
                    return
                self._db.execute(
                    "INSERT OR REPLACE INTO responses (key, variant, method, url, status, "
                    "headers, body, codec, stored_at, initial_age) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, variant, method.upper(), url, status, json.dumps(pairs), blob,
                     codec, stored_at, age))
        except sqlite3.Error as exc:
            self._warn("write", exc)

    def _warn(self, what: str, exc: Exception) -> None:
        if not self._warned:  # once: a full disk would otherwise log every page
            self._warned = True
            log.warning("the HTTP cache %s could not %s (%s): going on without it",
                        self.path, what, exc)

    def count(self) -> int:
        """Entries stored."""
        with self._lock:
            if self._db is None:
                return 0
            return int(self._db.execute("SELECT count(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _compress(body: bytes) -> tuple[str, bytes]:
    if zstd is not None:
        return "zstd", zstd.compress(body, 3)
    return "zlib", zlib.compress(body, 6)


def _decompress(codec: str, blob: bytes) -> bytes:
    if codec == "zlib":
        return zlib.decompress(blob)
    if codec == "zstd":
        if zstd is None:
            raise ValueError("this entry is zstd-compressed and zstd is not installed")
        return bytes(zstd.decompress(blob))
    raise ValueError(f"unknown codec {codec!r}")


def open_cache(settings: Settings, stats: Stats) -> HttpCache | None:
    """The project's cache when `http.cache` is on (ConfigError when it cannot be used)."""
    if settings.http.cache == "off":
        return None
    return HttpCache(settings, stats)


def cached_fetch(client: Client, cache: HttpCache | None, method: str, url: str,
                 headers: Mapping[str, str] | None = None, body: bytes | None = None, *,
                 timeout: float | None = None) -> tuple[FetchResult, str]:
    """One exchange through the cache: (the result, where it came from: `network`,
    `cache` or `revalidated`). Raises FetchError (`CacheMiss` in cache_only mode)."""
    if cache is None:
        return client.fetch(method, url, headers, body, timeout=timeout), "network"
    started = time.monotonic()
    decision = cache.before(method, url, headers, body)
    if decision.hit is not None:
        return decision.hit.result(time.monotonic() - started), "cache"
    send = {**(headers or {}), **(decision.validators or {})}
    result = client.fetch(method, url, send or None, body, timeout=timeout)
    refreshed = cache.after(method, url, send, body, result.status, result.headers,
                            result.body, result.elapsed)
    if refreshed is not None:
        return refreshed.result(result.elapsed), "revalidated"
    return result, "network"


class CachedClient:
    """A client whose `fetch` goes through the cache: what the robots component reads
    robots.txt with when the cache is on."""

    def __init__(self, client: Client, cache: HttpCache) -> None:
        self._client = client
        self._cache = cache

    def fetch(self, method: str, url: str, headers: Mapping[str, str] | None = None,
              body: bytes | None = None, *, timeout: float | None = None) -> FetchResult:
        return cached_fetch(self._client, self._cache, method, url, headers, body,
                            timeout=timeout)[0]


class CacheComponent(Component):
    name = "cache"

    def __init__(self, cache: HttpCache) -> None:
        self.cache = cache

    def on_request(self, ctx: Context) -> None:
        request = ctx.request
        if request.meta.get(ROBOTS_META) or request.meta.get(CACHE_META):
            return  # robots.txt: read by the robots component, through `CachedClient`
        try:
            decision = self.cache.before(request.method, request.url, request.headers,
                                         request.body)
        except CacheMiss as exc:
            ctx.failure = exc
            ctx.end()
            return
        if decision.hit is not None:
            hit = decision.hit
            ctx.response = Response(hit.url, hit.status, hit.headers, hit.body, request)
        elif decision.validators:
            ctx.request = request.replace(headers={**(request.headers or {}),
                                                   **decision.validators})

    def on_response(self, ctx: Context) -> None:
        response = ctx.response
        if not ctx.fetched or response is None or ctx.request.meta.get(CACHE_META):
            return
        request = ctx.request
        refreshed = self.cache.after(request.method, request.url, request.headers,
                                     request.body, response.status, response.headers,
                                     response.body, ctx.latency or 0.0)
        if refreshed is not None:
            ctx.response = Response(refreshed.url, refreshed.status, refreshed.headers,
                                    refreshed.body, request)

    def close(self) -> None:
        self.cache.close()
