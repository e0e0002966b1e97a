"""The errors of the Relay Server client, in a module of their own.

Why separate: the metrics and the web layer name these classes, and importing them must
not import the HTTP stack (``requests`` alone is a good part of the time to the first
``/health`` answer after a start). :mod:`gitsync.relay` re-exports every one.
"""

from __future__ import annotations

__all__ = ["BadResponse", "NotFound", "RelayError", "TooLarge", "Unauthorized", "Unavailable"]


class RelayError(Exception):
    """Base of every Relay Server failure; ``path`` and ``status`` say where and what.

    ``path`` is the request path on the Relay Server (e.g. ``/d/<id>/as-update``), or
    ``"<presigned attachment URL>"`` for a blob download; ``status`` is the last HTTP
    status seen, or None when no response arrived.
    """

    def __init__(self, message: str, *, path: str | None = None, status: int | None = None):
        super().__init__(message)
        self.path = path
        self.status = status


class NotFound(RelayError):
    """HTTP 404: the document (or attachment) does not exist on the server."""


class Unauthorized(RelayError):
    """HTTP 401/403 from the Relay Server: the API key is missing, wrong or read-only."""


class Unavailable(RelayError):
    """The server could not be reached or kept failing after every retry."""


class BadResponse(RelayError):
    """The server answered, but not with what was asked for (wrong type, bad hash, bad JSON)."""


class TooLarge(RelayError):
    """The answer is bigger than the cap configured for it.

    Permanent for this version of the document: asking again gets the same bytes, so
    the caller skips the document (a later, smaller version is fetched normally).
    ``size`` is the size the server declared, or None when the excess was found by
    reading; ``limit`` is the cap in bytes.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        status: int | None = None,
        size: int | None = None,
        limit: int = 0,
    ):
        super().__init__(message, path=path, status=status)
        self.size = size
        self.limit = limit
