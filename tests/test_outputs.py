"""Outputs: several per crawl, `[outputs.NAME]` tables, formats, compression, fields,
append, batches, and exactly once with a jobdir."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from servers import FaultServer

from scraper.cli import main
from scraper.compression import zstd
from scraper.errors import ConfigError
from scraper.exporters import Exporter, build_outputs, read_items
from scraper.settings import load

SPIDER = '''
from scraper import Spider

class Chain(Spider):
    name = "chain"
    start_urls = ["{start}"]
    custom_settings = {{"crawl.obey_robots": False}}

    def parse(self, response):
        yield {{"url": response.url, "title": response.css_first("title").text(),
               "depth": response.depth}}
        yield from response.follow_all("a[href]")
'''

ITEMS = [{"n": 1, "name": "a", "tags": ["x"]}, {"n": 2, "name": "b,c"},
         {"n": 3, "name": "d", "extra": True}]


@pytest.fixture
def chain(server: FaultServer, tmp_path: Path) -> FaultServer:
    """30 pages, each linking to the next: the spider `chain` in ./spiders."""
    for i in range(30):
        server.add_page(f"/{i}", [f"/{i + 1}"] if i < 29 else [])
    (tmp_path / "spiders").mkdir()
    (tmp_path / "spiders" / "chain.py").write_text(SPIDER.format(start=server.url("/0")))
    return server


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout + result.stderr


def decompressed(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    elif path.suffix == ".zst":
        data = zstd.decompress(data)
    return data.decode("utf-8")


def titles(path: Path) -> list[str]:
    return [item["title"] for item in read_items(path)]


# -- several outputs from one crawl ---------------------------------------------------------


def test_two_outputs_from_one_crawl(chain: FaultServer, tmp_path: Path) -> None:
    code, output = run("crawl", "chain", "-o", "out/items.jsonl.gz", "-o", "out/items.csv.zst")
    assert code == 0, output
    jsonl = [json.loads(line) for line in decompressed(tmp_path / "out/items.jsonl.gz")
             .splitlines()]
    rows = list(csv.DictReader(io.StringIO(decompressed(tmp_path / "out/items.csv.zst"))))
    assert sorted(item["title"] for item in jsonl) == sorted(f"/{i}" for i in range(30))
    assert sorted(row["title"] for row in rows) == sorted(item["title"] for item in jsonl)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["items.csv.zst", "items.jsonl.gz"]  # no .part left
    assert "out/items.jsonl.gz, out/items.csv.zst" in output


def test_output_tables_in_settings(chain: FaultServer, tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text(
        '[outputs.everything]\npath = "out/all-{spider}.jsonl"\n\n'
        '[outputs.titles]\npath = "out/titles.txt"\nformat = "csv"\n'
        'fields = ["title", "url"]\n')
    code, output = run("crawl", "chain")
    assert code == 0, output
    assert len(list(read_items(tmp_path / "out/all-chain.jsonl"))) == 30
    lines = (tmp_path / "out/titles.txt").read_text().splitlines()
    assert lines[0] == "title,url" and len(lines) == 31  # selected, in that order
    assert "out/all-chain.jsonl, out/titles.txt" in output
    # -o replaces the tables
    code, output = run("crawl", "chain", "-o", "only.jsonl")
    assert code == 0 and (tmp_path / "only.jsonl").exists()
    assert "out/all-chain.jsonl" not in output


def test_outputs_are_written_exactly_once_with_a_jobdir(chain: FaultServer,
                                                        tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text(
        '[outputs.all]\npath = "out/all.jsonl.gz"\n\n'
        '[outputs.batches]\npath = "out/batch-{batch:02}.csv"\nbatch_items = 4\n')
    for limit in ("10", "0"):  # stopped after 10 pages, then resumed to the end
        code, output = run("crawl", "chain", "--jobdir", "job", "-s", f"crawl.max_pages={limit}")
        assert code == 0, output
        if limit == "10":
            assert len(titles(tmp_path / "out/all.jsonl.gz")) == 10
    every = sorted(f"/{i}" for i in range(30))
    assert sorted(titles(tmp_path / "out/all.jsonl.gz")) == every
    batches = sorted((tmp_path / "out").glob("batch-*.csv"))
    assert sorted(t for path in batches for t in titles(path)) == every
    assert all(len(list(read_items(path))) <= 4 for path in batches)
    assert chain.count("/0") == 1 and len(chain.requests) == 30  # nothing fetched twice


# -- formats, compression, fields -------------------------------------------------------------


@pytest.mark.parametrize("compression", ["", ".gz", ".zst"])
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json"])
def test_formats_and_compression_round_trip(tmp_path: Path, fmt: str, compression: str) -> None:
    path = tmp_path / f"items.{fmt}{compression}"
    exporter = Exporter(str(path))
    for item in ITEMS:
        assert exporter.write(item)
    exporter.finalise()
    text = decompressed(path)  # the standard tools read it, not only read_items
    if fmt == "jsonl":
        got = [json.loads(line) for line in text.splitlines()]
        assert got == ITEMS
    elif fmt == "json":
        assert json.loads(text) == ITEMS
    else:  # the header comes from the first item; later extra keys are left out
        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows == [{"n": "1", "name": "a", "tags": '["x"]'}, {"n": "2", "name": "b,c",
                        "tags": ""}, {"n": "3", "name": "d", "tags": ""}]
    assert list(path.parent.iterdir()) == [path]


def test_format_setting_overrides_the_extension(tmp_path: Path) -> None:
    exporter = Exporter(str(tmp_path / "items.log.gz"), format="jsonl")
    exporter.write(ITEMS[0])
    exporter.finalise()
    assert json.loads(decompressed(tmp_path / "items.log.gz")) == ITEMS[0]


def test_fields_select_and_order_keys(tmp_path: Path) -> None:
    for name in ("f.jsonl", "f.csv"):
        exporter = Exporter(str(tmp_path / name), fields=("name", "n"))
        for item in ITEMS:
            exporter.write(item)
        exporter.finalise()
    first = (tmp_path / "f.jsonl").read_text().splitlines()[0]
    assert first == '{"name": "a", "n": 1}'
    assert (tmp_path / "f.csv").read_text().splitlines() == ["name,n", "a,1", '"b,c",2', "d,3"]


def test_empty_csv_with_fields_has_its_header(tmp_path: Path) -> None:
    exporter = Exporter(str(tmp_path / "e.csv"), fields=("a", "b"))
    exporter.finalise()
    assert (tmp_path / "e.csv").read_bytes() == b"a,b\r\n"


# -- overwrite or append --------------------------------------------------------------------


def write_run(path: Path, items: list[dict[str, Any]], **options: Any) -> Exporter:
    exporter = Exporter(str(path), **options)
    for item in items:
        exporter.write(item)
    exporter.finalise()
    return exporter


@pytest.mark.parametrize("name", ["a.jsonl", "a.csv", "a.json", "a.jsonl.gz", "a.csv.zst",
                                  "a.json.gz"])
def test_append_adds_to_an_existing_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_run(path, ITEMS[:2], overwrite=False)
    before = path.read_bytes()
    write_run(path, ITEMS[2:], overwrite=False)
    got = list(read_items(path))
    assert [str(item["n"]) for item in got] == ["1", "2", "3"]
    if not name.endswith(".json") and not name.endswith(".json.gz"):
        assert path.read_bytes().startswith(before)  # appended, not rewritten
    if ".csv" in name:
        assert decompressed(path).count("n,name,tags") == 1  # one header


def test_append_to_compressed_file_adds_a_member(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    write_run(path, ITEMS[:1], overwrite=False)
    write_run(path, ITEMS[1:], overwrite=False)
    assert path.read_bytes().count(b"\x1f\x8b\x08") == 2  # two gzip members
    with gzip.open(path, "rt") as handle:
        assert len(handle.read().splitlines()) == 3


def test_overwrite_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_run(path, ITEMS)
    write_run(path, ITEMS[:1])
    assert list(read_items(path)) == ITEMS[:1]


# -- batches ------------------------------------------------------------------------------------


def test_batches_are_numbered_files_each_renamed_when_full(tmp_path: Path) -> None:
    exporter = Exporter(str(tmp_path / "b-{batch:03}.jsonl"), batch_items=2)
    for i in range(3):
        exporter.write({"i": i})
    # the first batch is complete and in place while the crawl goes on
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b-001.jsonl", "b-002.jsonl.part"]
    for i in range(3, 5):
        exporter.write({"i": i})
    exporter.finalise()
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["b-001.jsonl", "b-002.jsonl", "b-003.jsonl"]
    assert [[item["i"] for item in read_items(p)] for p in files] == [[0, 1], [2, 3], [4]]
    assert exporter.batches == 3 and exporter.count == 5


def test_appended_batches_are_numbered_after_the_existing(tmp_path: Path) -> None:
    template = str(tmp_path / "b-{batch}.csv.gz")
    write_run(Path(template), ITEMS, batch_items=2, overwrite=False)
    write_run(Path(template), ITEMS[:1], batch_items=2, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b-1.csv.gz", "b-2.csv.gz",
                                                          "b-3.csv.gz"]
    assert [row["n"] for row in read_items(tmp_path / "b-3.csv.gz")] == ["1"]


def test_batches_without_items_write_no_file(tmp_path: Path) -> None:
    Exporter(str(tmp_path / "b-{batch}.jsonl"), batch_items=2).finalise()
    assert list(tmp_path.iterdir()) == []


# -- settings and errors ----------------------------------------------------------------------


def settings_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_batch_items_needs_a_batch_placeholder(tmp_path: Path) -> None:
    path = settings_file(tmp_path, '[outputs.items]\npath = "out/items.jsonl"\nbatch_items = 5\n')
    with pytest.raises(ConfigError, match=r"outputs\.items\.batch_items = 5: .*\{batch\}"):
        load(path)


@pytest.mark.parametrize("text, message", [
    ('[outputs.x]\npath = "a.jsonl"\nformat = "xml"\n', r"outputs\.x\.format = 'xml'"),
    ('[outputs.x]\nformat = "csv"\n', r"outputs\.x\.path"),
    ('[outputs.x]\npath = "a.jsonl"\nappend = true\n', r"outputs\.x\.append"),
])
def test_bad_output_tables_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(settings_file(tmp_path, text))


@pytest.mark.parametrize("text, message", [
    ('[outputs.x]\npath = "a-{batch}.jsonl"\n', r"outputs\.x\.path .*needs batch_items"),
    ('[outputs.x]\npath = "a-{nope}.jsonl"\n', r"outputs\.x\.path .*unknown placeholder \{nope\}"),
    ('[outputs.x]\npath = "a.xml"\n', r"outputs\.x\.path .*unknown output format '\.xml'"),
    ('[outputs.x]\npath = "a.jsonl"\n[outputs.y]\npath = "./a.jsonl"\n', "the same file as"),
])
def test_bad_output_paths_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    settings = load(settings_file(tmp_path, text)).settings
    with pytest.raises(ConfigError, match=message):
        build_outputs(settings)


def test_output_keys_can_be_set_with_s(tmp_path: Path) -> None:
    path = settings_file(tmp_path, '[outputs.items]\npath = "a.jsonl"\n')
    settings = load(path, overrides=["outputs.items.fields=['url']",
                                     "outputs.extra.path=b.csv"]).settings
    assert settings.outputs["items"].path == "a.jsonl"
    assert settings.outputs["items"].fields == ("url",)
    assert [o.target for o in build_outputs(settings)] == ["a.jsonl", "b.csv"]


def test_placeholders_in_output_paths(tmp_path: Path) -> None:
    path = settings_file(tmp_path, '[outputs.items]\nbatch_items = 10\n'
                                   'path = "out/{job}-{date}-{run:03}-{batch}.jsonl"\n')
    outputs = build_outputs(load(path).settings, placeholders={"job": "nightly", "run": 7},
                            now=datetime(2026, 1, 2, 3, 4, 5))
    assert outputs[0].target == "out/nightly-2026-01-02-007-{batch}.jsonl"
    assert outputs[0].batch_path(12).name == "nightly-2026-01-02-007-12.jsonl"
    cli = build_outputs(load(path).settings, ["x-{spider}-{time}.csv"],
                        placeholders={"spider": "demo"}, now=datetime(2026, 1, 2, 3, 4, 5))
    assert [o.target for o in cli] == ["x-demo-030405.csv"]


def test_batches_of_an_export_cut_short_are_redone_exactly_once(tmp_path: Path) -> None:
    from scraper import Request, Spider
    from scraper.frontier.jobstore import JobStore

    spider = Spider()
    spider.name = "unit"  # type: ignore[misc]
    store = JobStore(tmp_path / "job", spider)
    store.commit(Request("http://x/"), [], [{"n": i} for i in range(5)], None)
    template = str(tmp_path / "out" / "b-{batch}.jsonl")
    first = Exporter(template, batch_items=2)

    def then_crash(items: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        yield from items
        raise RuntimeError("crash")  # after every item, before the renames

    with pytest.raises(RuntimeError):
        store.export(first.target,
                     lambda items, keep: first.write_and_finalise(then_crash(items), keep))
    first.abort()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["b-1.jsonl.part", "b-2.jsonl.part", "b-3.jsonl.part"]  # nothing renamed yet
    again = Exporter(template, batch_items=2)
    store.export(again.target, again.write_and_finalise)
    store.close()
    files = sorted((tmp_path / "out").glob("b-*.jsonl"))
    assert [[item["n"] for item in read_items(p)] for p in files] == [[0, 1], [2, 3], [4]]
