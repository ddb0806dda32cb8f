"""The supervising thread of a crawl: starts the workers, enforces the job deadline and
the stop conditions, handles interrupts, reports progress, checkpoints the stats.

Signal handlers only count signals (they may run while this thread holds any lock); the
supervisor acts on them between waits.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

CANCEL_GRACE = 1.0  # seconds given to workers to wind down after a hard stop
LOG_INTERVAL = 10.0
SIGNAL_POLL = 0.1  # how often the supervisor looks for signals received
STATS_CHECKPOINT = 1.0  # with a jobdir, how often the stats are saved


class Supervisor:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.finish_reason: str | None = None
        self._reason_lock = threading.Lock()
        self._interrupts = 0
        self._signals_received = 0
        self._hard_stop_at: float | None = None
        self._interrupt_at: float | None = None
        self._workers_done = threading.Event()
        self._wake = threading.Event()
        self._live_workers = 0
        self._live_lock = threading.Lock()
        self._started = time.monotonic()

    @property
    def hard_stopped(self) -> bool:
        return self._hard_stop_at is not None

    # -- running -------------------------------------------------------------------------

    def run(self, started: float, deadline: float | None) -> None:
        """Start the workers and supervise them until they are done (or left behind)."""
        self._started = started
        workers = self._engine.settings.crawl.workers
        threads = [threading.Thread(target=self._work, name=f"scraper-worker-{i}", daemon=True)
                   for i in range(workers)]
        self._live_workers = len(threads)
        previous = self._install_signals()
        try:
            for thread in threads:
                thread.start()
            self._supervise(threads, deadline)
        finally:
            self._restore_signals(previous)

    def _work(self) -> None:
        try:
            self._engine.work()
        finally:
            with self._live_lock:
                self._live_workers -= 1
                if self._live_workers == 0:
                    self._workers_done.set()
                    self._wake.set()

    def _supervise(self, threads: list[threading.Thread], deadline: float | None) -> None:
        engine = self._engine
        crawl = engine.settings.crawl
        grace = crawl.shutdown_grace
        next_log = self._started + engine.progress_interval
        next_checkpoint = self._started + STATS_CHECKPOINT
        handled_signals = 0
        while True:
            while handled_signals < self._signals_received:
                handled_signals += 1
                self.interrupt()
            now = time.monotonic()
            if deadline is not None and now >= deadline and self._hard_stop_at is None:
                log.warning("deadline reached: cancelling %d requests in flight",
                            self._in_flight())
                self.halt("deadline", cancel=True)
            if self._interrupt_at is not None and self._hard_stop_at is None \
                    and now >= self._interrupt_at + grace:
                log.warning("grace period over: cancelling requests in flight")
                self.halt("interrupted", cancel=True)
            self._check_stop_conditions(now)
            if self._hard_stop_at is not None and now >= self._hard_stop_at + CANCEL_GRACE:
                stuck = [t.name for t in threads if t.is_alive()]
                log.error("workers still busy after cancellation, leaving them: %s", stuck)
                return
            if now >= next_log:
                self._report_progress()
                next_log = now + engine.progress_interval
            if engine.store is not None and now >= next_checkpoint:
                try:  # for a run resumed after a crash
                    engine.store.save_stats(engine.stats.snapshot())
                except Exception as exc:
                    log.warning("cannot checkpoint the stats: %s", exc)
                next_checkpoint = now + STATS_CHECKPOINT
            if self._workers_done.is_set():
                for thread in threads:
                    thread.join()
                return
            wakeups = [next_log, now + SIGNAL_POLL]
            if deadline is not None and self._hard_stop_at is None:
                wakeups.append(deadline)
            if self._interrupt_at is not None and self._hard_stop_at is None:
                wakeups.append(self._interrupt_at + grace)
            if self._hard_stop_at is not None:
                wakeups.append(self._hard_stop_at + CANCEL_GRACE)
            self._wake.wait(max(0.0, min(wakeups) - now))
            self._wake.clear()

    def _check_stop_conditions(self, now: float) -> None:
        """`crawl.max_items`, `crawl.max_errors`, `crawl.stop_if_no_items_for`."""
        if self.finish_reason is not None:
            return
        engine = self._engine
        crawl = engine.settings.crawl
        stats = engine.stats
        if crawl.max_items and stats.get("items") >= crawl.max_items:
            log.info("crawl.max_items (%d) reached: stopping", crawl.max_items)
            self.halt("max_items", cancel=False)
        elif crawl.max_errors and stats.get("failed") >= crawl.max_errors:
            log.warning("crawl.max_errors (%d) reached: stopping", crawl.max_errors)
            self.halt("max_errors", cancel=False)
        elif crawl.stop_if_no_items_for and \
                now - engine.last_item_at >= crawl.stop_if_no_items_for:
            log.warning("no item for %.0fs (crawl.stop_if_no_items_for): stopping",
                        crawl.stop_if_no_items_for)
            self.halt("no_items", cancel=False)

    def request_done(self) -> None:
        """A worker finished a request: `crawl.max_items` / `crawl.max_errors` are checked
        at once (between two requests, not at the next tick of this thread)."""
        crawl = self._engine.settings.crawl
        if (crawl.max_items or crawl.max_errors) and self.finish_reason is None:
            self._check_stop_conditions(time.monotonic())

    def _in_flight(self) -> int:
        try:
            return self._engine.progress()["in_flight"]
        except Exception:
            return -1

    def _report_progress(self) -> None:
        engine = self._engine
        try:
            snapshot = engine.progress()
        except Exception as exc:
            log.warning("progress unavailable: %s", exc)
            return
        elapsed = time.monotonic() - self._started
        snapshot["elapsed_s"] = round(elapsed, 3)
        snapshot["pages_per_s"] = round(snapshot["pages"] / elapsed, 1) if elapsed > 0 else 0.0
        if engine.on_progress is not None:
            try:
                engine.on_progress(snapshot)
            except Exception:
                log.exception("progress reporter raised")
            return
        log.info(
            "pages %d, items %d, %.1f pages/s, in flight %d, queued %d, failed %d, "
            "connections open %d",
            snapshot["pages"], snapshot["items"], snapshot["pages_per_s"],
            snapshot["in_flight"], snapshot["queued"], snapshot["failed"],
            snapshot["connections_open"],
        )

    # -- stopping ------------------------------------------------------------------------

    def halt(self, reason: str, *, cancel: bool) -> None:
        """Stop handing out requests; with `cancel`, also abort the ones in flight."""
        with self._reason_lock:
            if self.finish_reason is None:
                self.finish_reason = reason
        engine = self._engine
        if engine.frontier is not None:
            engine.frontier.stop()
        if cancel and self._hard_stop_at is None:
            self._hard_stop_at = time.monotonic()
            if engine.client is not None:
                engine.client.cancel_all(reason)
        self._wake.set()

    def interrupt(self) -> None:
        """First call: finish in-flight requests within the grace period. Second: cancel."""
        self._interrupts += 1
        if self._interrupts == 1:
            log.warning("interrupted: finishing requests in flight (interrupt again to cancel)")
            self._interrupt_at = time.monotonic()
            self.halt("interrupted", cancel=False)
        else:
            log.warning("interrupted again: cancelling requests in flight")
            self.halt("interrupted", cancel=True)

    def _install_signals(self) -> dict[int, Any]:
        if not self._engine.handle_signals \
                or threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: FrameType | None) -> None:
            # Only a counter: the handler may run while this thread holds any lock.
            self._signals_received += 1

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
