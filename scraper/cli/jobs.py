"""`scraper jobs`, `status` and `export`: cron jobs and crawls shared through Redis."""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..exits import EXIT_LOCKED
from . import _config_errors, _fail, _log_options, _setup_logging, main
from .crawling import _reporter, _summary


def _settings_file_option(func: Any) -> Any:
    return click.option("--settings", "settings_file", metavar="PATH",
                        type=click.Path(dir_okay=False),
                        help="Settings file with the [jobs.NAME] tables "
                             "(default: ./settings.toml).")(func)


def _load_jobs(settings_file: str | None) -> tuple[dict[str, Any], Path | None]:
    from ..api import settings_path
    from ..jobs import load_jobs
    from ..settings import load

    path = settings_path(settings_file)
    with _config_errors():
        return load_jobs(load(path), path), path


@main.group()
def jobs() -> None:
    """Named crawls from [jobs.NAME] tables in settings.toml, for cron.

    \b
    Example settings.toml:
      [jobs.nightly]
      spider = "demo"
      schedule = "30 2 * * *"
      deadline = "1h"
      output = "out/{job}-{date}.jsonl"
      incremental = true

    \b
    Example:
      scraper jobs crontab --install       # add every job's schedule to your crontab
    """


@jobs.command(name="list")
@_settings_file_option
def list_jobs(settings_file: str | None) -> None:
    """Each job's schedule and the zone it is read in, last run and result, next run.

    A job without `timezone` follows local time: $TZ, else the system's /etc/localtime,
    which is what cron uses.
    """
    found, _ = _load_jobs(settings_file)
    now = datetime.now(UTC)
    rows = [("job", "schedule", "zone", "last run", "result", "next run")]
    for name, job in sorted(found.items()):
        last = job.last_run()
        upcoming = job.next_run(now)
        rows.append((
            name,
            job.spec.schedule or "-",
            job.zone.name,
            last["ended"] if last else "never",
            f"exit {last['exit_code']}" if last else "-",
            upcoming.strftime("%Y-%m-%d %H:%M %Z") if upcoming else "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                      strict=True)).rstrip())


@jobs.command(name="run")
@click.argument("name")
@_settings_file_option
@_log_options
def run_job(name: str, settings_file: str | None, log_level: str, log_format: str,
            log_file: str | None, progress_mode: str, quiet: bool) -> None:
    """Run the job NAME once, now: what cron calls.

    It takes the job's lock (another run in progress: exit code 4 at once; a crashed run's
    lock does not block), resumes the job's state when its last run was cut short, writes
    its output atomically and appends a line to its history (jobs/NAME/history.jsonl).

    \b
    Example:
      scraper jobs run nightly --log-file jobs/nightly/run.log -q

    Exit codes as for `scraper crawl`, and 4 when another run holds the lock.
    """
    from ..api import run_job as run
    from ..jobs import JobLocked

    _setup_logging(log_level, log_format, log_file, quiet)
    reporter = _reporter(progress_mode, log_format, quiet, name)
    try:
        with _config_errors(), reporter:
            result = run(name, settings_file=settings_file, handle_signals=True,
                         on_progress=reporter, progress_interval=reporter.interval)
    except JobLocked as exc:
        _fail(str(exc), EXIT_LOCKED)
    output = result.stats.get("output")
    _summary(result, output, to_stderr=False, quiet=quiet, log_format=log_format)
    sys.exit(result.exit_code)


@jobs.command()
@_settings_file_option
@click.option("--env", "env_names", multiple=True, metavar="NAME",
              help="Write this variable's current value into each line (cron starts with "
                   "an almost empty environment), e.g. --env PYTHONPATH. Repeatable.")
@click.option("--workdir", type=click.Path(file_okay=False, exists=True), metavar="DIR",
              help="The directory the lines change to, where relative paths (spiders_dir, "
                   "output) are read from (default: the settings file's directory).")
@click.option("--install", is_flag=True,
              help="Put the lines into your crontab, between marker lines naming this "
                   "settings file; the rest of the crontab is kept.")
@click.option("--uninstall", is_flag=True,
              help="Remove this settings file's marked lines from your crontab.")
@click.option("--yes", "-y", is_flag=True,
              help="With --install: replace the installed lines without asking.")
def crontab(settings_file: str | None, env_names: tuple[str, ...], workdir: str | None,
            install: bool, uninstall: bool, yes: bool) -> None:
    """Crontab lines for every scheduled job, printed or installed.

    Each line runs as cron runs it (/bin/sh, PATH=/usr/bin:/bin, in $HOME, no locale):
    it creates jobs/NAME, changes to the settings file's directory, runs this Python with
    the absolute settings path and appends the output to jobs/NAME/cron.log. A job's `timezone` is
    written as CRON_TZ= (cronie honours it; Debian's cron reads every schedule in the
    system's zone). The crontab command is `crontab`, or $SCRAPER_CRONTAB.

    \b
    Examples:
      scraper jobs crontab --install       # add or update this project's lines
      scraper jobs crontab --uninstall     # remove them
      scraper jobs crontab >> my.crontab   # or print them, to edit by hand
    """
    from ..crontab import (
        crontab_lines,
        environment_notes,
        foreign_cron_tz,
        markers,
        owned_block,
        passed_environment,
        read_crontab,
        with_block,
        write_crontab,
    )

    if install and uninstall:
        raise click.UsageError("--install and --uninstall: choose one")
    found, path = _load_jobs(settings_file)
    with _config_errors():
        env = passed_environment(env_names)
        if uninstall:
            if path is None:
                raise click.UsageError("no settings file: nothing was installed for it")
            current = read_crontab()
            if owned_block(current, path) is None:
                click.echo(f"nothing to remove: the crontab has no lines for {path.resolve()}")
                return
            write_crontab(with_block(current, path, []))
            click.echo(f"removed the lines for {path.resolve()} from the crontab")
            return
        lines = crontab_lines(found, path, env, Path(workdir) if workdir else None)
        assert path is not None  # crontab_lines raised otherwise
        for note in environment_notes(env):
            click.echo(f"note: {note}", err=True)
        begin, end = markers(path)
        if not install:
            for line in (begin, *lines, end):
                click.echo(line)
            return
        current = read_crontab()
        installed = owned_block(current, path)
        if installed == [begin, *lines, end]:
            click.echo("the crontab already has these lines: nothing to do")
            return
        if installed is not None and not yes:
            click.echo("installed now:\n  " + "\n  ".join(installed[1:-1] or ["(none)"]))
            click.echo("to install:\n  " + "\n  ".join(lines or ["(none)"]))
            if not click.confirm("Replace them?", default=False):
                _fail("the crontab was not changed", 1)
        write_crontab(with_block(current, path, lines))
        if foreign_cron_tz(current, path):
            click.echo("note: a CRON_TZ= line above the scraper lines applies to them too",
                       err=True)
        scheduled = sum(1 for line in lines if line[:1] not in ("#", "C"))
        click.echo(f"{scheduled} job line(s) installed in the crontab, between the lines "
                   f"{begin!r} and {end!r}")


@jobs.command()
@_settings_file_option
def serve(settings_file: str | None) -> None:
    """Run the jobs on their schedules in the foreground (for hosts without cron).

    One run at a time per job: a job still running when it is due again is skipped for
    that time. SIGTERM or Ctrl-C stops scheduling and waits for runs in progress.

    \b
    Example:
      scraper jobs serve --settings /srv/crawls/settings.toml
    """
    from ..jobs import serve as serve_jobs

    found, path = _load_jobs(settings_file)
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()  # Event.set takes no lock the interrupted code could hold

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)

    def log(message: str) -> None:
        click.echo(f"{datetime.now().isoformat(sep=' ', timespec='seconds')} {message}",
                   err=True)

    with _config_errors():
        serve_jobs(found, path, stop, log)


def _backend_options(func: Any) -> Any:
    func = click.option("--name", "crawl_name", required=True, metavar="NAME",
                        help="The crawl's name (frontier.name; by default the spider's "
                             "name).")(func)
    return click.option("--backend", required=True, metavar="URL",
                        help="The Redis URL, as in frontier.backend "
                             "(redis://host:port/db).")(func)


@main.command()
@_backend_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--watch", type=float, metavar="SECONDS",
              help="Print again every SECONDS until interrupted.")
def status(backend: str, crawl_name: str, as_json: bool, watch: float | None) -> None:
    """The counters of a crawl shared through Redis: queued, leased, done, items, and
    the processes holding leases.

    \b
    Example:
      scraper status --backend redis://10.0.0.5:6379/0 --name catalogue --watch 5
    """
    from ..frontier.shared import status as read_status

    stop = threading.Event()
    while True:
        with _config_errors():
            counters = read_status(backend, crawl_name)
        if as_json:
            click.echo(json.dumps(counters))
        else:
            click.echo("  ".join(f"{key}={value}" for key, value in counters.items()
                                 if key != "processes"))
            click.echo(f"processes: {', '.join(counters['processes']) or 'none'}")
        if not watch or stop.wait(watch):
            return


@main.command()
@_backend_options
@click.option("-o", "output", required=True, metavar="PATH",
              help="The file to write (.jsonl, .csv, .json); written as PATH.part, renamed.")
def export(backend: str, crawl_name: str, output: str) -> None:
    """Drain the items of a crawl shared through Redis into one file.

    Each item entered the crawl's stream in the same step that acknowledged its request,
    so it is there exactly once whatever crashed. Export writes the items not exported
    before and remembers where it stopped; run it again for the next ones.

    \b
    Example:
      scraper export --backend redis://127.0.0.1:6379/0 --name catalogue -o items.jsonl
    """
    from ..exporters import Exporter
    from ..frontier.shared import drain_items, mark_exported

    with _config_errors():
        exporter = Exporter(output)
        last = None
        for entry_id, item in drain_items(backend, crawl_name):
            exporter.write(item)
            last = entry_id
        exporter.finalise()
        if last is not None:
            mark_exported(backend, crawl_name, last)
    click.echo(f"{exporter.count} items written to {output}")
