"""Which requests a frontier admits: canonical URL, traps, offsite, depth.

The same rules for every backend; dedup is the backend's (its seen set).

The allowed domains may grow during the crawl (the hosts of start requests read lazily,
`allow`): a host is looked up label by label (`a.b.example.com`, `b.example.com`,
`example.com`, `com`), so the check costs the same with ten thousand allowed domains as
with one, and adding while workers check is safe."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..request import Request
from ..stats import Stats
from ..urls import BadURL, canonical_host, canonicalize, looks_like_trap
from .base import FrontierOptions

log = logging.getLogger(__name__)


class Admission:
    def __init__(self, options: FrontierOptions, stats: Stats) -> None:
        self._options = options
        self._stats = stats
        self._allowed = set(options.allowed_domains)

    def allow(self, domain: str) -> None:
        """Admit `domain` and its subdomains from now on (only when the allowed set is
        not empty: an empty set admits every host)."""
        self._allowed.add(domain.lower().lstrip(".").rstrip("."))

    def host_allowed(self, host: str) -> bool:
        allowed = self._allowed
        if host in allowed:
            return True
        dot = host.find(".")
        while dot >= 0:
            host = host[dot + 1:]
            if host in allowed:
                return True
            dot = host.find(".")
        return False

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
        if self._allowed and not self.host_allowed(canonical_host(request.url)):
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
