"""Tests of the loopback fault-injecting test server (`servers.FaultServer`).

Only stdlib clients are used, so a failure here points at the server, not at the
crawler under test.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator

import pytest
from servers import Exchange, FaultServer, gzip_bomb_bytes


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv
        assert srv.errors == []
    assert_no_server_threads(srv)


def assert_no_server_threads(srv: FaultServer) -> None:
    leaked = [t.name for t in threading.enumerate() if t.name.startswith("FaultServer-")]
    assert not [name for name in leaked if f"-{srv.port}" in name], leaked


def connect(srv: FaultServer, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(srv.host, srv.port, timeout=timeout)


def get(srv: FaultServer, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    with contextlib.closing(connect(srv)) as conn:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()


def unverified_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def recv_until_eof(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Read until EOF or ``timeout``; returns (data, saw_eof)."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            break
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data), False


# --------------------------------------------------------------------------- #
# Plain HTTP behaviour
# --------------------------------------------------------------------------- #


def test_keep_alive_serves_many_requests_on_one_connection(server: FaultServer) -> None:
    server.add("/a", "alpha")
    with contextlib.closing(connect(server)) as conn:
        bodies = []
        for _ in range(3):
            conn.request("GET", "/a")
            resp = conn.getresponse()
            assert resp.getheader("Content-Length") == "5"
            bodies.append(resp.read())
    assert bodies == [b"alpha"] * 3
    assert server.connections_accepted == 1
    reqs = server.requests
    assert [r.path for r in reqs] == ["/a"] * 3
    assert len({r.connection_id for r in reqs}) == 1
    assert reqs[0].started <= reqs[1].started <= reqs[2].started
    assert server.max_concurrent == 1  # counted per request, not per connection


def test_client_connection_close_is_honoured(server: FaultServer) -> None:
    server.add("/a", "alpha")
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, eof = recv_until_eof(sock, timeout=3)
    assert eof
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in data
    assert data.endswith(b"\r\n\r\nalpha")


def test_distinct_connections_get_distinct_ids(server: FaultServer) -> None:
    server.add("/a", "alpha")
    get(server, "/a")
    get(server, "/a")
    assert server.connections_accepted == 2
    assert len({r.connection_id for r in server.requests}) == 2


def test_unknown_path_is_404(server: FaultServer) -> None:
    status, headers, body = get(server, "/missing")
    assert status == 404
    assert headers["Content-Length"] == str(len(body))
    assert body
    assert server.count("/missing") == 1


def test_add_passes_headers_through(server: FaultServer) -> None:
    server.add(
        "/h",
        b"{}",
        status=201,
        content_type="application/json",
        headers={
            "ETag": '"v1"',
            "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT",
            "Set-Cookie": "sid=abc; Path=/",
            "Retry-After": "7",
        },
    )
    status, headers, body = get(server, "/h")
    assert (status, body) == (201, b"{}")
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == "2"
    assert headers["ETag"] == '"v1"'
    assert headers["Last-Modified"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert headers["Set-Cookie"] == "sid=abc; Path=/"
    assert headers["Retry-After"] == "7"


def test_head_request_gets_length_but_no_body(server: FaultServer) -> None:
    server.add("/a", "alpha")
    with contextlib.closing(connect(server)) as conn:
        conn.request("HEAD", "/a")
        resp = conn.getresponse()
        assert resp.getheader("Content-Length") == "5"
        assert resp.read() == b""
        conn.request("GET", "/a")  # the connection is still in sync
        assert conn.getresponse().read() == b"alpha"


def test_add_page_renders_links(server: FaultServer) -> None:
    server.add_page("/index", ["/one", "/two?a=1&b=2"], title="Home", extra_html="<p id=x>hi</p>")
    status, headers, body = get(server, "/index")
    text = body.decode()
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<a href="/one">' in text
    assert '<a href="/two?a=1&amp;b=2">' in text
    assert "<title>Home</title>" in text
    assert "<p id=x>hi</p>" in text


def test_redirect_sets_location(server: FaultServer) -> None:
    server.add_redirect("/old", "/new", status=301)
    status, headers, body = get(server, "/old")
    assert status == 301
    assert headers["Location"] == "/new"
    assert headers["Content-Length"] == "0"
    assert body == b""


def test_status_sequence_with_retry_after(server: FaultServer) -> None:
    server.add_status_sequence(
        "/flaky", [(503, {"Retry-After": "1"}), (429, {"Retry-After": "2"}), 200]
    )
    seen = []
    with contextlib.closing(connect(server)) as conn:
        for _ in range(4):
            conn.request("GET", "/flaky")
            resp = conn.getresponse()
            seen.append((resp.status, resp.getheader("Retry-After"), resp.read()))
    assert seen == [(503, "1", b"ok"), (429, "2", b"ok"), (200, None, b"ok"), (200, None, b"ok")]
    assert server.count("/flaky") == 4


def test_request_method_query_headers_and_body_are_recorded(server: FaultServer) -> None:
    server.add("/submit", "thanks")
    with contextlib.closing(connect(server)) as conn:
        conn.request("POST", "/submit?x=1", body=b"payload", headers={"X-Token": "t"})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"thanks")  # route matched without query
    (req,) = server.requests
    assert (req.method, req.path, req.path_only, req.body) == (
        "POST",
        "/submit?x=1",
        "/submit",
        b"payload",
    )
    assert req.headers["x-token"] == "t"
    assert req.status == 200
    assert server.count("/submit?x=1") == 1
    assert server.count("/submit") == 0


def test_expect_100_continue(server: FaultServer) -> None:
    server.add_handler("/up", lambda ex: ex.respond(200, ex.request.body[::-1]))
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(
            b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = b"HTTP/1.1 100 Continue\r\n\r\n"
        assert sock.recv(len(interim)) == interim
        sock.sendall(b"abc")
        resp = http.client.HTTPResponse(sock)
        with contextlib.closing(resp):
            resp.begin()
            assert (resp.status, resp.read()) == (200, b"cba")


def test_handler_exchange_send_head_send_and_close(server: FaultServer) -> None:
    def handler(ex: Exchange) -> None:
        assert ex.server is server
        ex.send_head(200, {"Content-Length": "6", "X-Custom": "1"})
        ex.send(b"ab")
        ex.send(b"cdef")
        ex.close()

    server.add_handler("/x", handler)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        data, eof = recv_until_eof(sock, timeout=3)
    assert eof  # close() ended the keep-alive connection
    assert data == b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Custom: 1\r\n\r\nabcdef"


def test_handler_errors_become_500_and_are_recorded(server: FaultServer) -> None:
    def boom(ex: Exchange) -> None:
        raise ValueError("boom")

    server.add_handler("/boom", boom)
    server.add_handler("/silent", lambda ex: None)
    assert get(server, "/boom")[0] == 500
    assert get(server, "/silent")[0] == 500
    assert [type(e) for e in server.errors] == [ValueError, RuntimeError]
    server.errors.clear()


# --------------------------------------------------------------------------- #
# Faults
# --------------------------------------------------------------------------- #


def test_hang_times_out_client_and_stop_is_prompt(server: FaultServer) -> None:
    server.add_hang("/hang")
    with contextlib.closing(connect(server, timeout=0.3)) as conn:
        conn.request("GET", "/hang")
        with pytest.raises(TimeoutError):
            conn.getresponse()
    assert server.wait_for_requests(1)
    assert server.in_flight == 1
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 1.0
    assert server.in_flight == 0


def test_trickle_sends_body_slowly(server: FaultServer) -> None:
    server.add_trickle("/slow", total=1000, chunk=1, interval=0.05)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        data, eof = recv_until_eof(sock, timeout=0.6)
    head, _, body = data.partition(b"\r\n\r\n")
    assert not eof
    assert b"\r\nContent-Length: 1000" in head
    # 0.6 s at one byte per 50 ms: a dozen bytes at most, nowhere near 1000.
    assert 1 <= len(body) <= 14


def test_reset_mid_body(server: FaultServer) -> None:
    server.add_reset_mid_body("/reset", declared=100_000, sent=1_000)
    with (
        contextlib.closing(connect(server)) as conn,
        pytest.raises((ConnectionResetError, http.client.IncompleteRead)),
    ):
        conn.request("GET", "/reset")
        conn.getresponse().read()
    assert server.count("/reset") == 1


def test_reset_is_a_real_rst(server: FaultServer) -> None:
    """Unlike the short-body FIN, the client socket sees ECONNRESET, not EOF."""
    server.add_reset_mid_body("/reset", declared=100, sent=10)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n")
        assert server.wait_for_requests(1)
        with pytest.raises(ConnectionResetError):
            recv_until_eof(sock, timeout=3)


def test_short_body_is_incomplete_read(server: FaultServer) -> None:
    server.add_short_body("/short", declared=1000, sent=10)
    with contextlib.closing(connect(server)) as conn:
        conn.request("GET", "/short")
        resp = conn.getresponse()
        assert resp.getheader("Content-Length") == "1000"
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
    assert len(info.value.partial) == 10


def test_idle_keep_alive_connection_is_closed() -> None:
    with FaultServer(idle_close_after=0.3) as srv:
        srv.add("/a", "alpha")
        with contextlib.closing(connect(srv)) as conn:
            conn.request("GET", "/a")
            assert conn.getresponse().read() == b"alpha"
            assert conn.sock is not None
            t0 = time.monotonic()
            data, eof = recv_until_eof(conn.sock, timeout=3)
            idle = time.monotonic() - t0
        assert (data, eof) == (b"", True)
        assert 0.2 <= idle < 2.0
        assert get(srv, "/a")[2] == b"alpha"  # new connections still work
        assert srv.errors == []


def test_stop_closes_open_keep_alive_connections() -> None:
    srv = FaultServer().start()
    srv.add("/a", "alpha")
    with contextlib.closing(connect(srv)) as conn:
        conn.request("GET", "/a")
        assert conn.getresponse().read() == b"alpha"
        assert conn.sock is not None
        t0 = time.monotonic()
        srv.stop()
        assert time.monotonic() - t0 < 1.0
        data, eof = recv_until_eof(conn.sock, timeout=3)
    assert (data, eof) == (b"", True)
    assert_no_server_threads(srv)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((srv.host, srv.port), timeout=1).close()


# --------------------------------------------------------------------------- #
# TLS
# --------------------------------------------------------------------------- #


def test_tls_round_trip() -> None:
    with FaultServer(tls=True) as srv:
        srv.add("/secure", "s3cret")
        assert srv.url("/secure") == f"https://127.0.0.1:{srv.port}/secure"
        conn = http.client.HTTPSConnection(
            srv.host, srv.port, timeout=5, context=unverified_context()
        )
        with contextlib.closing(conn):
            for _ in range(2):
                conn.request("GET", "/secure")
                assert conn.getresponse().read() == b"s3cret"
        # The generated certificate is also verifiable against itself.
        verified = ssl.create_default_context(cafile=str(srv.ca_file))
        conn = http.client.HTTPSConnection(srv.host, srv.port, timeout=5, context=verified)
        with contextlib.closing(conn):
            conn.request("GET", "/secure")
            assert conn.getresponse().status == 200
        assert srv.connections_accepted == srv.handshakes_completed == 2
        assert srv.errors == []


def test_tls_handshake_delay() -> None:
    with FaultServer(tls=True, handshake_delay=0.5) as srv:
        srv.add("/a", "alpha")
        ctx = unverified_context()
        with socket.create_connection((srv.host, srv.port), timeout=0.2) as raw:
            with pytest.raises(TimeoutError):
                ctx.wrap_socket(raw, server_hostname="localhost")
            assert srv.connections_accepted == 1
            assert srv.handshakes_completed == 0

        t0 = time.monotonic()
        with (
            socket.create_connection((srv.host, srv.port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert time.monotonic() - t0 >= 0.45
            tls.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
        assert data.endswith(b"\r\n\r\nalpha")
        assert srv.handshakes_completed == 1


def test_plain_tcp_handshake_delay_delays_response() -> None:
    with FaultServer(handshake_delay=0.3) as srv:
        srv.add("/a", "alpha")
        t0 = time.monotonic()
        assert get(srv, "/a")[2] == b"alpha"
        assert time.monotonic() - t0 >= 0.25


# --------------------------------------------------------------------------- #
# Big bodies
# --------------------------------------------------------------------------- #


def test_gzip_bomb(server: FaultServer) -> None:
    decoded_size = 8 * 2**20
    server.add_gzip_bomb("/bomb", decoded_size=decoded_size)
    status, headers, body = get(server, "/bomb")
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Length"] == str(len(body))
    assert len(body) < decoded_size // 100
    first = zlib.decompressobj(wbits=31).decompress(body, 65536)
    assert first == bytes(65536)
    assert len(zlib.decompress(body, wbits=31)) == decoded_size
    assert gzip_bomb_bytes(decoded_size) is gzip_bomb_bytes(decoded_size)  # cached


def test_huge_body_client_disconnects(server: FaultServer) -> None:
    server.add_huge("/huge", size=2**30)
    server.add("/ok", "fine")
    with contextlib.closing(connect(server)) as conn:
        conn.request("GET", "/huge")
        resp = conn.getresponse()
        assert resp.getheader("Content-Length") == str(2**30)
        chunk = resp.read(4 * 2**20)
        assert chunk == bytes(4 * 2**20)
    assert get(server, "/ok")[2] == b"fine"
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 1.0


# --------------------------------------------------------------------------- #
# Concurrency and observation
# --------------------------------------------------------------------------- #


def test_max_concurrent_counts_simultaneous_requests(server: FaultServer) -> None:
    barrier = threading.Barrier(4, timeout=5)

    def handler(ex: Exchange) -> None:
        barrier.wait()  # only passes once four requests are in flight at the same time
        ex.respond(200, "done")

    server.add_handler("/together", handler)
    results: list[bytes] = []

    def client() -> None:
        results.append(get(server, "/together")[2])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [b"done"] * 4
    assert server.max_concurrent == 4
    assert server.max_open_connections == 4


def test_wait_for_requests(server: FaultServer) -> None:
    server.add("/a", "alpha")
    assert server.wait_for_requests(1, timeout=0.05) is False

    def client() -> None:
        with contextlib.closing(connect(server)) as conn:
            for _ in range(3):
                conn.request("GET", "/a")
                conn.getresponse().read()

    thread = threading.Thread(target=client)
    thread.start()
    assert server.wait_for_requests(3, timeout=5) is True
    thread.join(5)
    assert server.wait_for_requests(4, timeout=0.05) is False
    assert server.count("/a") == 3


def test_many_concurrent_keep_alive_connections(server: FaultServer) -> None:
    """16 persistent connections x 25 requests stays fast (no per-request threads)."""
    for i in range(16):
        server.add(f"/p{i}", f"page {i}")
    failures: list[str] = []

    def client(i: int) -> None:
        with contextlib.closing(connect(server)) as conn:
            for _ in range(25):
                conn.request("GET", f"/p{i}")
                body = conn.getresponse().read()
                if body != f"page {i}".encode():
                    failures.append(repr(body))

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < 5.0
    assert failures == []
    assert len(server.requests) == 400
    assert server.connections_accepted == 16
    per_conn: dict[int, int] = {}
    for r in server.requests:
        per_conn[r.connection_id] = per_conn.get(r.connection_id, 0) + 1
    assert sorted(per_conn.values()) == [25] * 16
