"""One exception type for every problem a user can fix, so the CLI can print one line and exit non-zero."""

from __future__ import annotations

# Exit codes are part of the CLI contract (documented in the README).
EXIT_USER_ERROR = 2
EXIT_VERIFY_FAILED = 3
EXIT_NO_DEVICE = 4
EXIT_INTERNAL = 70


class HarmonizerError(Exception):
    """A problem with the user's input or environment: what went wrong, and how to fix it."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def one_line(self) -> str:
        return f"{self.problem} — {self.fix}" if self.fix else self.problem


class DeviceUnavailable(HarmonizerError):
    """The target needs hardware this machine does not have (e.g. an NVIDIA GPU)."""

    exit_code = EXIT_NO_DEVICE


def reason(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, else its class name: messages built as
    f"… ({reason(exc)})" never end in an empty "()" (many library errors carry no text)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__
