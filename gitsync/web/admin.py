"""Operator endpoints behind the admin token: ``/metrics`` and ``POST /api/sync``, plus
the check ``/api/status`` uses and the count of webhook answers.

With ``ADMIN_TOKEN`` set, each of these needs ``Authorization: Bearer <token>`` (compared
in constant time). Without it, ``/api/status`` and ``/api/sync`` are not served at all
(404 naming the setting) and ``/metrics`` only when ``METRICS_PUBLIC`` is on: what the
service does is nobody's business by default.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..ids import InvalidId, parse_uuid
from ..metrics import CONTENT_TYPE, Metrics
from ..service_errors import NotConfigured, ServiceUnavailable
from .auth import AuthError, verify_bearer

__all__ = ["bp", "get_metrics", "require_admin"]

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__)

WEBHOOK_ENDPOINT = "webhooks.receive_webhook"
# Answers of POST /webhooks other than 2xx, as a metrics label.
_WEBHOOK_RESULTS = {400: "invalid", 401: "unauthorized", 413: "too_large", 503: "unavailable", 500: "error"}


def _state() -> dict[str, Any]:
    return current_app.extensions["gitsync"]


def get_metrics() -> Metrics:
    """The running service's metrics, or the app's own (build info and webhooks only)."""
    return metrics_for(_state())


def _denied(status: int, message: str) -> tuple[Any, int, dict[str, str]]:
    headers = {"WWW-Authenticate": 'Bearer realm="relay-git-sync admin"'} if status == 401 else {}
    return jsonify(error=message), status, headers


def require_admin(what: str, *, public: bool = False) -> tuple[Any, int, dict[str, str]] | None:
    """None when the request may see ``what``; else the error answer to return.

    Args:
        what: the route, for the message (``/api/status``).
        public: served to anyone (``/metrics`` with METRICS_PUBLIC on).
    """
    settings = _state()["settings"]
    if public:
        return None
    token = settings.admin_token
    if not token:
        hint = " (or METRICS_PUBLIC=1 to serve it without a token)" if what == "/metrics" else ""
        return _denied(404, f"{what} is disabled: set ADMIN_TOKEN to enable it{hint}")
    try:
        verify_bearer(request.headers.get("Authorization"), token)
    except AuthError as exc:
        log.warning("admin request refused path=%s reason=%s remote=%s", request.path, exc, request.remote_addr)
        return _denied(401, f"admin token required: {exc}".replace("<secret>", "<ADMIN_TOKEN>"))
    return None


@bp.record_once
def _announce(setup: Any) -> None:
    """Say at startup which operator endpoints are served."""
    settings = setup.app.extensions["gitsync"]["settings"]
    if settings.admin_token:
        log.info("admin endpoints ready: /api/status, POST /api/sync and /metrics need the admin token%s",
                 " (/metrics is public: METRICS_PUBLIC)" if settings.metrics_public else "")
        return
    log.warning("ADMIN_TOKEN not set: /api/status and POST /api/sync are not served; /metrics is %s",
                "public (METRICS_PUBLIC)" if settings.metrics_public else "not served either (set ADMIN_TOKEN, "
                "or METRICS_PUBLIC=1)")


def metrics_for(state: dict) -> Metrics:
    """The running service's metrics, or the app's own (build info and webhooks only)."""
    metrics = getattr(state.get("service"), "metrics", None)
    if isinstance(metrics, Metrics):
        return metrics
    if "metrics" not in state:
        state["metrics"] = Metrics()
    return state["metrics"]


def webhook_result(status: int, body: Any) -> str:
    """The ``result`` label of one POST /webhooks answer."""
    if 200 <= status < 300:
        result = body.get("status") if isinstance(body, dict) else None
        if result == "ignored" and isinstance(body, dict) and body.get("reason") == "event type not handled":
            result = "not_handled"  # an event type other than document.updated
        return result if result in ("queued", "merged", "ignored", "not_handled") else "accepted"
    return _WEBHOOK_RESULTS.get(status, "error")


@bp.after_app_request
def _count_webhook(response: Response) -> Response:
    """Count each POST /webhooks answer Flask gives (the fast path counts its own)."""
    if request.endpoint == WEBHOOK_ENDPOINT and request.method == "POST":
        body = response.get_json(silent=True) if response.is_json else None
        get_metrics().webhook(webhook_result(response.status_code, body))
    return response


@bp.get("/metrics")
def metrics() -> Any:
    """Prometheus metrics.
    ---
    get:
      tags: [admin]
      summary: Prometheus metrics
      description: >
        Text exposition format. Needs `Authorization: Bearer <ADMIN_TOKEN>`, unless
        `METRICS_PUBLIC` is on; without either it is not served.
      security:
        - adminToken: []
      responses:
        '200':
          description: The metrics.
          content:
            text/plain:
              schema:
                type: string
        '401':
          description: Missing or wrong admin token.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
        '404':
          description: Not served (no ADMIN_TOKEN and METRICS_PUBLIC off).
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
    """
    denied = require_admin("/metrics", public=_state()["settings"].metrics_public)
    if denied is not None:
        return denied
    return Response(get_metrics().render(), content_type=CONTENT_TYPE)


def _sync_request() -> tuple[tuple[str, str] | None, bool]:
    """The folder (or None for all) and confirm flag of a POST /api/sync body.

    Raises:
        ValueError: the body is not an object, ids are missing, malformed or alone.
    """
    raw = request.get_data(cache=False)
    if not raw.strip():
        return None, False
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested too deep
        body = None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object such as {\"relay_id\": ..., \"folder_id\": ...} or {}")
    relay_id, folder_id = body.get("relay_id"), body.get("folder_id")
    confirm = body.get("confirm_deletions", False)
    if not isinstance(confirm, bool):
        raise ValueError("confirm_deletions must be true or false")
    if relay_id is None and folder_id is None:
        return None, confirm
    if relay_id is None or folder_id is None:
        raise ValueError("relay_id and folder_id go together (or give neither to sync every folder)")
    if not isinstance(relay_id, str) or not isinstance(folder_id, str):
        raise ValueError("relay_id and folder_id must be strings")
    try:
        return (parse_uuid(relay_id, what="relay_id"), parse_uuid(folder_id, what="folder_id")), confirm
    except InvalidId as exc:
        raise ValueError(str(exc)) from None


@bp.post("/api/sync")
def sync() -> Any:
    """Queue a full sync of one folder, or of every folder.
    ---
    post:
      tags: [admin]
      summary: Queue a full sync
      description: >
        Body `{"relay_id": ..., "folder_id": ...}` for one folder, or `{}` (or no body)
        for every folder; `"confirm_deletions": true` applies a held mass deletion. The
        syncs run in the background after the startup sync, one folder at a time. Needs
        `Authorization: Bearer <ADMIN_TOKEN>`; without ADMIN_TOKEN it is not served.
      security:
        - adminToken: []
      requestBody:
        required: false
        content:
          application/json:
            schema:
              $ref: '#/components/schemas/SyncRequest'
      responses:
        '202':
          description: Queued.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/SyncQueued'
        '400':
          description: Malformed body or ids.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
        '401':
          description: Missing or wrong admin token.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
        '404':
          description: No connector for that folder, or not served (no ADMIN_TOKEN).
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
        '503':
          description: The sync service is not running or is shutting down.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
    """
    denied = require_admin("/api/sync")
    if denied is not None:
        return denied
    try:
        selection, confirm = _sync_request()
    except ValueError as exc:
        return jsonify(error=str(exc)), 400
    service = _state()["service"]
    if service is None or not hasattr(service, "request_full_sync"):
        return jsonify(error="service not running"), 503
    try:
        queued = service.request_full_sync(selection, confirm_deletions=confirm)
    except NotConfigured as exc:
        return jsonify(error=str(exc)), 404
    except ServiceUnavailable as exc:
        return jsonify(error=str(exc)), 503
    return jsonify(status="queued", confirm_deletions=confirm,
                   folders=[{"relay_id": c.relay_id, "folder_id": c.folder_id} for c in queued]), 202
