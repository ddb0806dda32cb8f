"""The Python API: `scraper.crawl(...)`, callable again and again in one process."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .crawler import Crawler, CrawlResult
from .errors import ConfigError
from .exporters import Exporter
from .loader import find_spider
from .settings import LoadedSettings, load
from .spider import Spider


def resolve_spider(spider: str | type[Spider], spiders_dir: str | Path) -> type[Spider]:
    if isinstance(spider, str):
        return find_spider(spider, spiders_dir)
    if isinstance(spider, type) and issubclass(spider, Spider):
        return spider
    raise ConfigError(f"expected a Spider subclass or a spider name, got {spider!r}")


def prepare(
    spider: str | type[Spider],
    *,
    settings_file: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    spider_args: Mapping[str, Any] | None = None,
) -> tuple[Spider, LoadedSettings]:
    """Find the spider, load settings with its `custom_settings`, build the instance."""
    path = Path(settings_file) if settings_file is not None else None
    overrides = list(overrides)
    base = load(path, overrides=overrides, extra=settings)
    spider_cls = resolve_spider(spider, base.settings.crawl.spiders_dir)
    custom = spider_cls.custom_settings
    if not isinstance(custom, Mapping):
        raise ConfigError(f"spider {spider_cls.name!r}: custom_settings must be a dict")
    loaded = load(path, spider_settings=custom, overrides=overrides, extra=settings) \
        if custom else base
    try:
        instance = spider_cls(**dict(spider_args or {}))
    except TypeError as exc:
        raise ConfigError(f"spider {spider_cls.name!r}: bad spider arguments: {exc}") from None
    return instance, loaded


def crawl(
    spider: str | type[Spider],
    settings: Mapping[str, Any] | None = None,
    *,
    output: str | None = None,
    settings_file: str | Path | None = None,
    **spider_args: Any,
) -> CrawlResult:
    """Run one crawl and return its items and stats.

    `settings`: dotted keys (`{"crawl.per_host": 4}`), above the settings file and the
    spider's `custom_settings`. `output`: an optional file written as with `-o`.
    Nothing global is kept between calls.
    """
    instance, loaded = prepare(spider, settings_file=settings_file, settings=settings,
                               spider_args=spider_args)
    outputs = [Exporter(output)] if output else []
    crawler = Crawler(instance, loaded.settings, outputs=outputs, collect_items=True)
    return crawler.run()
