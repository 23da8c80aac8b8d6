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


class ConflictError(TransientError):
    """A conditional write lost: the row changed since it was read (another writer won)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=412)


class PermanentError(ResponderError):
    """Do not retry: 400/403/404, bad configuration, invalid input."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class ConfigError(PermanentError):
    """The app settings are invalid; raised at start-up."""


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: our TransientError, Azure SDK 408/429/5xx, timeouts, connection errors."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, PermanentError):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    try:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
    except ImportError:  # pragma: no cover - azure-core is a dependency
        return False
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return True
    if isinstance(exc, HttpResponseError):
        status = getattr(exc, "status_code", None) or 0
        return status in (408, 429) or status >= 500
    return False


def safe_reason(exc: BaseException) -> str:
    """A short description of an unexpected exception that carries no payload values.

    ResponderErrors are safe by construction; for anything else only the type and, for
    Azure SDK errors, the status and error code are kept (their messages can echo input).
    """
    if isinstance(exc, ResponderError):
        return str(exc)[:500]
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    parts = [exc.__class__.__name__]
    if status:
        parts.append(f"status {status}")
    if code:
        parts.append(f"code {code}")
    return ", ".join(str(p) for p in parts)
