"""Writing items: JSON Lines, CSV or JSON files, optionally compressed, one or many.

Each output file is written as `PATH.part` and renamed to `PATH` when it is complete
(after an fsync), so a reader never sees half a file; `-` writes JSON Lines to stdout.
An output is one `-o PATH` or one `[outputs.NAME]` table (`build_outputs`):

- the format by extension (`.jsonl`, `.csv`, `.json`) or by `format`; `.gz` or `.zst`
  after it compresses (`items.jsonl.gz`, `items.csv.zst`);
- `fields` selects and orders the keys written (the CSV header);
- `overwrite = false` appends to an existing file (a new gzip member / zstd frame when
  compressed; a CSV keeps its header; a JSON array is rewritten with the new items);
- `batch_items = N` starts a new file every N items, named by the `{batch}` placeholder
  (1, 2, ...; `{batch:04}` pads); each file is renamed into place as soon as it is full.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .compression import compression_of, open_reader, writer
from .errors import ConfigError

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)
FORMATS = {".jsonl": "jsonl", ".jl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "json"}
_PLACEHOLDER = re.compile(r"\{(\w*)(:[^{}]*)?\}")
_BATCH = re.compile(r"\{batch(:[^{}]*)?\}")


def _json(item: Mapping[str, Any]) -> str:
    return json.dumps(item, ensure_ascii=False, default=str)


def _csv_value(value: Any) -> Any:
    return value if isinstance(value, str | int | float | None) else _json(value)


class _File:
    """One output file being written: `PATH.part` (or stdout), renamed to `PATH` by
    `commit()`. With `keep`, an existing `PATH`'s items come first."""

    def __init__(self, path: Path | None, fmt: str, compression: str | None,
                 fields: Sequence[str] | None, keep: bool) -> None:
        self.path = path
        self.format = fmt
        self.compression = compression
        self.count = 0
        self._fields = list(fields) if fields else None
        self._csv: csv.DictWriter[str] | None = None
        self._raw: IO[bytes] | None = None
        if path is None:
            self._text: IO[str] = sys.stdout
            return
        self.part = path.with_name(path.name + ".part")
        existing = keep and path.exists() and path.stat().st_size > 0
        header_written = False
        if existing and fmt == "csv":
            header = self._read_csv_header(path)
            if header:
                self._fields = self._fields or header
                header_written = True
                if self._fields != header:
                    log.warning("CSV output %s: appending with fields %s to a file whose "
                                "header is %s", path, self._fields, header)
        if existing and fmt != "json":  # the bytes as they are, then a new member/frame
            shutil.copyfile(path, self.part)
            self._raw = open(self.part, "ab")  # noqa: SIM115
        else:
            self._raw = open(self.part, "wb")  # noqa: SIM115
        self._stream = writer(self._raw, compression)
        self._text = io.TextIOWrapper(self._stream, encoding="utf-8", newline="")
        if fmt == "json":
            self._text.write("[")
            if existing:  # a JSON array cannot be appended to: its items are written again
                for item in read_items(path):
                    self.write(item)
        if header_written and self._fields:
            self._csv = self._csv_writer(self._fields)

    def _read_csv_header(self, path: Path) -> list[str]:
        with open_reader(path, self.compression) as raw, \
                io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
            return next(csv.reader(text), [])

    def _csv_writer(self, fields: list[str]) -> csv.DictWriter[str]:
        return csv.DictWriter(self._text, fieldnames=fields, extrasaction="ignore", restval="")

    def write(self, item: Mapping[str, Any]) -> None:
        if self.format == "jsonl":
            self._text.write(_json(item) + "\n")
        elif self.format == "json":
            self._text.write(("\n" if self.count == 0 else ",\n") + _json(item))
        else:
            self._write_csv(item)
        self.count += 1

    def _write_csv(self, item: Mapping[str, Any]) -> None:
        if self._csv is None:
            self._csv = self._csv_writer(self._fields or list(item))
            self._csv.writeheader()
        elif self._fields is None and not set(item) <= set(self._csv.fieldnames):
            extra = sorted(set(item) - set(self._csv.fieldnames))
            log.warning("CSV output %s: fields %s not in the header; left out", self.path, extra)
        self._csv.writerow({k: _csv_value(v) for k, v in item.items()})

    def commit(self) -> None:
        """Complete the file and rename it into place."""
        self.close()
        self.rename()

    def close(self) -> None:
        """Complete the `.part` file: end the JSON array, flush, fsync, close."""
        if self.format == "json":
            self._text.write("\n]\n" if self.count else "]\n")
        elif self.format == "csv" and self._csv is None and self._fields:
            self._csv_writer(self._fields).writeheader()  # no items: the header alone
        self._text.flush()
        if self._raw is None:
            return
        self._text.detach()
        if self._stream is not self._raw:
            self._stream.close()  # ends the gzip member / zstd frame
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()

    def rename(self) -> None:
        if self._raw is not None:
            assert self.path is not None
            os.replace(self.part, self.path)

    def abort(self) -> None:
        """Close, leaving the `.part` file with what was written so far (flushed: it stays
        readable, up to the last whole item the disk took); the final file is untouched."""
        if self._raw is None or self._raw.closed:
            return
        try:
            self._text.flush()
            if self._stream is not self._raw:
                self._stream.flush()  # a compressed stream: what it holds, still readable
            self._raw.flush()
        finally:
            self._raw.close()


class Exporter:
    """Thread-safe item writer for one output (one file, stdout, or numbered batches).

    `target` is the output's path, or its path template with `{batch}` left in; `stream`
    names the output across runs (before placeholders such as `{date}` are filled), so
    that a job store can give each output every item exactly once.
    """

    def __init__(self, target: str, *, format: str = "", fields: Sequence[str] = (),
                 overwrite: bool = True, batch_items: int = 0, label: str = "",
                 stream: str = "") -> None:
        self.target = target
        self.stream = stream or target
        self.label = label or f"-o {target}"
        self.fields = tuple(fields) or None
        self.overwrite = overwrite
        self.batch_items = batch_items
        self.count = 0  # items written by this exporter (not those carried over)
        self.batches = 0  # batch files completed
        self._lock = threading.Lock()
        self._closed = False
        self.finalised = False  # renamed into place, complete (not aborted)
        self._file: _File | None = None
        self._keep = not overwrite
        self._next_batch = 1
        self._pending: list[_File] = []  # full batches renamed only by finalise()
        self._defer_renames = False
        if target == "-":
            self.format = format or "jsonl"
            self.compression: str | None = None
            self.path: Path | None = None
            if batch_items:
                raise ConfigError(f"{self.label}: batch_items needs a file path, not stdout")
            return
        self.path = Path(target)
        self.compression, name = compression_of(self.path)
        suffix = Path(name).suffix.lower()
        if format:
            self.format = format
        elif suffix in FORMATS:
            self.format = FORMATS[suffix]
        else:
            raise ConfigError(
                f"{self.label}: unknown output format {suffix or '(none)'!r}; use one of "
                f"{', '.join(sorted(FORMATS))} (then .gz or .zst to compress), or set format"
            )
        if batch_items:
            if not _BATCH.search(self.path.name) or _BATCH.search(str(self.path.parent)):
                raise ConfigError(f"{self.label}: batch_items needs a {{batch}} placeholder "
                                  "in the file name (out/items-{batch}.jsonl)")
            self._batch_name = re.compile(
                "".join(r"(\d+)" if part is None else re.escape(part)
                        for part in _split_batch(self.path.name)) + r"\Z")
        elif _BATCH.search(target):
            raise ConfigError(f"{self.label}: the {{batch}} placeholder needs batch_items")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{self.label}: cannot write: {exc.strerror or exc}") from exc
        if not os.access(self.path.parent, os.W_OK):
            raise ConfigError(f"{self.label}: cannot write: directory not writable")
        if batch_items and not overwrite:
            self._next_batch = self._last_batch() + 1

    def __repr__(self) -> str:
        return f"<Exporter {self.target} {self.format}>"

    def batch_path(self, number: int) -> Path:
        """The file of batch `number` (1, 2, ...)."""
        assert self.path is not None
        return self.path.with_name(_BATCH.sub(
            lambda match: format(number, (match.group(1) or ":")[1:]), self.path.name))

    def _last_batch(self) -> int:
        assert self.path is not None
        numbers = [int(match.group(1)) for child in self.path.parent.iterdir()
                   if (match := self._batch_name.match(child.name))]
        return max(numbers, default=0)

    def _open(self) -> _File:
        if self.path is None:
            return _File(None, self.format, None, self.fields, keep=False)
        if self.batch_items:
            path = self.batch_path(self._next_batch)
            self._next_batch += 1
            return _File(path, self.format, self.compression, self.fields, keep=False)
        return _File(self.path, self.format, self.compression, self.fields, keep=self._keep)

    def _select(self, item: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.fields is None:
            return item
        return {key: item[key] for key in self.fields if key in item}

    def write(self, item: Mapping[str, Any]) -> bool:
        """Write one item; False when the exporter is already finalised."""
        with self._lock:
            if self._closed:
                return False
            if self._file is None:
                self._file = self._open()
            self._file.write(self._select(item))
            self.count += 1
            if self.batch_items and self._file.count >= self.batch_items:
                if self._defer_renames:
                    self._file.close()
                    self._pending.append(self._file)
                else:
                    self._file.commit()
                self._file = None
                self.batches += 1
            return True

    def write_and_finalise(self, items: Iterable[dict[str, Any]], keep_existing: bool) -> None:
        """Write `items` and finalise; with `keep_existing` (an earlier export of the same
        job went to this output) what is already there is kept: the file's items come
        first, or new batches are numbered after the existing ones.

        Batches are all renamed at the end, together: an export cut short leaves only
        `.part` files, and its redo numbers its batches as this one did."""
        with self._lock:
            self._defer_renames = True
            if keep_existing and self._file is None and not self._closed:
                self._keep = True
                if self.batch_items:
                    self._next_batch = max(self._next_batch, self._last_batch() + 1)
        for item in items:
            self.write(item)
        self.finalise()

    def abort(self) -> None:
        """Close without finalising: the `.part` file stays, the final file is untouched."""
        with self._lock:
            self._closed = True
            for file in [*self._pending, self._file]:
                if file is not None:
                    file.abort()

    def finalise(self) -> None:
        """Complete the output: the last (or only) file renamed into place. Idempotent.
        Without items, a single-file output is still written (empty); batches are not."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._file is None and not self.batch_items:
                self._file = self._open()
            if self._file is not None:
                self._file.close()
                self._pending.append(self._file)
                if self.batch_items:
                    self.batches += 1
                self._file = None
            for file in self._pending:
                file.rename()
            self._pending.clear()
            self.finalised = True


def _split_batch(name: str) -> list[str | None]:
    """`items-{batch}.jsonl` -> ["items-", None, ".jsonl"]: None where a number goes."""
    parts: list[str | None] = []
    last = 0
    for match in _BATCH.finditer(name):
        parts += [name[last:match.start()], None]
        last = match.end()
    return [*parts, name[last:]]


def read_items(path: str | Path, fmt: str | None = None) -> Iterator[dict[str, Any]]:
    """The items of an output file written by an Exporter (compressed or not; the format
    by extension unless given)."""
    compression, name = compression_of(path)
    fmt = fmt or FORMATS.get(Path(name).suffix.lower(), "jsonl")
    with open_reader(path, compression) as raw, \
            io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle:
        if fmt == "jsonl":
            for line in handle:
                if line.strip():
                    yield json.loads(line)
        elif fmt == "csv":
            yield from csv.DictReader(handle)
        else:
            yield from json.load(handle)


# -- building the outputs of a crawl ----------------------------------------------------------


def fill_placeholders(path: str, values: Mapping[str, Any], label: str) -> str:
    """`path` with `{name}` placeholders replaced by `values`; `{batch}` is left for the
    exporter. An unknown placeholder is a ConfigError naming `label`."""

    def replace(match: re.Match[str]) -> str:
        name, spec = match.group(1), match.group(2) or ""
        if name == "batch":
            return match.group(0)
        if name not in values:
            known = ", ".join(f"{{{key}}}" for key in [*values, "batch"])
            raise ConfigError(f"{label}: unknown placeholder {{{name}}}; use {known}")
        return format(values[name], spec[1:])

    return _PLACEHOLDER.sub(replace, path)


def build_outputs(settings: Settings, cli_paths: Sequence[str] = (), *,
                  placeholders: Mapping[str, Any] | None = None,
                  now: datetime | None = None) -> list[Exporter]:
    """The crawl's outputs: one per `-o` path when any is given (the command line replaces
    the `[outputs.NAME]` tables, as Scrapy's `-o` replaces FEEDS), else one per table.

    Paths may use `{date}` (YYYY-MM-DD), `{time}` (HHMMSS), the `placeholders` given (a job
    passes `{job}` and `{run}`; the CLI `{spider}`), and `{batch}` with batch_items.
    Two outputs may not write the same path.
    """
    when = now or datetime.now()
    values = {"date": when.strftime("%Y-%m-%d"), "time": when.strftime("%H%M%S"),
              **(placeholders or {})}
    outputs = []
    if cli_paths:
        for path in cli_paths:
            label = f"-o {path}"
            outputs.append(Exporter(fill_placeholders(path, values, label), label=label,
                                    stream=f"-o {path}"))
    else:
        for name, spec in settings.outputs.items():
            label = f"outputs.{name}.path = {spec.path!r}"
            outputs.append(Exporter(
                fill_placeholders(spec.path, values, label), format=spec.format,
                fields=spec.fields, overwrite=spec.overwrite, batch_items=spec.batch_items,
                label=label, stream=f"outputs.{name}"))
    seen: dict[str, str] = {}
    for output in outputs:
        key = output.target if output.target == "-" else str(Path(output.target).resolve())
        if key in seen:
            raise ConfigError(f"{output.label}: the same file as {seen[key]}")
        seen[key] = output.label
    return outputs


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
