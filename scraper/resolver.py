"""Where a host name leads, and whether the crawler may go there.

- `HostPatterns`: host names and `*.suffix` patterns (`*.example.com` matches every
  subdomain of example.com at any depth, not example.com itself), each with a value.
  `http.resolve` and the trusted hosts are both written this way.
- `Resolver.resolve(host, port, timeout)`: the socket addresses to connect to. An IP
  literal is used as it is, a name mapped by `http.resolve` (like curl's `--resolve`)
  goes to its address, and any other name is looked up with getaddrinfo in a daemon
  thread, so the caller gives up after `timeout` even though getaddrinfo cannot be
  interrupted. Concurrent callers share one lookup; answers are cached for
  `http.dns_ttl`, "no such name" answers for `NEGATIVE_TTL` at most.
- `AddressGuard`: the crawl's own hosts (start URLs, `allowed_domains`, `http.resolve`
  names, the proxy) may be anywhere. Any other host may only be connected at a public
  unicast address: loopback, private (RFC 1918, unique-local IPv6), link-local (the
  cloud metadata address 169.254.169.254 among them), multicast, unspecified and
  reserved addresses are refused with `BlockedAddress` before a socket is opened. The
  client judges the very address it connects to, after DNS, so a name that answers
  differently from one lookup to the next (DNS rebinding) gains nothing. An IPv6
  address that embeds an IPv4 one (IPv4-mapped, 6to4, the NAT64 prefix) is judged as
  that IPv4 address.

The module knows sockets and the standard library only; the client wires it into its
connections.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from .errors import BlockedAddress

log = logging.getLogger(__name__)

NEGATIVE_TTL = 10.0
MAX_CACHED = 100_000
MAX_LOGGED_HOSTS = 10_000

#: (address family, socket address with the port), ready for `socket.connect`.
SocketAddress = tuple[int, tuple[Any, ...]]

_V = TypeVar("_V")

_PRIVATE = tuple(ipaddress.ip_network(net) for net in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NEGATIVE_ERRNOS = frozenset(
    code for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None)


def normalize_host(host: str) -> str:
    """Lower case, without a trailing dot or IPv6 brackets: how hosts are compared."""
    return host.strip().lower().rstrip(".").strip("[]")


def is_ip(host: str) -> bool:
    if ":" not in host and not host[-1:].isdigit():
        return False  # a name (an IPv4 address ends with a digit): no parse attempt
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class HostPatterns(Generic[_V]):
    """Host names and `*.suffix` patterns, each with a value; the exact name wins, then
    the longest matching suffix. Adding while other threads look up is safe."""

    def __init__(self, entries: Mapping[str, _V] | None = None) -> None:
        self._exact: dict[str, _V] = {}
        self._suffixes: dict[str, _V] = {}  # ".example.com" -> value
        for pattern, value in (entries or {}).items():
            self.add(pattern, value)

    def add(self, pattern: str, value: _V) -> None:
        name = normalize_host(pattern)
        if name.startswith("*."):
            self._suffixes[name[1:]] = value
        elif name:
            self._exact[name] = value

    def get(self, host: str) -> _V | None:
        name = normalize_host(host)
        value = self._exact.get(name)
        if value is not None or not self._suffixes:
            return value
        dot = name.find(".")
        while dot >= 0:  # a.b.example.com: .b.example.com, then .example.com, then .com
            value = self._suffixes.get(name[dot:])
            if value is not None:
                return value
            dot = name.find(".", dot + 1)
        return None

    def __contains__(self, host: str) -> bool:
        return self.get(host) is not None

    def __bool__(self) -> bool:
        return bool(self._exact or self._suffixes)


def trusted_hosts(start_hosts: Iterable[str], allowed_domains: Iterable[str] = ()) -> list[str]:
    """The crawl's own hosts as patterns for `Client(trusted_hosts=...)`: the start URLs'
    hosts, and each `allowed_domains` entry with its subdomains (the offsite rule's
    reach). `http.resolve` names and the proxy are added by the client itself."""
    hosts = [normalize_host(host) for host in start_hosts if host]
    for domain in allowed_domains:
        name = normalize_host(domain)
        if name:
            hosts += [name, f"*.{name}"]
    return hosts


# -- the address policy -----------------------------------------------------------------


def address_kind(address: str) -> str | None:
    """Why a host outside the crawl may not be connected at `address` ("loopback",
    "private", "link-local", "multicast", "unspecified", "reserved"), or None for a
    public unicast address."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if any(ip in net for net in _PRIVATE):
        return "private"
    if not ip.is_global:
        return "reserved"  # shared (100.64/10), documentation, benchmarking, 240/4, ...
    return None


class AddressGuard:
    """Which addresses a host may be connected at (see the module docstring)."""

    def __init__(self, trusted: Iterable[str] = (), *, allow_private: bool = False) -> None:
        self.allow_private = allow_private
        self._trusted: HostPatterns[bool] = HostPatterns()
        for host in trusted:
            self.trust(host)
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def trust(self, host: str) -> None:
        """Let `host` (a name or a `*.suffix` pattern) be connected at any address."""
        self._trusted.add(host, True)

    def trusts(self, host: str) -> bool:
        return self.allow_private or host in self._trusted

    def connectable(self, host: str, addresses: list[SocketAddress]) -> list[SocketAddress]:
        """The addresses `host` may be connected at, in order; raises `BlockedAddress`
        when there is none."""
        if self.trusts(host):
            return addresses
        allowed = [entry for entry in addresses if address_kind(entry[1][0]) is None]
        if not allowed:
            raise self._refusal(host, addresses)
        return allowed

    def check_all(self, host: str, addresses: list[SocketAddress]) -> None:
        """Raise `BlockedAddress` when any of the addresses is refused (for a proxy's
        target: the proxy, not this process, picks which one it connects to)."""
        if not self.trusts(host) and any(address_kind(entry[1][0]) for entry in addresses):
            raise self._refusal(host, addresses)

    def _refusal(self, host: str, addresses: list[SocketAddress]) -> BlockedAddress:
        kinds = [f"{entry[1][0]} ({address_kind(entry[1][0]) or 'public'})"
                 for entry in addresses]
        where = f"is a {address_kind(host)} address" if is_ip(host) \
            else f"resolves to {', '.join(kinds)}"
        message = (f"{host} {where}, and is not one of the crawl's own hosts (start URLs, "
                   "allowed_domains, http.resolve)")
        with self._lock:
            first = host not in self._logged
            if first and len(self._logged) < MAX_LOGGED_HOSTS:
                self._logged.add(host)
        if first:
            log.warning("blocked_address: %s; set http.allow_private_addresses = true to "
                        "crawl private networks", message)
        return BlockedAddress(message)


# -- resolution -------------------------------------------------------------------------


def system_lookup(host: str, family: int) -> list[SocketAddress]:
    """getaddrinfo's answer for `host`, port 0, in its order (tests replace this)."""
    return [(info[0], info[4])
            for info in socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)]


def literal_address(ip: str, port: int) -> SocketAddress:
    if ":" in ip:
        return socket.AF_INET6, (ip, port, 0, 0)
    return socket.AF_INET, (ip, port)


def _with_port(entry: SocketAddress, port: int) -> SocketAddress:
    family, address = entry
    return family, (address[0], port, *address[2:])


class _Lookup:
    __slots__ = ("answer", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: list[SocketAddress] = []
        self.error: OSError | None = None


class Resolver:
    """Host names to socket addresses: `http.resolve` first, then a cached getaddrinfo
    with a timeout (see the module docstring)."""

    def __init__(self, *, ttl: float, mapped: Mapping[str, str] | None = None,
                 family: int = socket.AF_UNSPEC,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self.negative_ttl = min(ttl, NEGATIVE_TTL)
        self.family = family
        self._mapped: HostPatterns[str] = HostPatterns(mapped)
        self._cache: dict[str, tuple[float, list[SocketAddress] | OSError]] = {}
        self._pending: dict[str, _Lookup] = {}
        self._lock = threading.Lock()
        self.lookups = 0  # getaddrinfo calls made

    def resolve(self, host: str, port: int, timeout: float | None) -> list[SocketAddress]:
        """Where to connect for `host`; raises `socket.gaierror` for an unknown name and
        `TimeoutError` when the lookup outlives `timeout`."""
        name = normalize_host(host)
        target = self._mapped.get(name) if self._mapped else None
        if target is not None:
            return [literal_address(target, port)]
        if is_ip(name):
            return [literal_address(name, port)]
        return [_with_port(entry, port) for entry in self._lookup(name, timeout)]

    def _lookup(self, name: str, timeout: float | None) -> list[SocketAddress]:
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and hit[0] > self._clock():
                if isinstance(hit[1], OSError):  # a fresh copy: other threads raise it too
                    raise socket.gaierror(hit[1].errno, hit[1].strerror)
                return hit[1]
            lookup = self._pending.get(name)
            if lookup is None:
                lookup = self._pending[name] = _Lookup()
                threading.Thread(target=self._run, args=(name, lookup), daemon=True,
                                 name="scraper-dns").start()
        if not lookup.done.wait(None if timeout is None else max(timeout, 0.001)):
            raise TimeoutError(f"DNS lookup of {name} timed out")
        if lookup.error is not None:
            raise lookup.error
        return lookup.answer

    def _run(self, name: str, lookup: _Lookup) -> None:
        try:
            answer = system_lookup(name, self.family)
            lookup.answer = list(dict.fromkeys(answer))  # without repeats, in order
        except OSError as exc:
            lookup.error = exc
        with self._lock:
            self.lookups += 1
            if lookup.error is None:
                ttl, value = self.ttl, lookup.answer
            elif isinstance(lookup.error, socket.gaierror) \
                    and lookup.error.errno in _NEGATIVE_ERRNOS:
                ttl, value = self.negative_ttl, lookup.error
            else:
                ttl = 0.0  # a timeout or a server failure: ask again next time
            if ttl > 0:
                self._store(name, self._clock() + ttl, value)
            self._pending.pop(name, None)
        lookup.done.set()

    def _store(self, name: str, expires: float,
               value: list[SocketAddress] | OSError) -> None:
        """Cache one answer (lock held); past MAX_CACHED names, expired answers go first,
        then the oldest."""
        cache = self._cache
        cache.pop(name, None)
        if len(cache) >= MAX_CACHED:
            now = self._clock()
            for key in [key for key, (until, _) in cache.items() if until <= now]:
                del cache[key]
            while len(cache) >= MAX_CACHED:
                del cache[next(iter(cache))]
        cache[name] = (expires, value)

    def close(self) -> None:
        """Nothing to release: lookup threads are daemons that end on their own."""
