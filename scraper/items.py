"""Items: turning what callbacks yield into plain dicts, validation and pipelines."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import ConfigError, DropItem, ItemError

log = logging.getLogger(__name__)


def as_dict(item: Any) -> dict[str, Any]:
    """A dict, a pydantic model or a dataclass instance -> a plain dict."""
    if isinstance(item, dict):
        return item
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json")
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    raise ItemError(
        f"a callback yielded {type(item).__name__}; expected a Request, a dict, "
        "a pydantic model or a dataclass"
    )


def is_item(value: Any) -> bool:
    return isinstance(value, dict | BaseModel) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    )


def validate(item: dict[str, Any], model: type | None) -> dict[str, Any]:
    """Validate against the spider's `item_model`; raises ItemError naming the fields."""
    if model is None:
        return item
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigError(f"item_model must be a pydantic model class, got {model!r}")
    try:
        return model.model_validate(item).model_dump(mode="json")
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(item)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ItemError(f"invalid item ({problems})") from None


def pipeline_steps(pipelines: Sequence[Any]) -> list[Callable[[Any, Any], Any]]:
    """Each pipeline as a `(item, spider) -> item` callable."""
    steps = []
    for pipeline in pipelines:
        if isinstance(pipeline, type):
            pipeline = pipeline()
        step = getattr(pipeline, "process_item", pipeline)
        if not callable(step):
            raise ConfigError(f"pipeline {pipeline!r} is neither callable nor has process_item")
        steps.append(step)
    return steps


class ItemProcessor:
    """What happens to each yielded value that is not a Request: conversion to a dict,
    `item_model` validation, then the pipelines. Counts invalid and dropped items."""

    def __init__(self, spider: Any, stats: Any) -> None:
        self._spider = spider
        self._model = spider.item_model
        self._steps = pipeline_steps(spider.pipelines)
        self._stats = stats

    def process(self, value: Any) -> dict[str, Any] | None:
        """The item to keep, or None (invalid or dropped, counted and logged)."""
        if not is_item(value):
            self._stats.inc("items_invalid")
            log.warning("callback yielded %s, which is neither a Request nor an item",
                        type(value).__name__)
            return None
        try:
            item = validate(as_dict(value), self._model)
        except ItemError as exc:
            self._stats.inc("items_invalid")
            log.warning("%s", exc)
            return None
        try:
            for step in self._steps:
                changed = step(item, self._spider)
                if changed is not None:
                    item = as_dict(changed)
        except DropItem as exc:
            self._stats.inc("items_dropped")
            log.debug("item dropped: %s", exc)
            return None
        except Exception:
            self._stats.inc("items_dropped")
            self._stats.inc("pipeline_errors")
            log.exception("pipeline raised; item dropped")
            return None
        return item
