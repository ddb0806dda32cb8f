"""Named jobs for cron: a lock per job, durable state, atomic output, a run history.

Each job `[jobs.NAME]` has a directory (default `jobs/NAME`, relative to the settings
file) holding `lock`, `state/` (the crawl's SQLite state: a run cut short by a crash,
a deadline or a signal is resumed by the next run) and `history.jsonl` (one line per
run). The lock is an `flock` on `lock`: the kernel drops it when the process dies, so a
crashed run never blocks the next one, and an overlapping run exits at once with code 4.
cronsim (maintained, vixie-cron compatible) evaluates schedules, in the job's `timezone`
(an IANA zone, as cron's CRON_TZ) or else in local time, found as the C library and cron
find it: $TZ, else /etc/localtime. `zoneinfo` reads the system's tz database.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import ConfigError, ScraperError
from .exits import EXIT_LOCKED as EXIT_LOCKED
from .settings import JobSettings, LoadedSettings


class JobLocked(ScraperError):
    """Another run of the same job holds its lock."""


@dataclass(frozen=True)
class Zone:
    """A time zone and the name shown for it (`Europe/Paris`, `local (Etc/UTC)`)."""

    info: tzinfo
    name: str


def local_zone() -> Zone:
    """Local time as the C library (and so cron) reads it: $TZ, else /etc/localtime."""
    name = os.environ.get("TZ", "").removeprefix(":")
    if name:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return Zone(ZoneInfo(name), f"local ({name}, from $TZ)")
    localtime = Path("/etc/localtime")
    target = localtime.resolve()
    if "zoneinfo/" in target.as_posix():  # a link into the tz database names its zone
        key = target.as_posix().split("zoneinfo/", 1)[1]
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return Zone(ZoneInfo(key), f"local ({key})")
    with contextlib.suppress(OSError, ValueError), open(localtime, "rb") as handle:
        return Zone(ZoneInfo.from_file(handle, key="localtime"), "local")
    if not target.exists():
        return Zone(UTC, "local (UTC, no /etc/localtime)")  # the C library's default
    info = datetime.now().astimezone().tzinfo or UTC
    return Zone(info, f"local ({datetime.now(info).tzname()})")


def named_zone(name: str, key: str) -> Zone:
    """The IANA zone `name` of the setting `key`, or a ConfigError."""
    try:
        return Zone(ZoneInfo(name), name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{key} = {name!r}: not a time zone of the tz database; expected a name such "
            "as 'Europe/Paris' or 'UTC' (the system's tz database, Debian's tzdata "
            "package, or the tzdata Python package provides them)"
        ) from None


@dataclass
class Job:
    name: str
    spec: JobSettings
    directory: Path
    zone: Zone

    @property
    def history_path(self) -> Path:
        return self.directory / "history.jsonl"

    def output_path(self, when: datetime) -> str:
        """The output path with {job}, {date} (YYYY-MM-DD), {time} (HHMMSS) and {run}
        (this run's number, counting the history) filled in."""
        if not self.spec.output:
            return ""
        try:
            return self.spec.output.format(**self.placeholders(when))
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"jobs.{self.name}.output = {self.spec.output!r}: unknown placeholder {exc}; "
                "use {job}, {date}, {time} or {run}"
            ) from None

    def placeholders(self, when: datetime) -> dict[str, Any]:
        """What `{job}`, `{date}`, `{time}` and `{run}` stand for in this run's output paths
        (the job's `output` and its `[outputs.NAME]` tables)."""
        return {"job": self.name, "date": when.strftime("%Y-%m-%d"),
                "time": when.strftime("%H%M%S"), "run": self.runs() + 1}

    def runs(self) -> int:
        try:
            with open(self.history_path, encoding="utf-8") as handle:
                return sum(1 for line in handle if line.strip())
        except FileNotFoundError:
            return 0

    def next_run(self, after: datetime) -> datetime | None:
        """The first scheduled time after `after` (naive: local time), in the job's zone."""
        if not self.spec.schedule:
            return None
        return next(CronSim(self.spec.schedule, after.astimezone(self.zone.info)))

    def last_run(self) -> dict[str, Any] | None:
        try:
            with open(self.history_path, encoding="utf-8") as handle:
                lines = [line for line in handle if line.strip()]
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by a crash
                return dict(json.loads(line))
        return None


def load_jobs(loaded: LoadedSettings, settings_path: Path | None) -> dict[str, Job]:
    """The jobs of the settings, with schedules checked."""
    base = settings_path.resolve().parent if settings_path else Path.cwd()
    jobs = {}
    local = local_zone()
    for name, spec in loaded.settings.jobs.items():
        source = loaded.sources.get("jobs", "settings")
        zone = named_zone(spec.timezone, f"{source}: jobs.{name}.timezone") \
            if spec.timezone else local
        if spec.schedule:
            try:
                CronSim(spec.schedule, datetime.now())
            except CronSimError as exc:
                raise ConfigError(
                    f"{source}: jobs.{name}.schedule = "
                    f"{spec.schedule!r}: expected a cron expression such as '30 2 * * *' "
                    f"({exc})"
                ) from None
        directory = Path(spec.dir) if spec.dir else Path("jobs") / name
        jobs[name] = Job(name, spec, directory if directory.is_absolute() else base / directory,
                         zone)
    return jobs


def get_job(jobs: dict[str, Job], name: str) -> Job:
    if name not in jobs:
        known = ", ".join(sorted(jobs)) or "none"
        raise ConfigError(f"no job named {name!r} in the settings (jobs: {known})")
    return jobs[name]


@contextlib.contextmanager
def job_lock(job: Job) -> Iterator[None]:
    """Hold the job's lock, or raise JobLocked at once."""
    job.directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(job.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise JobLocked(f"job {job.name!r} is already running (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def append_history(job: Job, record: dict[str, Any]) -> None:
    """One JSON line per run, appended and fsynced."""
    job.directory.mkdir(parents=True, exist_ok=True)
    with open(job.history_path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def job_overrides(job: Job) -> dict[str, Any]:
    """The dotted settings a job's run uses: its own, its jobdir, deadline, incremental."""
    overrides = dict(job.spec.settings)
    overrides["frontier.jobdir"] = str(job.directory / "state")
    if job.spec.deadline:
        overrides["crawl.deadline"] = job.spec.deadline
    if job.spec.incremental:
        overrides["frontier.incremental"] = True
    return overrides


def serve(jobs: dict[str, Job], settings_path: Path | None, stop: threading.Event,
          log: Any) -> None:
    """Run the jobs on their schedules until `stop` is set; one run at a time per job.

    Each run is a `scraper jobs run` subprocess, as cron would start it; a job whose
    previous run is still going when it is due again is skipped for that time. Times are
    compared as instants, each schedule read in its job's zone.
    """
    scheduled = {name: job for name, job in jobs.items() if job.spec.schedule}
    if not scheduled:
        raise ConfigError("no job has a schedule: nothing to serve")
    running: dict[str, subprocess.Popen[bytes]] = {}
    due = {name: job.next_run(datetime.now(UTC)) for name, job in scheduled.items()}
    settings = ["--settings", str(settings_path.resolve())] if settings_path else []
    while not stop.is_set():
        now = datetime.now(UTC)
        for name, when in list(due.items()):
            if when is None or when > now:
                continue
            process = running.get(name)
            if process is not None and process.poll() is None:
                log(f"job {name}: still running from its previous time; skipped")
            else:
                log(f"job {name}: starting")
                running[name] = subprocess.Popen(
                    [sys.executable, "-m", "scraper", "jobs", "run", name, *settings])
            due[name] = scheduled[name].next_run(now)
        for name, process in list(running.items()):
            if process.poll() is not None:
                log(f"job {name}: exited with code {process.returncode}")
                del running[name]
        upcoming = [when for when in due.values() if when is not None]
        wait = (min(upcoming) - datetime.now(UTC)).total_seconds() if upcoming \
            else 60.0
        stop.wait(max(0.05, min(wait, 1.0)) if running else max(0.05, min(wait, 60.0)))
    for name, process in running.items():
        log(f"job {name}: waiting for the run in progress to end")
        process.wait()


def run_record(job: Job, started: float, ended: float, exit_code: int, output: str,
               stats: dict[str, Any] | None, error: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "job": job.name,
        "started": datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "ended": datetime.fromtimestamp(ended).isoformat(timespec="seconds"),
        "duration_s": round(ended - started, 3),
        "exit_code": exit_code,
        "output": output or None,
        "pid": os.getpid(),
    }
    if stats is not None:
        record["stats"] = stats
    if error:
        record["error"] = error
    return record
