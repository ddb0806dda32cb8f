"""The Redis frontier's parts that need no crawl: how requests are stored (the compact
form of a plain request), the check that a request can be stored, the packed commands,
and the idempotence of a step sent again."""

from __future__ import annotations

from typing import Any

import pytest

from scraper.errors import ConfigError
from scraper.frontier.codec import check_storable, dump_compact, dump_request, load_request
from scraper.frontier.shared import pack_command
from scraper.request import Request


class _Spider:
    name = "t"

    def parse(self, response: Any) -> None:
        """A callback: stored by name."""

    def other(self, response: Any) -> None:
        """Another one."""


FIELDS = [name for name in Request.__slots__ if name not in ("callback", "errback")]


def same(a: Request, b: Request) -> bool:
    return (all(getattr(a, name) == getattr(b, name) for name in FIELDS)
            and a.callback == b.callback and a.errback == b.errback)


def test_a_plain_request_is_stored_compact_and_read_back_equal() -> None:
    spider = _Spider()
    request = Request("http://a.test/p?q=1", callback=spider.other, priority=-3,
                      session="s1")
    request.depth = 4
    request.referer = "http://a.test/"
    payload = dump_compact(spider, request)
    assert payload.startswith("P") and "{" not in payload
    assert len(payload) < len(dump_request(spider, request)) / 3
    back = load_request(spider, payload, 7)
    assert back.store_id == 7
    back.store_id = None
    assert same(back, request)
    bare = Request("http://a.test/")
    assert same(load_request(spider, dump_compact(spider, bare), None), bare)


@pytest.mark.parametrize("change", [
    {"method": "POST", "body": b"a=1"}, {"headers": {"X-A": "1"}}, {"meta": {"k": [1]}},
    {"dont_filter": True}, {"attempt": 2}, {"redirect_chain": ("http://a.test/r",)},
    {"cb_kwargs": {"n": 1}}, {"timeout": 2.5}, {"cookies": {"c": "v"}},
    {"errback": "parse"}, {"url": "http://a.test/with\ttab"}])
def test_any_other_request_is_stored_as_json_and_read_back_equal(change: dict[str, Any]) -> None:
    spider = _Spider()
    if "errback" in change:
        change = {"errback": getattr(spider, change["errback"])}
    request = Request("http://a.test/x", callback=spider.parse).replace(**change)
    payload = dump_compact(spider, request)
    assert payload.startswith("{")
    assert same(load_request(spider, payload, None), request)


def test_check_storable_refuses_what_cannot_be_stored_as_dump_request_does() -> None:
    spider = _Spider()
    check_storable(spider, Request("http://a.test/", callback=spider.parse))
    check_storable(spider, Request("http://a.test/", meta={"ok": [1, "2"]}))
    unstorable = [Request("http://a.test/", callback=lambda r: None),
                  Request("http://a.test/", errback=print),
                  Request("http://a.test/", meta={"when": object()}),
                  Request("http://a.test/", cb_kwargs={"s": {1, 2}}),
                  Request("http://a.test/", headers={"X": b"bytes"})]
    for request in unstorable:
        with pytest.raises(ConfigError) as checked:
            check_storable(spider, request)
        with pytest.raises(ConfigError) as dumped:
            dump_request(spider, request)
        assert str(checked.value) == str(dumped.value)


def test_pack_command_is_the_redis_protocol() -> None:
    assert pack_command([b"SET", "k\u00e9", 12]) == (
        b"*3\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n12\r\n")


def open_frontier(url: str, **options: Any) -> Any:
    from scraper.frontier import FrontierOptions
    from scraper.frontier.shared import RedisFrontier
    from scraper.stats import Stats

    return RedisFrontier(FrontierOptions(per_host=4, **options), Stats(), url=url,
                         name="t", spider=_Spider(), lease_timeout=30, cleanup=False,
                         outage_grace=10)


def lose_the_next_reply(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The next reply this thread reads is lost once Redis has run the command (the
    connection breaks before the reply arrives); the list gets the lost reply."""
    import threading

    import redis

    real = redis.connection.Connection.read_response
    lost: list[Any] = []
    caller = threading.current_thread()

    def read_then_lose(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = real(self, *args, **kwargs)
        if not lost and threading.current_thread() is caller:
            lost.append(result)
            raise redis.ConnectionError("connection lost before the reply")
        return result

    monkeypatch.setattr(redis.connection.Connection, "read_response", read_then_lose)
    return lost


def test_an_add_resent_after_a_lost_reply_queues_once(redis_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests without dedup (dont_filter) are queued once even when their add is sent
    again: the step's record answers the resent add."""
    from scraper.frontier.shared import status

    frontier = open_frontier(redis_url)
    try:
        lost = lose_the_next_reply(monkeypatch)
        queued = frontier.add([Request("http://a.test/x", dont_filter=True),
                               Request("http://a.test/y")])
        assert lost and queued == 2
        assert status(redis_url, "t")["queued"] == 2
    finally:
        frontier.stop()
        frontier.close()


def test_a_take_resent_after_a_lost_reply_hands_out_what_it_took(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from scraper.frontier.shared import status

    frontier = open_frontier(redis_url)
    try:
        frontier.add([Request(f"http://a.test/{i}") for i in range(3)])
        lost = lose_the_next_reply(monkeypatch)
        taken = frontier.next()
        monkeypatch.undo()
        assert lost and taken is not None and taken.url == "http://a.test/0"
        counts = status(redis_url, "t")
        assert counts["leases"] == 1 and counts["queued"] == 2  # nothing more was taken
        assert frontier.next().url == "http://a.test/1"
    finally:
        frontier.stop()
        frontier.close()


def test_status_counts_items_and_finished_requests(redis_url: str) -> None:
    from scraper.frontier import Outcome
    from scraper.frontier.shared import status

    frontier = open_frontier(redis_url)
    try:
        frontier.add([Request("http://a.test/"), Request("http://b.test/")])
        first, second = frontier.next(), frontier.next()
        assert {first.url, second.url} == {"http://a.test/", "http://b.test/"}
        frontier.finish(first, Outcome(items=({"n": 1}, {"n": 2})))
        frontier.finish(second, Outcome(children=(Request("http://a.test/c"),)))
        counts = status(redis_url, "t")
        assert counts["items"] == counts["items_in_stream"] == 2
        assert counts["requests_done"] == 2
        assert counts["leases"] == 1 and counts["queued"] == 0  # the child: taken with the ack
    finally:
        frontier.stop()
        frontier.close()
