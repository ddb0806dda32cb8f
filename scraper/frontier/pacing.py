"""How fast a host may be asked: politeness delay, autothrottle and failing-host backoff.

Pure arithmetic over one host's state, so the local and the shared frontiers pace hosts
the same way (the shared one sends the result to Redis)."""

from __future__ import annotations

from .base import FrontierOptions


class HostPacing:
    """One host's pacing state."""

    __slots__ = ("base_delay", "delay", "failures")

    def __init__(self, delay: float) -> None:
        self.base_delay = delay  # crawl.delay, or robots.txt Crawl-delay when larger
        self.delay = delay  # base_delay, or more under autothrottle
        self.failures = 0  # consecutive failed exchanges

    def raise_floor(self, delay: float | None) -> None:
        """robots.txt asks for `delay` between starts at least."""
        if delay is not None and delay > self.base_delay:
            self.base_delay = delay
            self.delay = max(self.delay, delay)

    def observe(self, options: FrontierOptions, *, failed: bool, latency: float | None,
                pause: float | None) -> float | None:
        """Account one finished exchange; returns the pause before the host's next start.

        From the second failure in a row the host is paused for `retry.backoff`, doubling
        up to `retry.max_backoff`; a success resets it. Autothrottle moves the delay
        halfway towards latency / target concurrency, within [base, max delay]."""
        if failed:
            self.failures += 1
            if self.failures >= 2 and options.host_backoff:
                backoff = options.host_backoff * 2 ** (self.failures - 2)
                pause = max(pause or 0.0, min(backoff, options.max_host_backoff))
        else:
            self.failures = 0
        if latency is not None and options.autothrottle_target:
            target = latency / options.autothrottle_target
            delay = (self.delay + target) / 2
            self.delay = min(max(delay, self.base_delay),
                             max(options.autothrottle_max_delay, self.base_delay))
        return pause
