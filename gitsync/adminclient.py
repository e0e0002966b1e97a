"""The CLI's side of the admin endpoints: read ``/api/status``, ask ``POST /api/sync``.

Used by ``cli.py status --url`` and by ``cli.py sync`` when the service holds the data
directory. The admin token travels only in the Authorization header and never appears
in a message raised here.
"""

from __future__ import annotations

from typing import Any

import requests

__all__ = ["AdminError", "get_status", "normalize_url", "request_sync"]


class AdminError(Exception):
    """The running service could not be asked; the message says what to check."""


def normalize_url(url: str) -> str:
    """``127.0.0.1:8000`` -> ``http://127.0.0.1:8000`` (no trailing slash)."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def _call(method: str, url: str, path: str, token: str | None, *, body: dict | None = None,
          timeout: float = 10.0) -> dict[str, Any]:
    base = normalize_url(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        reply = requests.request(method, base + path, json=body, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise AdminError(f"cannot read {base}{path}: {type(exc).__name__} (is the service running there?)") from None
    try:
        data = reply.json()
    except ValueError:
        data = None
    message = data.get("error") if isinstance(data, dict) else None
    if reply.status_code == 401:
        raise AdminError(f"{base}{path} refused the admin token: set ADMIN_TOKEN to the service's admin token"
                         + (f" ({message})" if message and not token else ""))
    if reply.status_code >= 400 or not isinstance(data, dict):
        raise AdminError(f"{base}{path} answered HTTP {reply.status_code}: {message or 'not a JSON object'}")
    return data


def get_status(url: str, token: str | None) -> dict[str, Any]:
    """The service's ``/api/status``.

    Raises:
        AdminError: unreachable, refused, or not an answer of ours.
    """
    data = _call("GET", url, "/api/status", token)
    data.setdefault("source", normalize_url(url))
    return data


def request_sync(url: str, token: str | None, selection: tuple[str, str] | None = None, *,
                 confirm_deletions: bool = False) -> dict[str, Any]:
    """Queue a full sync of one folder (or all) on the running service.

    Raises:
        AdminError: unreachable, refused, or the folder is not configured there.
    """
    body: dict[str, Any] = {"confirm_deletions": confirm_deletions}
    if selection is not None:
        body.update(relay_id=selection[0], folder_id=selection[1])
    return _call("POST", url, "/api/sync", token, body=body)
