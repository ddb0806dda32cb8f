"""Settings: frozen pydantic models, loaded from layers with a source for every key.

Precedence, lowest first: defaults < settings.toml < spider.custom_settings <
environment (`SCRAPER_<SECTION>__<KEY>`) < `-s section.key=value`.
Every error names where the bad value came from, the dotted key, the value and what
was expected, and is raised as `ConfigError`.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_TABLES = ("jobs", "outputs")  # sections made of named tables: [jobs.NAME], [outputs.NAME]
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
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SECRET_KEYS = frozenset({"http.auth"})


def origin_key(url: str, *, strict: bool = False) -> str:
    """`scheme://host:port` of a URL, lower-case, with the default port made explicit
    (the unit `http.auth` credentials are scoped to). `strict`: the URL must be an origin
    alone (no user, path, query or fragment). ValueError names what is wrong."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    host = parts.hostname
    if not host:
        raise ValueError(f"{url!r} has no host")
    if strict and (parts.username is not None or parts.path not in ("", "/")
                   or parts.query or parts.fragment):
        raise ValueError(f"{url!r} is more than an origin (scheme://host:port)")
    port = parts.port or _DEFAULT_PORTS[scheme]
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


_HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return False
    return True


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
    max_items: int = Field(0, ge=0)
    max_errors: int = Field(0, ge=0)
    stop_if_no_items_for: Duration = 0.0
    middlewares: list[str] = Field(default_factory=list)
    disable: list[str] = Field(default_factory=list)
    strip_session_ids: bool = True


class HttpSettings(_Section):
    connect_timeout: Duration = Field(10.0, gt=0)
    read_timeout: Duration = Field(30.0, gt=0)
    request_timeout: Duration = Field(60.0, gt=0)
    idle_timeout: Duration = Field(4.0, gt=0)
    max_hosts: int = Field(1024, ge=1)
    max_connections: int = Field(0, ge=0)
    max_body: int = Field(10 * 2**20, ge=1)
    max_redirects: int = Field(10, ge=0)
    user_agent: str = "scraper/0.1 (+https://github.com/scraper)"
    headers: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True
    proxy: str = ""
    proxies: list[str] = Field(default_factory=list)
    proxy_strategy: Literal["round_robin", "per_session", "per_host"] = "round_robin"
    proxy_backoff: Duration = Field(1.0, gt=0)
    proxy_max_backoff: Duration = Field(300.0, gt=0)
    dns_ttl: Duration = 300.0
    resolve: dict[str, str] = Field(default_factory=dict)
    allow_private_addresses: bool = False
    cookies: bool = True
    auth: dict[str, SecretStr] = Field(default_factory=dict)
    referer: bool = True

    @field_validator("resolve")
    @classmethod
    def _resolve_map(cls, value: dict[str, str]) -> dict[str, str]:
        mapped = {}
        for pattern, address in value.items():
            name = pattern.strip().lower().rstrip(".")
            if not name.isascii():
                with contextlib.suppress(UnicodeError):  # the pattern check names it
                    name = name.encode("idna").decode("ascii")
            if not _HOST_PATTERN.fullmatch(name) and not _is_ip(name):
                raise ValueError(f"host names or '*.suffix' patterns as keys, not {pattern!r}")
            if not _is_ip(address):
                raise ValueError(f"IP addresses as values, like '127.0.0.1', not {address!r} "
                                 f"(for {pattern!r})")
            mapped[name.strip("[]")] = address.strip().strip("[]")
        return mapped

    @field_validator("auth")
    @classmethod
    def _auth_origins(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        checked = {}
        for where, secret in value.items():
            try:
                origin = origin_key(where, strict=True)
            except ValueError as exc:
                raise ValueError(f'origins like "https://host:port" as keys ({exc})') from None
            credential = secret.get_secret_value()
            bearer = credential.startswith("Bearer ")
            if not (bearer and credential[7:].strip()) and ":" not in credential:
                raise ValueError(f'"user:password" or "Bearer TOKEN" for {where}')
            checked[origin] = secret
        return checked
    cache: Literal["off", "replay", "rfc9111"] = "off"
    cache_dir: str = ".scraper/cache"
    cache_ttl: Duration = 0.0
    cache_only: bool = False

    @field_validator("cache_only")
    @classmethod
    def _cache_on(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("cache", "off") == "off":
            raise ValueError("false while http.cache is 'off': set http.cache to "
                             "'replay' or 'rfc9111' (or pass --cache)")
        return value

    @field_validator("cache_dir")
    @classmethod
    def _cache_dir(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a directory path")
        return value

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str) -> str:
        return check_proxy_url(value) if value else value

    @field_validator("proxies", mode="before")
    @classmethod
    def _proxy_urls(cls, value: Any) -> list[str]:
        """A list of proxy URLs, or `"@path"`: a file with one per line (blank lines and
        `#` comments skipped); one URL alone is a list of one."""
        if isinstance(value, str):
            if not value.startswith("@"):
                return [check_proxy_url(value)]
            path = Path(value[1:]).expanduser()
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ValueError(f"a readable file of proxy URLs: {exc.strerror or exc}") \
                    from None
            urls = []
            for number, line in enumerate(lines, 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    try:
                        urls.append(check_proxy_url(line))
                    except ValueError as exc:
                        raise ValueError(f"{path}, line {number}: {exc}") from None
            return urls
        if not isinstance(value, list | tuple):
            raise ValueError('a list of proxy URLs, or "@path/to/file" (one per line)')
        return [check_proxy_url(item) if isinstance(item, str) else item for item in value]

    @property
    def proxy_urls(self) -> list[str]:
        """The proxy pool: `http.proxy`, then `http.proxies`, without repeats."""
        return list(dict.fromkeys([self.proxy, *self.proxies] if self.proxy else self.proxies))


PROXY_SCHEMES = ("http", "https", "socks5", "socks5h", "socks4", "socks4a")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@'\"]*):[^\s/@'\"]*@")


def mask_password(text: str) -> str:
    """`scheme://user:password@host` -> `scheme://user:***@host`, wherever it occurs."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


def check_proxy_url(url: str) -> str:
    """`url` when it is a usable proxy URL (`scheme://[user:password@]host:port`), else a
    ValueError that says what is wrong (and never shows the password)."""
    example = "like http://user:pass@host:3128 or socks5h://host:1080"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"a proxy URL {example}: {mask_password(str(exc))}") from None
    if parts.scheme.lower() not in PROXY_SCHEMES:
        raise ValueError(f"a proxy URL with a scheme among {', '.join(PROXY_SCHEMES)}, "
                         f"{example}")
    host = parts.hostname or ""
    if not host or host.startswith("*") or not (_HOST_PATTERN.fullmatch(host) or _is_ip(host)):
        raise ValueError(f"a proxy URL with a host name or address, {example}")
    if port is None:
        raise ValueError(f"a proxy URL with a port, {example}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"a proxy URL without a path, query or fragment, {example}")
    if any(ch.isspace() for ch in url.strip()):
        raise ValueError(f"a proxy URL without spaces, {example}")
    return url.strip()


class RetrySettings(_Section):
    attempts: int = Field(3, ge=1, le=100)
    backoff: Duration = 0.5
    max_backoff: Duration = 30.0
    statuses: tuple[int, ...] = (408, 429, 500, 502, 503, 504)


class SessionSettings(_Section):
    size: int = Field(1, ge=1, le=100_000)
    max_uses: int = Field(0, ge=0)
    max_age: Duration = 0.0
    retire_statuses: tuple[int, ...] = ()


class FrontierSettings(_Section):
    backend: str = "memory"
    jobdir: str = ""
    incremental: bool = False
    name: str = ""
    lease_timeout: Duration = Field(30.0, gt=0)
    outage_grace: Duration = Field(60.0, ge=0)
    cleanup: bool = False
    memory_queue: int = Field(250_000, ge=0)
    memory_seen: int = Field(2_000_000, ge=0)
    spill_dir: str = ""


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
    timezone: str = ""  # an IANA zone ("Europe/Paris") the schedule is read in; "" = local


class OutputSettings(_Section):
    """One `[outputs.NAME]` table: a file the crawl's items are written to."""

    path: str = Field(min_length=1)
    format: str = ""
    fields: tuple[str, ...] = ()
    overwrite: bool = True
    batch_items: int = Field(0, ge=0)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in ("", "jsonl", "csv", "json"):
            raise ValueError('"jsonl", "csv" or "json" ("" = by the path\'s extension)')
        return value

    @field_validator("batch_items")
    @classmethod
    def _batch_placeholder(cls, value: int, info: ValidationInfo) -> int:
        if value and "{batch" not in str(info.data.get("path", "")):
            raise ValueError("a path with a {batch} placeholder (out/items-{batch}.jsonl) "
                             "when batch_items is set")
        return value


class Settings(_Section):
    crawl: CrawlSettings = CrawlSettings()
    http: HttpSettings = HttpSettings()
    retry: RetrySettings = RetrySettings()
    sessions: SessionSettings = SessionSettings()
    frontier: FrontierSettings = FrontierSettings()
    jobs: dict[str, JobSettings] = Field(default_factory=dict)
    outputs: dict[str, OutputSettings] = Field(default_factory=dict)


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
        if section in _TABLES:
            values[section] = table
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
            if key in _TABLES:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{layer.source}: {key} must be a table of tables")
                nested.setdefault(key, {}).update(value)
                sources[key] = layer.source
                continue
            table, _, rest = key.partition(".")
            if table == "outputs" and rest.count(".") == 1:  # -s outputs.NAME.KEY=VALUE
                name, field = rest.split(".")
                nested.setdefault(table, {}).setdefault(name, {})[field] = value
                sources[key] = layer.source
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
        table = str(error["loc"][0]) if error["loc"][:1] in (("jobs",), ("outputs",)) else ""
        depth = 3 if table else 2
        key = ".".join(str(part) for part in error["loc"][:depth])
        source = sources.get(key, sources.get(table, "settings")) if table \
            else sources.get(key, "settings")
        expected = error["msg"].removeprefix("Value error, ")
        shown = error.get("input")
        if key in _SECRET_KEYS and isinstance(shown, dict):  # credentials are never shown
            shown = {name: "***" for name in shown}
        shown = mask_password(repr(shown))  # a proxy URL's password
        lines.append(f"{source}: {key} = {shown}: expected {expected}")
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
