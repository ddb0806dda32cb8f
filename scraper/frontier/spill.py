"""The memory frontier's overflow: one temporary SQLite file, so that a crawl's memory stays
bounded however many URLs it meets.

- Queued requests: past `frontier.memory_queue` requests queued in memory, new requests
  wait in the file, and come back (highest priority, then shallowest, then oldest first)
  as the memory queue drains below half of it. While any wait there, new requests join
  them rather than overtake them, so the crawl's order stays breadth-first. A plain GET
  (most followed links) is stored as its URL, depth and Referer; any other request as
  `codec.dump_request`'s JSON; a request that cannot be stored that way (a lambda
  callback, meta that is not JSON) stays in memory.
- Seen keys: past `frontier.memory_seen` dedup keys in the memory set (`SeenSet`, 64-bit
  hashes), its hashes move to the file and the memory set starts again empty; a key not
  in memory is then looked up in the file, one query per batch of keys.

The file is created (in `frontier.spill_dir`, else the system's temporary directory) the
first time it is needed and unlinked at once: nothing is left behind, even after a
crash. It is written without syncs, since nothing in it outlives the
process (its rollback journal is in memory, so that a write that fails leaves it as it
was). Any SQLite error (a full disk) is a `StoreError` naming the file: the crawl
stops with `error`, as when a jobdir fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import ConfigError, StoreError
from ..request import Request
from .base import is_plain
from .codec import dump_request, load_request

SCHEMA = """
CREATE TABLE requests (
    rank INTEGER NOT NULL, depth INTEGER NOT NULL, id INTEGER NOT NULL,
    url TEXT NOT NULL, referer TEXT, payload TEXT,
    PRIMARY KEY (rank, depth, id)
) WITHOUT ROWID;
CREATE TABLE seen (hash INTEGER PRIMARY KEY);
"""
_SIGN = 1 << 63  # SQLite integers are signed 64-bit: a hash h is stored as h - 2**63
_LOOKUP_BATCH = 500  # hashes per `IN (...)` query (SQLite allows 32,766 parameters)
CACHE_KIB = 8192  # SQLite's page cache for the file


class SpillFile:
    """Not thread-safe: the frontier uses it under its lock."""

    def __init__(self, spider: Any, directory: str = "") -> None:
        self._spider = spider
        self._directory = directory
        self._db: sqlite3.Connection | None = None
        self.path = ""
        self.queued = 0  # requests waiting in the file
        self._next_id = 0
        self.seen = 0  # hashes in the file

    # -- plumbing ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            with self._failing("create"):
                fd, self.path = tempfile.mkstemp(prefix="scraper-spill-", suffix=".sqlite",
                                                 dir=self._directory or None)
                os.close(fd)
                try:
                    db = sqlite3.connect(self.path, check_same_thread=False,
                                         isolation_level=None)
                    db.execute("PRAGMA journal_mode=MEMORY")  # a failed write rolls back
                    db.execute("PRAGMA synchronous=OFF")
                    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                    db.executescript(SCHEMA)
                finally:
                    os.unlink(self.path)
            self._db = db
        return self._db

    @contextlib.contextmanager
    def _failing(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            if self._db is not None and self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            where = self.path or os.path.join(self._directory or tempfile.gettempdir(),
                                              "scraper-spill-*")
            raise StoreError(f"frontier spill file {where} ({action})", exc) from exc

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    # -- queued requests -----------------------------------------------------------------

    def push(self, requests: list[Request]) -> list[Request]:
        """Store the requests that can be stored; returns those that cannot."""
        rows, kept = [], []
        ids = itertools.count(self._next_id)
        for request in requests:
            if is_plain(request):
                rows.append((0, request.depth, next(ids), request.url, request.referer, None))
                continue
            try:
                payload = dump_request(self._spider, request)
            except ConfigError:
                kept.append(request)
                continue
            rows.append((-request.priority, request.depth, next(ids), request.url, None,
                         payload))
        if rows:
            db = self._connection()
            with self._failing("write"):
                db.execute("BEGIN")
                db.executemany("INSERT INTO requests (rank, depth, id, url, referer, payload)"
                               " VALUES (?, ?, ?, ?, ?, ?)", rows)
                db.execute("COMMIT")
            self._next_id = rows[-1][2] + 1
            self.queued += len(rows)
        return kept

    def pop(self, limit: int) -> list[Request]:
        """Up to `limit` stored requests, in the queue's order, removed from the file."""
        if not self.queued:
            return []
        db = self._connection()
        with self._failing("read"):
            db.execute("BEGIN")
            rows = db.execute("SELECT rank, depth, id, url, referer, payload FROM requests "
                              "ORDER BY rank, depth, id LIMIT ?", (limit,)).fetchall()
            if rows:  # the first rows in key order: one range deletes them
                db.execute("DELETE FROM requests WHERE (rank, depth, id) <= (?, ?, ?)",
                           rows[-1][:3])
            db.execute("COMMIT")
        self.queued -= len(rows)
        requests = []
        for _, depth, _, url, referer, payload in rows:
            if payload is None:
                request = Request(url)
                request.depth = depth
                request.referer = referer
            else:
                request = load_request(self._spider, payload, None)
            requests.append(request)
        return requests

    # -- seen keys -----------------------------------------------------------------------

    def add_seen(self, runs: Iterable[list[int]]) -> None:
        """Store hashes given as ascending runs, each a contiguous range of keys
        (`SeenSet.sorted_hashes`): SQLite's B-tree takes keys in order several times
        faster than at random, and one transaction per run keeps the in-memory rollback
        journal to the pages of that range, not the whole file."""
        db = self._connection()
        with self._failing("write"):
            for run in runs:
                db.execute("BEGIN")
                before = db.total_changes
                db.executemany("INSERT OR IGNORE INTO seen (hash) VALUES (?)",
                               [(h - _SIGN,) for h in run])
                self.seen += db.total_changes - before
                db.execute("COMMIT")

    def seen_among(self, hashes: list[int]) -> set[int]:
        """Those of `hashes` stored in the file."""
        if not self.seen:
            return set()
        db = self._connection()
        found: set[int] = set()
        with self._failing("read"):
            for start in range(0, len(hashes), _LOOKUP_BATCH):
                batch = [h - _SIGN for h in hashes[start:start + _LOOKUP_BATCH]]
                marks = ",".join("?" * len(batch))
                found.update(row[0] + _SIGN for row in db.execute(
                    f"SELECT hash FROM seen WHERE hash IN ({marks})", batch))
        return found
