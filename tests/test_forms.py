"""`response.form()` (what a browser submits), `Request.json`, and the cookie jar's
policy (domains, public suffixes, Secure, Path, Max-Age)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from scraper import FormError, Request
from scraper.frontier.codec import dump_request, load_request
from scraper.frontier.jobstore import JobStore
from scraper.sessions import JobStoreSessions, Session, SessionPool, is_public_suffix
from scraper.settings import SessionSettings
from scraper.stats import Stats
from scraper.testing import make_response

PAGE = """<html><body>
<form id="search" action="/find?old=1#top"><input name="q" value="shoes">
  <input type="submit" name="go" value="Go"></form>
<form id="profile" method="POST" enctype="multipart/form-data" action="save">
  <input type="hidden" name="csrf" value="tok&amp;en">
  <input type="file" name="avatar">
  <select name="tags" multiple><option selected>a</option><option>b</option>
    <option selected disabled>c</option><option selected value="d2">d</option></select>
  <select name="size" size="3"><option>s</option><option>m</option></select>
  <select name="empty"></select>
  <fieldset disabled><input name="off" value="1"></fieldset>
  <button type="button" name="noop" value="x">-</button>
  <input type="reset" name="r">
  <input type="submit" name="act" value="save">
  <button name="act" value="delete" formmethod="get" formaction="/delete">Delete</button>
  <input type="image" name="map">
</form>
<input form="profile" name="outside" value="yes">
<p id="lonely">no form here</p>
</body></html>"""


def response(url: str = "http://shop.test/account/edit") -> object:
    return make_response(PAGE, url=url)


def test_get_form_replaces_the_action_query() -> None:
    request = response().form("#search", data={"q": "red shoes"})
    assert request.method == "GET" and request.body is None
    assert request.url == "http://shop.test/find?q=red+shoes&go=Go"


def test_multipart_form_with_files_selects_and_the_clicked_button() -> None:
    request = response().form("#profile input[name=csrf]", data={"note": "a\nb"})
    assert request.method == "POST" and request.url == "http://shop.test/account/save"
    content_type = request.headers["Content-Type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("boundary=")[1]
    parts = request.body.split(f"--{boundary}".encode())
    assert parts[-1] == b"--\r\n"
    fields = []
    for part in parts[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        fields.append((head.decode().split('name="')[1].split('"')[0], value[:-2]))
    assert fields == [("csrf", b"tok&en"), ("avatar", b""), ("tags", b"a"), ("tags", b"d2"),
                      ("act", b"save"), ("outside", b"yes"), ("note", b"a\r\nb")]
    assert b'name="avatar"; filename=""\r\nContent-Type: application/octet-stream' in \
        request.body


def test_submit_button_overrides_method_and_action() -> None:
    request = response().form("#profile", submit="button[value=delete]",
                              data={"tags": None, "outside": ["1", "2"]})
    assert request.method == "GET"
    parts = urlsplit(request.url)
    assert parts.path == "/delete"
    assert parse_qsl(parts.query, keep_blank_values=True) == [
        ("csrf", "tok&en"), ("avatar", ""), ("act", "delete"), ("outside", "1"),
        ("outside", "2")]


def test_image_button_and_no_button() -> None:
    clicked = response().form("#profile", submit="input[type=image]")
    assert b'name="map.x"' in clicked.body and b'name="act"' not in clicked.body
    none = response().form("#profile", submit=False)
    assert b'name="act"' not in none.body and b"map.x" not in none.body


def test_form_errors_are_clear() -> None:
    page = response()
    with pytest.raises(FormError, match="no element matches '#nope'"):
        page.form("#nope")
    with pytest.raises(FormError, match="not a <form> nor inside one"):
        page.form("#lonely")
    with pytest.raises(FormError, match=r"no submit button matches '#x'.*name='go'"):
        page.form("#search", submit="#x")
    with pytest.raises(FormError, match="no <form> on"):
        make_response("<p>none</p>").form()


def test_form_request_takes_request_arguments_and_round_trips() -> None:
    request = response().form(data={"q": "é"}, meta={"k": 1}, session="alice",
                              cb_kwargs={"n": 2}, priority=3)
    assert request.url == "http://shop.test/find?q=%C3%A9&go=Go"
    assert (request.meta, request.session, request.cb_kwargs, request.priority) == \
        ({"k": 1}, "alice", {"n": 2}, 3)
    back = load_request(None, dump_request(None, request.replace(cookies={"a": "b"})), None)
    assert (back.session, back.cookies) == ("alice", {"a": "b"})


def test_urlencoded_post_in_the_page_encoding() -> None:
    page = make_response('<form method=post><input name="n" value="ü"><textarea name=t>'
                         "x\ny</textarea></form>".encode("cp1252"),
                         headers={"Content-Type": "text/html; charset=windows-1252"})
    request = page.form(data={"extra": "€"})
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.body == b"n=%FC&t=x%0D%0Ay&extra=%80"
    assert request.url == "http://example.com/"


def test_request_json() -> None:
    request = Request.json("http://api.test/items", {"name": "é", "n": [1]},
                           headers={"X-Team": "data"}, meta={"m": 1})
    assert request.method == "POST"
    assert json.loads(request.body) == {"name": "é", "n": [1]}
    assert request.headers == {"Content-Type": "application/json",
                               "Accept": "application/json", "X-Team": "data"}
    assert Request.json("http://api.test/q", [1], method="put").method == "PUT"


# -- the cookie jar ---------------------------------------------------------------------

def jar_after(url: str, *set_cookies: str) -> Session:
    session = Session("t")
    session.extract(url, list(set_cookies))
    return session


def test_domain_rules() -> None:
    session = jar_after("https://www.shop.example.com/",
                        "host=1", "parent=1; Domain=example.com", "other=1; Domain=other.com",
                        "lookalike=1; Domain=hop.example.com", "suffix=1; Domain=com")
    assert set(session.values()) == {"host", "parent"}
    assert session.cookie_header("https://www.shop.example.com/") in (
        "host=1; parent=1", "parent=1; host=1")
    assert session.cookie_header("https://api.example.com/") == "parent=1"
    assert session.cookie_header("https://sub.www.shop.example.com/") == "parent=1"
    assert jar_after("https://evil-example.com/", "x=1; Domain=example.com").values() == {}
    assert jar_after("http://127.0.0.1:8000/", "x=1; Domain=0.0.1").values() == {}


def test_public_suffixes() -> None:
    assert is_public_suffix("com") and is_public_suffix("co.uk")
    assert not is_public_suffix("example.co.uk")
    if Path("/usr/share/publicsuffix/public_suffix_list.dat").exists():
        assert is_public_suffix("github.io")
        assert jar_after("https://a.github.io/", "x=1; Domain=github.io").values() == {}
    assert jar_after("https://a.b.co.uk/", "x=1; Domain=co.uk").values() == {}


def test_secure_path_and_expiry() -> None:
    session = jar_after("https://s.test/login", "sec=1; Secure", "app=1; Path=/app",
                        "gone=1; Max-Age=0", "old=1; Expires=Wed, 01 Jan 2020 00:00:00 GMT",
                        "soon=1; Max-Age=3600; HttpOnly")
    assert session.cookie_header("http://s.test/app/x") == "app=1; soon=1"
    assert set(session.cookie_header("https://s.test/app/x").split("; ")) == \
        {"sec=1", "app=1", "soon=1"}
    assert session.cookie_header("https://s.test/other") in ("sec=1; soon=1", "soon=1; sec=1")
    session.extract("https://s.test/", ["soon=; Max-Age=0"])
    assert "soon" not in session.values()


def test_sessions_saved_and_loaded_from_a_jobstore(tmp_path: Path) -> None:
    spider = type("S", (), {"name": "s"})()
    store = JobStore(tmp_path, spider)
    stats = Stats()
    pool = SessionPool(SessionSettings(max_age=3600), stats, JobStoreSessions(store))
    session = pool.use("alice")
    session.extract("https://s.test/", ["sid=abc; HttpOnly; Max-Age=60", "tmp=1"])
    pool.changed(session)
    again = SessionPool(SessionSettings(), stats, JobStoreSessions(store)).use("alice")
    assert again.values() == {"sid": "abc", "tmp": "1"}
    assert again.cookie_header("https://s.test/") in ("sid=abc; tmp=1", "tmp=1; sid=abc")
    assert "abc" not in repr(again)
    assert pool.retire("alice", generation=0) and not pool.retire("alice", generation=0)
    assert SessionPool(SessionSettings(), stats, JobStoreSessions(store)).use("alice") \
        .values() == {}
    store.close()


def test_max_age_retires(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = Stats()
    pool = SessionPool(SessionSettings(max_age=10), stats)
    pool.use("a").extract("http://s.test/", ["x=1"])
    assert pool.use("a").values() == {"x": "1"}
    later = time.time() + 11
    monkeypatch.setattr(time, "time", lambda: later)
    assert pool.use("a").values() == {}
    assert stats.get("sessions_retired") == 1
