"""Durable crawl state in SQLite (WAL): the frontier, the seen set, items and stats.

A request row is *taken* when the scheduler loads it into memory, and is deleted only in
the transaction that commits its results: the new requests it led to and the items it
produced. A crash (even `kill -9`) loses nothing: on open, taken rows go back to the
queue, and a request whose results were not committed runs again, so every item is
committed exactly once. Items are exported from here when the crawl ends, in two
phases (recorded, written and renamed, then marked), so that an export cut short is
redone and an export that completed is never repeated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError
from ..request import Request
from .codec import dump_request, fingerprint, load_request

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    taken INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_queue ON requests (taken, priority DESC, id);
CREATE TABLE IF NOT EXISTS seen (fingerprint TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exports (
    id INTEGER PRIMARY KEY, target TEXT NOT NULL, first_item INTEGER NOT NULL,
    last_item INTEGER NOT NULL, crawl INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0,
    stream TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS http_cache (
    url TEXT PRIMARY KEY, etag TEXT, last_modified TEXT, children TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS item_fingerprints (fingerprint TEXT PRIMARY KEY) WITHOUT ROWID;
"""


class JobStore:
    """One crawl's durable state. Thread-safe: one connection, one lock."""

    def __init__(self, directory: str | Path, spider: Any, *, incremental: bool = False) -> None:
        self.directory = Path(directory)
        self.incremental = incremental  # keep only items whose fingerprint is new
        self.strip_session_ids = True  # dedup keys without session ids (the frontier sets it)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"jobdir {directory}", exc) \
                from exc
        self.path = self.directory / "state.sqlite"
        self.spider = spider
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            if "stream" not in {row[1] for row in
                                self._db.execute("PRAGMA table_info(exports)")}:
                self._db.execute("ALTER TABLE exports ADD COLUMN stream TEXT NOT NULL "
                                 "DEFAULT ''")
        except sqlite3.Error as exc:
            raise StoreError(f"jobdir {self.path}", exc) from exc
        name = self._get_state("spider")
        if name is not None and name != spider.name:
            raise ConfigError(f"jobdir {directory} belongs to spider {name!r}, not "
                              f"{spider.name!r}")
        self.resumed = False
        self._seen: int | None = None
        with self._transaction():
            self._set_state("spider", spider.name)
            self.crawl = int(self._get_state("crawl") or 1)
            if self._get_state("finished") == "1":
                # The last crawl ended: start a new one, keeping incremental caches.
                self._db.execute("DELETE FROM requests")
                self._db.execute("DELETE FROM seen")
                self._db.execute("DELETE FROM state WHERE key IN ('finished', 'stats')")
                self.crawl += 1
            else:
                taken = self._db.execute("UPDATE requests SET taken = 0 WHERE taken = 1")
                queued = self._db.execute("SELECT count(*) FROM requests").fetchone()[0]
                self.resumed = queued > 0 or taken.rowcount > 0
            self._set_state("crawl", str(self.crawl))

    # -- plumbing ------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._lock, str(self.path))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The store's lock; a failing SQLite call becomes a StoreError naming the file."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise StoreError(f"jobdir {self.path}", exc) from exc

    def seen_count(self) -> int:
        """Requests seen so far (dedup), counted once and then kept up to date."""
        if self._seen is None:
            with self._locked():
                self._seen = int(self._db.execute("SELECT count(*) FROM seen").fetchone()[0])
        return self._seen

    def _get_state(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_state(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self._locked():
            self._db.close()

    # -- frontier ------------------------------------------------------------------------

    def _insert_new(self, requests: Iterable[Request]) -> tuple[int, int]:
        queued = duplicates = 0
        for request in requests:
            if not request.dont_filter:
                inserted = self._db.execute(
                    "INSERT OR IGNORE INTO seen (fingerprint) VALUES (?)",
                    (fingerprint(request, self.strip_session_ids),),
                ).rowcount
                if not inserted:
                    duplicates += 1
                    continue
                if self._seen is not None:
                    self._seen += 1
            self._db.execute("INSERT INTO requests (priority, payload) VALUES (?, ?)",
                             (request.priority, dump_request(self.spider, request)))
            queued += 1
        return queued, duplicates

    def add(self, requests: list[Request]) -> tuple[int, int]:
        """Queue requests not seen before; returns (queued, duplicates)."""
        with self._transaction():
            return self._insert_new(requests)

    def check(self, request: Request) -> None:
        """Raise ConfigError now if the request could not be stored."""
        dump_request(self.spider, request)

    def take(self, limit: int) -> list[Request]:
        """Up to `limit` queued requests, highest priority first, marked taken."""
        with self._transaction():
            rows = self._db.execute(
                "SELECT id, payload FROM requests WHERE taken = 0 "
                "ORDER BY priority DESC, id LIMIT ?", (limit,)).fetchall()
            if rows:
                self._db.executemany("UPDATE requests SET taken = 1 WHERE id = ?",
                                     [(row[0],) for row in rows])
        return [load_request(self.spider, payload, row_id) for row_id, payload in rows]

    def queued(self) -> int:
        with self._locked():
            return int(self._db.execute("SELECT count(*) FROM requests").fetchone()[0])

    def commit(self, request: Request, children: list[Request], items: list[dict[str, Any]],
               retry: Request | None) -> tuple[int, int, list[dict[str, Any]]]:
        """Atomically: queue the children, keep the items, and ack the request (or keep it,
        updated, when it is to be retried). Incremental: an item identical to one kept by
        an earlier run is not kept again. Returns (queued, duplicates, items kept)."""
        with self._transaction():
            queued, duplicates = self._insert_new(children)
            kept = []
            for item in items:
                data = json.dumps(item, default=str, sort_keys=True)
                if self.incremental and not self._db.execute(
                        "INSERT OR IGNORE INTO item_fingerprints (fingerprint) VALUES (?)",
                        (hashlib.sha1(data.encode()).hexdigest(),)).rowcount:
                    continue
                kept.append(item)
                self._db.execute("INSERT INTO items (data) VALUES (?)", (data,))
            if request.store_id is not None:
                if retry is None:
                    self._db.execute("DELETE FROM requests WHERE id = ?", (request.store_id,))
                else:
                    self._db.execute("UPDATE requests SET payload = ? WHERE id = ?",
                                     (dump_request(self.spider, retry), request.store_id))
        return queued, duplicates, kept

    # -- stats and completion ------------------------------------------------------------

    def load_stats(self) -> dict[str, Any]:
        with self._locked():
            value = self._get_state("stats")
        return json.loads(value) if value else {}

    def save_stats(self, stats: dict[str, Any], *, finished: bool = False) -> None:
        with self._transaction():
            self._set_state("stats", json.dumps(stats, default=str))
            if finished:
                self._set_state("finished", "1")

    # -- other components' state (sessions) ----------------------------------------------

    def load_state(self, key: str) -> str | None:
        """A value a component saved under `key` (kept across runs of the jobdir)."""
        with self._locked():
            return self._get_state(key)

    def save_state(self, key: str, value: str) -> None:
        with self._locked():
            self._set_state(key, value)

    # -- incremental crawls --------------------------------------------------------------

    def validators(self, url: str) -> tuple[str | None, str | None, list[Request]]:
        """(ETag, Last-Modified, the requests the page led to last time) for `url`."""
        with self._locked():
            row = self._db.execute(
                "SELECT etag, last_modified, children FROM http_cache WHERE url = ?", (url,)
            ).fetchone()
        if row is None:
            return None, None, []
        children = [load_request(self.spider, payload, None)
                    for payload in json.loads(row[2] or "[]")]
        return row[0], row[1], children

    def remember(self, url: str, etag: str | None, last_modified: str | None,
                 children: list[Request]) -> None:
        payload = json.dumps([dump_request(self.spider, child) for child in children])
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO http_cache (url, etag, last_modified, children) "
                "VALUES (?, ?, ?, ?)", (url, etag, last_modified, payload))

    # -- export --------------------------------------------------------------------------

    def export(self, target: str, write: Callable[[Iterator[dict[str, Any]], bool], None],
               stream: str = "") -> int:
        """Export the items not exported yet through `write(items, keep_existing)`, which
        writes a temporary file and renames it to `target`; `keep_existing` when an earlier
        export of this crawl went to the same target (its items are carried over, so that
        the file stays complete). Returns how many new items were written.

        An export is recorded before it is written and marked done after the rename. One
        left unmarked by a crash counts as done if its file exists (the rename happened);
        otherwise its items are exported again, now. `stream` names one output across
        runs (its target may change with `{date}`): each stream gets every item once,
        whatever the other streams have had.
        """
        with self._transaction():
            for export_id, old_target in self._db.execute(
                    "SELECT id, target FROM exports WHERE done = 0").fetchall():
                if old_target != "-" and Path(old_target).exists():
                    self._db.execute("UPDATE exports SET done = 1 WHERE id = ?", (export_id,))
                else:
                    self._db.execute("DELETE FROM exports WHERE id = ?", (export_id,))
            start = self._db.execute(
                "SELECT coalesce(max(last_item), 0) FROM exports WHERE done = 1 AND stream = ?",
                (stream,)).fetchone()[0] + 1
            last = self._db.execute("SELECT coalesce(max(id), 0) FROM items").fetchone()[0]
            keep_existing = self._db.execute(
                "SELECT count(*) FROM exports WHERE done = 1 AND target = ? AND crawl = ?",
                (target, self.crawl)).fetchone()[0] > 0
            export_id = self._db.execute(
                "INSERT INTO exports (target, first_item, last_item, crawl, stream) "
                "VALUES (?, ?, ?, ?, ?)",
                (target, start, max(last, start - 1), self.crawl, stream)).lastrowid
        write(self._items(start, last), keep_existing)
        with self._transaction():
            self._db.execute("UPDATE exports SET done = 1 WHERE id = ?", (export_id,))
        return max(0, last - start + 1)

    def _items(self, first: int, last: int) -> Iterator[dict[str, Any]]:
        cursor = first
        while cursor <= last:
            with self._locked():
                rows = self._db.execute(
                    "SELECT id, data FROM items WHERE id BETWEEN ? AND ? ORDER BY id LIMIT 1000",
                    (cursor, last)).fetchall()
            if not rows:
                return
            for _, data in rows:
                yield json.loads(data)
            cursor = rows[-1][0] + 1


class _Transaction:
    """`with store._transaction():` BEGIN IMMEDIATE ... COMMIT under the store's lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock, path: str) -> None:
        self._db = db
        self._lock = lock
        self._path = path

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._lock.release()
            raise StoreError(f"jobdir {self._path}", exc) from exc
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: BaseException | None, *rest: object) -> None:
        try:
            if exc_type is None:
                self._db.execute("COMMIT")
            else:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
        except sqlite3.Error as error:  # e.g. the disk filled up at commit
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise StoreError(f"jobdir {self._path}", error) from error
        finally:
            self._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"jobdir {self._path}", exc) from exc
