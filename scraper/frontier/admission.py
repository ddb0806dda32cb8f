"""Which requests a frontier admits: canonical URL, traps, offsite, depth.

The same rules for every backend; dedup is the backend's (its seen set)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..request import Request
from ..stats import Stats
from ..urls import BadURL, canonical_host, canonicalize, host_allowed, looks_like_trap
from .base import FrontierOptions

log = logging.getLogger(__name__)


class Admission:
    def __init__(self, options: FrontierOptions, stats: Stats) -> None:
        self._options = options
        self._stats = stats

    def reason_to_skip(self, request: Request) -> str | None:
        """Canonicalise the URL in place; the filter reason, or None to queue it."""
        options = self._options
        try:
            request.url = canonicalize(request.url, options.sort_query)
        except BadURL as exc:
            log.debug("skipped %s", exc)
            return "filtered_bad_url"
        if looks_like_trap(request.url, options.max_url_length, options.max_repeated_segments):
            log.debug("skipped a likely crawl trap: %s", request.url)
            return "filtered_trap"
        if options.allowed_domains and not host_allowed(canonical_host(request.url),
                                                        options.allowed_domains):
            return "filtered_offsite"
        if options.depth_limit and request.depth > options.depth_limit:
            return "filtered_depth"
        return None

    def admit(self, requests: Iterable[Request]) -> list[Request]:
        """The requests that pass; the others are counted by reason."""
        accepted = []
        for request in requests:
            reason = self.reason_to_skip(request)
            if reason is None:
                accepted.append(request)
            else:
                self._stats.inc(reason)
        return accepted
