"""URL canonicalisation for dedup, and the origin key that per-host limits use.

`canonicalize` is on the per-link hot path: it is a pure function of its input, cached.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import SplitResult, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%[0-9a-fA-F]{2}")


class BadURL(ValueError):
    """A URL the crawler cannot fetch (scheme, host or syntax)."""


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, for paths that contain dot segments."""
    output: list[str] = []
    segments = path.split("/")
    for segment in segments[1:] if path.startswith("/") else segments:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    if segments[-1] in (".", ".."):
        output.append("")
    return "/" + "/".join(output)


def _upper_escape(match: re.Match[str]) -> str:
    return match.group(0).upper()


@lru_cache(maxsize=65536)
def canonicalize(url: str) -> str:
    """The form of `url` used for dedup: the same page gives the same string.

    Lower-case scheme and host, default port dropped, dot segments removed, empty path
    made `/`, fragment dropped, percent-escapes upper-cased. Raises `BadURL` for
    anything that is not an absolute http(s) URL with a host.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise BadURL(f"malformed URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BadURL(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    if not host:
        raise BadURL(f"URL without a host: {url!r}")
    if any(ord(c) < 33 or c in "<>\\^`{|}" for c in host):
        raise BadURL(f"invalid host in URL {url!r}")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = parts.path or "/"
    if "/." in path or path.startswith("."):
        path = _remove_dot_segments(path)
    query = parts.query
    if "%" in path:
        path = _PERCENT.sub(_upper_escape, path)
    if "%" in query:
        query = _PERCENT.sub(_upper_escape, query)
    return urlunsplit(SplitResult(scheme, netloc, path, query, ""))


def origin(url: str) -> str:
    """`scheme://host:port` of a canonical URL: the key of per-host limits and pools."""
    scheme, rest = url.split("://", 1)
    netloc = rest.split("/", 1)[0]
    if netloc.endswith("]") or ":" not in netloc:
        return f"{scheme}://{netloc}:{DEFAULT_PORTS[scheme]}"
    return f"{scheme}://{netloc}"


def hostname(url: str) -> str:
    """The lower-case host name of an absolute URL ('' when there is none)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """True when `host` is one of `allowed` or a subdomain of one (empty set: all)."""
    if not allowed or host in allowed:
        return True
    return any(host.endswith("." + domain) for domain in allowed)
