#!/usr/bin/env python3
"""A link-heavy site crawled by the reference crawler and by the framework, alternating.

The site (generated for each invocation, served by an nginx of the script's own on a free
loopback port, `redis_scale.PrivateSite`): `--pages` pages (default 5,000) in 10 sections
`/docs/s{k}/p{i}.html`, a root page and a page per section `/docs/s{k}/index.html`, each
with exactly `--links` links (default 150), most of them repeated from page to page:

- 40% navigation, the same on every page: root-relative links to the root, the section
  pages, each with two query variants (`?lang=en`, `?lang=fr`), and a fixed set of
  popular pages;
- 10% a footer, the same on every page: absolute links (`http://127.0.0.1:PORT/...`) to
  the section pages and popular pages;
- 20% a sidebar, the same on every page of a section: relative links to the other
  sections (`../s3/index.html`) and to the first pages of its own (`p13.html`);
- about 25% links of the page's own: relative links to random pages and neighbours
  (`p12.html`, `./p12.html`, `p12.html#usage`, `../s3/p13.html`,
  `../../docs/s3/p13.html`), bare fragments (`#top`);
- 5% external links (`https://ext3.example.com/...`) and `mailto:`, `javascript:`, `tel:`.

Every page is reachable (page i links to i + 10, the next of its section). The page set,
what both crawlers fetch, is the pages, the root, the section pages and their 20 query
variants: `--pages` + 31 URLs.

Each repeat crawls it with the reference (`minimal_pool.py` from the benchmark kit: one
urllib3 PoolManager, threads, selectolax, `urljoin` + `urldefrag` + `urlsplit` per link, a
set) and with the framework (`scraper crawl bench/catalogue_spider.py`: one item per page,
every link followed, the start host's links kept), `--threads` threads each
(`crawl.workers` = `crawl.per_host` = threads; robots.txt is fetched, a 404). With
`--compare DIR` a third run per repeat crawls with the framework of another tree (its
`scraper` package imported from DIR), for before/after figures in one invocation.

For every run: pages (lines of its JSON Lines output), wall s (around the subprocess,
interpreter start-up included), pages/s, links/s (links on the pages fetched, i.e. pages
x `--links`, per wall second), CPU s per 1,000 pages (user + sys of the child), peak RSS,
nginx's requests and TCP connections, and the 1-minute load average when it started.
Then the ratios of pages/s to the reference's of the same repeat, and their medians.

usage:
  python bench/link_heavy.py [--pages 5000] [--links 150] [--threads 16] [--repeat 3]
         [--compare DIR] [--set SECTION.KEY=VALUE]... [--json PATH] [--workdir DIR]
         [--kit DIR] [--serve]

`--serve` generates and serves the site, prints its URL and waits for Ctrl-C (to point
`bench/profile_crawl.py` at it). Exit status: 0 when every run fetched the whole page set,
1 when a crawl failed or fetched another number of pages, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from crawl_vs_reference import (  # noqa: E402
    count_lines,
    default_kit,
    fmt,
    framework_command,
    read_access_log,
    reference_command,
    run_measured,
)
from redis_scale import PrivateSite  # noqa: E402

REPO = BENCH.parent
SECTIONS = 10
POPULAR = 29  # pages every page links to (navigation and footer)
STDERR_TAIL = 20
FRAGMENTS = ("top", "usage", "examples", "see-also")


# -- the site ------------------------------------------------------------------------------


def _page_path(number: int) -> str:
    return f"/docs/s{number % SECTIONS}/p{number}.html"


def _relative(directory: str, number: int, rng: random.Random) -> str:
    """A link from a page in `directory` to page `number`, spelled relatively."""
    section = f"s{number % SECTIONS}"
    name = f"p{number}.html"
    if directory == "/":
        return rng.choice([f"docs/{section}/{name}", f"./docs/{section}/{name}"])
    if directory == f"/docs/{section}/":
        return rng.choice([name, f"./{name}", f"{name}#{rng.choice(FRAGMENTS)}"])
    return rng.choice([f"../{section}/{name}", f"../../docs/{section}/{name}",
                       f"../{section}/{name}#{rng.choice(FRAGMENTS)}"])


def _sidebar(directory: str, pages: int) -> list[str]:
    """The relative links every page of `directory` shares: the other section pages and
    the first pages of its own section."""
    if directory == "/":
        return [f"docs/s{k}/index.html" for k in range(SECTIONS)] + [
            f"docs/s{n % SECTIONS}/p{n}.html" for n in range(min(pages, 40))]
    section = int(directory.split("/")[2][1:])
    return [f"../s{k}/index.html" for k in range(SECTIONS)] + [
        f"p{n}.html" for n in range(section, min(pages, section + 40 * SECTIONS), SECTIONS)]


def page_links(directory: str, own: list[int], origin: str, pages: int, links: int,
               rng: random.Random) -> list[str]:
    """The `links` hrefs of a page in `directory`; `own` are pages it always links to."""
    popular = [_page_path(n) for n in range(0, pages, max(1, pages // POPULAR))][:POPULAR]
    sections = [f"/docs/s{k}/index.html" for k in range(SECTIONS)]
    nav = ["/", *sections, *(f"{s}?lang={lang}" for s in sections for lang in ("en", "fr")),
           *popular]
    footer = [f"{origin}/", *(origin + s for s in sections), *(origin + p for p in popular)]
    nav = nav[:int(links * 0.4)]
    footer = footer[:int(links * 0.1)]
    other = ["mailto:docs@example.org", "javascript:void(0)", "tel:+15550100",
             "https://github.com/example/project",
             *(f"https://ext{k}.example.com/ref/{k}?from=docs" for k in range(5))]
    other = other[:max(0, int(links * 0.05))]
    sidebar = _sidebar(directory, pages)[:int(links * 0.2)]
    own_links = [_relative(directory, n, rng) for n in own]
    fill = links - len(nav) - len(footer) - len(other) - len(sidebar) - len(own_links)
    random_links = []
    for _ in range(max(0, fill)):
        if rng.random() < 0.08:
            random_links.append(f"#{rng.choice(FRAGMENTS)}")
        else:
            random_links.append(_relative(directory, rng.randrange(pages), rng))
    hrefs = nav + sidebar + own_links + random_links + other + footer
    return hrefs[:links]


def _html(title: str, hrefs: list[str]) -> str:
    items = "".join(f'<li><a href="{h}">{i}</a></li>' for i, h in enumerate(hrefs))
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>'
            f'<body><header><a id="top"></a></header><main><h1>{title}</h1>'
            f"<p>Reference documentation.</p><ul>{items}</ul></main></body></html>")


def generate_site(root: Path, origin: str, pages: int, links: int, seed: int = 11) -> int:
    """Write the site under `root`; return the number of URLs in its page set."""
    rng = random.Random(seed)
    for k in range(SECTIONS):
        (root / "docs" / f"s{k}").mkdir(parents=True, exist_ok=True)
    first = list(range(min(SECTIONS, pages)))
    (root / "index.html").write_text(
        _html("Documentation", page_links("/", first, origin, pages, links, rng)))
    for k in range(SECTIONS):
        directory = f"/docs/s{k}/"
        own = [n for n in (k, k + SECTIONS) if n < pages]
        (root / "docs" / f"s{k}" / "index.html").write_text(
            _html(f"Section {k}", page_links(directory, own, origin, pages, links, rng)))
    for number in range(pages):
        directory = f"/docs/s{number % SECTIONS}/"
        own = [n for n in (number + SECTIONS, number + 1, number - 1) if 0 <= n < pages]
        hrefs = page_links(directory, own, origin, pages, links, rng)
        (root / _page_path(number).lstrip("/")).write_text(_html(f"Page {number}", hrefs))
    return pages + 1 + SECTIONS * 3  # pages, root, section pages and their query variants


# -- the runs ------------------------------------------------------------------------------


@dataclass
class Run:
    name: str  # "reference", "framework" or "framework@DIR"
    index: int
    exit_code: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    pages: int
    items: int
    links_per_page: int
    server_requests: int
    server_connections: int
    load_1m: float
    stats: dict[str, Any] | None

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def links_per_s(self) -> float:
        return self.pages_per_s * self.links_per_page

    @property
    def cpu_s_per_1000_pages(self) -> float | None:
        return self.cpu_s * 1000 / self.pages if self.pages else None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index, "exit_code": self.exit_code,
                "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                "peak_rss_mb": round(self.peak_rss_mb, 1), "pages": self.pages,
                "items": self.items,
                "pages_per_s": round(self.pages_per_s, 1),
                "links_per_s": round(self.links_per_s),
                "cpu_s_per_1000_pages": None if self.cpu_s_per_1000_pages is None
                else round(self.cpu_s_per_1000_pages, 3),
                "server_requests": self.server_requests,
                "server_connections": self.server_connections,
                "load_1m": self.load_1m, "stats": self.stats}


def one_run(name: str, index: int, command: list[str], *, cwd: Path, out: Path,
            stats_path: Path | None, site: PrivateSite, links: int, workdir: Path) -> Run:
    site.rotate()
    for path in (out, stats_path):
        if path is not None:
            path.unlink(missing_ok=True)
    label = name.replace("@", "-").replace("/", "_")
    stderr = workdir / f"{label}-{index}.stderr"
    load = os.getloadavg()[0]
    code, wall, cpu, rss = run_measured(command, cwd=cwd, stdout=workdir / f"{label}.out",
                                        stderr=stderr)
    requests, connections, statuses = read_access_log(site.log)
    stats = json.loads(stats_path.read_text()) if stats_path and stats_path.exists() else None
    if code != 0:
        tail = stderr.read_text(errors="replace").splitlines()[-STDERR_TAIL:]
        print(f"{name} #{index} exited with {code}: {' '.join(command)}", file=sys.stderr)
        print("\n".join(f"  | {line}" for line in tail), file=sys.stderr)
    # pages: what nginx answered with 200 (robots.txt is a 404); the reference's output
    # can miss the lines of its last pages (written to a buffer its exit does not flush)
    return Run(name, index, code, wall, cpu, rss, statuses.get("200", 0), count_lines(out),
               links, requests, connections, round(load, 2), stats)


def print_report(runs: list[Run], header: str, expected: int) -> None:
    print(header)
    columns = ("run", "pages", "items", "wall s", "pages/s", "links/s", "CPU s/1k pages",
               "peak RSS MB", "TCP conns", "srv requests", "load 1m")
    rows = [columns] + [
        (f"{r.name} #{r.index}", f"{r.pages:,}", f"{r.items:,}", fmt(r.wall_s, 2),
         fmt(r.pages_per_s, 0), fmt(r.links_per_s, 0), fmt(r.cpu_s_per_1000_pages, 3),
         fmt(r.peak_rss_mb, 1), f"{r.server_connections:,}", f"{r.server_requests:,}",
         fmt(r.load_1m, 2))
        for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for n, row in enumerate(rows):
        print("  ".join([row[0].ljust(widths[0])]
                        + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for name in dict.fromkeys(r.name for r in runs if r.name != "reference"):
        ratios = ratios_of(runs, name)
        if ratios:
            listed = ", ".join(f"{x:.3f}" for x in ratios)
            print(f"{name}/reference pages/s: {listed}; "
                  f"median {statistics.median(ratios):.3f}")
    for r in runs:
        if r.pages != expected:
            print(f"{r.name} #{r.index}: {r.pages} pages, expected {expected}")
        if r.stats is not None:
            s = r.stats
            print(f"{r.name} #{r.index}: own pages_per_s={s.get('pages_per_s')} "
                  f"requests={s.get('requests')} failed={s.get('failed')} "
                  f"filtered_duplicate={s.get('filtered_duplicate')} "
                  f"filtered_offsite={s.get('filtered_offsite')} "
                  f"connections_opened={s.get('connections_opened')}")


def ratios_of(runs: list[Run], name: str) -> list[float]:
    reference = {r.index: r for r in runs if r.name == "reference"}
    return [r.pages_per_s / reference[r.index].pages_per_s for r in runs
            if r.name == name and r.exit_code == 0 and r.index in reference
            and reference[r.index].pages_per_s > 0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=5000)
    parser.add_argument("--links", type=int, default=150, help="links on every page")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--compare", type=Path, action="append", default=[], metavar="DIR",
                        help="also crawl with the framework of the tree DIR (repeatable)")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="framework setting (-s)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the site, outputs and logs here (default: a temporary "
                             "directory, removed at the end)")
    parser.add_argument("--kit", type=Path, default=None,
                        help="benchmark kit directory (minimal_pool.py)")
    parser.add_argument("--serve", action="store_true",
                        help="serve the site until Ctrl-C, crawl nothing")
    args = parser.parse_args(argv)
    for name in ("pages", "links", "threads", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.links < 60:
        parser.error("--links must be at least 60 (navigation, footer, own links)")
    for tree in args.compare:
        if not (tree / "scraper" / "__init__.py").is_file():
            parser.error(f"--compare {tree}: no scraper package there")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kit = (args.kit or default_kit()).resolve()
    if not (kit / "minimal_pool.py").is_file():
        print(f"error: {kit / 'minimal_pool.py'} not found; give the kit with --kit or "
              "SCRAPER_BENCH_KIT", file=sys.stderr)
        return 2
    temp = None
    if args.workdir is None:
        temp = tempfile.mkdtemp(prefix="link-heavy-")
        workdir = Path(temp)
        workdir.chmod(0o755)  # nginx's worker (another user) reads the site below it
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "site"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    site = PrivateSite(root, workdir)  # serves `root`; the site is written once it has a port
    started = datetime.now().astimezone()
    runs: list[Run] = []
    try:
        expected = generate_site(root, site.url, args.pages, args.links)
        url = site.url + "/"
        if args.serve:
            print(f"serving {expected} URLs at {url} (Ctrl-C or SIGTERM to stop)", flush=True)
            signal.signal(signal.SIGINT, signal.default_int_handler)  # also in background
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            with contextlib.suppress(KeyboardInterrupt):
                site.process.wait()
            return 0
        frameworks = [("framework", REPO)] + [(f"framework@{tree}", tree.resolve())
                                              for tree in args.compare]
        for i in range(1, args.repeat + 1):
            out = workdir / "reference.jsonl"
            runs.append(one_run("reference", i,
                                reference_command(kit, url, args.threads, out, None),
                                cwd=REPO, out=out, stats_path=None, site=site,
                                links=args.links, workdir=workdir))
            for name, tree in frameworks:
                out = workdir / "framework.jsonl"
                stats = workdir / "framework.stats.json"
                command = framework_command(url, "plain", args.threads, out, stats, None,
                                            None, args.extra)
                runs.append(one_run(name, i, command, cwd=tree, out=out, stats_path=stats,
                                    site=site, links=args.links, workdir=workdir))
            if any(r.exit_code != 0 for r in runs):
                break
    finally:
        site.stop()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    header = (f"{args.pages:,} pages + 31 ({expected:,} URLs) x {args.links} links, "
              f"threads {args.threads}, repeat {args.repeat}, {os.cpu_count()} CPUs, "
              f"{started:%Y-%m-%d %H:%M}")
    print_report(runs, header, expected)
    if args.json is not None:
        names = dict.fromkeys(r.name for r in runs if r.name != "reference")
        args.json.write_text(json.dumps({
            "started": started.isoformat(timespec="seconds"), "pages": args.pages,
            "links": args.links, "urls": expected, "threads": args.threads,
            "repeat": args.repeat, "python": sys.version.split()[0],
            "runs": [r.to_json() for r in runs],
            "median_ratios": {n: round(statistics.median(ratios_of(runs, n)), 4)
                              for n in names if ratios_of(runs, n)},
        }, indent=2) + "\n")
    bad = any(r.exit_code != 0 or r.pages != expected for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
