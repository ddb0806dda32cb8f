"""The project's one exception tree.

```
ScraperError
├── ConfigError (ValueError)          bad settings, arguments or spider -> exit code 2
│   └── SpiderNotFound
├── FetchError (.reason, .url)        a request that did not produce a usable response
│   ├── ConnectError                  reason "connection"
│   ├── FetchTimeout                  reason "timeout"
│   ├── ConnectionBroken              reason "connection" (reset, truncated body, protocol)
│   ├── TooLarge                      reason "too_large"
│   ├── StatusError (.status)         reason "status:NNN" (retryable statuses, given up)
│   ├── RedirectError                 reason "redirect" (loop, too many, bad Location)
│   ├── BlockedAddress                reason "blocked_address" (a private address, refused)
│   ├── ProxyFailure (.penalise)      reason "proxy_connection", "proxy_auth", "proxy_refused",
│   │                                 "proxy_status:NNN" (the proxy failed or refused)
│   └── Cancelled                     reason "deadline" / "interrupted"
├── FormError (ValueError)            `response.form()`: no such form or submit button
├── ItemError                         an item that failed validation
└── FatalError (.path)                the crawl cannot go on -> finish_reason "error", exit 1
    ├── OutputError                   an output file cannot be written (ENOSPC, EMFILE, ...)
    └── StoreError                    the frontier's store (jobdir, Redis) cannot be used
DropItem, CloseSpider, Retry          signals raised by user code, not failures
```
"""

from __future__ import annotations


class ScraperError(Exception):
    """Base of every error the framework raises."""


class ConfigError(ScraperError, ValueError):
    """Bad settings, CLI arguments or spider definition."""


class SpiderNotFound(ConfigError):
    """No spider with the given name or path."""


class FetchError(ScraperError):
    """A request that ended without a usable response.

    `reason` is the short key counted in stats (`failed_reasons`) and shown in logs.
    `retryable` says whether the retry policy may try the request again.
    """

    reason = "error"
    retryable = False

    def __init__(self, message: str, url: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        if reason is not None:
            self.reason = reason


class ConnectError(FetchError):
    reason = "connection"
    retryable = True


class FetchTimeout(FetchError):
    reason = "timeout"
    retryable = True


class ConnectionBroken(FetchError):
    """Reset, truncated body or malformed response after the request may have been sent."""

    reason = "connection"
    retryable = True
    stale = False  # set by the client: the server closed a reused connection before answering


class TooLarge(FetchError):
    reason = "too_large"


class StatusError(FetchError):
    """A response whose status is in `retry.statuses`, after the last attempt."""

    retryable = True

    def __init__(self, status: int, url: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"HTTP status {status}", url, reason=f"status:{status}")
        self.status = status
        self.retry_after = retry_after
        self.result: object = None  # the response, for a callback once retries are used up


class RedirectError(FetchError):
    reason = "redirect"


class BlockedAddress(FetchError):
    """A host outside the crawl's own resolved to a loopback, private, link-local or
    otherwise non-public address: refused before connecting (`http.allow_private_addresses`)."""

    reason = "blocked_address"


class ProxyFailure(FetchError):
    """The proxy, not the site, failed the request: unreachable ("proxy_connection",
    retried on another proxy), 407 ("proxy_auth") or a CONNECT refused with 403
    ("proxy_refused"), not retried; another status answered to CONNECT
    ("proxy_status:NNN"). `penalise`: the proxy should be backed off for it."""

    reason = "proxy_connection"
    retryable = True

    def __init__(self, message: str, url: str = "", *, reason: str | None = None,
                 retryable: bool = True, penalise: bool = True) -> None:
        super().__init__(message, url, reason=reason)
        self.retryable = retryable
        self.penalise = penalise


class Cancelled(FetchError):
    """The job's deadline or an interrupt cancelled the request."""

    reason = "deadline"


class FormError(ScraperError, ValueError):
    """`response.form()` found no such form, or no such submit button."""


class ItemError(ScraperError):
    """An item that failed `item_model` validation."""


class DropItem(Exception):
    """Raised by a pipeline to drop an item."""


class CloseSpider(Exception):
    """Raised by a callback to stop the crawl gracefully."""

    def __init__(self, reason: str = "closespider") -> None:
        super().__init__(reason)
        self.reason = reason


class Retry(Exception):
    """Raised by a callback to ask for the page again ("please wait", a captcha).

    The request goes back through the retry policy (`retry.attempts`, backoff; `wait`
    seconds instead of the backoff when given) and counts in `retries`; when the attempts
    run out it fails with reason `retry:REASON`. Items and requests the callback yielded
    before raising are dropped. `new_session=True` retires the response's session first.
    """

    def __init__(self, reason: str = "retry", wait: float | None = None, *,
                 new_session: bool = False) -> None:
        super().__init__(reason)
        if wait is not None and wait < 0:
            raise ValueError(f"Retry wait must not be negative, got {wait!r}")
        self.reason = reason
        self.wait = wait
        self.new_session = new_session


class FatalError(ScraperError):
    """The crawl cannot go on: it stops promptly with finish_reason `error` (exit 1),
    keeping what was already written. `where` names the file or store."""

    def __init__(self, where: str, error: BaseException | str) -> None:
        detail = error if isinstance(error, str) else (
            getattr(error, "strerror", None) or str(error) or type(error).__name__)
        super().__init__(f"{where}: {detail}")
        self.where = where


class OutputError(FatalError):
    """An output (`-o`, `[outputs.NAME]`) cannot be written or finalised."""


class StoreError(FatalError):
    """The frontier's store (the jobdir's SQLite file, Redis) cannot be read or written."""
