"""The built-in components of the chain, one concept per module, in chain order.

Request hooks run in this order before the fetch; response and failure hooks in the
reverse order. User middlewares come after them (see `middleware.py`).
"""

from __future__ import annotations

BUILT_INS = (
    ("retry", "retry decisions for failed fetches and retryable statuses (tenacity)"),
    ("redirects", "3xx with a Location becomes a new request through the frontier"),
    ("cache", "http.cache: answers from stored responses (robots.txt and delay skipped)"),
    ("robots", "robots.txt: hosts wait for it, Disallow filters, Crawl-delay paces"),
    ("conditional", "incremental crawls: If-None-Match / If-Modified-Since, 304s"),
)
BUILT_IN_NAMES = tuple(name for name, _ in BUILT_INS)
