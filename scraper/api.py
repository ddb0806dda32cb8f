"""The Python API: `scraper.crawl(...)`, callable again and again in one process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .chain import check_disabled
from .engine import CrawlResult, Engine
from .errors import ConfigError
from .exporters import Exporter, build_outputs
from .jobs import append_history, get_job, job_lock, job_overrides, load_jobs, run_record
from .loader import find_spider
from .settings import LoadedSettings, Settings, load
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


def settings_path(settings_file: str | Path | None) -> Path | None:
    if settings_file is not None:
        return Path(settings_file)
    return Path("settings.toml") if Path("settings.toml").is_file() else None


def run_job(name: str, *, settings_file: str | Path | None = None,
            handle_signals: bool = False, **crawler_options: Any) -> CrawlResult:
    """One run of `[jobs.NAME]`: under its lock (JobLocked when another run holds it),
    resuming its durable state, writing its output atomically, recording its history."""
    path = settings_path(settings_file)
    job = get_job(load_jobs(load(path), path), name)
    with job_lock(job):
        started = time.time()
        now = datetime.now()
        output = job.output_path(now)
        try:
            instance, loaded = prepare(job.spec.spider, settings_file=path,
                                       settings=job_overrides(job),
                                       spider_args=job.spec.args)
            outputs = build_outputs(loaded.settings,
                                    [job.spec.output] if job.spec.output else [],
                                    placeholders={**job.placeholders(now),
                                                  "spider": instance.name}, now=now)
            result = build_crawler(instance, loaded.settings, outputs=outputs,
                                   handle_signals=handle_signals, **crawler_options).run()
        except ConfigError as exc:
            append_history(job, run_record(job, started, time.time(), 2, output, None,
                                           str(exc)))
            raise
        append_history(job, run_record(job, started, time.time(), result.exit_code, output,
                                       result.stats))
        result.stats["output"] = output or None
        return result


def crawl(
    spider: str | type[Spider],
    settings: Mapping[str, Any] | None = None,
    *,
    output: str | Sequence[str] | None = None,
    settings_file: str | Path | None = None,
    **spider_args: Any,
) -> CrawlResult:
    """Run one crawl and return its items and stats.

    `settings`: dotted keys (`{"crawl.per_host": 4}`), above the settings file and the
    spider's `custom_settings`. `output`: a file, or several, written as with `-o`;
    without it, the `[outputs.NAME]` tables of the settings.
    Nothing global is kept between calls.
    """
    instance, loaded = prepare(spider, settings_file=settings_file, settings=settings,
                               spider_args=spider_args)
    paths = [output] if isinstance(output, str) else list(output or ())
    outputs = build_outputs(loaded.settings, paths, placeholders={"spider": instance.name})
    return build_crawler(instance, loaded.settings, outputs=outputs, collect_items=True).run()


def build_crawler(
    spider: Spider | type[Spider],
    settings: Settings,
    *,
    outputs: Iterable[str | Exporter] = (),
    collect_items: bool = False,
    handle_signals: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    progress_interval: float | None = None,
) -> Engine:
    """The one place a crawl is wired together (the API, the CLI and `scraper bench`).

    `spider`: an instance, or a Spider subclass (created with no arguments).
    `outputs`: paths as for `-o` (or exporters). `collect_items`: keep the items in the
    result (the Python API). `handle_signals`: SIGINT/SIGTERM stop the crawl gracefully
    (the main thread only). `on_progress(snapshot)` every `progress_interval` seconds.
    """
    check_disabled(settings)
    if isinstance(spider, type):
        spider = resolve_spider(spider, settings.crawl.spiders_dir)()
    exporters = [o if isinstance(o, Exporter) else Exporter(o) for o in outputs]
    options: dict[str, Any] = {}
    if progress_interval is not None:
        options["progress_interval"] = progress_interval
    return Engine(spider, settings, outputs=exporters, collect_items=collect_items,
                  handle_signals=handle_signals, on_progress=on_progress, **options)
