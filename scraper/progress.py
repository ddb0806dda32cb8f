"""Progress while a crawl runs: a live line on a terminal, log lines everywhere else.

A reporter is a context manager and a callable: pass it to `Crawler(on_progress=...)`
with `progress_interval=reporter.interval`; the crawler calls it from its supervising
thread with a snapshot (`Crawler.progress()`).

- `LiveLine` (a terminal): one line redrawn about four times a second with rich, erased
  when the crawl ends; log records printed meanwhile appear above it. rich is imported
  here only, and only when a live line starts.
- `LogLines` (cron, pipes, `--log-format json`): an INFO record on the
  `scraper.progress` logger every five seconds, with the numbers in its `data`.
- `Silent` (`-q`): nothing.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import IO, Any

LIVE_INTERVAL = 0.25
LOG_INTERVAL = 5.0
FIELDS = ("pages", "items", "pages_per_s", "in_flight", "queued", "failed",
          "connections_open", "elapsed_s")
MODES = ("auto", "live", "log", "off")
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else \
        f"{rest // 60}:{rest % 60:02d}"


def describe(snapshot: dict[str, Any]) -> str:
    """The progress numbers as one line of plain text."""
    get = snapshot.get
    return (
        f"pages {get('pages', 0)}, items {get('items', 0)}, "
        f"{get('pages_per_s', 0.0):.1f} pages/s, in flight {get('in_flight', 0)}, "
        f"queued {get('queued', 0)}, failed {get('failed', 0)}, "
        f"connections open {get('connections_open', 0)}, "
        f"elapsed {_elapsed(get('elapsed_s', 0.0))}"
    )


class _Reporter:
    interval = LOG_INTERVAL

    def __call__(self, snapshot: dict[str, Any]) -> None:
        pass

    def __enter__(self) -> _Reporter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        pass


class Silent(_Reporter):
    """No progress at all (`-q`)."""

    interval = 60.0


class LogLines(_Reporter):
    """A log record every `interval` seconds (plain text or JSON, per the log format)."""

    def __init__(self, interval: float | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.interval = LOG_INTERVAL if interval is None else interval
        self.log = logger or logging.getLogger("scraper.progress")

    def __call__(self, snapshot: dict[str, Any]) -> None:
        data = {key: snapshot[key] for key in FIELDS if key in snapshot}
        self.log.info("%s", describe(snapshot), extra={"data": data})


class LiveLine(_Reporter):
    """A rich live line on a terminal: pages, items, pages/s, in flight, queued,
    failures, connections open, elapsed. Refreshed on each snapshot (no extra thread)."""

    interval = LIVE_INTERVAL

    def __init__(self, label: str = "crawling", *, file: IO[str] | None = None,
                 force_terminal: bool | None = None, width: int | None = None) -> None:
        self.label = label
        self._file = file
        self._force_terminal = force_terminal
        self._width = width
        self._live: Any = None
        self._started = time.monotonic()
        self.updates = 0

    def _render(self, snapshot: dict[str, Any]) -> Any:
        from rich.text import Text

        get = snapshot.get
        failed = get("failed", 0)
        return Text.assemble(
            (SPINNER[self.updates % len(SPINNER)], "cyan"),
            (f" {self.label[:24]} ", "bold"),
            (_elapsed(get("elapsed_s", time.monotonic() - self._started)), "dim"),
            ("  pages ", "dim"), (f"{get('pages', 0)}", "bold"),
            ("  items ", "dim"), (f"{get('items', 0)}", "bold green"),
            ("  ", ""), (f"{get('pages_per_s', 0.0):.1f}", "bold"), ("/s", "dim"),
            ("  in flight ", "dim"), (f"{get('in_flight', 0)}", ""),
            ("  queued ", "dim"), (f"{get('queued', 0)}", ""),
            ("  failed ", "dim"), (f"{failed}", "bold red" if failed else ""),
            ("  conns ", "dim"), (f"{get('connections_open', 0)}", ""),
            no_wrap=True, overflow="ellipsis",
        )

    def __enter__(self) -> LiveLine:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self._file, stderr=self._file is None,
                          force_terminal=self._force_terminal, width=self._width)
        self._live = Live(self._render({}), console=console, auto_refresh=False,
                          transient=True, redirect_stdout=False, redirect_stderr=True)
        self._live.start(refresh=True)
        return self

    def __call__(self, snapshot: dict[str, Any]) -> None:
        if self._live is not None:
            self.updates += 1
            self._live.update(self._render(snapshot), refresh=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def reporter(mode: str = "auto", *, is_tty: bool, log_format: str = "text",
             quiet: bool = False, label: str = "crawling") -> _Reporter:
    """The reporter for a command: `auto` is a live line on a terminal when logs are text,
    log lines otherwise; `-q` (quiet) or `off` is silent."""
    if mode not in MODES:
        raise ValueError(f"progress must be one of {', '.join(MODES)}, not {mode!r}")
    if quiet or mode == "off":
        return Silent()
    if mode == "live":
        return LiveLine(label, force_terminal=True)
    if mode == "auto" and is_tty and log_format == "text":
        return LiveLine(label)
    return LogLines()
