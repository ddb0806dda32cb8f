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
    ("cookies", "sessions: a cookie jar each (Set-Cookie of every hop), retired when banned"),
    ("auth", "http.auth credentials, sent to their own origin only"),
    ("referer", "a Referer header with the page a link was found on"),
    ("conditional", "incremental crawls: If-None-Match / If-Modified-Since, 304s"),
    ("proxies", "http.proxies: a proxy per request by http.proxy_strategy; health, backoff"),
)
BUILT_IN_NAMES = tuple(name for name, _ in BUILT_INS)
