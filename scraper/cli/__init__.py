"""The `scraper` command (click): the only package that prints or exits.

Heavy modules (urllib3, selectolax, pydantic, rich) are imported inside the commands
that need them, so `scraper --help` stays fast enough for shell use and cron.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click

from ..exits import EXIT_FAILURES as EXIT_FAILURES
from ..exits import EXIT_OK as EXIT_OK
from ..exits import EXIT_USAGE

SUMMARY_KEYS = (
    "finish_reason", "exit_code", "elapsed_s", "pages", "pages_per_s", "items", "requests",
    "responses", "failed", "retries", "stale_retries", "connections_opened",
    "connections_reused", "bytes_received",
)
LOG_LEVELS = ("debug", "info", "warning", "error")
PROGRESS_MODES = ("auto", "live", "log", "off")
PREVIEW_CHARS = 500
DEMO_PORT = 8000  # where spiders/demo.py looks by default
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _config_errors() -> Iterator[None]:
    """Bad settings, spider or arguments: the message, then exit code 2."""
    from ..errors import ConfigError

    try:
        yield
    except ConfigError as exc:
        _fail(str(exc))


def _setup_logging(level: str = "info", fmt: str = "text", log_file: str | None = None,
                   quiet: bool = False) -> None:
    from .. import logs

    click.get_current_context().call_on_close(logs.reset)
    try:
        logs.setup(level.lower(), fmt, log_file=log_file, quiet=quiet)
    except OSError as exc:
        _fail(f"--log-file {log_file}: cannot write: {exc.strerror or exc}")


def _parse_args(pairs: tuple[str, ...]) -> dict[str, str]:
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise click.UsageError(f"-a expects NAME=VALUE with a Python identifier, got {pair!r}")
        args[key.strip()] = value
    return args


# -- shared options -------------------------------------------------------------------------


def _settings_options(func: F) -> F:
    func = click.option("--settings", "settings_file", metavar="PATH",
                        type=click.Path(dir_okay=False),
                        help="Settings file (default: ./settings.toml when present).")(func)
    return click.option("-s", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                        help="Setting override, e.g. -s crawl.per_host=8. Repeatable.")(func)


def _spider_arg_option(func: F) -> F:
    return click.option("-a", "spider_args", multiple=True, metavar="NAME=VALUE",
                        help="Spider argument, passed to the spider's __init__. "
                             "Repeatable.")(func)


def _log_options(func: F) -> F:
    func = click.option("-q", "--quiet", is_flag=True,
                        help="No progress and no summary; only warnings and errors on "
                             "stderr.")(func)
    func = click.option("--progress", "progress_mode", default="auto", show_default=True,
                        type=click.Choice(PROGRESS_MODES),
                        help="auto: a live line when stderr is a terminal (and logs are "
                             "text), else a log line every 5 s; live, log or off to "
                             "choose.")(func)
    func = click.option("--log-file", metavar="PATH",
                        help="Also append log records to PATH (at --log-level, even with "
                             "-q).")(func)
    func = click.option("--log-format", default="text", show_default=True,
                        type=click.Choice(["text", "json"]),
                        help="text: timestamped lines; json: one JSON object per line "
                             "(time, level, logger, message, data).")(func)
    return click.option("--log-level", default="info", show_default=True,
                        type=click.Choice(LOG_LEVELS, case_sensitive=False),
                        help="The least severe log records shown.")(func)


# -- the group ------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": 100})
@click.version_option(package_name="scraper")
def main() -> None:
    """A concurrent web-scraping framework built around one shared HTTP connection pool.

    \b
    Start here:
      scraper demo                               crawl the bundled demo site
      scraper new shop https://shop.example/     write spiders/shop.py
      scraper parse URL --spider shop            run one callback on one page
      scraper crawl shop -o out/shop.jsonl       run the spider

    `scraper COMMAND --help` explains each command's options.
    """



# The commands register themselves on `main` when their modules are imported.
from . import bench, crawling, jobs, tools  # noqa: E402,F401
