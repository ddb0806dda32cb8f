"""`Spider`: the class a user subclasses."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .request import Request
from .response import Response


class Spider:
    """Subclass it, set `name` and `start_urls`, write `parse`.

    - `allowed_domains`: host names the crawl may visit (subdomains included);
      None means the hosts of `start_urls`.
    - `custom_settings`: dotted keys, as on the command line (`{"crawl.per_host": 4}`).
    - `item_model`: an optional pydantic model; items are validated against it.
    - `pipelines`: callables `(item, spider) -> item` or objects with
      `process_item(item, spider)`; raising `DropItem` drops the item.
    - `handle_statuses`: non-2xx statuses handed to callbacks instead of failing.
    - `blocked(response)`: return a short reason for a ban page (a captcha, "access
      denied"): the page is not handed to its callback, its session is retired and it
      is asked for again through the retry policy (failing as `blocked:REASON` when the
      attempts run out).

    Spider arguments (`-a key=value`) arrive as keyword arguments and, by default,
    become attributes.
    """

    name: str = ""
    start_urls: list[str] = []
    allowed_domains: list[str] | None = None
    custom_settings: dict[str, Any] = {}
    item_model: type | None = None
    pipelines: list[Any] = []
    handle_statuses: frozenset[int] = frozenset()

    def __init__(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            setattr(self, key, value)

    def start_requests(self) -> Iterable[Request]:
        for url in self.start_urls:
            yield Request(url)

    def parse(self, response: Response) -> Iterator[Any] | None:
        raise NotImplementedError(f"{type(self).__name__}.parse is not defined")

    def blocked(self, response: Response) -> str | None:
        """A reason when `response` is a ban page rather than the page asked for."""
        return None

    def opened(self) -> None:
        """Called once before the first request."""

    def closed(self, reason: str) -> None:
        """Called once after the crawl, with its finish reason."""
