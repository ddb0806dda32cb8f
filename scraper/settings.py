"""Settings: frozen pydantic models, loaded from layers with a source for every key.

Precedence, lowest first: defaults < settings.toml < spider.custom_settings <
environment (`SCRAPER_<SECTION>__<KEY>`) < `-s section.key=value`.
Every error names where the bad value came from, the dotted key, the value and what
was expected, and is raised as `ConfigError`.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from .errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """`90`, `90s`, `1.5`, `10m`, `2h` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 90, 90s, 10m or 2h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"a duration such as 90, 90s, 10m or 2h, not {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration that is not negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CrawlSettings(_Section):
    workers: int = Field(16, ge=1, le=1024)
    per_host: int = Field(8, ge=1, le=1024)
    delay: Duration = 0.0
    depth_limit: int = Field(0, ge=0)
    max_pages: int = Field(0, ge=0)
    deadline: Duration = 0.0
    allowed_failures: int = Field(0, ge=0)
    shutdown_grace: Duration = 5.0
    spiders_dir: str = "spiders"
    obey_robots: bool = True
    robots_ttl: Duration = 86400.0
    autothrottle: bool = False
    autothrottle_target: float = Field(1.0, gt=0)
    autothrottle_max_delay: Duration = 60.0
    max_url_length: int = Field(2083, ge=0)
    max_repeated_segments: int = Field(3, ge=0)
    sort_query: bool = False
    strip_session_ids: bool = True


class HttpSettings(_Section):
    connect_timeout: Duration = Field(10.0, gt=0)
    read_timeout: Duration = Field(30.0, gt=0)
    request_timeout: Duration = Field(60.0, gt=0)
    idle_timeout: Duration = Field(4.0, gt=0)
    max_hosts: int = Field(1024, ge=1)
    max_body: int = Field(10 * 2**20, ge=1)
    max_redirects: int = Field(10, ge=0)
    user_agent: str = "scraper/0.1 (+https://github.com/scraper)"
    headers: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True
    proxy: str = ""

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// proxy URL, like http://user:pass@host:3128")
        return value


class RetrySettings(_Section):
    attempts: int = Field(3, ge=1, le=100)
    backoff: Duration = 0.5
    max_backoff: Duration = 30.0
    statuses: tuple[int, ...] = (408, 429, 500, 502, 503, 504)


class FrontierSettings(_Section):
    backend: str = "memory"
    jobdir: str = ""
    incremental: bool = False
    name: str = ""
    lease_timeout: Duration = Field(30.0, gt=0)
    cleanup: bool = False


class JobSettings(_Section):
    """One `[jobs.NAME]` table: a crawl run by cron (`scraper jobs run NAME`)."""

    spider: str
    schedule: str = ""
    deadline: Duration = 0.0
    output: str = ""
    args: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    incremental: bool = False
    dir: str = ""


class Settings(_Section):
    crawl: CrawlSettings = CrawlSettings()
    http: HttpSettings = HttpSettings()
    retry: RetrySettings = RetrySettings()
    frontier: FrontierSettings = FrontierSettings()
    jobs: dict[str, JobSettings] = Field(default_factory=dict)


def known_keys() -> list[str]:
    """Every dotted key a user may set (jobs.* excepted)."""
    keys = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, _Section):
            keys += [f"{section}.{name}" for name in model.model_fields]
    return keys


class Layer:
    """One source of settings: its name (a file path, `-s`, `env`, ...) and dotted values."""

    def __init__(self, source: str, values: Mapping[str, Any]) -> None:
        self.source = source
        self.values = dict(values)


def layer_from_file(path: Path) -> Layer:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read settings file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    values: dict[str, Any] = {}
    for section, table in data.items():
        if section == "jobs":
            values["jobs"] = table
        elif isinstance(table, dict):
            values.update({f"{section}.{key}": value for key, value in table.items()})
        else:
            values[section] = table
    return Layer(str(path), values)


def parse_value(text: str) -> Any:
    """A `-s`/env value: TOML syntax when it parses (8, 1.5, true, [1, 2]), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def layer_from_pairs(source: str, pairs: Iterable[str]) -> Layer:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: expected section.key=value, got {pair!r}")
        values[key.strip()] = parse_value(text.strip())
    return Layer(source, values)


def layer_from_env(environ: Mapping[str, str]) -> Layer:
    values = {}
    for name, text in environ.items():
        if name.startswith("SCRAPER_") and "__" in name:
            section, _, key = name[len("SCRAPER_") :].partition("__")
            values[f"{section.lower()}.{key.lower()}"] = parse_value(text)
    return Layer("environment", values)


class LoadedSettings:
    """The validated settings and the source each explicitly set key came from."""

    def __init__(self, settings: Settings, sources: dict[str, str]) -> None:
        self.settings = settings
        self.sources = sources


def build(layers: Iterable[Layer]) -> LoadedSettings:
    """Merge layers (lowest precedence first) and validate them into `Settings`."""
    known = set(known_keys())
    nested: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        for key, value in layer.values.items():
            if key == "jobs":
                nested.setdefault("jobs", {}).update(value)
                sources["jobs"] = layer.source
                continue
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ConfigError(f"{layer.source}: unknown setting {key!r}{suggestion}")
            section, name = key.split(".", 1)
            nested.setdefault(section, {})[name] = value
            sources[key] = layer.source
    try:
        settings = Settings.model_validate(nested)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None
    return LoadedSettings(settings, sources)


def _describe(exc: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for error in exc.errors():
        depth = 3 if error["loc"][:1] == ("jobs",) else 2
        key = ".".join(str(part) for part in error["loc"][:depth])
        source = sources.get(key, sources.get("jobs", "settings")) if depth == 3 \
            else sources.get(key, "settings")
        expected = error["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {key} = {error.get('input')!r}: expected {expected}")
    return "\n".join(lines)


def load(
    path: Path | None = None,
    *,
    spider_settings: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    """Load settings from every layer.

    `path`: a settings file; None means `settings.toml` in the working directory when it
    exists. `extra` sits just below `-s` (values given by the Python API).
    """
    layers = []
    if path is None and Path("settings.toml").is_file():
        path = Path("settings.toml")
    if path is not None:
        layers.append(layer_from_file(path))
    if spider_settings:
        layers.append(Layer("spider custom_settings", spider_settings))
    layers.append(layer_from_env(os.environ if environ is None else environ))
    if extra:
        layers.append(Layer("arguments", extra))
    layers.append(layer_from_pairs("-s", overrides))
    return build(layers)
