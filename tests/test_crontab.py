"""What `scraper jobs crontab` prints runs under cron; --install/--uninstall edit only
their own lines; schedules are read in the job's time zone."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from servers import FaultServer
from test_jobs import scraper_command, write_project

import scraper
from scraper.cli import main
from scraper.crontab import crontab_lines, with_block
from scraper.errors import ConfigError
from scraper.jobs import load_jobs
from scraper.settings import load

# The tree under test: the printed line gets it through `--env PYTHONPATH`, as a user
# would pass a path their package needs (cron clears PYTHONPATH).
TREE = str(Path(scraper.__file__).resolve().parent.parent)


def cron_entries(crontab: str) -> list[tuple[dict[str, str], str]]:
    """The commands of a crontab with the variables cron gives each, read as Debian's cron
    reads them: `NAME=value` lines set variables for the lines below, comments are skipped,
    five time fields, then the command, in which `\\%` is a `%`."""
    env: dict[str, str] = {}
    entries = []
    for line in crontab.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if sep and name.strip().isidentifier() and " " not in name.strip():
            value = value.strip()
            env[name.strip()] = value[1:-1] if value[:1] in "'\"" and value[-1:] == value[:1] \
                else value
            continue
        fields = line.split(None, 5)
        assert "%" not in fields[5].replace("\\%", ""), "an unescaped % cuts cron's command"
        entries.append((dict(env), fields[5].replace("\\%", "%")))
    return entries


def run_as_cron(command: str, env: dict[str, str],
                home: Path) -> subprocess.CompletedProcess[bytes]:
    """`command` as cron runs it: /bin/sh -c, in $HOME, PATH=/usr/bin:/bin, no locale, no
    terminal (a new session, stdin from /dev/null)."""
    assignments = [f"{name}={value}" for name, value in env.items()]
    return subprocess.run(
        ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", "SHELL=/bin/sh", *assignments,
         "/bin/sh", "-c", command],
        cwd=home, stdin=subprocess.DEVNULL, capture_output=True, start_new_session=True,
        timeout=60, check=False)


def test_printed_lines_run_in_crons_environment_on_a_fresh_project(
        server: FaultServer, tmp_path: Path) -> None:
    server.add_page("/", ["/a"])
    server.add_page("/a")
    project = tmp_path / "crawls 100%"  # a space for the shell, a % for cron
    project.mkdir()
    settings = write_project(project, server.url("/"))
    settings.write_text(settings.read_text().replace("30 2 * * *", "* * * * *"))
    home = tmp_path / "home"
    home.mkdir()
    printed = subprocess.run(  # printed from elsewhere: the lines still run in the project
        [sys.executable, "-m", "scraper", "jobs", "crontab", "--env", "PYTHONPATH",
         "--settings", str(settings)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": TREE}, capture_output=True, check=True)
    ((env, command),) = cron_entries(printed.stdout.decode())
    assert not (project / "jobs").exists()  # printing creates nothing: the line does

    for attempt in ("fresh project", "after rm -rf jobs/"):
        done = run_as_cron(command, env, home)
        assert done.returncode == 0, (attempt, done.stderr.decode())
        log = (project / "jobs" / "nightly" / "cron.log").read_text()
        assert "pages: 2\n" in log and "items written to: out/nightly-" in log, (attempt, log)
        (record,) = [json.loads(line) for line in
                     (project / "jobs" / "nightly" / "history.jsonl").read_text().splitlines()]
        assert record["exit_code"] == 0 and record["stats"]["pages"] == 2
        output = project / record["output"]  # relative to the project, not to $HOME
        items = [json.loads(line) for line in output.read_text().splitlines()]
        assert sorted(item["url"] for item in items) == [server.url("/"), server.url("/a")]
        assert list(home.iterdir()) == []  # nothing written where cron starts
        shutil.rmtree(project / "jobs")
        shutil.rmtree(project / "out")


FAKE_CRONTAB = """#!/bin/sh
# crontab -l / crontab -, on a file; like Debian's when there is none
case "$1" in
  -l) if [ -f {file} ]; then cat {file}; else echo "no crontab for $(id -un)" >&2; exit 1; fi ;;
  -) cat > {file} ;;
  *) echo "usage" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def fake_crontab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SCRAPER_CRONTAB pointed at a crontab command keeping the table in a file."""
    table = tmp_path / "crontab.txt"
    script = tmp_path / "fake-crontab"
    script.write_text(FAKE_CRONTAB.format(file=shlex.quote(str(table))))
    script.chmod(0o755)
    monkeypatch.setenv("SCRAPER_CRONTAB", str(script))
    return table


def jobs_crontab(*args: str, answer: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["jobs", "crontab", *args], input=answer)
    return result.exit_code, result.output


def test_install_and_uninstall_edit_only_their_own_lines(fake_crontab: Path,
                                                        tmp_path: Path) -> None:
    settings = write_project(tmp_path, "http://127.0.0.1:9/")
    code, output = jobs_crontab("--install")
    assert code == 0, output  # `crontab -l` said "no crontab for ...": an empty one
    (line,) = [line for line in fake_crontab.read_text().splitlines() if line[:1] not in "#"]
    assert line.startswith("30 2 * * * mkdir -p ")

    mine = "MAILTO=me@example.org\n0 * * * * /usr/bin/true  # my own\n"
    theirs = "15 4 * * * /usr/bin/backup\n"
    installed = fake_crontab.read_text()
    fake_crontab.write_text(mine + installed + theirs)

    code, output = jobs_crontab("--install")
    assert code == 0 and "nothing to do" in output

    settings.write_text(settings.read_text().replace("30 2 * * *", "45 3 * * *"))
    code, output = jobs_crontab("--install", answer="n\n")
    assert code == 1 and "Replace them?" in output and "30 2 * * *" in output
    assert fake_crontab.read_text() == mine + installed + theirs  # unchanged

    code, output = jobs_crontab("--install", answer="y\n")
    assert code == 0, output
    after = fake_crontab.read_text()
    assert after.startswith(mine) and after.endswith(theirs)  # replaced in place
    assert "45 3 * * * mkdir" in after and "30 2 * * *" not in after

    code, output = jobs_crontab("--uninstall")
    assert code == 0 and "removed" in output
    assert fake_crontab.read_text() == mine + theirs
    code, output = jobs_crontab("--uninstall")
    assert code == 0 and "nothing to remove" in output


def test_a_failing_crontab_command_is_reported(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path, "http://127.0.0.1:9/")
    script = tmp_path / "broken-crontab"
    script.write_text("#!/bin/sh\necho 'cannot open the spool' >&2\nexit 3\n")
    script.chmod(0o755)
    monkeypatch.setenv("SCRAPER_CRONTAB", str(script))
    code, output = jobs_crontab("--install")
    assert code == 2 and "exited with code 3: cannot open the spool" in output
    monkeypatch.setenv("SCRAPER_CRONTAB", str(tmp_path / "missing"))
    code, output = jobs_crontab("--uninstall")
    assert code == 2 and "cannot run" in output and "SCRAPER_CRONTAB" in output


def test_with_block_keeps_other_projects_blocks(tmp_path: Path) -> None:
    one, two = tmp_path / "one.toml", tmp_path / "two.toml"
    text = with_block(with_block("", one, ["1 * * * * a"]), two, ["2 * * * * b"])
    text = with_block(text, one, ["3 * * * * c"])
    assert [line for line in text.splitlines() if not line.startswith("#")] == \
        ["3 * * * * c", "2 * * * * b"]
    assert with_block(with_block(text, one, []), two, []) == ""


def test_env_names_must_be_set_and_unset_variables_are_pointed_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path, "http://127.0.0.1:9/")
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    code, output = jobs_crontab("--env", "NOT_SET_HERE")
    assert code == 2 and "--env NOT_SET_HERE: the variable is not set here" in output
    monkeypatch.setenv("SCRAPER_CRAWL__PER_HOST", "2")
    result = CliRunner().invoke(main, ["jobs", "crontab"])
    assert "SCRAPER_CRAWL__PER_HOST is set here but cron will not set it" in result.stderr
    result = CliRunner().invoke(main, ["jobs", "crontab", "--env", "SCRAPER_CRAWL__PER_HOST"])
    assert " SCRAPER_CRAWL__PER_HOST=2 " in result.output


# -- time zones ------------------------------------------------------------------------------

def test_a_jobs_timezone_sets_its_schedule_and_is_written_as_cron_tz(tmp_path: Path) -> None:
    settings = write_project(tmp_path, "http://127.0.0.1:9/", timezone="Europe/Paris")
    settings.write_text(settings.read_text() + '\n[jobs.local]\nspider = "site"\n'
                                               'schedule = "0 5 * * *"\n')
    jobs = load_jobs(load(settings), settings)
    summer = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
    assert jobs["nightly"].next_run(summer) == datetime(2024, 7, 2, 0, 30, tzinfo=UTC)
    winter = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert jobs["nightly"].next_run(winter) == datetime(2024, 1, 2, 1, 30, tzinfo=UTC)
    lines = crontab_lines(jobs, settings)
    assert [line.split(" mkdir")[0] for line in lines] == \
        ["0 5 * * *", "CRON_TZ=Europe/Paris", "30 2 * * *", 'CRON_TZ=""']


def test_local_time_follows_tz_as_cron_does(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    settings = write_project(tmp_path, "http://127.0.0.1:9/")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    job = load_jobs(load(settings), settings)["nightly"]
    assert job.zone.name == "local (Asia/Tokyo, from $TZ)"
    assert job.next_run(datetime(2024, 7, 1, 12, 0, tzinfo=UTC)) == \
        datetime(2024, 7, 1, 17, 30, tzinfo=UTC)


def test_an_unknown_timezone_is_explained(tmp_path: Path) -> None:
    settings = write_project(tmp_path, "http://127.0.0.1:9/", timezone="Europe/Pariss")
    with pytest.raises(ConfigError, match=r"jobs.nightly.timezone = 'Europe/Pariss': not a "
                                          r"time zone"):
        load_jobs(load(settings), settings)


def test_jobs_serve_reads_the_schedule_in_the_jobs_timezone(server: FaultServer,
                                                            tmp_path: Path) -> None:
    """Due every second, but only in hours of the job's zone that local time is not in:
    only a server reading the schedule in that zone starts it."""
    now = datetime.now(UTC)
    window = [now, now + timedelta(minutes=2)]
    local_hours = {when.astimezone().hour for when in window}
    zone = next(name for name in ("Pacific/Kiritimati", "Asia/Kathmandu", "America/Noronha",
                                  "Pacific/Pago_Pago")
                if not {when.astimezone(ZoneInfo(name)).hour for when in window} & local_hours)
    hours = ",".join(sorted({str(when.astimezone(ZoneInfo(zone)).hour) for when in window}))
    server.add_page("/")
    settings = write_project(tmp_path, server.url("/"), timezone=zone)
    settings.write_text(settings.read_text().replace("30 2 * * *", f"* * {hours} * * *"))
    process = scraper_command("jobs", "serve", cwd=tmp_path)
    try:
        assert server.wait_for_requests(1, timeout=30), f"no run in {zone} hours {hours}"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert b"job nightly: starting" in stderr
