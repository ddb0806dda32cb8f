"""Frontiers: the crawl's queue behind one protocol (`base.Frontier`).

- `memory` (default): in this process.
- `sqlite`: a jobdir (`--jobdir`), resumable after `kill -9`, nothing lost or doubled.
- `redis://host:port/db`: one crawl shared by many processes on many machines.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError
from ..settings import Settings
from ..stats import Stats
from .base import RELEASE, ROBOTS_META, Frontier, FrontierOptions, Outcome
from .jobstore import JobStore
from .local import LocalFrontier, MemoryBacking, StoreBacking
from .spill import SpillFile

__all__ = ["RELEASE", "ROBOTS_META", "Frontier", "FrontierOptions", "JobStore", "Outcome",
           "open_frontier", "open_jobstore"]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_jobstore(settings: Settings, spider: Any) -> JobStore | None:
    """The jobdir's store, when there is a jobdir (a StoreError when it cannot be used)."""
    frontier = settings.frontier
    if frontier.incremental and not frontier.jobdir:
        raise ConfigError("frontier.incremental needs a jobdir (--jobdir or frontier.jobdir) "
                          "to remember what was seen")
    if frontier.backend.startswith(REDIS_SCHEMES) and frontier.jobdir:
        raise ConfigError("frontier.jobdir and a Redis frontier.backend exclude each other: "
                          "the crawl's state lives in Redis")
    if not frontier.jobdir:
        return None
    return JobStore(frontier.jobdir, spider, incremental=frontier.incremental)


def open_frontier(settings: Settings, spider: Any, stats: Stats,
                  allowed_domains: Iterable[str], store: JobStore | None) -> Frontier:
    """The frontier `frontier.backend` names; a ConfigError for a setting it cannot honour."""
    options = FrontierOptions.from_settings(settings, allowed_domains)
    backend = settings.frontier.backend
    if backend.startswith(REDIS_SCHEMES):
        if settings.frontier.incremental:
            raise ConfigError("frontier.incremental is not supported with a Redis "
                              "frontier.backend (it needs a jobdir)")
        from .shared import RedisFrontier

        return RedisFrontier(options, stats, url=backend,
                             name=settings.frontier.name or spider.name, spider=spider,
                             lease_timeout=settings.frontier.lease_timeout,
                             outage_grace=settings.frontier.outage_grace,
                             cleanup=settings.frontier.cleanup)
    if backend not in ("memory", "sqlite"):
        raise ConfigError(f"frontier.backend = {backend!r}: expected 'memory', 'sqlite' "
                          "(with a jobdir) or a redis://host:port/db URL")
    if backend == "sqlite" and store is None:
        raise ConfigError("frontier.backend = 'sqlite' needs frontier.jobdir (--jobdir)")
    if store is not None:
        store.strip_session_ids = options.strip_session_ids
        return LocalFrontier(options, stats, StoreBacking(store))
    section = settings.frontier
    if section.spill_dir and not os.path.isdir(section.spill_dir):
        raise ConfigError(f"frontier.spill_dir = {section.spill_dir!r}: not a directory")
    spill = None
    if section.memory_queue or section.memory_seen:
        spill = SpillFile(spider, section.spill_dir)
    return LocalFrontier(options, stats, MemoryBacking(
        options.strip_session_ids, spill=spill, memory_queue=section.memory_queue,
        memory_seen=section.memory_seen, stats=stats))
