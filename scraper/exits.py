"""Exit codes and finish reasons, in one place (DESIGN.md, "CLI contract")."""

from __future__ import annotations

EXIT_OK = 0  # finished, nothing failed beyond crawl.allowed_failures
EXIT_FAILURES = 1  # finished, but requests failed for good; or finish_reason "error"
EXIT_USAGE = 2  # bad usage, settings or spider
EXIT_DEADLINE = 3  # the job's deadline was reached (outputs finalised)
EXIT_LOCKED = 4  # another run of the same job holds its lock
EXIT_INTERRUPTED = 130  # SIGINT / SIGTERM

FINISH_REASONS = ("finished", "deadline", "interrupted", "max_pages", "max_items",
                  "max_errors", "no_items", "error")


def exit_code(reason: str, failed: int, allowed_failures: int) -> int:
    """The process's exit code for a crawl that ended with `reason`."""
    if reason == "deadline":
        return EXIT_DEADLINE
    if reason == "interrupted":
        return EXIT_INTERRUPTED
    if reason == "error" or failed > allowed_failures:
        return EXIT_FAILURES
    return EXIT_OK
