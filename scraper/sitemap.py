"""Sitemaps: `SitemapSpider` reads robots.txt Sitemap lines, sitemap indexes and gzip
sitemaps (https://www.sitemaps.org/protocol.html), and hands each page to a callback."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from xml.etree import ElementTree

from .request import Request
from .response import Response
from .spider import Spider

GZIP_MAGIC = b"\x1f\x8b"
MAX_SITEMAP_BYTES = 50 * 2**20  # the protocol's limit for one uncompressed sitemap
_SITEMAP_LINE = re.compile(rb"^\s*sitemap\s*:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


class SitemapError(ValueError):
    """A sitemap that cannot be read (not XML, or too large once decompressed)."""


def gunzip(body: bytes, limit: int = MAX_SITEMAP_BYTES) -> bytes:
    """Decompress a gzip file, refusing to produce more than `limit` bytes (gzip bombs)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = decompressor.decompress(body, limit + 1)
    if len(data) > limit:
        raise SitemapError(f"gzip sitemap larger than {limit} bytes once decompressed")
    return data


def sitemaps_in_robots(body: bytes) -> list[str]:
    return [m.decode("utf-8", "replace") for m in _SITEMAP_LINE.findall(body)]


def parse_sitemap(body: bytes) -> tuple[str, list[str]]:
    """`("urlset" | "sitemapindex", [loc, ...])` of a sitemap, gzipped or not."""
    if body.startswith(GZIP_MAGIC):
        body = gunzip(body)
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise SitemapError(f"not a sitemap: {exc}") from None
    kind = root.tag.rsplit("}", 1)[-1]
    if kind not in ("urlset", "sitemapindex"):
        raise SitemapError(f"not a sitemap: root element <{kind}>")
    locs = [
        element.text.strip() for element in root.iter()
        if element.tag.rsplit("}", 1)[-1] == "loc" and element.text and element.text.strip()
    ]
    return kind, locs


class SitemapSpider(Spider):
    """A spider whose pages come from sitemaps.

    - `sitemap_urls`: sitemaps, sitemap indexes or robots.txt URLs (their Sitemap lines).
    - `sitemap_rules`: `(regex, callback)` pairs; a page goes to the first rule whose
      regex it matches (callback: a method name or a callable). Default: all to `parse`.
    - `sitemap_follow`: regexes for the sitemaps of an index to follow (default: all).
    """

    sitemap_urls: list[str] = []
    sitemap_rules: list[tuple[str, str | Callable[..., Any]]] = [("", "parse")]
    sitemap_follow: list[str] = [""]

    def start_requests(self) -> Iterator[Request]:
        for url in self.sitemap_urls:
            yield Request(url, callback=self._parse_sitemap)

    def _rules(self) -> list[tuple[re.Pattern[str], Callable[..., Any]]]:
        rules = []
        for pattern, callback in self.sitemap_rules:
            if isinstance(callback, str):
                callback = getattr(self, callback)
            rules.append((re.compile(pattern), callback))
        return rules

    def _parse_sitemap(self, response: Response) -> Iterator[Request]:
        if response.url.endswith("/robots.txt"):
            for url in sitemaps_in_robots(response.body):
                yield Request(url, callback=self._parse_sitemap)
            return
        kind, locs = parse_sitemap(response.body)
        if kind == "sitemapindex":
            follow = [re.compile(p) for p in self.sitemap_follow]
            for loc in locs:
                if any(p.search(loc) for p in follow):
                    yield Request(loc, callback=self._parse_sitemap)
            return
        rules = self._rules()
        for loc in locs:
            for pattern, callback in rules:
                if pattern.search(loc):
                    yield Request(loc, callback=callback)
                    break
