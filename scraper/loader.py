"""Finding spiders: by name in the spiders directory, or by the path of a `.py` file."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path

from .errors import ConfigError, SpiderNotFound
from .spider import Spider


def _load_module_spiders(path: Path) -> list[type[Spider]]:
    """The spider classes of a file, imported once per version of the file: an edited
    file (another size or modification time) is imported again under a new name."""
    resolved = path.resolve()
    try:
        info = resolved.stat()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    version = f"{resolved}:{info.st_mtime_ns}:{info.st_size}"
    digest = hashlib.sha1(version.encode()).hexdigest()[:10]
    module_name = f"scraper_spiders_{path.stem}_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{path}: cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise ConfigError(f"{path}: error while importing: {type(exc).__name__}: {exc}") \
                from exc
    return [
        obj for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Spider) and obj is not Spider
        and obj.__module__ == module_name
    ]


def discover(spiders_dir: str | Path) -> dict[str, type[Spider]]:
    """Every spider class in `spiders_dir/*.py`, by name (files starting with `_` skipped)."""
    directory = Path(spiders_dir)
    found: dict[str, type[Spider]] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        for cls in _load_module_spiders(path):
            if not cls.name:
                continue
            if cls.name in found:
                raise ConfigError(
                    f"{path}: spider name {cls.name!r} is also used in "
                    f"{inspect.getfile(found[cls.name])}"
                )
            found[cls.name] = cls
    return found


def find_spider(name_or_path: str, spiders_dir: str | Path) -> type[Spider]:
    """A spider by name, or the one spider class in a `.py` file."""
    if name_or_path.endswith(".py"):
        path = Path(name_or_path)
        if not path.is_file():
            raise SpiderNotFound(f"spider file not found: {path}")
        classes = _load_module_spiders(path)
        if len(classes) != 1:
            raise SpiderNotFound(
                f"{path}: expected exactly one Spider subclass, found {len(classes)}"
            )
        return classes[0]
    spiders = discover(spiders_dir)
    if name_or_path in spiders:
        return spiders[name_or_path]
    known = ", ".join(sorted(spiders)) or "none"
    raise SpiderNotFound(
        f"no spider named {name_or_path!r} in {Path(spiders_dir).resolve()} (found: {known})"
    )
