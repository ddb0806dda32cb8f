"""The commands a spider author lives in: fetch, parse, shell, new, settings, and the
crawl command's progress, logs and exit codes. Loopback servers only."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import ROOT
from servers import Exchange, FaultServer

import scraper
from scraper import logs, progress
from scraper.cli import main


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env)


def output(result: Result) -> str:
    return result.stdout + result.stderr


# -- start-up -----------------------------------------------------------------------------


def test_importing_the_cli_loads_no_heavy_library() -> None:
    code = ("import scraper.cli, sys; print(sorted(m for m in "
            "('urllib3','selectolax','rich','pydantic','tenacity','parsel','lxml','ada_url') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


def test_help_runs_in_a_fresh_process_without_heavy_imports() -> None:
    code = ("import sys; from scraper.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    code = e.code\n"
            "print(code, sorted(m for m in ('urllib3','selectolax','rich','pydantic',"
            "'parsel','lxml','ada_url') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert "Commands:" in done.stdout
    assert done.stdout.strip().endswith("0 []")


COMMANDS = ("crawl", "demo", "fetch", "list", "new", "parse", "settings", "shell")


def test_group_help_lists_every_command() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"\n  {command} " in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_has_an_example(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert f"scraper {command}" in result.stdout


# -- fetch --------------------------------------------------------------------------------


def test_fetch_shows_status_headers_timings_and_reuse(server: FaultServer) -> None:
    server.add_page("/", ["/a"])
    server.add_page("/a")
    result = run("fetch", server.url("/"), server.url("/a"))
    assert result.exit_code == 0, output(result)
    blocks = result.stdout.split("\n\n")
    assert blocks[0].startswith(f"GET {server.url('/')}\nstatus: 200 OK\nreused: no\n")
    assert blocks[1].startswith(f"GET {server.url('/a')}\nstatus: 200 OK\nreused: yes\n")
    assert "timings: connect " in blocks[0] and " ms, wait " in blocks[0]
    assert "\n  Content-Type: text/html; charset=utf-8\n" in blocks[0]
    assert '<title>/a</title>' in blocks[1]  # the preview
    assert "2 of 2 fetched; connections opened 1, reused 1" in result.stdout
    assert server.connections_accepted == 1


def test_fetch_json_has_timings_per_phase(server: FaultServer) -> None:
    server.add_page("/")
    result = run("fetch", "--json", server.url("/"), server.url("/"))
    assert result.exit_code == 0, output(result)
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["reused"] for r in reports] == [False, True]
    assert set(reports[0]["timings_ms"]) == {"connect", "tls", "wait", "body", "total"}
    assert reports[0]["timings_ms"]["connect"] > 0 and reports[1]["timings_ms"]["connect"] == 0
    assert reports[0]["status"] == 200 and reports[0]["body_bytes"] > 0


def test_fetch_preview_is_cut(server: FaultServer) -> None:
    server.add("/long", "x" * 2000, content_type="text/plain")
    result = run("fetch", server.url("/long"), "--preview", "100")
    assert result.exit_code == 0
    assert "  " + "x" * 100 + "\n" in result.stdout
    assert "x" * 101 not in result.stdout
    assert "1900 more characters" in result.stdout


def test_fetch_body_to_files_and_stdout(server: FaultServer, tmp_path: Path) -> None:
    server.add("/data.bin", bytes(range(256)), content_type="application/octet-stream")
    server.add("/b", "second")
    result = run("fetch", server.url("/data.bin"), server.url("/b"), "--body", "out/body.bin")
    assert result.exit_code == 0, output(result)
    assert (tmp_path / "out/body-1.bin").read_bytes() == bytes(range(256))
    assert (tmp_path / "out/body-2.bin").read_bytes() == b"second"
    assert "written to out/body-1.bin" in result.stdout

    result = run("fetch", server.url("/b"), "--body", "-")
    assert result.exit_code == 0
    assert result.stdout == "second"
    assert "status: 200 OK" in result.stderr


def test_fetch_does_not_follow_redirects(server: FaultServer) -> None:
    server.add_redirect("/old", "/new", status=301)
    server.add_page("/new")
    result = run("fetch", server.url("/old"))
    assert result.exit_code == 0
    assert "status: 301 Moved Permanently" in result.stdout
    assert f"redirect: {server.url('/new')} (not followed" in result.stdout
    assert server.count("/new") == 0


def test_fetch_sends_settings_and_headers(server: FaultServer) -> None:
    server.add_page("/")
    result = run("fetch", server.url("/"), "-s", "http.user_agent=probe/1", "-H", "X-Test: yes",
                 "-X", "head")
    assert result.exit_code == 0, output(result)
    request = server.requests[0]
    assert request.method == "HEAD"
    assert request.headers["user-agent"] == "probe/1"
    assert request.headers["x-test"] == "yes"


def test_fetch_failures_exit_1_with_the_reason(server: FaultServer) -> None:
    server.add_page("/")
    server.add_reset_mid_body("/reset")
    result = run("fetch", server.url("/"), server.url("/missing"), server.url("/reset"))
    assert result.exit_code == 1
    assert "failed: status:404" in result.stdout
    assert f"GET {server.url('/reset')}\nfailed: connection: " in result.stdout
    assert "1 of 3 fetched" in result.stdout


def test_fetch_over_tls_times_the_handshake(make_server: Any) -> None:
    server = make_server(tls=True)
    server.add_page("/")
    result = run("fetch", "--json", server.url("/"), server.url("/"),
                 "-s", "http.verify_tls=false")
    assert result.exit_code == 0, output(result)
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["timings_ms"]["tls"] > 0 and second["timings_ms"]["tls"] == 0
    assert second["reused"] is True
    assert server.handshakes_completed == 1
    text = run("fetch", server.url("/"), "-s", "http.verify_tls=false", "--preview", "0")
    assert "timings: connect " in text.stdout and " ms, tls " in text.stdout


def test_fetch_never_prints_a_url_password(server: FaultServer) -> None:
    server.add_page("/")
    url = server.url("/").replace("http://", "http://me:hunter2@")
    for extra in ([], ["--json"]):
        result = run("fetch", url, *extra)
        assert result.exit_code == 0, output(result)
        assert "hunter2" not in output(result)
        assert "me:***@127.0.0.1" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fetch", "ftp://example.com/"], "expected an http:// or https:// URL"),
        (["fetch", "http://127.0.0.1/", "-H", "no colon"], "expected 'Name: value'"),
        (["fetch", "http://127.0.0.1/", "-s", "http.read_timeot=1"],
         "did you mean 'http.read_timeout'"),
        (["fetch", "http://127.0.0.1/", "-s", "http.read_timeout=-1"],
         "http.read_timeout = -1: expected"),
        (["fetch"], "Missing argument"),
    ],
)
def test_fetch_bad_usage_exits_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert message in output(result)


# -- parse --------------------------------------------------------------------------------

SHOP = '''
import pydantic
from scraper import DropItem, Request, Spider


def cheap_only(item, spider):
    if item["price"] > 20:
        raise DropItem("too dear")
    return {{**item, "checked": True}}


class Product(pydantic.BaseModel):
    name: str
    price: float
    category: str = ""
    lang: str = "en"


class Shop(Spider):
    name = "shop"
    start_urls = ["{start}"]
    item_model = Product
    pipelines = [cheap_only]

    def __init__(self, lang="en", **kwargs):
        super().__init__(**kwargs)
        self.lang = lang

    def parse(self, response):
        for link in response.css("a.product"):
            yield response.follow(link, self.parse_product,
                                  meta={{"category": response.css_first("h1").text()}})
        yield from response.follow_all("a.next")

    def parse_product(self, response):
        yield {{"name": response.css_first("h1").text(),
               "price": response.css_first(".price").text(),
               "category": response.meta.get("category", ""), "lang": self.lang}}

    def parse_broken(self, response):
        yield {{"name": "no price"}}

    def parse_crash(self, response):
        raise RuntimeError("selector drifted")
        yield
'''


@pytest.fixture
def shop(server: FaultServer, tmp_path: Path) -> FaultServer:
    server.add("/", '<h1>Lamps</h1><a class="product" href="/p/1">1</a>'
                    '<a class="product" href="/p/2">2</a><a class="next" href="/?page=2">n</a>')
    for i in (1, 2):
        server.add(f"/p/{i}", f'<h1>Lamp {i}</h1><p class="price">{i}9.5</p>')
    (tmp_path / "spiders").mkdir()
    (tmp_path / "spiders/shop.py").write_text(SHOP.format(start=server.url("/")))
    return server


def test_parse_prints_requests_with_their_callbacks(shop: FaultServer) -> None:
    result = run("parse", shop.url("/"), "--spider", "shop")
    assert result.exit_code == 0, output(result)
    assert result.stdout.splitlines() == [
        f'-> GET {shop.url("/p/1")} (parse_product, meta={{"category": "Lamps"}})',
        f'-> GET {shop.url("/p/2")} (parse_product, meta={{"category": "Lamps"}})',
        f"-> GET {shop.url('/?page=2')} (parse)",
    ]
    assert f"0 items, 3 requests from Shop.parse on 200 {shop.url('/')}" in result.stderr
    assert [r.path for r in shop.requests] == ["/"]  # nothing crawled further


def test_parse_runs_a_named_callback_with_meta_and_spider_args(shop: FaultServer) -> None:
    result = run("parse", shop.url("/p/2"), "--spider", "shop", "--callback", "parse_product",
                 "--meta", '{"category": "Lamps"}', "-a", "lang=fr")
    assert result.exit_code == 0, output(result)
    assert json.loads(result.stdout) == {"name": "Lamp 2", "price": 29.5,
                                         "category": "Lamps", "lang": "fr"}


def test_parse_runs_pipelines_on_request(shop: FaultServer) -> None:
    cheap = run("parse", shop.url("/p/1"), "--spider", "shop", "-c", "parse_product",
                "--pipelines")
    assert cheap.exit_code == 0, output(cheap)
    assert json.loads(cheap.stdout)["checked"] is True
    dear = run("parse", shop.url("/p/2"), "--spider", "shop", "-c", "parse_product",
               "--pipelines")
    assert dear.exit_code == 0 and dear.stdout == ""
    assert "dropped by a pipeline: too dear" in dear.stderr
    assert "checked" not in run("parse", shop.url("/p/1"), "--spider", "shop",
                                "-c", "parse_product").stdout


def test_parse_reports_invalid_items_with_exit_1(shop: FaultServer) -> None:
    result = run("parse", shop.url("/p/1"), "--spider", "shop", "-c", "parse_broken")
    assert result.exit_code == 1
    assert "invalid: invalid item (price: Field required)" in result.stderr


def test_parse_callback_error_exits_1_with_the_traceback(shop: FaultServer) -> None:
    result = run("parse", shop.url("/p/1"), "--spider", "shop", "-c", "parse_crash")
    assert result.exit_code == 1
    assert "RuntimeError: selector drifted" in result.stderr
    assert "Shop.parse_crash raised on" in result.stderr


def test_parse_fetch_failure_exits_1(shop: FaultServer) -> None:
    shop.add_reset_mid_body("/reset")
    result = run("parse", shop.url("/reset"), "--spider", "shop")
    assert result.exit_code == 1
    assert "cannot fetch" in result.stderr and "connection" in result.stderr


def test_parse_warns_when_a_crawl_would_not_call_the_callback(shop: FaultServer) -> None:
    result = run("parse", shop.url("/gone"), "--spider", "shop", "-c", "parse_broken")
    assert "warning: status 404: a crawl would not call parse_broken" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--spider", "nosuch"], "no spider named 'nosuch'"),
        (["--spider", "shop", "-c", "parse_nothing"],
         "has no callback 'parse_nothing' (its methods: parse, parse_broken, parse_crash, "
         "parse_product)"),
        (["--spider", "shop", "-c", "__init__"], "has no callback '__init__'"),
        (["--spider", "shop", "-a", "lang"], "-a expects NAME=VALUE"),
        (["--spider", "shop", "--meta", "[1]"], "expected a JSON object"),
        (["--spider", "shop", "--meta", "{bad"], "not JSON"),
        (["--spider", "shop", "-s", "crawl.per_host=0"], "crawl.per_host = 0: expected"),
        (["--spider", "shop", "-s", "per_host"], "expected section.key=value"),
    ],
)
def test_parse_bad_usage_exits_2(shop: FaultServer, args: list[str], message: str) -> None:
    result = run("parse", shop.url("/"), *args)
    assert result.exit_code == 2
    assert message in output(result)
    assert shop.requests == []  # refused before fetching anything


# -- shell --------------------------------------------------------------------------------


def test_shell_has_response_and_fetch(shop: FaultServer) -> None:
    lines = [
        "print(response.status, response.css_first('h1').text())",
        "fetch('/p/1')",
        "print(response.url)",
        "print(response.css_first('.price').text())",
        "fetch('/missing').status",
    ]
    result = run("shell", shop.url("/"), input="\n".join(lines) + "\n")
    assert result.exit_code == 0, output(result)
    assert "200 Lamps" in result.stdout
    assert f"<Response 200 {shop.url('/p/1')}>" in result.stdout
    assert f"\n{shop.url('/p/1')}\n" in result.stdout.replace(">>> ", "\n")
    assert "19.5" in result.stdout
    assert "404" in result.stdout
    assert f"scraper shell: 200 {shop.url('/')}" in output(result)


def test_shell_with_a_spider_and_a_command(shop: FaultServer) -> None:
    code = "[r.url for r in spider.parse(response)][-1]"
    result = run("shell", shop.url("/"), "--spider", "shop", "-c", code)
    assert result.exit_code == 0, output(result)
    assert result.stdout.strip() == shop.url("/?page=2")


def test_shell_survives_a_failed_fetch(shop: FaultServer) -> None:
    shop.add_reset_mid_body("/reset")
    result = run("shell", shop.url("/"), input="fetch('/reset')\nprint(response.url)\n")
    assert result.exit_code == 0
    assert "fetch failed: connection" in result.stderr
    assert shop.url("/") in result.stdout  # response still the previous page


def test_shell_unknown_spider_exits_2(shop: FaultServer) -> None:
    result = run("shell", shop.url("/"), "--spider", "nosuch", input="")
    assert result.exit_code == 2
    assert "no spider named 'nosuch'" in result.stderr


# -- new ----------------------------------------------------------------------------------


def test_new_writes_a_spider_that_crawls(server: FaultServer, tmp_path: Path) -> None:
    server.add_page("/", ["/a", "/b"], title="Home")
    server.add_page("/a", ["/b"], title="A")
    server.add_page("/b", [], title="B")
    result = run("new", "mysite", server.url("/"))
    assert result.exit_code == 0, output(result)
    path = tmp_path / "spiders/mysite.py"
    assert f"wrote {Path('spiders/mysite.py')}" in result.stdout
    assert "class MysiteSpider(Spider):" in path.read_text()
    assert run("list").stdout == f"mysite\t{server.url('/')}\n"
    crawled = scraper.crawl("mysite")
    assert crawled.exit_code == 0
    assert sorted((item["url"], item["title"]) for item in crawled.items) == [
        (server.url("/"), "Home"), (server.url("/a"), "A"), (server.url("/b"), "B")]
    assert crawled.stats["connections_opened"] == server.connections_accepted
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                           "--config", str(ROOT / "pyproject.toml"), str(path)],
                          capture_output=True, text=True)
    assert ruff.returncode == 0, ruff.stdout


def test_new_takes_a_bare_domain(tmp_path: Path) -> None:
    result = run("new", "books", "books.example")
    assert result.exit_code == 0
    assert 'start_urls = ["https://books.example/"]' in (tmp_path / "spiders/books.py").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["my-shop", "https://x.example/"], "must be a Python identifier"),
        (["class", "https://x.example/"], "must be a Python identifier"),
        (["shop", "ftp://x.example/"], "expected an http:// or https:// URL"),
    ],
)
def test_new_bad_arguments_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = run("new", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "spiders").exists()


def test_new_never_overwrites(tmp_path: Path) -> None:
    assert run("new", "shop", "https://x.example/").exit_code == 0
    before = (tmp_path / "spiders/shop.py").read_text()
    result = run("new", "shop", "https://y.example/")
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert (tmp_path / "spiders/shop.py").read_text() == before
    (tmp_path / "spiders/other.py").write_text(before.replace('"shop"', '"dup"'))
    result = run("new", "dup", "https://y.example/")
    assert result.exit_code == 2
    assert "a spider named 'dup' already exists" in result.stderr


# -- settings -----------------------------------------------------------------------------


def test_settings_show_each_source(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text("[crawl]\nworkers = 4\n")
    (tmp_path / "spiders").mkdir()
    (tmp_path / "spiders/polite.py").write_text(
        "from scraper import Spider\n"
        "class Polite(Spider):\n"
        "    name = 'polite'\n"
        "    start_urls = ['http://127.0.0.1/']\n"
        "    custom_settings = {'crawl.delay': 2, 'crawl.per_host': 2}\n")
    result = run("settings", "--json", "--spider", "polite", "-s", "crawl.per_host=3",
                 env={"SCRAPER_HTTP__READ_TIMEOUT": "5"})
    assert result.exit_code == 0, output(result)
    shown = json.loads(result.stdout)
    assert shown["crawl.workers"] == {"value": 4, "source": "settings.toml"}
    assert shown["crawl.delay"] == {"value": 2.0, "source": "spider polite"}
    assert shown["crawl.per_host"] == {"value": 3, "source": "-s"}
    assert shown["http.read_timeout"] == {"value": 5.0,
                                          "source": "env SCRAPER_HTTP__READ_TIMEOUT"}
    assert shown["retry.attempts"] == {"value": 3, "source": "default"}

    text = run("settings", "-s", "crawl.per_host=3").stdout.splitlines()
    assert [line.split() for line in text if line.startswith("crawl.per_host ")] == [
        ["crawl.per_host", "3", "-s"]]
    assert [line.split() for line in text if line.startswith("crawl.workers ")] == [
        ["crawl.workers", "4", "settings.toml"]]


def test_settings_masks_secrets() -> None:
    result = run("settings", "--json", "-s",
                 'http.headers={Authorization = "Bearer s3cret", Accept = "text/html"}')
    assert result.exit_code == 0, output(result)
    headers = json.loads(result.stdout)["http.headers"]["value"]
    assert headers == {"Authorization": "***", "Accept": "text/html"}
    assert "s3cret" not in run("settings", "-s", 'http.headers={Authorization = "s3cret"}').stdout


@pytest.mark.parametrize(
    ("toml", "args", "message"),
    [
        ("[crawl]\nper_host = 'many'\n", [],
         "settings.toml: crawl.per_host = 'many': expected Input should be a valid integer"),
        ("[crawl]\nper_hots = 2\n", [],
         "settings.toml: unknown setting 'crawl.per_hots'; did you mean 'crawl.per_host'?"),
        ("[crawl\n", [], "settings.toml: not valid TOML"),
        ("", ["--spider", "nosuch"], "no spider named 'nosuch'"),
        ("", ["-s", "retry.attempts"], "-s: expected section.key=value, got 'retry.attempts'"),
        ("", ["--settings", "missing.toml"], "missing.toml: cannot read settings file"),
    ],
)
def test_settings_errors_exit_2(tmp_path: Path, toml: str, args: list[str],
                                message: str) -> None:
    if toml:
        (tmp_path / "settings.toml").write_text(toml)
    result = run("settings", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_bad_environment_value_names_the_variable_source() -> None:
    result = run("list", env={"SCRAPER_CRAWL__WORKERS": "lots"})
    assert result.exit_code == 2
    assert "environment: crawl.workers = 'lots': expected" in result.stderr
    assert "valid integer" in result.stderr


# -- crawl: progress, logs, exit codes ------------------------------------------------------

SLOW_SPIDER = '''
import logging
from scraper import Spider

log = logging.getLogger("spiders.slow")


class Slow(Spider):
    name = "slow"
    start_urls = ["{start}"]

    def parse(self, response):
        log.info("token in a header: %s", {{"Authorization": "Bearer s3cret-token"}})
        log.debug("through http://user:hunter2@proxy.example:3128")
        yield {{"url": response.url}}
        yield from response.follow_all("a[href]")
'''


@pytest.fixture
def slow_site(server: FaultServer, tmp_path: Path) -> FaultServer:
    """Ten pages that take 60 ms each, on one connection: a crawl of about 0.6 s."""

    def slow(exchange: Exchange) -> None:
        exchange.wait(0.06)
        exchange.respond(200, "<html><title>slow</title></html>",
                         {"Content-Type": "text/html"})

    server.add_page("/", [f"/p/{i}" for i in range(10)])
    for i in range(10):
        server.add_handler(f"/p/{i}", slow)
    (tmp_path / "spiders").mkdir()
    (tmp_path / "spiders/slow.py").write_text(SLOW_SPIDER.format(start=server.url("/")))
    return server


CRAWL = ("crawl", "slow", "-s", "crawl.per_host=1", "-s", "crawl.obey_robots=false")


def test_not_a_tty_logs_progress_lines(slow_site: FaultServer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.1)
    result = run(*CRAWL)
    assert result.exit_code == 0, output(result)
    lines = [line for line in result.stderr.splitlines() if "scraper.progress" in line]
    assert len(lines) >= 2
    assert " INFO scraper.progress: pages " in lines[0]
    assert "pages/s, in flight " in lines[-1] and "connections open " in lines[-1]
    assert "pages: 11" in result.stdout.replace("  ", "")  # the summary


def test_live_line_on_a_terminal(slow_site: FaultServer,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress.LiveLine, "interval", 0.1)
    result = run(*CRAWL, "--progress", "live")
    assert result.exit_code == 0, output(result)
    assert "\x1b[" in result.stderr  # drawn with terminal control sequences
    assert "pages " in result.stderr and "in flight " in result.stderr
    assert "conns " in result.stderr
    assert "scraper.progress" not in result.stderr  # no log lines as well
    assert "finish_reason: finished" in result.stdout


def test_json_logs_and_log_file(slow_site: FaultServer, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.1)
    result = run(*CRAWL, "--log-format", "json", "--log-file", "crawl.log")
    assert result.exit_code == 0, output(result)
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    progress_records = [r for r in records if r["logger"] == "scraper.progress"]
    assert progress_records and {"pages", "in_flight", "queued", "connections_open"} <= set(
        progress_records[-1]["data"])
    summary = [r for r in records if r["logger"] == "scraper.summary"]
    assert len(summary) == 1 and summary[0]["data"]["pages"] == 11
    assert summary[0]["data"]["exit_code"] == 0
    assert result.stdout == ""  # no text table in JSON mode
    in_file = [json.loads(line) for line in (tmp_path / "crawl.log").read_text().splitlines()]
    assert [r["message"] for r in in_file] == [r["message"] for r in records]


def test_quiet_silences_progress_and_summary_but_not_the_log_file(
        slow_site: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.1)
    result = run(*CRAWL, "-q", "--log-file", "crawl.log")
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""
    text = (tmp_path / "crawl.log").read_text()
    assert "scraper.summary: crawl finished: 11 pages, 11 items, 0 failed" in text
    assert "scraper.progress" not in text  # -q: no progress reporter at all


def test_log_level_filters(slow_site: FaultServer) -> None:
    result = run(*CRAWL, "--log-level", "warning")
    assert result.exit_code == 0
    assert " INFO " not in result.stderr


def test_secrets_never_reach_logs_or_stats(server: FaultServer, tmp_path: Path) -> None:
    server.add_page("/", ["/gone"])
    (tmp_path / "spiders").mkdir()
    start = server.url("/").replace("http://", "http://user:hunter2@")
    (tmp_path / "spiders/slow.py").write_text(SLOW_SPIDER.format(start=start))
    result = run("crawl", "slow", "--log-file", "crawl.log", "--log-level", "debug",
                 "--stats", "stats.json", "-s", "crawl.obey_robots=false")
    assert result.exit_code == 1, output(result)  # /gone is a 404
    logged = result.stderr + (tmp_path / "crawl.log").read_text()
    assert "failed (status:404)" in logged
    assert "http://user:***@proxy.example:3128" in logged
    assert "'Authorization': '***'" in logged
    everything = logged + result.stdout + (tmp_path / "stats.json").read_text()
    assert "hunter2" not in everything and "s3cret" not in everything


def test_deadline_exit_code_3_through_the_runner(server: FaultServer, tmp_path: Path) -> None:
    server.add_page("/", ["/hang"])
    server.add_hang("/hang")
    (tmp_path / "spiders").mkdir()
    (tmp_path / "spiders/slow.py").write_text(SLOW_SPIDER.format(start=server.url("/")))
    result = run("crawl", "slow", "--deadline", "0.5", "-o", "items.jsonl",
                 "-s", "crawl.obey_robots=false")
    assert result.exit_code == 3
    assert "finish_reason: deadline" in result.stdout
    assert len((tmp_path / "items.jsonl").read_text().splitlines()) == 1


def test_bad_log_file_exits_2(slow_site: FaultServer, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = run(*CRAWL, "--log-file", str(tmp_path / "a-file/x.log"))
    assert result.exit_code == 2
    assert "--log-file" in result.stderr and "cannot write" in result.stderr


def test_demo_serve_serves_until_interrupted() -> None:
    process = subprocess.Popen([sys.executable, "-m", "scraper", "demo", "--serve", "--port", "0",
                                "--products", "5"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        import urllib.request
        with urllib.request.urlopen(url + "p/3", timeout=5) as answer:
            assert b"SKU-00003" in answer.read()
            assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        process.send_signal(2)  # SIGINT, as Ctrl-C
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


# -- logs and progress units ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET http://bob:s3cret@proxy.example:3128/x", "GET http://bob:***@proxy.example:3128/x"),
        ("{'Authorization': 'Bearer abc', 'Accept': '*/*'}",
         "{'Authorization': '***', 'Accept': '*/*'}"),
        ('{"proxy-authorization": "Basic Ym9iOnMzY3JldA=="}', '{"proxy-authorization": "***"}'),
        ("Proxy-Authorization: Basic Ym9iOnMzY3JldA==", "Proxy-Authorization: ***"),
        ("Cookie: session=abc; theme=dark", "Cookie: ***"),
        ("https://api.example/items?page=2&api_key=k3y&sort=asc",
         "https://api.example/items?page=2&api_key=***&sort=asc"),
        ("http://127.0.0.1:8082/p/1 and user@example.com", "http://127.0.0.1:8082/p/1 and "
         "user@example.com"),
        ("authorization_code flow", "authorization_code flow"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert logs.redact(text) == expected


def test_json_formatter_and_redaction_of_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RedactSecrets())
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("cannot reach http://me:pa55@host/")
        except ValueError:
            logger.exception("fetch %s failed", "http://me:pa55@host/")
        logger.warning("progress", extra={"data": {"pages": 3}})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "ERROR" and first["logger"] == "test.json"
    assert first["message"] == "fetch http://me:***@host/ failed"
    assert "ValueError: cannot reach http://me:***@host/" in first["exc_info"]
    assert "pa55" not in stream.getvalue()
    assert first["time"].endswith("+00:00")
    assert second["data"] == {"pages": 3} and "exc_info" not in second


def test_setup_replaces_its_own_handlers_only() -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    try:
        logs.setup("info")
        logs.setup("debug", "json")
        ours = [h for h in root.handlers if getattr(h, "_scraper_handler", False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, logs.JsonFormatter)
        logs.reset()
        assert not [h for h in root.handlers if getattr(h, "_scraper_handler", False)]
        assert foreign in root.handlers
    finally:
        root.removeHandler(foreign)
        logs.reset()


SNAPSHOT: dict[str, Any] = {"pages": 120, "items": 100, "pages_per_s": 24.04, "in_flight": 8,
                            "queued": 30, "failed": 2, "connections_open": 8, "elapsed_s": 65.2}


def test_describe_and_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    assert progress.describe(SNAPSHOT) == (
        "pages 120, items 100, 24.0 pages/s, in flight 8, queued 30, failed 2, "
        "connections open 8, elapsed 1:05")
    with caplog.at_level(logging.INFO, logger="scraper.progress"):
        progress.LogLines()(SNAPSHOT | {"requests": 5})
    assert caplog.records[0].data == SNAPSHOT  # type: ignore[attr-defined]


def test_live_line_draws_and_erases() -> None:
    screen = io.StringIO()
    with progress.LiveLine("shop", file=screen, force_terminal=True, width=120) as line:
        line(SNAPSHOT)
        line(SNAPSHOT | {"pages": 121})
    drawn = screen.getvalue()
    assert "shop" in drawn and "121" in drawn and "24.0" in drawn and "1:05" in drawn
    assert drawn.endswith("\x1b[2K")  # transient: the line is erased at the end
    assert line.updates == 2


@pytest.mark.parametrize(
    ("mode", "tty", "fmt", "quiet", "kind"),
    [
        ("auto", True, "text", False, progress.LiveLine),
        ("auto", False, "text", False, progress.LogLines),
        ("auto", True, "json", False, progress.LogLines),
        ("auto", True, "text", True, progress.Silent),
        ("log", True, "text", False, progress.LogLines),
        ("off", False, "text", False, progress.Silent),
        ("live", False, "text", False, progress.LiveLine),
    ],
)
def test_reporter_choice(mode: str, tty: bool, fmt: str, quiet: bool, kind: type) -> None:
    chosen = progress.reporter(mode, is_tty=tty, log_format=fmt, quiet=quiet)
    assert type(chosen) is kind
