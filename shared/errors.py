"""Error taxonomy shared by adapters and steps.

Transient errors (throttling, 5xx, timeouts, a lease held by another worker) are raised
out of the function so the platform retries the message. Permanent errors end the step
as ``failed`` with a message an operator can act on (which permission or role is missing,
which object does not exist). Neither ever carries a password or a token.
"""
from __future__ import annotations


class ResponderError(Exception):
    """Base class. ``str(exc)`` is always safe to log and to store in a ledger row."""


class TransientError(ResponderError):
    """Retry later: 429, 5xx, timeouts, connection resets, lease conflicts."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class PermanentError(ResponderError):
    """Do not retry: 400/403/404, bad configuration, invalid input."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class ConfigError(PermanentError):
    """The app settings are invalid; raised at start-up."""
