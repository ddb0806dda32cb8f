"""`scraper bench`: its own server in a separate process, and the figures it reports."""

from __future__ import annotations

import json
import socket

from click.testing import CliRunner

from scraper.benchmark import BenchServer
from scraper.cli import main


def test_bench_json_counts_pages_and_connections() -> None:
    result = CliRunner().invoke(main, ["bench", "--pages", "300", "--workers", "8", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["pages"] == 300
    assert figures["items"] == 300
    assert figures["failed"] == 0
    assert figures["finish_reason"] == "finished"
    assert figures["per_host"] == 8
    assert figures["server_connections"] == figures["connections_opened"]
    assert 1 <= figures["connections_opened"] <= figures["per_host"]
    assert figures["server_requests"] == figures["requests"]  # pages + robots.txt
    assert figures["pages_per_s"] > 0
    assert figures["cpu_s_per_1000_pages"] > 0


def _exchange(sock: socket.socket, request: bytes, responses: int) -> list[bytes]:
    """Send `request` (one or several pipelined) and read `responses` whole responses."""
    sock.sendall(request)
    data = b""
    heads: list[bytes] = []
    while len(heads) < responses:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end]
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body_end = end + 4 + (0 if head.startswith(b"HEAD") else length)
            if len(data) >= body_end:
                heads.append(head)
                data = data[body_end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection early"
        data += chunk
    return heads


def test_bench_server_keep_alive_pipelining_http10_and_close() -> None:
    with BenchServer(10) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        heads = _exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                                b"GET /p/8.html HTTP/1.1\r\nHost: x\r\n\r\n"
                                b"GET /p/9.html HTTP/1.1\r\nHost: x\r\n\r\n", 3)
        assert [h.split(b"\r\n")[0] for h in heads] == [
            b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"]
        heads = _exchange(sock, b"GET /p/1.html HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 1)
        assert b"Connection: keep-alive" in heads[0]  # an HTTP/1.0 client is told
        heads = _exchange(sock, b"GET /p/0.html HTTP/1.1\r\nConnection: close\r\n\r\n", 1)
        assert b"Connection: close" in heads[0]
        assert sock.recv(1) == b""  # closed after the response
        counts = server.stats()
    assert counts["connections"] == 1
    assert counts["requests"] == 5
