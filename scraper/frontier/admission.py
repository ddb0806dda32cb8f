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
        """The requests that pass; the others are counted by reason.

        `reason_to_skip` for each request, with what a page's links share worked out once
        per batch: the `scheme://authority/` of the last URL found on an allowed host
        (links to the same one skip the host check), and the counts, added up before they
        go to the stats."""
        options = self._options
        sort_query = options.sort_query
        max_length = options.max_url_length
        max_repeats = options.max_repeated_segments
        slashes = max_repeats + 3  # fewer `/` in the whole URL: no segment can repeat
        depth_limit = options.depth_limit
        allowed = self._allowed
        allowed_prefix = "\0"  # no URL starts with it
        accepted = []
        skipped: dict[str, int] = {}
        for request in requests:
            try:
                url = request.url = canonicalize(request.url, sort_query)
            except BadURL as exc:
                log.debug("skipped %s", exc)
                skipped["filtered_bad_url"] = skipped.get("filtered_bad_url", 0) + 1
                continue
            if (max_length and len(url) > max_length) or (
                    max_repeats and url.count("/") > slashes
                    and looks_like_trap(url, max_length, max_repeats)):
                log.debug("skipped a likely crawl trap: %s", url)
                skipped["filtered_trap"] = skipped.get("filtered_trap", 0) + 1
                continue
            if allowed and not url.startswith(allowed_prefix):
                if not self.host_allowed(canonical_host(url)):
                    skipped["filtered_offsite"] = skipped.get("filtered_offsite", 0) + 1
                    continue
                allowed_prefix = url[:url.index("/", url.index("://") + 3) + 1]
            if depth_limit and request.depth > depth_limit:
                skipped["filtered_depth"] = skipped.get("filtered_depth", 0) + 1
                continue
            accepted.append(request)
        for reason, count in skipped.items():
            self._stats.inc(reason, count)
        return accepted
