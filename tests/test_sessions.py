"""Sessions against loopback servers: a login through a form (CSRF field, select,
checkboxes) whose cookie the server rotates mid-crawl, cookies for other domains
refused, credentials scoped to their origin, `Retry` from a callback, ban pages,
the session pool and its persistence in a jobdir, the Referer header."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from conftest import crawl
from servers import Exchange, FaultServer

from scraper import Request, Retry, Spider
from scraper.logs import RedactSecrets

PASSWORD = "hunter2-Tr0ub4dor"


def respond(ex: Exchange, status: int, body: str = "",
            headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
    """A response with repeated headers (several Set-Cookie)."""
    data = body.encode()
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(data)}",
            "Content-Type: text/html; charset=utf-8", *(f"{k}: {v}" for k, v in headers)]
    ex.request.status = status
    ex.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)


def cookies_of(ex: Exchange) -> dict[str, str]:
    header = ex.request.headers.get("cookie", "")
    return dict(part.strip().split("=", 1) for part in header.split(";") if "=" in part)


LOGIN_FORM = """<html><body><h1>Sign in</h1>
<form id="login" method="post" action="/session?from=form">
  <input type="hidden" name="csrf" value="{csrf}">
  <input name="user" value=""><input type="password" name="password">
  <select name="country"><option value="fr">France</option>
    <option value="ie" selected>Ireland</option></select>
  <select name="lang"><option>  en  GB </option><option>fr</option></select>
  <input type="checkbox" name="remember" checked>
  <input type="checkbox" name="newsletter" value="yes">
  <input type="radio" name="plan" value="free"><input type="radio" name="plan" value="pro" checked>
  <input name="disabled" value="x" disabled>
  <textarea name="note">line one
line two</textarea>
  <button name="action" value="login">Sign in</button>
  <button name="action" value="cancel">Cancel</button>
</form></body></html>"""


class LoginSite:
    """Login form with a CSRF token; the session cookie is rotated on the account page;
    item pages need the current cookie. Also sets a cookie for another domain."""

    def __init__(self, server: FaultServer) -> None:
        self.server = server
        self.csrf = secrets.token_hex(8)
        self.posted: dict[str, list[str]] = {}
        self.sid = self.sid_first = ""
        self.lock = threading.Lock()
        self.cookie_headers: list[str] = []
        server.add_handler("/login", self.login)
        server.add_handler("/session", self.session)
        server.add_handler("/account", self.account)
        for n in range(1, 4):
            server.add_handler(f"/items/{n}", self.item)

    def _seen(self, ex: Exchange) -> dict[str, str]:
        with self.lock:
            self.cookie_headers.append(ex.request.headers.get("cookie", ""))
        return cookies_of(ex)

    def login(self, ex: Exchange) -> None:
        self._seen(ex)
        respond(ex, 200, LOGIN_FORM.format(csrf=self.csrf), [
            ("Set-Cookie", "visitor=v1; Path=/"),
            ("Set-Cookie", "evil=1; Domain=example.com; Path=/"),
            ("Set-Cookie", "wide=1; Domain=0.1; Path=/"),
        ])

    def session(self, ex: Exchange) -> None:
        cookies = self._seen(ex)
        form = parse_qs(ex.request.body.decode(), keep_blank_values=True)
        self.posted = form
        if ex.request.method != "POST" or form.get("csrf") != [self.csrf] \
                or form.get("password") != [PASSWORD] or cookies.get("visitor") != "v1":
            respond(ex, 403, "<h1>denied</h1>")
            return
        self.sid = self.sid_first = "A" + secrets.token_hex(4)
        respond(ex, 302, "", [("Location", "/account"),
                              ("Set-Cookie", f"sid={self.sid}; Path=/; HttpOnly"),
                              ("Set-Cookie", "visitor=; Max-Age=0; Path=/")])

    def account(self, ex: Exchange) -> None:
        if self._seen(ex).get("sid") != self.sid:
            respond(ex, 403, "<h1>not logged in</h1>")
            return
        self.sid = "B" + secrets.token_hex(4)  # rotated: the old one is no longer valid
        links = "".join(f'<a class="item" href="/items/{n}">item {n}</a>' for n in range(1, 4))
        respond(ex, 200, f"<h1>Account</h1>{links}",
                [("Set-Cookie", f"sid={self.sid}; Path=/; HttpOnly; Max-Age=3600")])

    def item(self, ex: Exchange) -> None:
        if self._seen(ex).get("sid") != self.sid:
            respond(ex, 403, "<h1>not logged in</h1>")
            return
        respond(ex, 200, f"<h1>{ex.request.path}</h1>")


class LoginSpider(Spider):
    name = "login"

    def parse(self, response: Any) -> Any:
        yield response.form("#login", data={"user": "ann", "password": PASSWORD},
                            callback=self.account)

    def account(self, response: Any) -> Any:
        yield from response.follow_all("a.item", self.item)

    def item(self, response: Any) -> Any:
        yield {"page": response.css_first("h1").text(), "session": response.session.name}


@pytest.fixture
def login_site(server: FaultServer) -> LoginSite:
    return LoginSite(server)


class Capture(logging.Handler):
    """Every log line, as the CLI's handlers would write it (secrets redacted)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RedactSecrets())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    handler = Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(level)


def test_login_form_cookie_rotation_and_foreign_cookies(login_site: LoginSite,
                                                         log_lines: list[str]) -> None:
    spider = type("Login", (LoginSpider,), {"start_urls": [login_site.server.url("/login")]})
    result = crawl(spider)
    assert sorted(item["page"] for item in result.items) == [
        "/items/1", "/items/2", "/items/3"]
    assert {item["session"] for item in result.items} == {"default"}
    assert result.stats["failed"] == 0
    # what a browser would have sent: hidden CSRF, selected options, checked boxes and
    # radio, the textarea, the clicked (first) button; not the disabled field
    assert login_site.posted == {
        "csrf": [login_site.csrf], "user": ["ann"], "password": [PASSWORD],
        "country": ["ie"], "lang": ["en GB"], "remember": ["on"], "plan": ["pro"],
        "note": ["line one\r\nline two"], "action": ["login"]}
    post = login_site.server.requests_for("/session?from=form")[0]
    assert post.path == "/session?from=form"
    assert post.headers["content-type"] == "application/x-www-form-urlencoded"
    # cookies for another domain, or a public suffix, were never sent back
    assert not any("evil" in h or "wide" in h for h in login_site.cookie_headers)
    # the 302 that set sid also deleted visitor: the next hop carried sid alone
    account = login_site.server.requests_for("/account")[0]
    assert cookies_of_header(account.headers["cookie"]) == {"sid": login_site.sid_first}
    text = "\n".join(log_lines) + json.dumps(result.stats)
    assert PASSWORD not in text and "sid=" not in text.replace("sid=***", "")
    assert any("/items/1" in line for line in log_lines)  # debug lines were captured


def cookies_of_header(header: str) -> dict[str, str]:
    return dict(part.strip().split("=", 1) for part in header.split(";") if "=" in part)


def test_cookies_off_sends_request_cookies_only(server: FaultServer) -> None:
    server.add_handler("/", lambda ex: respond(ex, 200, '<a href="/next">n</a>',
                                              [("Set-Cookie", "sid=1")]))
    server.add("/next", "<p>next</p>")

    class S(Spider):
        name = "s"

        def start_requests(self) -> Any:
            # a callback: the memory frontier's compact path for plain requests does not
            # carry cookies yet (see test_plain_request_keeps_its_cookies)
            yield Request(server.url("/"), self.parse, cookies={"consent": "yes"})

        def parse(self, response: Any) -> Any:
            yield from response.follow_all("a")

    crawl(S, http__cookies=False)
    assert server.requests_for("/")[0].headers["cookie"] == "consent=yes"
    assert "cookie" not in server.requests_for("/next")[0].headers
    crawl(S)  # cookies on: the request's cookies join the jar's
    assert cookies_of_header(server.requests_for("/next")[-1].headers["cookie"]) == \
        {"consent": "yes", "sid": "1"}


def test_plain_request_keeps_its_cookies(server: FaultServer) -> None:
    server.add("/", "<p>x</p>")

    class S(Spider):
        name = "s"

        def start_requests(self) -> Any:
            yield Request(server.url("/"), cookies={"consent": "yes"})

        def parse(self, response: Any) -> None:
            return None

    crawl(S)
    assert server.requests_for("/")[0].headers.get("cookie") == "consent=yes"


def test_auth_is_sent_to_its_origin_only(make_server: Any, log_lines: list[str]) -> None:
    other = make_server()
    other.add("/landing", "<p>landed</p>")
    site = make_server()
    site.add("/", f'<a href="/private">p</a><a href="{other.url("/elsewhere")}">o</a>')
    site.add_redirect("/private", other.url("/landing"))
    other.add("/elsewhere", "<p>elsewhere</p>")

    class S(Spider):
        name = "s"
        start_urls = [site.url("/")]
        allowed_domains = ["127.0.0.1"]

        def parse(self, response: Any) -> Any:
            yield from response.follow_all("a")

    crawl(S, http__auth={site.base_url + "/": f"ann:{PASSWORD}"})
    expected = "Basic " + base64.b64encode(f"ann:{PASSWORD}".encode()).decode()
    assert [r.headers.get("authorization") for r in site.requests] == [expected, expected]
    assert other.count("/landing") == 1 and other.count("/elsewhere") == 1
    assert all("authorization" not in r.headers for r in other.requests)
    secret = expected.split()[1]
    assert not any(PASSWORD in line or secret in line for line in log_lines)

    crawl(S, http__auth={other.base_url: "Bearer tok-123"})
    assert [r.headers.get("authorization") for r in other.requests[-2:]] == \
        ["Bearer tok-123"] * 2
    assert all("authorization" not in r.headers for r in site.requests[2:])


def test_auth_is_masked_in_scraper_settings() -> None:
    from click.testing import CliRunner

    from scraper.cli import main

    result = CliRunner().invoke(main, ["settings", "--json", "-s",
                                       f'http.auth={{"https://a.test" = "ann:{PASSWORD}"}}'])
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert json.loads(result.output)["http.auth"]["value"] == {"https://a.test:443": "**********"}


class WaitSite:
    def __init__(self, server: FaultServer, waits: int) -> None:
        self.left = waits
        server.add_handler("/slow", self.slow)

    def slow(self, ex: Exchange) -> None:
        if self.left > 0:
            self.left -= 1
            respond(ex, 200, "<p>Please wait while we prepare your page</p>")
        else:
            respond(ex, 200, "<h1>ready</h1>")


class Patient(Spider):
    name = "patient"

    def parse(self, response: Any) -> Any:
        yield {"early": True}  # dropped when the page is asked for again
        yield Request(response.urljoin("/never"), callback=self.ignore)
        if "please wait" in response.text.lower():
            raise Retry("please_wait", wait=0)
        yield {"title": response.css_first("h1").text()}

    def ignore(self, response: Any) -> None:
        return None


@pytest.mark.parametrize("jobdir", [False, True])
def test_retry_from_callback(server: FaultServer, tmp_path: Path, jobdir: bool) -> None:
    WaitSite(server, waits=2)
    server.add("/never", "<p>x</p>")
    spider = type("P", (Patient,), {"start_urls": [server.url("/slow")]})
    settings = {"frontier__jobdir": str(tmp_path / "job")} if jobdir else {}
    result = crawl(spider, **settings)
    assert server.count("/slow") == 3
    assert result.stats["retries"] == 2
    assert result.stats["failed"] == 0
    assert result.items == [{"early": True}, {"title": "ready"}]
    assert server.count("/never") == 1  # only from the page that was handled


def test_retry_from_callback_gives_up(server: FaultServer) -> None:
    WaitSite(server, waits=10)
    spider = type("P", (Patient,), {"start_urls": [server.url("/slow")]})
    result = crawl(spider, retry__attempts=2, retry__backoff=0)
    assert server.count("/slow") == 2
    assert result.stats["failed_reasons"] == {"retry:please_wait": 1}
    assert result.items == [] and server.count("/never") == 0


def test_blocked_page_retires_the_session_and_retries(server: FaultServer) -> None:
    served = []

    def page(ex: Exchange) -> None:
        served.append(cookies_of(ex))
        n = len(served)
        body = "<p>captcha</p>" if n == 1 else "<h1>fine</h1>"
        respond(ex, 200, body, [("Set-Cookie", f"tracker=t{n}")])

    server.add_handler("/", page)

    class S(Spider):
        name = "s"
        start_urls = [server.url("/")]

        def blocked(self, response: Any) -> str | None:
            return "captcha" if "captcha" in response.text else None

        def parse(self, response: Any) -> Any:
            yield {"title": response.css_first("h1").text()}

    result = crawl(S, retry__backoff=0)
    assert result.items == [{"title": "fine"}]
    assert served == [{}, {}]  # the banned session's cookie was not sent again
    assert result.stats["sessions_retired"] == 1 and result.stats["retries"] == 1
    assert result.stats["pages"] == 1


def test_session_pool_round_robin_sticky_and_retire(server: FaultServer) -> None:
    seen: dict[str, dict[str, str]] = {}

    def start(ex: Exchange) -> None:
        name = ex.request.path.strip("/")
        seen[ex.request.path] = cookies_of(ex)
        respond(ex, 200, f'<a href="/{name}/child">c</a>', [("Set-Cookie", f"who={name}")])

    def child(ex: Exchange) -> None:
        seen[ex.request.path] = cookies_of(ex)
        respond(ex, 200, "<p>child</p>", [("Set-Cookie", "who=overwritten")]
                if ex.request.path == "/c/child" else [])

    for name in "abc":
        server.add_handler(f"/{name}", start)
        server.add_handler(f"/{name}/child", child)

    class S(Spider):
        name = "s"
        start_urls = [server.url(f"/{n}") for n in "abc"]

        def parse(self, response: Any) -> Any:
            yield {"url": response.url, "session": response.session.name}
            yield from response.follow_all("a")

    result = crawl(S, sessions__size=3, crawl__workers=1)
    sessions = {item["url"].rsplit(":", 1)[1].split("/", 1)[1]: item["session"]
                for item in result.items}
    assert sorted(sessions[n] for n in "abc") == ["s1", "s2", "s3"]
    for name in "abc":  # each child went out in its parent's session, with its cookie
        assert sessions[f"{name}/child"] == sessions[name]
        assert seen[f"/{name}/child"] == {"who": name}

    seen.clear()
    crawl(S, sessions__max_uses=1, crawl__workers=1)
    assert seen["/a/child"] == {} and seen["/b"] == {}  # a fresh jar for every request


def test_sessions_persist_in_the_jobdir(server: FaultServer, tmp_path: Path) -> None:
    server.add_handler("/login", lambda ex: respond(ex, 200, "<p>in</p>", [
        ("Set-Cookie", "sid=s3ss10n; Path=/; Max-Age=600"),
        ("Set-Cookie", "browser=1; Path=/")]))
    server.add_handler("/check", lambda ex: respond(ex, 200, "<p>ok</p>"))

    class S(Spider):
        name = "s"

        def __init__(self, path: str = "/login", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.start_urls = [server.url(path)]

        def parse(self, response: Any) -> Any:
            yield {"url": response.url}

    jobdir = str(tmp_path / "job")
    crawl(S, frontier__jobdir=jobdir)
    assert "cookie" not in server.requests_for("/login")[0].headers
    import scraper

    scraper.crawl(S, {"frontier.jobdir": jobdir, "crawl.obey_robots": False}, path="/check")
    assert cookies_of_header(server.requests_for("/check")[0].headers["cookie"]) == \
        {"sid": "s3ss10n", "browser": "1"}
    state = (Path(jobdir) / "state.sqlite").read_bytes()
    assert b"s3ss10n" in state  # kept there, and only there (never in logs or stats)


def test_sessions_are_shared_through_redis(server: FaultServer, redis_url: str) -> None:
    """A crawl shared through Redis keeps its sessions there: another process (here a
    second crawl of the same shared frontier) is logged in too."""
    server.add_handler("/login", lambda ex: respond(ex, 200, "<p>in</p>", [
        ("Set-Cookie", "sid=r3d1s; Path=/; Max-Age=600")]))
    server.add_handler("/check", lambda ex: respond(ex, 200, "<p>ok</p>"))

    class S(Spider):
        name = "shared-session"

        def __init__(self, path: str = "/login", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.start_urls = [server.url(path)]

        def parse(self, response: Any) -> Any:
            yield {"url": response.url}

    import scraper

    shared = {"frontier.backend": redis_url, "frontier.name": "sessions-test",
              "crawl.obey_robots": False}
    scraper.crawl(S, shared)
    assert "cookie" not in server.requests_for("/login")[0].headers
    scraper.crawl(S, shared, path="/check")
    assert cookies_of_header(server.requests_for("/check")[0].headers["cookie"]) == \
        {"sid": "r3d1s"}


def test_callback_retires_its_session(server: FaultServer) -> None:
    served = []

    def page(ex: Exchange) -> None:
        served.append(cookies_of(ex))
        respond(ex, 200, f'<a href="/?n={len(served)}">next</a>',
                [("Set-Cookie", f"n={len(served)}")])

    server.add_handler("/", page)

    class S(Spider):
        name = "s"
        start_urls = [server.url("/")]

        def parse(self, response: Any) -> Any:
            if len(served) == 2:
                response.session.retire()
            if len(served) < 4:
                yield from response.follow_all("a")

    result = crawl(S, crawl__workers=1)
    assert served == [{}, {"n": "1"}, {}, {"n": "3"}]
    assert result.stats["sessions_retired"] == 1


def test_referer_header(make_server: Any) -> None:
    other = make_server()
    other.add("/x", "<p>x</p>")
    site = make_server()
    site.add("/a?q=1", f'<a href="/b">b</a><a href="{other.url("/x")}">x</a>')
    site.add("/b", "<p>b</p>")

    class S(Spider):
        name = "s"
        start_urls = [site.url("/a?q=1")]
        allowed_domains = ["127.0.0.1"]

        def parse(self, response: Any) -> Any:
            yield from response.follow_all("a")

    crawl(S)
    assert "referer" not in site.requests_for("/a?q=1")[0].headers
    assert site.requests_for("/b")[0].headers["referer"] == site.url("/a?q=1")
    assert other.requests_for("/x")[0].headers["referer"] == site.url("/")
    crawl(S, http__referer=False)
    assert "referer" not in site.requests_for("/b")[-1].headers


def test_request_timeout_end_to_end(server: FaultServer) -> None:
    server.add_hang("/hang")

    class S(Spider):
        name = "s"

        def start_requests(self) -> Any:
            yield Request(server.url("/hang"), timeout=0.3)

        def parse(self, response: Any) -> Any:
            yield {}

    result = crawl(S, retry__attempts=1)
    assert result.stats["failed_reasons"] == {"timeout": 1}
    assert result.stats["elapsed_s"] < 5
