"""URLs as browsers see them, and one key per page.

Parsing and joining follow the WHATWG URL Standard (the parser browsers use), through
ada-url; `canonicalize` then spells the result one way, so that one page has one key.
`canonicalize` and `resolve` are on the per-link hot path: pure functions, cached, with a
string-only shortcut for URLs that are already canonical.

The rules, in order (each one tested in tests/test_urls.py):

1. WHATWG parsing: leading/trailing C0 controls and spaces and every tab and newline are
   removed; `\\` is `/` in http(s) URLs; dot segments are resolved (`%2e` counts as `.`);
   the host is lower-cased and IDNA-encoded with UTS-46 (non-transitional: `straße.de`
   is `xn--strae-oqa.de`, not `strasse.de`); IPv4 hosts in any form (`0x7f.1`, `127.1`)
   become dotted decimal and IPv6 hosts their compressed form; the port loses its leading
   zeros and is dropped when it is the scheme's default (`:0080`); a port above 65535, a
   forbidden host character or a bad IPv4/IPv6 literal is an error. A lone surrogate
   (possible in strings from JSON) is read as U+FFFD, as browsers do.
2. Only absolute http and https URLs are accepted; anything else raises `BadURL`.
3. Credentials (`http://user:pass@host/`) are kept: they are part of the key (never merged
   with the bare URL) and the HTTP client sends them as Basic credentials to that URL only.
4. The fragment is dropped; an empty query (`/list.php?`) is dropped.
5. Percent-encoding has one spelling in path and query: an escape of an unreserved
   character (`A-Z a-z 0-9 - . _ ~`) is decoded (`%7E` is `~`); other escapes get upper-case
   hex (`%c3%a9` is `%C3%A9`); every character outside RFC 3986's unreserved and reserved
   sets (`[ ] | ^ { } \\` and the like, spaces, non-ASCII, a `%` that starts no escape) is
   escaped as UTF-8. Reserved characters keep their spelling (`/` and `%2F` stay apart),
   except that the WHATWG parser escapes `'` in queries.
6. With `sort_query` (setting `crawl.sort_query`) query parameters are sorted.

`dedup_key` adds one rule for the seen set only (setting `crawl.strip_session_ids`):
session-id parameters (`jsessionid`, `phpsessid`, `sid`, `sessionid`, `aspsessionid*`,
any case) and a path's `;jsessionid=...` are removed, as archival crawlers do, so that the
same page under two sessions is fetched once. The URL fetched keeps them.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ada_url import join_url, normalize_url

DEFAULT_PORTS = {"http": 80, "https": 443}


class BadURL(ValueError):
    """A URL the crawler cannot fetch (scheme, host or syntax)."""


_SURROGATE = re.compile("[\ud800-\udfff]")
# An escape, or a character that must be escaped (outside RFC 3986's unreserved and
# reserved sets, '#' and '[]' included since they cannot appear in a path or query).
_RESPELL = re.compile(r"%[0-9A-Fa-f]{2}|[^A-Za-z0-9\-._~!$&'()*+,;=:@/?]")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

# A URL `canonicalize` returns unchanged, recognised without parsing: http(s), a lower-case
# ASCII host name (no punycode label to validate, last label not numeric) or a plain dotted
# quad, an optional port, and a path and query with nothing to escape, decode or drop.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL = re.compile(  # possessive quantifiers: a failed match must not backtrack
    r"https?://(?:(?:[a-z0-9-]++\.)*+[a-z][a-z0-9-]*+|" + _OCTET + r"(?:\." + _OCTET
    + r"){3})(?::([1-9][0-9]{0,4}))?"
    r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*+(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@/?]++)?"
)


def _already_canonical(url: str, sort_query: bool) -> bool:
    """True for a URL that canonicalisation would return unchanged, decided by one regular
    expression (most links a crawl meets)."""
    match = _CANONICAL.fullmatch(url)
    if match is None or "/." in url or "xn--" in url:
        return False
    port = match.group(1)
    if port is not None:
        number = int(port)
        if number > 65535 or number == (80 if url[4] == ":" else 443):
            return False
    return not (sort_query and "&" in url)


def _respell_one(match: re.Match[str]) -> str:
    text = match.group(0)
    if len(text) == 3 and text[0] == "%":
        char = chr(int(text[1:], 16))
        return char if char in _UNRESERVED else text.upper()
    return "".join(f"%{byte:02X}" for byte in text.encode())


def whatwg_href(url: str, base: str | None = None) -> str:
    """The WHATWG URL Standard's serialisation (`href`) of `url`, resolved against `base`
    when one is given; raises `BadURL` when the standard's parser fails. The one place
    that parses URLs."""
    if not url.isascii() and _SURROGATE.search(url):
        url = _SURROGATE.sub("\ufffd", url)
    if base is not None and not base.isascii() and _SURROGATE.search(base):
        base = _SURROGATE.sub("\ufffd", base)
    try:
        return normalize_url(url) if base is None else join_url(base, url)
    except ValueError:
        against = "" if base is None else f" against {base!r}"
        raise BadURL(f"not a valid URL: {url!r}{against}") from None


def _canonical_from_whatwg(href: str, original: str, sort_query: bool) -> str:
    """Rules 2, 4, 5 and 6 applied to a WHATWG-serialised URL."""
    if href.startswith("http://"):
        start = 7
    elif href.startswith("https://"):
        start = 8
    else:
        raise BadURL(f"not an http(s) URL: {original!r}")
    path_start = href.index("/", start)  # a serialised http(s) URL always has a path
    rest = href[path_start:]
    hash_at = rest.find("#")
    if hash_at >= 0:
        rest = rest[:hash_at]
    if rest.endswith("?") and rest.find("?") == len(rest) - 1:  # an empty query
        rest = rest[:-1]
    if _RESPELL.search(rest) is not None:
        rest = _RESPELL.sub(_respell_one, rest)
    if sort_query:
        query_at = rest.find("?")
        if query_at >= 0 and "&" in rest:
            rest = rest[:query_at + 1] + "&".join(sorted(rest[query_at + 1:].split("&")))
    return href[:path_start] + rest


@lru_cache(maxsize=65536)
def canonicalize(url: str, sort_query: bool = False) -> str:
    """The form of `url` used for dedup and fetching: the same page gives the same string.

    `url` must be an absolute http(s) URL; it is parsed as a browser would, then spelled
    one way (the rules are in this module's docstring). Raises `BadURL` for anything that
    is not an absolute http(s) URL with a valid host and port, and never anything else.
    """
    if not isinstance(url, str):
        raise BadURL(f"a URL must be a string, not {type(url).__name__}")
    if _already_canonical(url, sort_query):
        return url
    hash_at = url.find("#")  # the fragment is dropped anyway; what precedes it is the URL
    if hash_at >= 0 and _already_canonical(url[:hash_at], sort_query):
        return url[:hash_at]
    return _canonical_from_whatwg(whatwg_href(url), url, sort_query)


def join(base: str, href: str) -> str:
    """`href` resolved against `base` as a browser does (fragment kept, not canonicalised);
    raises `BadURL` when no URL results."""
    return whatwg_href(href, base)


@lru_cache(maxsize=1024)
def _origin_prefix(base: str) -> str | None:
    """`scheme://authority` of a serialised http(s) base URL, when a root-relative link can
    simply be appended to it (None for anything unusual: then the full join runs)."""
    if base.startswith("http://"):
        start = 7
    elif base.startswith("https://"):
        start = 8
    else:
        return None
    end = base.find("/", start)
    if end < 0:
        return None
    prefix = base[:end]
    if any(c in prefix for c in "\\?#\t\n\r ") or not prefix.isascii():
        return None
    return prefix


@lru_cache(maxsize=1024)
def _base_parts(base: str) -> tuple[str | None, str | None]:
    """What the shortcuts of `resolve` need from a page's base URL, worked out once per
    base (every link of a page shares it): its origin prefix (None: root-relative links
    take the full join) and, when the base is canonical, its directory URL, up to the last
    `/` of its path (None: path-relative links take the full join)."""
    prefix = _origin_prefix(base)
    if prefix is None or not _already_canonical(base, False):
        return prefix, None
    path = base[len(prefix):]
    query_at = path.find("?")
    if query_at >= 0:
        path = path[:query_at]
    return prefix, prefix + path[:path.rfind("/") + 1]


@lru_cache(maxsize=16384)
def _resolve_joined(base: str, href: str, sort_query: bool) -> str:
    return _canonical_from_whatwg(whatwg_href(href, base), href, sort_query)


# A path-relative link made only of characters that need no escaping and mean nothing
# special (no scheme, backslash, escape, space or control character): joining it is the
# RFC 3986 merge and dot-segment removal, which the WHATWG parser agrees with for these.
_PLAIN_RELATIVE = re.compile(
    r"(?![/?])[A-Za-z0-9\-._~!$&'()*+,;=@/]*+(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@/?]*+)?")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for an absolute path (as browsers do for http(s))."""
    output: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments[1:], 1):
        last = i == len(segments) - 1
        if segment == "..":
            if len(output) > 0:
                output.pop()
            if last:
                output.append("")
        elif segment == ".":
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


def _join_plain(directory: str, href: str) -> str | None:
    """`href` (a path-relative link, fragment already removed) joined to the directory URL
    of a canonical base (`_base_parts`) without the full parser; None when it is unusual.
    The directory has no dot segment (a canonical URL has none), so only the link's can
    need removing."""
    if _PLAIN_RELATIVE.fullmatch(href) is None:
        return None
    rel_query_at = href.find("?")
    rel_path = href if rel_query_at < 0 else href[:rel_query_at]
    query = "" if rel_query_at < 0 else href[rel_query_at:]
    if rel_path[:1] != "." and "/." not in rel_path:  # no `.` or `..` segment
        return directory + rel_path + query
    path_at = directory.index("/", directory.index("//") + 2)
    path = directory[path_at:]
    while True:  # leading `./` and `../` segments: the usual ones, taken off the directory
        if rel_path.startswith("../"):
            path = path[:path.rfind("/", 0, len(path) - 1) + 1] or "/"
            rel_path = rel_path[3:]
        elif rel_path.startswith("./"):
            rel_path = rel_path[2:]
        else:
            break
    merged = path + rel_path
    if rel_path[:1] == "." or "/." in rel_path:  # any other: the general algorithm
        merged = _remove_dot_segments(merged)
    return directory[:path_at] + merged + query


@lru_cache(maxsize=16384)
def _resolve_relative(directory: str, href: str, sort_query: bool) -> str | None:
    """The canonical URL of path-relative link `href` on any page in `directory` (the join
    cache: the pages of one directory repeat their relative links); None when the link
    needs the full join."""
    joined = _join_plain(directory, href.partition("#")[0] if "#" in href else href)
    return None if joined is None else canonicalize(joined, sort_query)


def resolve(base: str, href: str, sort_query: bool = False) -> str:
    """The canonical URL of link `href` found on a page at `base` (join, then
    `canonicalize`): what links, redirects and `<base href>` go through. Raises `BadURL`.

    Absolute links and root-relative links (`/path`), most of a page's links, cost one
    cache lookup once seen: a root-relative link is the base's origin plus the link.
    Plain path-relative links (`p/2.html`, `../c/1`) are joined here too, and cached per
    directory of the base; anything else goes through the WHATWG parser.
    """
    if href.startswith(("http://", "https://")):
        return canonicalize(href, sort_query)
    prefix, directory = _base_parts(base)
    first = href[:1]
    if first == "/":
        if prefix is not None and href[1:2] not in ("/", "\\") \
                and "\t" not in href and "\n" not in href and "\r" not in href:
            return canonicalize(prefix + href, sort_query)
    elif directory is not None and first and first != "?" and first != "#":
        resolved = _resolve_relative(directory, href, sort_query)
        if resolved is not None:
            return resolved
    return _resolve_joined(base, href, sort_query)


_SESSION_PARAM = re.compile(
    r"(?:jsessionid|phpsessid|sid|sessionid|aspsessionid[a-z]*)(?:=|$)", re.IGNORECASE)
_PATH_SESSION = re.compile(r";jsessionid=[^/?;]*", re.IGNORECASE)


def dedup_key(url: str) -> str:
    """The seen-set key of a canonical URL with session-id parameters removed
    (`crawl.strip_session_ids`): `/a;jsessionid=X?PHPSESSID=Y&id=3` is `/a?id=3`."""
    lowered = url.lower()
    if "sid" not in lowered and "session" not in lowered:  # all the names contain one
        return url
    query_at = url.find("?")
    path = url if query_at < 0 else url[:query_at]
    if ";" in path:
        path = _PATH_SESSION.sub("", path)
    if query_at < 0:
        return path
    kept = [p for p in url[query_at + 1:].split("&") if not _SESSION_PARAM.match(p)]
    return f"{path}?{'&'.join(kept)}" if kept else path


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


def _host_port(url: str) -> str:
    """`host[:port]` of a canonical URL, credentials left out."""
    start = url.index("://") + 3
    end = url.find("/", start)
    netloc = url[start:end] if end >= 0 else url[start:]
    return netloc.rpartition("@")[2] if "@" in netloc else netloc


def origin(url: str) -> str:
    """`scheme://host:port` of a canonical URL: the key of per-host limits and pools."""
    scheme = url[:url.index("://")]
    host_port = _host_port(url)
    if host_port.endswith("]") or ":" not in host_port:
        return f"{scheme}://{host_port}:{DEFAULT_PORTS[scheme]}"
    return f"{scheme}://{host_port}"


def canonical_host(url: str) -> str:
    """The host of a canonical URL (as `canonicalize` returns), by string slicing: this
    runs for every link found, and parsing would cost several times as much."""
    start = url.index("://") + 3
    end = url.find("/", start)
    netloc = url[start:end] if end >= 0 else url[start:]
    if "@" in netloc:
        netloc = netloc.rpartition("@")[2]
    if netloc[:1] == "[":
        return netloc[1:netloc.index("]")]
    colon = netloc.find(":")
    return netloc if colon < 0 else netloc[:colon]


def hostname(url: str) -> str:
    """The host of any http(s) URL as the crawler sees it ('' when it is not one)."""
    try:
        return canonical_host(canonicalize(url))
    except BadURL:
        return ""


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """True when `host` is one of `allowed` or a subdomain of one (empty set: all)."""
    if not allowed or host in allowed:
        return True
    return any(host.endswith("." + domain) for domain in allowed)
