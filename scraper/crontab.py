"""Crontab lines for the jobs, and the block of a user's crontab that `scraper` owns.

A line runs as cron runs it: `/bin/sh -c`, `PATH=/usr/bin:/bin`, the working directory
`$HOME`, no locale and no terminal. So it names everything by absolute path (the Python
that printed it, the settings file), changes to the project's directory (the settings
file's, unless told otherwise: relative paths such as `crawl.spiders_dir` and `output` are
read from there), and creates the job's directory before its shell opens the log there:
it works on a fresh project and after `rm -rf jobs/`. A job's `timezone` is written as
`CRON_TZ=` before its line.

`--install` keeps everything outside the block between the two marker lines, which name
the settings file, so several projects can share one crontab. The crontab command is
`crontab` unless SCRAPER_CRONTAB names another (tests use a fake one).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from .errors import ConfigError
from .jobs import Job

CRONTAB_COMMAND_VARIABLE = "SCRAPER_CRONTAB"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def cron_command(text: str) -> str:
    """`text` as a crontab command: cron turns an unescaped `%` into a newline."""
    return text.replace("%", "\\%")


def cron_unsupported(schedule: str) -> str | None:
    """Why cron cannot run a schedule cronsim accepts, or None."""
    if len(schedule.split()) == 6:
        return "it has a seconds field, and cron runs a job at most once a minute"
    if re.search(r"[L#]", schedule.upper()):
        return "L and # are not understood by Debian's cron"
    return None


def job_line(job: Job, settings_path: Path, workdir: Path,
             env: dict[str, str] | None = None) -> str:
    """One crontab line running `scraper jobs run NAME`, its output appended to
    jobs/NAME/cron.log."""
    python = sys.executable
    if not python or not Path(python).is_absolute():
        raise ConfigError("cannot tell which Python runs scraper (sys.executable is "
                          f"{python!r}): run `jobs crontab` with the interpreter cron should use")
    assignments = "".join(f"{name}={shlex.quote(value)} " for name, value in (env or {}).items())
    directory = shlex.quote(str(job.directory))
    command = (f"mkdir -p {directory} && cd {shlex.quote(str(workdir))} && "
               f"{assignments}{shlex.quote(python)} -m scraper jobs run {shlex.quote(job.name)} "
               f"--settings {shlex.quote(str(settings_path.resolve()))} "
               f">> {shlex.quote(str(job.directory / 'cron.log'))} 2>&1")
    return f"{job.spec.schedule} {cron_command(command)}"


def crontab_lines(jobs: dict[str, Job], settings_path: Path | None,
                  env: dict[str, str] | None = None, workdir: Path | None = None) -> list[str]:
    """Ready-to-install lines for every job: jobs in local time first, then each job with a
    `timezone` after its `CRON_TZ=` line, and `CRON_TZ=""` (back to local time) after them."""
    if settings_path is None:
        raise ConfigError("no settings file: jobs are [jobs.NAME] tables in settings.toml")
    workdir = (workdir or settings_path.resolve().parent).resolve()
    local, zoned = [], []
    for name, job in sorted(jobs.items()):
        problem = cron_unsupported(job.spec.schedule) if job.spec.schedule else "no schedule"
        if problem:
            local.append(f"# {name}: not for cron: {problem} (`scraper jobs serve` runs it)")
        elif job.spec.timezone:
            zoned += [f"CRON_TZ={job.spec.timezone}",
                      job_line(job, settings_path, workdir, env)]
        else:
            local.append(job_line(job, settings_path, workdir, env))
    # An empty value sends cron back to local time; Debian's crontab refuses `CRON_TZ=`.
    return local + ([*zoned, 'CRON_TZ=""'] if zoned else [])


def passed_environment(names: tuple[str, ...]) -> dict[str, str]:
    """The current values of the variables named to be written into the lines (--env)."""
    env = {}
    for name in names:
        if not _ENV_NAME.match(name):
            raise ConfigError(f"--env {name!r}: expected a variable name such as PYTHONPATH")
        if name not in os.environ:
            raise ConfigError(f"--env {name}: the variable is not set here")
        env[name] = os.environ[name]
    return env


def environment_notes(passed: dict[str, str]) -> list[str]:
    """Variables set here that change what a run does, and that cron will not have."""
    notes = []
    for name in sorted(os.environ):
        if name in passed:
            continue
        if name == "PYTHONPATH" or (name.startswith("SCRAPER_")
                                    and name != CRONTAB_COMMAND_VARIABLE):
            notes.append(f"{name} is set here but cron will not set it: "
                         f"pass --env {name} to write it into the lines")
    if os.environ.get("TZ"):
        notes.append(f"TZ={os.environ['TZ']} is set here, but cron reads schedules in the "
                     "system's zone (/etc/localtime) unless its daemon has TZ: set a job's "
                     "timezone instead")
    return notes


# -- the owned block of a crontab ------------------------------------------------------------

def markers(settings_path: Path) -> tuple[str, str]:
    where = settings_path.resolve()
    return (f"# >>> scraper jobs of {where} (scraper jobs crontab --install) >>>",
            f"# <<< scraper jobs of {where} <<<")


def find_block(text: str, settings_path: Path) -> tuple[int, int] | None:
    """The line indexes (first, last) of the block owned for `settings_path`, or None."""
    begin, end = markers(settings_path)
    lines = text.splitlines()
    if begin not in lines:
        return None
    first = lines.index(begin)
    try:
        last = lines.index(end, first)
    except ValueError:
        raise ConfigError(f"the crontab has the line {begin!r} but not its end {end!r}: "
                          "fix it with `crontab -e`") from None
    return first, last


def owned_block(text: str, settings_path: Path) -> list[str] | None:
    found = find_block(text, settings_path)
    return None if found is None else text.splitlines()[found[0]:found[1] + 1]


def with_block(text: str, settings_path: Path, lines: list[str]) -> str:
    """`text` with the block for `settings_path` replaced by `lines` (appended when it has
    none; removed when `lines` is empty), every other line kept as it was."""
    begin, end = markers(settings_path)
    block = [begin, *lines, end] if lines else []
    current = text.splitlines()
    found = find_block(text, settings_path)
    if found is None:
        updated = current + block
    else:
        updated = current[:found[0]] + block + current[found[1] + 1:]
    return "".join(line + "\n" for line in updated)


def foreign_cron_tz(text: str, settings_path: Path) -> bool:
    """Whether a CRON_TZ= line outside the block applies to it."""
    found = find_block(text, settings_path)
    before = text.splitlines()[:found[0]] if found else text.splitlines()
    return any(re.match(r"\s*CRON_TZ\s*=", line) for line in before)


# -- the crontab command ---------------------------------------------------------------------

def crontab_command() -> list[str]:
    command = shlex.split(os.environ.get(CRONTAB_COMMAND_VARIABLE, "") or "crontab")
    return command


def read_crontab() -> str:
    """The user's crontab; "" when they have none (`crontab -l` then exits 1 saying so)."""
    command = [*crontab_command(), "-l"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ConfigError(f"cannot run {shlex.join(command)}: {exc.strerror or exc} "
                          f"(set {CRONTAB_COMMAND_VARIABLE} to the crontab command)") from None
    if result.returncode == 0:
        return result.stdout
    if "no crontab for" in result.stderr:
        return ""
    raise ConfigError(f"{shlex.join(command)} exited with code {result.returncode}: "
                      f"{result.stderr.strip()}")


def write_crontab(text: str) -> None:
    """Replace the user's crontab with `text` (`crontab -`)."""
    command = [*crontab_command(), "-"]
    try:
        result = subprocess.run(command, input=text, capture_output=True, text=True,
                                check=False)
    except OSError as exc:
        raise ConfigError(f"cannot run {shlex.join(command)}: {exc.strerror or exc}") from None
    if result.returncode != 0:
        raise ConfigError(f"{shlex.join(command)} refused the new crontab (exit code "
                          f"{result.returncode}): {result.stderr.strip()}")
