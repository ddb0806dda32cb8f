"""The `scraper` command: crawl, list, demo, outputs and exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT
from servers import FaultServer

from scraper.cli import main

SPIDER = '''
from pathlib import Path
from scraper import Spider

class Site(Spider):
    name = "site"
    start_urls = ["{start}"]

    def __init__(self, check_output=None, **kwargs):
        super().__init__(**kwargs)
        self.check_output = check_output

    def parse(self, response):
        if self.check_output:  # the final file must not exist while the crawl runs
            assert not Path(self.check_output).exists()
        yield {{"url": response.url, "title": response.css_first("title").text()}}
        yield from response.follow_all("a[href]")
'''


@pytest.fixture
def site(server: FaultServer, tmp_path: Path) -> Path:
    server.add_page("/", ["/a", "/b"])
    server.add_page("/a", ["/b"])
    server.add_page("/b", ["/missing"])
    spiders = tmp_path / "spiders"
    spiders.mkdir()
    (spiders / "site.py").write_text(SPIDER.format(start=server.url("/")))
    return spiders / "site.py"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json"])
def test_crawl_writes_output_atomically_and_stats(site: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out/items.{fmt}"
    code, stdout, _ = run("crawl", "site", "-o", str(out), "--stats", str(tmp_path / "st.json"),
                          "-a", f"check_output={out}", "-s", "crawl.allowed_failures=1")
    assert code == 0, stdout
    text = out.read_text()
    if fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
    elif fmt == "csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        rows = json.loads(text)
    assert sorted(row["title"] for row in rows) == ["/", "/a", "/b"]
    assert not Path(str(out) + ".part").exists()
    stats = json.loads((tmp_path / "st.json").read_text())
    assert stats["items"] == 3 and stats["failed_reasons"] == {"status:404": 1}
    assert "items written to" in stdout


def test_failures_beyond_allowed_give_exit_code_1(site: Path) -> None:
    code, stdout, _ = run("crawl", "site", "-o", "items.jsonl")
    assert code == 1
    assert "status:404" in stdout


def test_crawl_by_path(site: Path, tmp_path: Path) -> None:
    code, _, _ = run("crawl", str(site), "-s", "crawl.allowed_failures=5", "-o", "x.jsonl")
    assert code == 0
    assert len(Path("x.jsonl").read_text().splitlines()) == 3


def test_items_to_stdout_summary_to_stderr(site: Path) -> None:
    code, stdout, stderr = run("crawl", "site", "-o", "-", "-s", "crawl.allowed_failures=1")
    assert code == 0
    assert len([json.loads(line) for line in stdout.splitlines()]) == 3
    assert "finish_reason" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["crawl", "nosuch"], "no spider named 'nosuch'"),
        (["crawl", "site", "-s", "crawl.per_host=zero"], "crawl.per_host = 'zero'"),
        (["crawl", "site", "-s", "crawl.per_hots=2"], "did you mean 'crawl.per_host'"),
        (["crawl", "site", "-s", "nonsense"], "expected section.key=value"),
        (["crawl", "site", "-a", "no-equals"], "-a expects NAME=VALUE"),
        (["crawl", "site", "-a", "unknown_arg=1", "-o", "x.unknown"], "unknown output format"),
        (["crawl", "site", "--deadline", "soon"], "duration"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(site: Path, args: list[str], message: str) -> None:
    code, stdout, stderr = run(*args)
    assert code == 2
    assert message in stdout + stderr


def test_bad_spider_argument_exits_2(tmp_path: Path, server: FaultServer) -> None:
    spiders = tmp_path / "spiders"
    spiders.mkdir()
    (spiders / "strict.py").write_text(
        "from scraper import Spider\n"
        "class Strict(Spider):\n"
        "    name = 'strict'\n"
        f"    start_urls = ['{server.url('/')}']\n"
        "    def __init__(self, page=1):\n"
        "        super().__init__()\n")
    code, stdout, stderr = run("crawl", "strict", "-a", "colour=red")
    assert code == 2
    assert "colour" in stdout + stderr


def test_list_shows_spiders_and_start_urls(site: Path, server: FaultServer) -> None:
    code, stdout, _ = run("list")
    assert code == 0
    assert stdout.strip() == f"site\t{server.url('/')}"


def test_demo_crawls_the_bundled_site(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "demo.jsonl"
    code, stdout, _ = run("demo", "--products", "40", "-o", str(out))
    assert code == 0, stdout
    items = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(items) == 40
    assert {item["sku"] for item in items} == {f"SKU-{i:05d}" for i in range(40)}
    assert "connections_opened" in stdout
