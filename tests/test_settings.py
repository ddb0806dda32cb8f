"""Settings: layers, precedence, and errors that name source, key, value and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from scraper.errors import ConfigError
from scraper.settings import load, parse_duration


def test_defaults_without_file() -> None:
    settings = load(environ={}).settings
    assert settings.crawl.per_host == 8
    assert settings.retry.statuses == (408, 429, 500, 502, 503, 504)


def test_precedence_file_spider_env_cli(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[crawl]\nper_host = 2\nworkers = 3\ndelay = 1\nmax_pages = 5\n")
    loaded = load(
        path,
        spider_settings={"crawl.workers": 4, "crawl.delay": 2, "crawl.max_pages": 6},
        environ={"SCRAPER_CRAWL__DELAY": "3", "SCRAPER_CRAWL__MAX_PAGES": "7"},
        overrides=["crawl.max_pages=8"],
    )
    crawl = loaded.settings.crawl
    assert (crawl.per_host, crawl.workers, crawl.delay, crawl.max_pages) == (2, 4, 3.0, 8)
    assert loaded.sources["crawl.per_host"] == str(path)
    assert loaded.sources["crawl.workers"] == "spider custom_settings"
    assert loaded.sources["crawl.delay"] == "environment"
    assert loaded.sources["crawl.max_pages"] == "-s"


def test_bundled_settings_file_is_valid_and_matches_defaults() -> None:
    bundled = Path(__file__).resolve().parent.parent / "settings.toml"
    assert load(bundled, environ={}).settings == load(environ={}).settings


def test_bad_value_names_file_key_value_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[crawl]\nper_host = "many"\n')
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    message = str(info.value)
    assert str(path) in message and "crawl.per_host" in message and "'many'" in message
    assert "integer" in message


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'crawl.per_hots'.*'crawl.per_host'"):
        load(overrides=["crawl.per_hots=3"], environ={})


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load(overrides=["crawl.per_host"], environ={})


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[crawl\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load(path, environ={})


@pytest.mark.parametrize(("text", "seconds"),
                         [(90, 90.0), ("90s", 90.0), ("10m", 600.0), ("2h", 7200.0),
                          ("1.5", 1.5), ("250ms", 0.25)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_is_explained() -> None:
    with pytest.raises(ConfigError, match=r"crawl.deadline = 'soon'.*duration"):
        load(overrides=["crawl.deadline=soon"], environ={})
