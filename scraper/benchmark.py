"""`scraper bench`: a synthetic catalogue served from its own process, and its spider.

- `CatalogueServer`: a single-threaded, selectors-based HTTP/1.1 keep-alive server for a
  catalogue generated in memory, page by page as requested: an index and N-1 product
  pages of about 8 KB, each linking to the next page, to 8 pseudo-random pages, to a
  fragment variant and to a relative variant (the shape of the benchmark kit's
  `gen_site.py`). Every response leaves in one `send` with TCP_NODELAY. It counts the
  TCP connections it accepts and the requests it answers.
- `BenchServer`: runs `python -m scraper.benchmark --pages N` as a child process (so
  the crawler's CPU time and memory are its own) and asks it for its counts.
- `BenchCatalogue`: the spider (one item per page, follows every link).
- `run_benchmark()`: serve, crawl, measure; returns the figures as a dict.

The server side uses the standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .spider import Spider

RANDOM_LINKS = 8
FILLER = ("lorem ipsum dolor sit amet consectetur adipiscing elit " * 130).rstrip()
READ_SIZE = 256 * 1024
MAX_HEAD = 64 * 1024  # a request head longer than this closes the connection
SERVER_TIMEOUT = 10.0  # seconds to wait for the server process to start or answer


# -- the catalogue ---------------------------------------------------------------------------


def _mix(i: int, k: int) -> int:
    """A cheap deterministic hash (a few integer operations, no per-page RNG)."""
    h = (i * 0x9E3779B1 + (k + 1) * 0x85EBCA77) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & 0xFFFFFFFF
    h ^= h >> 12
    return h


def index_page() -> bytes:
    """The start page: one link to the first product."""
    return (b'<!doctype html><html><head><title>Catalogue</title></head><body>'
            b'<a href="/p/0.html">start</a></body></html>')


_FILLER_BYTES = FILLER.encode()


def product_page(i: int, products: int) -> bytes:
    """Product page `i` of `products` (0-based): about 8 KB with 11 or 12 links."""
    links = {(i + 1) % products} | {_mix(i, k) % products for k in range(RANDOM_LINKS)}
    items = "\n".join(f'<li><a href="/p/{j}.html">Product {j}</a></li>' for j in sorted(links))
    items += f'\n<li><a href="/p/{(i + 1) % products}.html#reviews">reviews</a></li>'
    items += f'\n<li><a href="../p/{(i + 2) % products}.html">rel</a></li>'
    top = (f'<!doctype html><html><head><meta charset="utf-8"><title>Product {i}</title>'
           f'</head>\n<body><nav><a href="/">home</a></nav>\n'
           f'<article class="product" data-sku="SKU-{i:07d}">\n'
           f'<h1 class="name">Product {i}</h1><p class="price">{(i * 37) % 1000 + 0.99:.2f}'
           f'</p>\n<div class="desc">')
    bottom = f'</div></article>\n<ul class="related">{items}</ul></body></html>'
    return b"".join((top.encode(), _FILLER_BYTES, bottom.encode()))


_NOT_FOUND = b"<!doctype html><html><head><title>Not found</title></head></html>"


def _head(status: bytes, length: int, connection: bytes = b"") -> bytes:
    """A response head; `connection`: the Connection header's value, if any."""
    return (b"HTTP/1.1 " + status + b"\r\nServer: scraper-bench\r\n"
            b"Content-Type: text/html; charset=utf-8\r\nContent-Length: "
            + str(length).encode()
            + (b"\r\nConnection: " + connection if connection else b"") + b"\r\n\r\n")


# -- the server (runs in its own process) ----------------------------------------------------


class _Connection:
    __slots__ = ("close_after", "inbuf", "outbuf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = b""
        self.close_after = False


class CatalogueServer:
    """The catalogue of `pages` pages (the index and `pages - 1` products) on one port.

    `serve_forever(control)` runs the event loop; a line `stats` on the `control` file
    descriptor writes the counts as one JSON line to `report`; end of file stops it.
    """

    def __init__(self, pages: int, host: str = "127.0.0.1", port: int = 0) -> None:
        if pages < 2:
            raise ValueError("the catalogue needs at least 2 pages (the index and a product)")
        self.products = pages - 1
        self.listener = socket.create_server((host, port), backlog=1024)
        self.listener.setblocking(False)
        self.host = host
        self.port: int = self.listener.getsockname()[1]
        self.accepted = 0
        self.requests = 0
        self.max_open = 0
        self.bytes_sent = 0
        self._selector = selectors.DefaultSelector()
        self._connections: dict[int, _Connection] = {}

    def counts(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"connections": self.accepted, "requests": self.requests,
                "open": len(self._connections), "max_open": self.max_open,
                "bytes_sent": self.bytes_sent,
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}

    def respond(self, method: bytes, target: bytes, connection: bytes = b"") -> bytes:
        """The whole response (head and body) to one request; `connection`: the value
        of its Connection header (`close`, or `keep-alive` for an HTTP/1.0 client)."""
        path = target.split(b"?", 1)[0].split(b"#", 1)[0]
        body = None
        if path == b"/":
            body = index_page()
        elif path.startswith(b"/p/") and path.endswith(b".html"):
            number = path[3:-5]
            if number.isdigit() and int(number) < self.products:
                body = product_page(int(number), self.products)
        status = b"200 OK"
        if body is None:
            status, body = b"404 Not Found", _NOT_FOUND
        head = _head(status, len(body), connection)
        return head if method == b"HEAD" else head + body

    def serve_forever(self, control: int, report: IO[str]) -> None:
        selector = self._selector
        selector.register(self.listener, selectors.EVENT_READ, None)
        selector.register(control, selectors.EVENT_READ, "control")
        try:
            while True:
                for key, mask in selector.select():
                    if key.data is None:
                        self._accept()
                    elif key.data == "control":
                        command = os.read(control, 4096)
                        if not command:
                            return
                        for _ in range(command.count(b"stats")):
                            report.write(json.dumps(self.counts()) + "\n")
                            report.flush()
                    else:
                        connection = key.data
                        if mask & selectors.EVENT_READ:
                            self._read(connection)
                        if mask & selectors.EVENT_WRITE and connection.sock.fileno() >= 0:
                            self._flush(connection)
        finally:
            for connection in list(self._connections.values()):
                self._close(connection)
            selector.close()
            self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. too many open files: leave it in the backlog
                return
            self.accepted += 1
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(sock)
            self._connections[sock.fileno()] = connection
            self.max_open = max(self.max_open, len(self._connections))
            self._selector.register(sock, selectors.EVENT_READ, connection)

    def _close(self, connection: _Connection) -> None:
        sock = connection.sock
        if sock.fileno() < 0:
            return
        self._connections.pop(sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()

    def _read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(connection)
            return
        inbuf = connection.inbuf
        inbuf += data
        responses = []
        while not connection.close_after:
            end = inbuf.find(b"\r\n\r\n")
            if end < 0:
                if len(inbuf) > MAX_HEAD:
                    self._close(connection)
                    return
                break
            head = bytes(inbuf[:end])
            request_line, _, fields = head.partition(b"\r\n")
            parts = request_line.split()
            lower = fields.lower()
            body_length = 0
            if b"content-length:" in lower:
                value = lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0].strip()
                body_length = int(value) if value.isdigit() else 0
            if len(inbuf) < end + 4 + body_length:
                break  # the request body has not all arrived
            del inbuf[:end + 4 + body_length]
            if len(parts) != 3:
                connection.close_after = True
                responses.append(_head(b"400 Bad Request", 0, b"close"))
                break
            method, target, version = parts
            if b"connection: close" in lower:
                header = b"close"
            elif version == b"HTTP/1.0":  # persistent only when asked for, and said so
                header = b"keep-alive" if b"connection: keep-alive" in lower else b"close"
            else:
                header = b""
            self.requests += 1
            responses.append(self.respond(method, target, header))
            connection.close_after = header == b"close"
        if responses:
            self._send(connection, b"".join(responses))

    def _send(self, connection: _Connection, data: bytes) -> None:
        if connection.outbuf:
            connection.outbuf += data
            return
        connection.outbuf = data
        self._flush(connection)
        if connection.outbuf and connection.sock.fileno() >= 0:
            self._selector.modify(connection.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                  connection)

    def _flush(self, connection: _Connection) -> None:
        try:
            sent = connection.sock.send(connection.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(connection)
            return
        self.bytes_sent += sent
        pending = connection.outbuf[sent:]
        connection.outbuf = pending
        if pending:
            return
        if connection.close_after:
            self._close(connection)
            return
        with contextlib.suppress(KeyError, ValueError):
            if self._selector.get_key(connection.sock).events & selectors.EVENT_WRITE:
                self._selector.modify(connection.sock, selectors.EVENT_READ, connection)


def _serve_main(argv: list[str] | None = None) -> int:
    """The server process: prints `{"port": P}`, then serves until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m scraper.benchmark",
                                     description="Serve the benchmark catalogue on loopback.")
    parser.add_argument("--pages", type=int, default=5000)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = CatalogueServer(args.pages, port=args.port)
    sys.stdout.write(json.dumps({"port": server.port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(sys.stdin.fileno(), sys.stdout)
    return 0


# -- the parent's handle on the server process -----------------------------------------------


class BenchServer:
    """The catalogue server in a child process, for a `with` block.

    `url` is its start page; `stats()` asks it for its counts (connections accepted,
    requests answered, its own CPU seconds).
    """

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.port = 0
        self.pid = 0
        self._proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> BenchServer:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "scraper.benchmark", "--pages", str(self.pages)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        hello = self._read_line("start")
        self.port, self.pid = int(hello["port"]), int(hello["pid"])
        return self

    def _read_line(self, what: str) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self._proc.stdout, selectors.EVENT_READ)
        try:
            ready = selector.select(SERVER_TIMEOUT)
        finally:
            selector.close()
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"the benchmark server did not {what} (exit code "
                               f"{self._proc.returncode})")
        return json.loads(line)

    def stats(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write("stats\n")
        self._proc.stdin.flush()
        return self._read_line("answer")

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=SERVER_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> BenchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the spider and the run ------------------------------------------------------------------


class BenchCatalogue(Spider):
    """One item (URL, title) per page; follows every link."""

    name = "bench"
    start_urls = ["http://127.0.0.1:8082/"]

    def __init__(self, start: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if start:
            self.start_urls = [start]

    def parse(self, response: Any) -> Iterator[Any]:
        title = response.css_first("title")
        yield {"url": response.url, "title": title.text() if title else None}
        yield from response.follow_all("a[href]")


def run_benchmark(pages: int = 5000, workers: int = 16, per_host: int | None = None, *,
                  overrides: Iterable[str] = (), url: str | None = None,
                  handle_signals: bool = False,
                  on_progress: Callable[[dict[str, Any]], None] | None = None,
                  progress_interval: float = 5.0) -> dict[str, Any]:
    """Serve the catalogue of `pages` pages (unless `url` names a site to crawl instead),
    crawl it with `workers` workers and `per_host` connections, and return the figures.

    Settings are the defaults with `crawl.workers` and `crawl.per_host`, then `overrides`
    (`SECTION.KEY=VALUE`); no settings file is read. Without `url`, `server_*` keys hold
    what the server counted; with `url` they are None.
    """
    from .api import build_crawler
    from .settings import Layer, build, layer_from_pairs

    per_host = per_host or workers
    loaded = build([Layer("scraper bench", {"crawl.workers": workers,
                                            "crawl.per_host": per_host}),
                    layer_from_pairs("-s", overrides)])
    settings = loaded.settings
    server = BenchServer(pages) if url is None else None
    with server if server is not None else contextlib.nullcontext():
        start = url or server.url  # type: ignore[union-attr]
        crawler = build_crawler(BenchCatalogue(start=start), settings,
                                handle_signals=handle_signals,
                                on_progress=on_progress or (lambda snapshot: None),
                                progress_interval=progress_interval)
        idle = server.stats() if server is not None else None
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        result = crawler.run()
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        served = server.stats() if server is not None else None
    stats = result.stats
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    done = stats["pages"]
    figures: dict[str, Any] = {
        "url": start,
        "site_pages": pages if url is None else None,
        "workers": settings.crawl.workers,
        "per_host": settings.crawl.per_host,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "pages": done,
        "items": stats["items"],
        "requests": stats["requests"],
        "failed": stats["failed"],
        "retries": stats["retries"],
        "stale_retries": stats["stale_retries"],
        "finish_reason": result.finish_reason,
        "exit_code": result.exit_code,
        "wall_s": round(wall, 3),
        "pages_per_s": round(done / wall, 1) if wall > 0 else 0.0,
        "cpu_s": round(cpu, 3),
        "cpu_s_per_1000_pages": round(cpu * 1000 / done, 3) if done else None,
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1),  # Linux: kilobytes
        "connections_opened": stats["connections_opened"],
        "connections_reused": stats["connections_reused"],
        "server_connections": served["connections"] if served else None,
        "server_requests": served["requests"] if served else None,
        "server_cpu_s": round(served["cpu_s"] - idle["cpu_s"], 3) if served and idle else None,
    }
    return figures


if __name__ == "__main__":
    sys.exit(_serve_main())
