"""Thread-safe crawl counters; the end-of-crawl snapshot is a plain dict (DESIGN.md keys)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

COUNTERS = (
    "requests",
    "responses",
    "pages",
    "items",
    "items_dropped",
    "items_invalid",
    "items_unchanged",
    "not_modified",
    "failed",
    "retries",
    "stale_retries",
    "connections_opened",
    "connections_reused",
    "connections_closed",
    "connections_evicted",
    "hosts_active",
    "spilled",
    "seen_spilled",
    "bytes_received",
    "redirects",
    "filtered_duplicate",
    "filtered_offsite",
    "filtered_depth",
    "filtered_bad_url",
    "filtered_robots",
    "filtered_trap",
    "pipeline_errors",
    "sessions_retired",
    "cache_hits",
    "cache_misses",
    "cache_revalidated",
)


class Stats:
    """Counters plus two keyed tallies: `status_counts` and `failed_reasons`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter({name: 0 for name in COUNTERS})
        self.status_counts: Counter[int] = Counter()
        self.failed_reasons: Counter[str] = Counter()

    def inc(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def maximum(self, name: str, value: int) -> None:
        """Keep the larger of the counter and `value` (a peak)."""
        with self._lock:
            if value > self._counts[name]:
                self._counts[name] = value

    def add_response(self, status: int, size: int) -> None:
        with self._lock:
            self._counts["responses"] += 1
            self._counts["bytes_received"] += size
            self.status_counts[status] += 1

    def add_failure(self, reason: str) -> None:
        with self._lock:
            self._counts["failed"] += 1
            self.failed_reasons[reason] += 1

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a saved snapshot (a resumed crawl)."""
        with self._lock:
            for name in COUNTERS:
                if isinstance(saved.get(name), int):
                    self._counts[name] = saved[name]
            self.status_counts.update({int(k): v for k, v in
                                       saved.get("status_counts", {}).items()})
            self.failed_reasons.update(saved.get("failed_reasons", {}))

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            data: dict[str, Any] = dict(self._counts)
            data["status_counts"] = {str(k): v for k, v in sorted(self.status_counts.items())}
            data["failed_reasons"] = dict(sorted(self.failed_reasons.items()))
        return data
