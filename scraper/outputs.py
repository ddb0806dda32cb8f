"""Where a crawl's items go: the outputs (exporters), and the list the Python API returns.

Items handed back by a frontier that does not keep them are written at once; a durable
frontier's items are exported from its store when the crawl ends (exactly once). A
write or finalise that fails (a full disk, no file descriptors left, a directory in the
way) raises `OutputError` naming the file, which stops the crawl with `error`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from .errors import OutputError
from .exporters import Exporter
from .frontier import Frontier
from .stats import Stats

log = logging.getLogger(__name__)


class ItemSink:
    def __init__(self, outputs: Sequence[Exporter], stats: Stats, *, collect: bool) -> None:
        self.outputs = list(outputs)
        self._stats = stats
        self._collect = collect
        self.items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def emit(self, items: Sequence[dict[str, Any]]) -> None:
        """Write items now (a frontier that does not keep them)."""
        for item in items:
            written = True
            for output in self.outputs:
                try:
                    written = output.write(item) and written
                except OSError as exc:
                    # Not finalised as if complete: the part file keeps what was written.
                    self._abort(output)
                    raise OutputError(f"output {output.target}", exc) from exc
            if not written:
                return  # outputs already finalised (hard stop): the items came too late
            self._stats.inc("items")
            if self._collect:
                with self._lock:
                    self.items.append(item)

    def kept(self, items: Sequence[dict[str, Any]], offered: int) -> None:
        """Items a durable frontier kept (written by `finalise`)."""
        self._stats.inc("items", len(items))
        self._stats.inc("items_unchanged", offered - len(items))
        if self._collect and items:
            with self._lock:
                self.items.extend(items)

    def finalise(self, frontier: Frontier | None) -> list[OutputError]:
        """Finalise every output (from the frontier's store when it keeps the items);
        returns the outputs that failed, each already logged."""
        errors = []
        for output in self.outputs:
            try:
                if frontier is not None and frontier.exports_items:
                    frontier.export(output.target, output.write_and_finalise, output.stream)
                else:
                    output.finalise()
            except (OSError, OutputError) as exc:
                error = exc if isinstance(exc, OutputError) else \
                    OutputError(f"output {output.target}", exc)
                log.error("cannot finalise %s", error)
                self._abort(output)
                errors.append(error)
        return errors

    def abort(self) -> None:
        for output in self.outputs:
            self._abort(output)

    @staticmethod
    def _abort(output: Exporter) -> None:
        """Close without finalising; a close that fails too (its buffer cannot be flushed
        to a full disk) has already been reported."""
        try:
            output.abort()
        except OSError as exc:
            log.debug("closing %s: %s", output.target, exc)
