"""URL canonicalisation for dedup, and the origin key that per-host limits use.

`canonicalize` is on the per-link hot path: it is a pure function of its input, cached.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import SplitResult, quote, urljoin, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%[0-9a-fA-F]{2}")
_STRIPPED = str.maketrans("", "", "\t\n\r")  # browsers drop these anywhere in a URL
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Characters left as they are when percent-encoding a path or query (RFC 3986 reserved,
# unreserved and '%' itself, so existing escapes survive).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


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


# Characters whose presence sends a URL down the full canonicalisation path.
_NOT_PLAIN = re.compile(r"[\x00-\x20\x7f#%@\[\]\\^`{|}<>\"]|/\.")


def _already_canonical(url: str, sort_query: bool) -> bool:
    """True for a URL that canonicalisation would return unchanged, decided without
    parsing (most links a crawl meets): http(s), lower-case host, explicit path, no
    default port, no fragment, no escapes, spaces, dot segments or non-ASCII."""
    if url.startswith("http://"):
        start, default_port = 7, ":80"
    elif url.startswith("https://"):
        start, default_port = 8, ":443"
    else:
        return False
    path = url.find("/", start)
    if path <= start or not url.isascii() or _NOT_PLAIN.search(url):
        return False
    netloc = url[start:path]
    if "?" in netloc:  # the query starts before any path: `http://host?q/` has no path
        return False
    if (not netloc.islower() and netloc.lower() != netloc) or netloc.endswith(default_port):
        return False
    if netloc.count(":") > 1 or netloc.endswith(":") or netloc.startswith(":"):
        return False
    if ":" in netloc and not netloc.rsplit(":", 1)[1].isdigit():
        return False
    return not (sort_query and "&" in url)


@lru_cache(maxsize=65536)
def canonicalize(url: str, sort_query: bool = False) -> str:
    """The form of `url` used for dedup: the same page gives the same string.

    Lower-case scheme and host (IDNA-encoded), default port dropped, dot segments
    removed, empty path made `/`, fragment dropped, spaces and non-ASCII characters
    percent-encoded (UTF-8), escapes upper-cased, tabs and newlines removed as browsers
    do; with `sort_query`, query parameters sorted. Raises `BadURL` for anything that
    is not an absolute http(s) URL with a valid host, or that has control characters.
    """
    if _already_canonical(url, sort_query):
        return url
    cleaned = url.strip().translate(_STRIPPED)
    if _CONTROL.search(cleaned):
        raise BadURL(f"control character in URL {url!r}")
    try:
        parts = urlsplit(cleaned)
        port = parts.port
    except ValueError as exc:
        raise BadURL(f"malformed URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BadURL(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    if not host:
        raise BadURL(f"URL without a host: {url!r}")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise BadURL(f"invalid international host name in {url!r}") from None
    if any(c in " <>\\^`{|}\"%" for c in host):
        raise BadURL(f"invalid host in URL {url!r}")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = parts.path or "/"
    query = parts.query
    if not path.isascii() or " " in path:
        path = quote(path, safe=_PATH_SAFE)
    if query and (not query.isascii() or " " in query):
        query = quote(query, safe=_QUERY_SAFE)
    if "/." in path or path.startswith("."):
        path = _remove_dot_segments(path)
    if "%" in path:
        path = _PERCENT.sub(_upper_escape, path)
    if "%" in query:
        query = _PERCENT.sub(_upper_escape, query)
    if sort_query and "&" in query:
        query = "&".join(sorted(query.split("&")))
    return urlunsplit(SplitResult(scheme, netloc, path, query, ""))


def looks_like_trap(url: str, max_length: int, max_repeats: int) -> bool:
    """A URL too long, or whose path repeats one segment too often (/a/b/a/b/a/b/...)."""
    if max_length and len(url) > max_length:
        return True
    query = url.find("?")
    path_end = query if query >= 0 else len(url)
    # Cheap first test: enough slashes for a segment to repeat more than max_repeats times.
    if max_repeats and url.count("/", 0, path_end) > max_repeats + 3:
        segments = [s for s in url.split("?", 1)[0].split("/")[3:] if s]
        if len(segments) > max_repeats:
            counts: dict[str, int] = {}
            for segment in segments:
                counts[segment] = counts.get(segment, 0) + 1
                if counts[segment] > max_repeats:
                    return True
    return False


def origin(url: str) -> str:
    """`scheme://host:port` of a canonical URL: the key of per-host limits and pools."""
    scheme, rest = url.split("://", 1)
    netloc = rest.split("/", 1)[0]
    if netloc.endswith("]") or ":" not in netloc:
        return f"{scheme}://{netloc}:{DEFAULT_PORTS[scheme]}"
    return f"{scheme}://{netloc}"


def canonical_host(url: str) -> str:
    """The host of a canonical URL (as `canonicalize` returns), by string slicing: this
    runs for every link found, and urlsplit would cost several times as much."""
    netloc = url[url.index("://") + 3:].split("/", 1)[0]
    if netloc.startswith("["):
        return netloc[1:netloc.index("]")]
    return netloc.rsplit(":", 1)[0] if ":" in netloc else netloc


def join(base: str, href: str) -> str:
    """urljoin with fast paths for the common absolute and root-relative links."""
    if href.startswith(("http://", "https://")):
        return href
    if href.startswith("/") and not href.startswith("//"):
        scheme_end = base.find("://")
        if scheme_end > 0:
            path_start = base.find("/", scheme_end + 3)
            return (base if path_start < 0 else base[:path_start]) + href
    return urljoin(base, href)


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
