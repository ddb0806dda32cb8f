"""Per-link cost: links/s of the path every link takes, on a generated link-heavy site.

usage: python bench/links.py [--pages N] [--links N] [--repeat N] [--json]

A documentation-like site (the shape of the broad-crawl profile: most of a page's links
are the same navigation on every page): each page has `--links` links, 40% root-relative
navigation repeated on every page, 20% relative links (`../api/x.html`, `x.html#frag`,
`?page=2`), 20% absolute same-site links, 10% page-specific links, 5% external, 5%
`mailto:`/`javascript:`/fragments. Pages are parsed before timing. Figures:

- `canonicalize`: distinct absolute URLs made canonical (uncached), half of them
  already canonical, half with a fragment, an upper-case host or a needless escape.
- `join_canonicalize`: each href made into its canonical URL (uncached: each distinct
  (base, href) once), the two calls the crawl makes per link.
- `link path`: what a crawl does per link from an already parsed page:
  `Response.follow_all(nodes)`, then the scheduler's check (canonicalize, trap test,
  allowed host) and the seen set; first pass over the site, caches cold.
- `crawl_path`: per page, `follow_all("a[href]")` and the memory frontier's own
  admission and dedup of the page's requests as one batch (trees built beforehand,
  caches cold); links are those followed (`mailto:` and the like are not counted).

The script uses only names that exist before and after the WHATWG change
(`scraper.urls.canonicalize`, `canonical_host`, `host_allowed`, `looks_like_trap`,
`Response.follow_all`), so it can be run against an older tree with PYTHONPATH.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from typing import Any
from urllib.parse import urljoin

from scraper import urls
from scraper.request import Request
from scraper.response import Response

SITE = "https://docs.example.org"


def make_site(pages: int, links: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    sections = ["guide", "api", "howto", "reference", "tutorial", "faq"]
    nav = [f"/en/latest/{s}/{name}.html" for s in sections
           for name in ("index", "install", "config", "usage", "advanced", "changes",
                        "errors")][: int(links * 0.4)]
    site = []
    for number in range(pages):
        section = sections[number % len(sections)]
        url = f"{SITE}/en/latest/{section}/page-{number}.html"
        hrefs = list(nav)
        for k in range(int(links * 0.2)):
            other = rng.randrange(pages)
            hrefs.append(rng.choice([f"page-{other}.html", f"../api/page-{other}.html",
                                     f"page-{other}.html#s{k}", f"?page={k}",
                                     f"./page-{other}.html"]))
        for _ in range(int(links * 0.2)):
            other = rng.randrange(pages)
            hrefs.append(f"{SITE}/en/latest/{rng.choice(sections)}/page-{other}.html")
        hrefs += [f"/en/latest/{section}/page-{number}-{k}.html"
                  for k in range(int(links * 0.1))]
        hrefs += [f"https://ext{k % 9}.example.com/path/{k}?ref=docs"
                  for k in range(int(links * 0.05))]
        hrefs += ["mailto:docs@example.org", "javascript:void(0)", "#top"] * max(
            1, int(links * 0.05) // 3)
        rng.shuffle(hrefs)
        body = "".join(f'<li><a href="{h}">link</a></li>' for h in hrefs)
        site.append((url, f"<html><head><title>p</title></head><body><ul>{body}</ul>"
                          "</body></html>"))
    return site


def _clear_caches() -> None:
    for name in ("canonicalize", "_resolve_joined", "_origin_prefix", "_base_parts",
                 "_resolve_relative"):
        cache_clear = getattr(getattr(urls, name, None), "cache_clear", None)
        if cache_clear is not None:
            cache_clear()


def join_and_canonicalize(site: list[tuple[str, str]]) -> tuple[int, float]:
    """links/s of href -> canonical URL, each distinct (base, href) once, caches cold."""
    import re

    pairs = []
    for url, html in site:
        for href in re.findall(r'href="([^"]+)"', html):
            if not href.startswith(("mailto:", "javascript:", "#")):
                pairs.append((url, href))
    pairs = list(dict.fromkeys(pairs))
    _clear_caches()
    resolve = getattr(urls, "resolve", None)
    canonicalize = urls.canonicalize
    join = getattr(urls, "join", urljoin)
    gc.collect()
    start = time.perf_counter()
    if resolve is not None:
        for base, href in pairs:
            try:
                resolve(base, href)
            except urls.BadURL:
                continue
    else:
        for base, href in pairs:
            try:
                canonicalize(join(base, href))
            except urls.BadURL:
                continue
    return len(pairs), time.perf_counter() - start


def canonicalize_absolute(site: list[tuple[str, str]]) -> tuple[int, float]:
    """links/s of canonicalize alone on distinct absolute URLs (caches cold): half are
    already canonical, half carry a fragment, an upper-case host or an escape."""
    import re

    found = {urljoin(url, href) for url, html in site
             for href in re.findall(r'href="([^"]+)"', html)
             if not href.startswith(("mailto:", "javascript:", "#"))}
    variants = []
    for number, url in enumerate(sorted(found)):
        variants.append(url if number % 2 else
                        [url + "#top", url.replace("docs.example", "Docs.Example"),
                         url.replace("page-", "%70age-")][number % 3])
    _clear_caches()
    gc.collect()
    start = time.perf_counter()
    for url in variants:
        try:
            urls.canonicalize(url)
        except urls.BadURL:
            continue
    return len(variants), time.perf_counter() - start


def link_path(site: list[tuple[str, str]]) -> tuple[int, float]:
    """links/s of follow_all + the scheduler's per-link check + the seen set."""
    responses = []
    for url, html in site:
        response = Response(url, 200, {"content-type": "text/html; charset=utf-8"},
                            html.encode(), Request(url))
        responses.append((response, response.css("a[href]")))
    allowed = frozenset({"docs.example.org"})
    dedup_key = getattr(urls, "dedup_key", None) or (lambda url: url)
    seen: set[str] = set()
    links = 0
    _clear_caches()
    gc.collect()
    start = time.perf_counter()
    for response, nodes in responses:
        links += len(nodes)
        for request in response.follow_all(nodes):
            try:
                url = urls.canonicalize(request.url, False)
            except urls.BadURL:
                continue
            if urls.looks_like_trap(url, 2083, 3):
                continue
            if not urls.host_allowed(urls.canonical_host(url), allowed):
                continue
            key = dedup_key(url)
            if key not in seen:
                seen.add(key)
    return links, time.perf_counter() - start


def crawl_path(site: list[tuple[str, str]]) -> tuple[int, float]:
    """links/s of what a crawl does per page with its links: `follow_all("a[href]")`,
    then the memory frontier's admission and dedup (`Admission.admit`,
    `MemoryBacking.admit`) of the page's requests, as a batch."""
    from scraper.frontier.admission import Admission
    from scraper.frontier.base import FrontierOptions
    from scraper.frontier.local import MemoryBacking
    from scraper.stats import Stats

    responses = [Response(url, 200, {"content-type": "text/html; charset=utf-8"},
                          html.encode(), Request(url)) for url, html in site]
    for response in responses:
        response.css("a[href]")  # the tree built before timing
    options = FrontierOptions(per_host=1, allowed_domains=frozenset({"docs.example.org"}),
                              max_url_length=2083, max_repeated_segments=3)
    admission = Admission(options, Stats())
    backing = MemoryBacking()
    links = 0
    _clear_caches()
    gc.collect()
    start = time.perf_counter()
    for response in responses:
        requests = response.follow_all("a[href]")
        links += len(requests)
        backing.admit(admission.admit(requests))
    return links, time.perf_counter() - start


FIGURES = {"canonicalize": canonicalize_absolute, "join_canonicalize": join_and_canonicalize,
           "link_path": link_path, "crawl_path": crawl_path}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--links", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=5, help="best of N runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    site = make_site(args.pages, args.links)
    results: dict[str, Any] = {"pages": args.pages, "links_per_page": args.links,
                               "parser": "whatwg" if hasattr(urls, "resolve") else "urllib"}
    for name, run in FIGURES.items():
        best = min((run(site) for _ in range(args.repeat)), key=lambda r: r[1])
        count, seconds = best
        results[name] = {"links": count, "seconds": round(seconds, 4),
                         "links_per_s": round(count / seconds),
                         "us_per_link": round(seconds / count * 1e6, 2)}
    if args.json:
        print(json.dumps(results))
    else:
        print(f"{args.pages} pages x {args.links} links ({results['parser']} parser)")
        for name in FIGURES:
            row = results[name]
            print(f"  {name:17} {row['links']:>8} links  {row['links_per_s']:>9,} links/s"
                  f"  {row['us_per_link']:>6} us/link")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
