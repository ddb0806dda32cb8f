"""Cron jobs (locks, history, atomic output) and incremental recrawls."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from servers import Exchange, FaultServer

from scraper.api import run_job
from scraper.crontab import crontab_lines
from scraper.jobs import JobLocked, job_lock, load_jobs
from scraper.settings import load

SPIDER = '''
from scraper import Spider

class Site(Spider):
    name = "site"

    def __init__(self, start, **kwargs):
        super().__init__(**kwargs)
        self.start_urls = [start]

    def parse(self, response):
        title = response.css_first("title")
        yield {"url": response.url, "title": title.text() if title else None}
        yield from response.follow_all("a[href]")
'''


def write_project(tmp_path: Path, start: str, **job: Any) -> Path:
    (tmp_path / "spiders").mkdir(exist_ok=True)
    (tmp_path / "spiders" / "site.py").write_text(SPIDER)
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in job.items())
    settings = tmp_path / "settings.toml"
    settings.write_text(
        "[crawl]\nobey_robots = false\n\n"
        "[jobs.nightly]\n"
        'spider = "site"\n'
        'schedule = "30 2 * * *"\n'
        'output = "out/{job}-{date}-{run}.jsonl"\n'
        f'args = {{ start = "{start}" }}\n' + extra)
    return settings


class Site:
    """Pages with ETags that answer If-None-Match with 304."""

    def __init__(self, server: FaultServer, pages: dict[str, str]) -> None:
        self.pages = pages
        for path in pages:
            server.add_handler(path, self.handle)

    def handle(self, exchange: Exchange) -> None:
        body = self.pages[exchange.request.path]
        etag = '"' + hashlib.sha1(body.encode()).hexdigest()[:12] + '"'
        if exchange.request.headers.get("if-none-match") == etag:
            exchange.respond(304, b"", {"ETag": etag})
        else:
            exchange.respond(200, body, {"ETag": etag, "Content-Type": "text/html"})


def page(title: str, *links: str) -> str:
    anchors = "".join(f'<a href="{link}">x</a>' for link in links)
    return f"<html><head><title>{title}</title></head><body>{anchors}</body></html>"


def outputs(tmp_path: Path) -> list[list[dict[str, Any]]]:
    files = sorted((tmp_path / "out").glob("*.jsonl"),
                   key=lambda f: int(f.stem.rsplit("-", 1)[1]))
    return [[json.loads(line) for line in f.read_text().splitlines()] for f in files]


def test_incremental_second_run_gets_304s_and_writes_nothing_then_one_change(
        server: FaultServer, tmp_path: Path) -> None:
    site = Site(server, {"/": page("home", "/a", "/b"), "/a": page("a", "/c"),
                         "/b": page("b"), "/c": page("c")})
    write_project(tmp_path, server.url("/"), incremental=True)

    first = run_job("nightly")
    assert first.stats["items"] == 4 and first.exit_code == 0

    second = run_job("nightly")
    assert second.stats["not_modified"] == 4
    assert second.stats["items"] == 0 and second.stats["pages"] == 0
    conditional = [r for r in server.requests[4:] if "if-none-match" in r.headers]
    assert len(conditional) == 4  # every page was asked for conditionally

    site.pages["/c"] = page("c, changed")
    third = run_job("nightly")
    assert third.stats["items"] == 1 and third.stats["not_modified"] == 3
    runs = outputs(tmp_path)
    assert [len(items) for items in runs] == [4, 0, 1]
    assert runs[2] == [{"url": server.url("/c"), "title": "c, changed"}]


def test_incremental_drops_unchanged_items_from_pages_without_validators(
        server: FaultServer, tmp_path: Path) -> None:
    server.add_page("/", ["/a"])
    server.add_page("/a")
    write_project(tmp_path, server.url("/"), incremental=True)
    assert run_job("nightly").stats["items"] == 2
    again = run_job("nightly")
    assert again.stats["items"] == 0 and again.stats["items_unchanged"] == 2


def test_history_records_each_run(server: FaultServer, tmp_path: Path) -> None:
    server.add_page("/")
    write_project(tmp_path, server.url("/"))
    run_job("nightly")
    run_job("nightly")
    lines = (tmp_path / "jobs" / "nightly" / "history.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["exit_code"] for r in records] == [0, 0]
    assert records[0]["stats"]["pages"] == 1
    assert Path(records[1]["output"]).exists()


def test_lock_is_exclusive_and_freed(tmp_path: Path) -> None:
    settings = write_project(tmp_path, "http://127.0.0.1:9/")
    loaded = load(settings)
    job = load_jobs(loaded, settings)["nightly"]
    with job_lock(job), pytest.raises(JobLocked, match="already running"), job_lock(job):
        pass
    with job_lock(job):  # released once the holder is done
        pass


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from scraper.jobs import job_lock, load_jobs
from scraper.settings import load
settings = Path(sys.argv[1])
job = load_jobs(load(settings), settings)["nightly"]
with job_lock(job):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_killed_runs_lock_does_not_block_the_next(server: FaultServer,
                                                    tmp_path: Path) -> None:
    server.add_page("/")
    settings = write_project(tmp_path, server.url("/"))
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(settings)],
                              stdout=subprocess.PIPE, cwd=tmp_path)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
    with pytest.raises(JobLocked, match=f"pid {holder.pid}"):
        run_job("nightly")
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=10)
    assert (tmp_path / "jobs" / "nightly" / "lock").exists()  # the stale file stays
    assert run_job("nightly").exit_code == 0


def test_bad_schedule_and_placeholder_are_explained(tmp_path: Path) -> None:
    settings = write_project(tmp_path, "http://127.0.0.1:9/")
    settings.write_text(settings.read_text().replace("30 2 * * *", "every night"))
    from scraper.errors import ConfigError

    with pytest.raises(ConfigError, match=r"jobs.nightly.schedule = 'every night'"):
        load_jobs(load(settings), settings)


def test_crontab_lines_use_absolute_paths(tmp_path: Path) -> None:
    settings = write_project(tmp_path, "http://127.0.0.1:9/")
    (line,) = crontab_lines(load_jobs(load(settings), settings), settings)
    assert line.startswith(f"30 2 * * * mkdir -p {tmp_path}/jobs/nightly && cd {tmp_path} && ")
    assert f"{sys.executable} -m scraper jobs run nightly --settings {settings}" in line
    assert line.endswith(f">> {tmp_path}/jobs/nightly/cron.log 2>&1")


def test_crash_mid_run_is_resumed_by_the_next_run(server: FaultServer, tmp_path: Path) -> None:
    """A run killed mid-crawl leaves its state; the next run continues it."""
    release = threading.Event()

    def gate(exchange: Exchange) -> None:
        while not release.wait(0.05) and not exchange.stopping:
            pass
        exchange.respond(200, page("slow"), {"Content-Type": "text/html"})

    server.add_page("/", ["/a", "/slow"])
    server.add_page("/a")
    server.add_handler("/slow", gate)
    settings = write_project(tmp_path, server.url("/"))
    # One at a time, so /a is committed before /slow starts.
    settings.write_text(settings.read_text().replace("[crawl]\n", "[crawl]\nper_host = 1\n"))
    code = ("from scraper.api import run_job; run_job('nightly')")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert server.wait_for_requests(3, timeout=20)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    release.set()
    result = run_job("nightly")
    assert result.exit_code == 0
    assert server.count("/") == 1 and server.count("/a") == 1  # not fetched again
    assert server.count("/slow") == 2  # in flight when killed: fetched again
    (items,) = outputs(tmp_path)
    assert sorted(i["url"] for i in items) == sorted(server.url(p) for p in ("/", "/a",
                                                                               "/slow"))


# -- the command line ------------------------------------------------------------------------

def scraper_command(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "scraper", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_runs_of_one_job_at_once_one_exits_4(server: FaultServer, tmp_path: Path) -> None:
    release = threading.Event()

    def held(exchange: Exchange) -> None:
        while not release.wait(0.05) and not exchange.stopping:
            pass
        exchange.respond(200, page("held"), {"Content-Type": "text/html"})

    server.add_handler("/", held)
    write_project(tmp_path, server.url("/"))
    first = scraper_command("jobs", "run", "nightly", "-q", cwd=tmp_path)
    assert server.wait_for_requests(1, timeout=20)  # the first run holds the lock
    second = scraper_command("jobs", "run", "nightly", "-q", cwd=tmp_path)
    _, stderr = second.communicate(timeout=20)
    assert second.returncode == 4
    assert b"already running" in stderr
    release.set()
    first.communicate(timeout=30)
    assert first.returncode == 0
    history = (tmp_path / "jobs" / "nightly" / "history.jsonl").read_text().splitlines()
    assert len(history) == 1  # the refused run did not run


def test_jobs_list_and_crontab_commands(server: FaultServer, tmp_path: Path) -> None:
    server.add_page("/")
    write_project(tmp_path, server.url("/"))
    run = scraper_command("jobs", "run", "nightly", "-q", cwd=tmp_path)
    run.communicate(timeout=30)
    assert run.returncode == 0
    listing = scraper_command("jobs", "list", cwd=tmp_path)
    out, _ = listing.communicate(timeout=30)
    lines = out.decode().splitlines()
    assert lines[0].split() == ["job", "schedule", "zone", "last", "run", "result", "next",
                                "run"]
    assert lines[1].startswith("nightly") and "30 2 * * *" in lines[1]
    assert "local (" in lines[1]  # the zone the schedule is read in
    assert "exit 0" in lines[1] and "02:30" in lines[1]
    crontab = scraper_command("jobs", "crontab", cwd=tmp_path)
    out, _ = crontab.communicate(timeout=30)
    begin, line, end = out.decode().splitlines()
    assert begin.startswith("# >>> scraper jobs of ") and end.startswith("# <<< scraper jobs")
    assert line.startswith("30 2 * * * mkdir -p ")


def test_unknown_job_exits_2(tmp_path: Path) -> None:
    write_project(tmp_path, "http://127.0.0.1:9/")
    process = scraper_command("jobs", "run", "weekly", cwd=tmp_path)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert b"no job named 'weekly'" in stderr and b"nightly" in stderr


def test_jobs_serve_runs_a_due_job_and_stops_on_sigterm(server: FaultServer,
                                                        tmp_path: Path) -> None:
    server.add_page("/")
    settings = write_project(tmp_path, server.url("/"))
    settings.write_text(settings.read_text().replace("30 2 * * *", "* * * * * *"))
    process = scraper_command("jobs", "serve", cwd=tmp_path)
    assert server.wait_for_requests(1, timeout=30)  # a run started on schedule
    history = tmp_path / "jobs" / "nightly" / "history.jsonl"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert history.exists()
    assert b"job nightly: starting" in stderr
