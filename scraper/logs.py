"""Logging set-up for the command line: text or JSON lines, an optional log file, and a
filter that keeps secrets out of every line.

Only the standard library is used, so importing this module costs nothing measurable.

- Text lines: `2024-05-01 12:00:00,123 INFO scraper.crawler: message`.
- JSON lines: one object per line with `time` (ISO 8601, UTC), `level`, `logger`,
  `message`, plus `exc_info` (the formatted traceback) when there is one and `data`
  (structured fields such as a progress snapshot) when the record carries them.
- Secrets are redacted before a record reaches any handler's output: values of
  `Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie` and `X-Api-Key`
  headers, passwords in URLs (`scheme://user:pass@host`), and `password=`/`token=`-like
  query parameters. Tracebacks are redacted too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
REDACTED = "***"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SUMMARY_LOGGER = "scraper.summary"  # the end-of-crawl stats as one record
PROGRESS_LOGGER = "scraper.progress"

_SECRET_HEADERS = r"(?:proxy-authorization|authorization|set-cookie|cookie|x-api-key)"
_PATTERNS = (
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@'\"]*):[^\s/@'\"]*@"), rf"\1:{REDACTED}@"),
    # 'Authorization': 'Bearer x'  /  "authorization": "..."  (reprs and JSON)
    (re.compile(rf"(?i)(['\"]{_SECRET_HEADERS}['\"]\s*[:=]\s*)(['\"])(?:\\.|(?!\2).)*\2"),
     rf"\1\2{REDACTED}\2"),
    # Authorization: Basic abc  /  authorization=abc  (header lines, key=value text)
    (re.compile(rf"(?i)(?<![\w'\"-])({_SECRET_HEADERS}\s*[:=]\s*)(?!['\"\s])[^\r\n'\"}}]+"),
     rf"\1{REDACTED}"),
    # ?password=x&token=y
    (re.compile(r"(?i)([?&;](?:password|passwd|pwd|token|access_token|api_key|apikey|secret)=)"
                r"[^&#\s'\"]*"), rf"\1{REDACTED}"),
)


def redact(text: str) -> str:
    """`text` with secret values replaced by `***`."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """A handler filter: rewrites the record's message (and traceback) with `redact()`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            record.data = json.loads(redact(json.dumps(data, default=str)))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, exc_info, data."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        data = getattr(record, "data", None)
        if data is not None:
            entry["data"] = data
        return json.dumps(entry, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at emit time (a live progress display or a test
    runner may swap it after set-up)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


class _SkipLogger(logging.Filter):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.skip = name

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != self.skip


def setup(level: str = "info", fmt: str = "text", *, log_file: str | None = None,
          quiet: bool = False, summary_on_stderr: bool | None = None) -> None:
    """Configure the root logger for one command (replacing what a previous call set).

    `quiet`: only warnings and errors on stderr (a log file still gets `level`).
    `summary_on_stderr`: whether the end-of-crawl summary record is shown on stderr;
    default: in JSON format only (the text summary is printed as a table instead).
    """
    reset()
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    numeric = getattr(logging, level.upper())
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else \
        logging.Formatter(TEXT_FORMAT)
    redactor = RedactSecrets()
    console = _StderrHandler()
    console.setLevel(max(numeric, logging.WARNING) if quiet else numeric)
    console.setFormatter(formatter)
    console.addFilter(redactor)
    if not (fmt == "json" if summary_on_stderr is None else summary_on_stderr):
        console.addFilter(_SkipLogger(SUMMARY_LOGGER))
    handlers: list[logging.Handler] = [console]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(numeric)
        file_handler.setFormatter(formatter)
        file_handler.addFilter(redactor)
        handlers.append(file_handler)
    root = logging.getLogger()
    for handler in handlers:
        handler._scraper_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(numeric)
    logging.getLogger("urllib3").setLevel(max(numeric, logging.WARNING))


def reset() -> None:
    """Remove and close the handlers `setup()` installed."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_scraper_handler", False):
            root.removeHandler(handler)
            handler.close()
