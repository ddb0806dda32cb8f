"""scraper: a concurrent web-scraping framework built around one shared HTTP connection pool.

The public API is re-exported here; heavy modules (urllib3, selectolax) load only when a
name that needs them is first used, so `scraper --help` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    CloseSpider,
    ConfigError,
    DropItem,
    FetchError,
    FormError,
    Retry,
    ScraperError,
    SpiderNotFound,
)

if TYPE_CHECKING:
    from .api import build_crawler, crawl
    from .engine import CrawlResult
    from .request import Failure, Request
    from .response import Response
    from .sitemap import SitemapSpider
    from .spider import Spider

__all__ = [
    "CloseSpider",
    "ConfigError",
    "CrawlResult",
    "DropItem",
    "Failure",
    "FetchError",
    "FormError",
    "Request",
    "Response",
    "Retry",
    "ScraperError",
    "SitemapSpider",
    "Spider",
    "SpiderNotFound",
    "build_crawler",
    "crawl",
]
__version__ = "0.1.0"

_LAZY = {
    "Request": "request",
    "Failure": "request",
    "Response": "response",
    "Spider": "spider",
    "SitemapSpider": "sitemap",
    "crawl": "api",
    "build_crawler": "api",
    "CrawlResult": "engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'scraper' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
