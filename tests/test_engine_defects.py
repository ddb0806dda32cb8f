"""Defects found in the first round's crawler, each pinned by a test."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import crawl, link_spider

import scraper
from scraper.cli import main
from scraper.loader import find_spider
from scraper.stats import COUNTERS, Stats
from scraper.testing import serve


def test_every_counter_is_in_the_stats_even_at_zero() -> None:
    snapshot = Stats().snapshot()
    for name in ("filtered_robots", "filtered_trap", "pipeline_errors", *COUNTERS):
        assert snapshot[name] == 0


def test_crawl_result_and_build_crawler_are_public() -> None:
    from scraper.engine import CrawlResult, Engine

    assert scraper.CrawlResult is CrawlResult
    with serve({"/": "<p>one page</p>"}) as site:
        engine = scraper.build_crawler(link_spider(site.url("/")), _settings(),
                                       collect_items=True)
        assert isinstance(engine, Engine)
        result = engine.run()
    assert isinstance(result, CrawlResult)
    assert result.stats["pages"] == 1 and len(result.items) == 1


def _settings() -> scraper.settings.Settings:  # type: ignore[name-defined]
    from scraper.settings import Layer, build

    return build([Layer("test", {"crawl.obey_robots": False})]).settings


SPIDER_V1 = """
from scraper import Spider

class Edited(Spider):
    name = "edited"
    start_urls = ["{url}"]

    def parse(self, response):
        yield {{"version": {version}}}
"""


def test_an_edited_spider_file_is_imported_again(tmp_path: Path) -> None:
    path = tmp_path / "edited.py"
    with serve({"/": "<p>page</p>"}) as site:
        versions = []
        for version in (1, 2):
            path.write_text(SPIDER_V1.format(url=site.url("/"), version=version))
            # Same size, and maybe the same mtime tick: make the edit visible to stat().
            os.utime(path, ns=(version * 10**9, version * 10**9))
            result = crawl(find_spider(str(path), tmp_path))
            versions.append(result.items[0]["version"])
    assert versions == [1, 2]


def test_debug_level_shows_one_record_per_exchange(caplog: pytest.LogCaptureFixture) -> None:
    pages = {"/": '<a href="/a">a</a>', "/a": "<p>a</p>"}
    with serve(pages) as site, caplog.at_level(logging.DEBUG, logger="scraper"):
        crawl(link_spider(site.url("/")))
    fetched = [r.getMessage() for r in caplog.records
               if r.levelno == logging.DEBUG and " -> 200" in r.getMessage()]
    assert len(fetched) == 2, fetched
    assert any(message.startswith(f"GET {site.url('/a')} -> 200") for message in fetched)


def test_demo_runs_from_any_directory(tmp_path: Path) -> None:
    """The demo spider ships inside the package: no spiders/ directory is needed."""
    assert Path.cwd() == tmp_path and not (tmp_path / "spiders").exists()
    result = CliRunner().invoke(main, ["demo", "--products", "6", "-o", "out/demo.jsonl",
                                       "-q", "--progress", "off"])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "out" / "demo.jsonl").read_text().splitlines()
    assert len(lines) == 6


def test_unknown_component_in_crawl_disable_is_a_config_error() -> None:
    with serve({"/": "<p>x</p>"}) as site, pytest.raises(scraper.ConfigError,
                                                          match=r"crawl\.disable.*cookiez"):
        crawl(link_spider(site.url("/")), crawl__disable=["cookiez"])
