"""robots.txt rules (RFC 9309), parsed with protego: the one module that knows protego.

- 2xx: the file's rules (the first 500 KiB, as the RFC allows).
- 4xx: no rules, everything allowed.
- 5xx or unreachable (after the retry policy's attempts): everything disallowed.
`Crawl-delay` becomes the host's delay between request starts (Scrapy ignores it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from protego import Protego

MAX_ROBOTS_BYTES = 500 * 1024


@dataclass
class RobotsPolicy:
    """What one origin's robots.txt allows, and until when it is trusted."""

    rules: Protego | None
    allow_all: bool
    expires: float
    sitemaps: list[str] = field(default_factory=list)

    def allowed(self, url: str, user_agent: str) -> bool:
        if self.rules is None:
            return self.allow_all
        return bool(self.rules.can_fetch(url, user_agent))

    def crawl_delay(self, user_agent: str) -> float | None:
        if self.rules is None:
            return None
        delay = self.rules.crawl_delay(user_agent)
        return float(delay) if delay is not None else None

    def expired(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.expires


def robots_url(origin: str) -> str:
    return f"{origin}/robots.txt"


def policy_from_response(status: int | None, body: bytes, ttl: float) -> RobotsPolicy:
    """The policy for a robots.txt response; `status` None means it could not be fetched."""
    expires = time.monotonic() + ttl
    if status is not None and 200 <= status < 300:
        text = body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
        rules = Protego.parse(text)
        return RobotsPolicy(rules, True, expires, list(rules.sitemaps))
    if status is not None and 400 <= status < 500:
        return RobotsPolicy(None, True, expires)
    return RobotsPolicy(None, False, expires)
