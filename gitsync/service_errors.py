"""Errors the service raises to its callers (the web layer and the CLI).

Kept apart from ``service.py`` so the web layer can name them without importing the
whole service (and with it Dulwich, Paramiko and the engine).
"""

from __future__ import annotations

__all__ = ["ServiceError", "CredentialsError", "DataDirInUse", "NotConfigured", "ServiceUnavailable"]


class ServiceError(Exception):
    """The service cannot do what was asked; the message says why and what to do."""


class CredentialsError(ServiceError):
    """The Relay Server refused our API key (or the SSH key is unusable)."""


class ServiceUnavailable(ServiceError):
    """A webhook could not be queued durably (shutting down, journal unwritable)."""


class DataDirInUse(ServiceError):
    """Another process (usually the running service) holds the data directory."""


class NotConfigured(ServiceError):
    """A request names a folder no connector syncs."""
