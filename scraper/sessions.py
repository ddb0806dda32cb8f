"""Sessions: named cookie jars a crawl keeps, like browser profiles, and their pool.

The jar is the standard library's `http.cookiejar.CookieJar`: RFC 6265's rules for
Domain, Path, Secure, Expires and Max-Age, a lock around every read and write (it is
shared by the worker threads), no dependency, and the implementation `requests` relies
on. Its policy is made stricter here, to what browsers do:

- a cookie's Domain must domain-match the host that set it (the standard library's
  Netscape mode accepts `evil-example.com` setting a cookie for `example.com`), may not
  be an IP address other than the host, and may not be a public suffix (`com`,
  `co.uk`, `github.io`: the Public Suffix List of the system, when it has one, at
  `/usr/share/publicsuffix/`, else the standard library's short list);
- a cookie without Domain (host-only) goes back to that host only, not its subdomains.

HttpOnly cookies are sent like the others (HttpOnly only hides a cookie from scripts).

`SessionPool` holds the sessions by name: `sessions.size` of them handed out round-robin
to requests that name none, retired (emptied and started afresh under the same name)
after `sessions.max_uses` requests, after `sessions.max_age`, on a status in
`sessions.retire_statuses`, on a page `Spider.blocked()` flags, or when a callback
asks (`response.session.retire()`, `Retry(new_session=True)`). With a store (the jobdir,
or a frontier that offers `load_session`/`save_session`), each session is saved when
its cookies change and loaded when first used, so a resumed crawl stays logged in.
Cookie values are never logged and never counted in stats.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterable, Mapping
from functools import lru_cache
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from .settings import SessionSettings
from .stats import Stats

DEFAULT_SESSION = "default"
PUBLIC_SUFFIX_FILES = (
    Path("/usr/share/publicsuffix/public_suffix_list.dat"),  # Debian, Ubuntu, Fedora
    Path("/usr/share/publicsuffix/effective_tld_names.dat"),
)
_IPV4 = r"^\d+\.\d+\.\d+\.\d+$"


# -- the public suffix list ---------------------------------------------------------------

@lru_cache(maxsize=1)
def _suffix_rules() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(exact rules, wildcard parents, exceptions) from the system's list; empty if none."""
    for path in PUBLIC_SUFFIX_FILES:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        exact, wildcard, exceptions = set(), set(), set()
        for line in text.splitlines():
            rule = line.strip().split(" ", 1)[0].lower()
            if not rule or rule.startswith("//"):
                continue
            rule = rule.encode("idna").decode("ascii") if not rule.isascii() else rule
            if rule.startswith("!"):
                exceptions.add(rule[1:])
            elif rule.startswith("*."):
                wildcard.add(rule[2:])
            else:
                exact.add(rule)
        return frozenset(exact), frozenset(wildcard), frozenset(exceptions)
    return frozenset(), frozenset(), frozenset()


def is_public_suffix(domain: str) -> bool:
    """True for a domain under which anyone may register names (`com`, `co.uk`)."""
    domain = domain.strip(".").lower()
    if "." not in domain:
        return True  # a top-level domain, or a bare name like `localhost`: never shared
    exact, wildcard, exceptions = _suffix_rules()
    if domain in exceptions:
        return False
    return domain in exact or domain.split(".", 1)[1] in wildcard


class BrowserCookiePolicy(DefaultCookiePolicy):
    """The standard library's policy with a browser's domain rules (see the module)."""

    def __init__(self) -> None:
        super().__init__(strict_ns_domain=DefaultCookiePolicy.DomainStrictNonDomain
                         | DefaultCookiePolicy.DomainRFC2965Match)

    def set_ok_domain(self, cookie: Cookie, request: Any) -> bool:
        if not cookie.domain_specified:
            return super().set_ok_domain(cookie, request)
        host = _host(request.get_full_url())
        domain = cookie.domain.lstrip(".").lower()
        if host == domain:
            return super().set_ok_domain(cookie, request)
        if _is_ip(host) or not host.endswith("." + domain) or is_public_suffix(domain):
            return False
        return super().set_ok_domain(cookie, request)


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _is_ip(host: str) -> bool:
    return ":" in host or host.replace(".", "").isdigit()


# -- what http.cookiejar reads of a request and a response ---------------------------------

class JarRequest:
    """The urllib.request.Request interface http.cookiejar needs, for one URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        self.type = parts.scheme.lower()
        self.host = parts.netloc
        self.origin_req_host = (parts.hostname or "").lower()
        self.unverifiable = False
        self.cookie_header: str | None = None

    def get_full_url(self) -> str:
        return self.url

    def get_host(self) -> str:
        return self.host

    def get_type(self) -> str:
        return self.type

    def is_unverifiable(self) -> bool:
        return False

    def get_origin_req_host(self) -> str:
        return self.origin_req_host

    def has_header(self, name: str) -> bool:
        return name.lower() == "cookie" and self.cookie_header is not None

    def get_header(self, name: str, default: str | None = None) -> str | None:
        return self.cookie_header if name.lower() == "cookie" and self.cookie_header \
            else default

    def header_items(self) -> list[tuple[str, str]]:
        return [("Cookie", self.cookie_header)] if self.cookie_header else []

    def add_unredirected_header(self, name: str, value: str) -> None:
        if name.lower() == "cookie":
            self.cookie_header = value


class _JarHeaders:
    def __init__(self, set_cookies: list[str]) -> None:
        self._set_cookies = set_cookies

    def get_all(self, name: str, default: Any = None) -> Any:
        return list(self._set_cookies) if name.lower() == "set-cookie" and \
            self._set_cookies else default


class _JarResponse:
    def __init__(self, set_cookies: list[str]) -> None:
        self._headers = _JarHeaders(set_cookies)

    def info(self) -> _JarHeaders:
        return self._headers


def set_cookie_headers(headers: Mapping[str, str]) -> list[str]:
    """Every `Set-Cookie` header of a response, each one whole (never comma-joined:
    a cookie's Expires date has a comma in it)."""
    getlist = getattr(headers, "getlist", None) or getattr(headers, "get_all", None)
    if getlist is not None:
        return [value for value in getlist("set-cookie") or () if value]
    value = next((v for k, v in headers.items() if k.lower() == "set-cookie"), None)
    return [value] if value else []


# -- one session -------------------------------------------------------------------------

_FIELDS = ("version", "name", "value", "port", "port_specified", "domain",
           "domain_specified", "domain_initial_dot", "path", "path_specified", "secure",
           "expires", "discard", "comment", "comment_url")


def dump_cookies(jar: CookieJar) -> list[dict[str, Any]]:
    cookies = []
    for cookie in jar:
        entry = {name: getattr(cookie, name) for name in _FIELDS}
        entry["rest"] = dict(cookie._rest)  # type: ignore[attr-defined]  # HttpOnly, SameSite
        cookies.append(entry)
    return cookies


def load_cookies(jar: CookieJar, cookies: Iterable[Mapping[str, Any]]) -> None:
    now = time.time()
    for entry in cookies:
        if entry.get("expires") is not None and entry["expires"] <= now:
            continue
        jar.set_cookie(Cookie(**{name: entry.get(name) for name in _FIELDS},
                              rest=dict(entry.get("rest") or {})))


class Session:
    """One named session: its cookie jar, when it began, how often it was used, and its
    generation (how many times it was retired and started afresh)."""

    __slots__ = ("created", "generation", "jar", "name", "saved", "uses")

    def __init__(self, name: str, generation: int = 0, created: float | None = None) -> None:
        self.name = name
        self.jar = CookieJar(BrowserCookiePolicy())
        self.generation = generation
        self.created = time.time() if created is None else created
        self.uses = 0
        self.saved = ""  # the cookies the store holds (as JSON), to save only changes

    def cookie_header(self, url: str) -> str | None:
        """The `Cookie` header value the jar holds for `url` (None when there is none)."""
        if not self.jar._cookies:  # type: ignore[attr-defined]  # most crawls: ~0.3 µs
            return None
        request = JarRequest(url)
        self.jar.add_cookie_header(request)
        return request.cookie_header

    def extract(self, url: str, set_cookies: list[str]) -> None:
        """Store the cookies a response to `url` set (those the policy accepts)."""
        self.jar.extract_cookies(_JarResponse(set_cookies), JarRequest(url))  # type: ignore[arg-type]

    def set(self, url: str, cookies: Mapping[str, str]) -> None:
        """Cookies given by the spider (`Request(cookies=...)`), for `url`'s host only."""
        host = _host(url)
        domain = host if "." in host or _is_ip(host) else host + ".local"
        for name, value in cookies.items():
            self.jar.set_cookie(Cookie(0, name, value, None, False, domain, False, False, "/",
                                       True, False, None, True, None, None, {}))

    def values(self) -> dict[str, str]:
        return {cookie.name: cookie.value or "" for cookie in self.jar}

    def dump(self) -> tuple[str, str]:
        """(the session as JSON, its cookies as JSON: what tells a change)."""
        cookies = dump_cookies(self.jar)
        whole = json.dumps({"generation": self.generation, "created": self.created,
                            "uses": self.uses, "cookies": cookies}, sort_keys=True)
        return whole, json.dumps([self.generation, cookies], sort_keys=True)

    @classmethod
    def load(cls, name: str, text: str) -> Session:
        data = json.loads(text)
        session = cls(name, int(data.get("generation", 0)), float(data.get("created", 0)))
        session.uses = int(data.get("uses", 0))
        load_cookies(session.jar, data.get("cookies", ()))
        session.saved = session.dump()[1]
        return session

    def __repr__(self) -> str:  # never the cookie values
        return f"<Session {self.name!r} generation {self.generation}, {len(self.jar)} cookies>"


class SessionView:
    """What `response.session` is: the session that fetched the page.

    `name`; `retire()` empties it (a fresh session under the same name for the requests
    that follow; once per generation, so that many pages seeing the same ban retire it
    once); `cookies`: a `{name: value}` copy of its cookies.
    """

    __slots__ = ("_pool", "generation", "name")

    def __init__(self, pool: SessionPool, name: str, generation: int) -> None:
        self._pool = pool
        self.name = name
        self.generation = generation

    def retire(self) -> None:
        self._pool.retire(self.name, self.generation)

    @property
    def cookies(self) -> dict[str, str]:
        return self._pool.get(self.name).values()

    def __repr__(self) -> str:
        return f"<Session {self.name!r}>"


# -- the pool ---------------------------------------------------------------------------

class SessionStore(Protocol):
    """Where sessions persist: the jobdir, or a shared frontier (Redis)."""

    def load_session(self, name: str) -> str | None: ...

    def save_session(self, name: str, value: str) -> None: ...


class JobStoreSessions:
    """Sessions in the jobdir's `state` table (keys `session:NAME`)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def load_session(self, name: str) -> str | None:
        value = self._store.load_state(f"session:{name}")
        return str(value) if value is not None else None

    def save_session(self, name: str, value: str) -> None:
        self._store.save_state(f"session:{name}", value)


class SessionPool:
    """The crawl's sessions by name (thread-safe)."""

    def __init__(self, settings: SessionSettings, stats: Stats,
                 store: SessionStore | None = None) -> None:
        self.size = settings.size
        self.max_uses = settings.max_uses
        self.max_age = settings.max_age
        self.retire_statuses = frozenset(settings.retire_statuses)
        self._stats = stats
        self._store = store
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._names = itertools.cycle(
            [DEFAULT_SESSION] if self.size == 1 else [f"s{i}" for i in range(1, self.size + 1)])

    def assign(self) -> str:
        """A session for a request that names none: the default one, or round-robin."""
        with self._lock:
            return next(self._names)

    def get(self, name: str) -> Session:
        with self._lock:
            return self._get(name)

    def _get(self, name: str) -> Session:
        session = self._sessions.get(name)
        if session is None:
            text = self._store.load_session(name) if self._store is not None else None
            session = Session.load(name, text) if text else Session(name)
            self._sessions[name] = session
        return session

    def use(self, name: str) -> Session:
        """The session for one more request: retired first when it is worn out."""
        with self._lock:
            session = self._get(name)
            worn = (self.max_uses and session.uses >= self.max_uses) or \
                (self.max_age and time.time() - session.created >= self.max_age)
            if worn:
                session = self._renew(session)
            session.uses += 1
            return session

    def retire(self, name: str, generation: int | None = None) -> bool:
        """Empty the session `name` (only if still at `generation`, when given)."""
        with self._lock:
            session = self._get(name)
            if generation is not None and session.generation != generation:
                return False
            self._renew(session)
            return True

    def _renew(self, session: Session) -> Session:
        fresh = Session(session.name, session.generation + 1)
        fresh.saved = session.saved
        self._sessions[session.name] = fresh
        self._stats.inc("sessions_retired")
        self._save(fresh)
        return fresh

    def changed(self, session: Session) -> None:
        """Save a session whose cookies may have changed (when there is a store)."""
        if self._store is None:
            return
        with self._lock:
            if self._sessions.get(session.name) is session:
                self._save(session)

    def _save(self, session: Session) -> None:
        if self._store is None:
            return
        whole, cookies = session.dump()
        if cookies != session.saved:
            self._store.save_session(session.name, whole)
            session.saved = cookies

    def view(self, session: Session) -> SessionView:
        return SessionView(self, session.name, session.generation)

    def save_all(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                self._save(session)
