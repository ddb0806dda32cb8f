"""Writing items: JSON Lines, CSV or JSON, by the output path's extension.

A file is written as `PATH.part` and renamed to `PATH` when the crawl finishes (after an
fsync), so a reader never sees half a file; `-` writes JSON Lines to stdout.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError

log = logging.getLogger(__name__)
FORMATS = {".jsonl": "jsonl", ".jl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "json"}


def _json(item: dict[str, Any]) -> str:
    return json.dumps(item, ensure_ascii=False, default=str)


class Exporter:
    """Thread-safe item writer for one output."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.count = 0
        self._lock = threading.Lock()
        self._closed = False
        self._csv: csv.DictWriter[str] | None = None
        if target == "-":
            self.format = "jsonl"
            self.path: Path | None = None
            self._file: IO[str] = sys.stdout
            self._opened = True
            return
        self.path = Path(target)
        suffix = self.path.suffix.lower()
        if suffix not in FORMATS:
            raise ConfigError(
                f"-o {target}: unknown output format {suffix or '(none)'!r}; "
                f"use one of {', '.join(sorted(FORMATS))}"
            )
        self.format = FORMATS[suffix]
        self.part = self.path.with_name(self.path.name + ".part")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"-o {target}: cannot write: {exc.strerror or exc}") from exc
        if not os.access(self.path.parent, os.W_OK):
            raise ConfigError(f"-o {target}: cannot write: directory not writable")
        self._opened = False  # the .part file is created by the first write

    def _open(self) -> None:
        self._file = open(self.part, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self._opened = True
        if self.format == "json":
            self._file.write("[")

    def write(self, item: dict[str, Any]) -> bool:
        """Write one item; False when the exporter is already finalised."""
        with self._lock:
            if self._closed:
                return False
            if not self._opened:
                self._open()
            if self.format == "jsonl":
                self._file.write(_json(item) + "\n")
            elif self.format == "json":
                self._file.write(("\n" if self.count == 0 else ",\n") + _json(item))
            else:
                self._write_csv(item)
            self.count += 1
            return True

    def _write_csv(self, item: dict[str, Any]) -> None:
        if self._csv is None:
            self._csv = csv.DictWriter(self._file, fieldnames=list(item), extrasaction="ignore")
            self._csv.writeheader()
        elif not set(item) <= set(self._csv.fieldnames):
            extra = sorted(set(item) - set(self._csv.fieldnames))
            log.warning("CSV output %s: fields %s not in the header; left out", self.target, extra)
        row = {k: v if isinstance(v, str | int | float | None) else _json(v)
               for k, v in item.items()}
        self._csv.writerow(row)

    def write_and_finalise(self, items: Iterable[dict[str, Any]], keep_existing: bool) -> None:
        """Write `items` and finalise; with `keep_existing`, the items already in the final
        file (an earlier export of the same job) are carried over first."""
        if keep_existing and self.path is not None and self.path.exists():
            for item in read_items(self.path, self.format):
                self.write(item)
        for item in items:
            self.write(item)
        self.finalise()

    def abort(self) -> None:
        """Close without finalising: the `.part` file stays, the final file is untouched."""
        with self._lock:
            self._closed = True
            if self._opened and self.path is not None:
                self._file.close()

    def finalise(self) -> None:
        """Flush, fsync and rename `.part` to the final name. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.path is None:
                self._file.flush()
                return
            if not self._opened:
                self._open()
            if self.format == "json":
                self._file.write("\n]\n" if self.count else "]\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.part, self.path)


def read_items(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    """The items of an output file written by an Exporter."""
    with open(path, encoding="utf-8", newline="") as handle:
        if fmt == "jsonl":
            for line in handle:
                if line.strip():
                    yield json.loads(line)
        elif fmt == "csv":
            yield from csv.DictReader(handle)
        else:
            yield from json.load(handle)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write a JSON document (stats) via a temporary file and rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    buffer = io.StringIO()
    json.dump(data, buffer, indent=2, sort_keys=True, default=str)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(buffer.getvalue() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
