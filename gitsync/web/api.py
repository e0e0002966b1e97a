"""Operator endpoints: health, SSH public key, status, and the OpenAPI document.

All read-only; ``/api/status`` needs the admin token (see :mod:`.admin`), the others
are public. Each documented route has its own view function, because the
apispec Flask plugin documents only the first URL rule of a view. The interactive page at
``/docs`` is the flask-swagger-ui blueprint registered by ``create_app``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

__all__ = ["bp", "health_answer"]

bp = Blueprint("api", __name__)

NO_KEY_MESSAGE = "no SSH key configured; set SSH_PRIVATE_KEY"


@bp.get("/health")
def health() -> Any:
    """Whether the service works, and startup progress.
    ---
    get:
      tags: [api]
      summary: Health check
      description: >
        Answers as soon as webhooks are accepted, also while the startup full sync is
        still running; `initial_sync` says whether it has finished. `status` is `ok`
        when every folder syncs, commits and pushes; `degraded` (still 200) when a
        folder has been failing for longer than the grace period (relay or remote
        unreachable) or a mass deletion is held; `unhealthy` (503) for what cannot
        heal by itself: the Relay Server refuses the API key, the remote permanently
        rejects pushes, or the websocket is refused. `reasons` says which folder and why.
      responses:
        '200':
          description: The service works (`ok`) or works in part (`degraded`).
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Health'
        '503':
          description: 'Unhealthy: a failure that needs the operator.'
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Health'
    """
    from . import get_service

    body = health_answer(get_service())
    return jsonify(body), health_status(body)


def health_status(body: dict[str, Any]) -> int:
    """503 for what cannot heal by itself (the container turns unhealthy), else 200."""
    return 503 if body.get("status") == "unhealthy" else 200


def health_answer(service: Any) -> dict[str, Any]:
    """The ``/health`` body (shared with the fast path, ``gitsync.web.fastpath``)."""
    from .. import __version__

    body: dict[str, Any] = {"status": "ok", "version": __version__}
    if service is None:
        body["service"] = "not running"
    else:
        body.update(service.health())
    return body


@bp.get("/api/pubkey")
def pubkey() -> Any:
    """The SSH public key to add as a deploy key with write access.
    ---
    get:
      tags: [api]
      summary: SSH public key
      responses:
        '200':
          description: The public key in OpenSSH format.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/PublicKey'
        '400':
          description: No SSH key configured.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
    """
    from . import get_service

    service = get_service()
    key = service.public_key() if service is not None else None
    if key is None:
        return jsonify(error=NO_KEY_MESSAGE), 400
    line, key_type = key
    return jsonify(public_key=line, key_type=key_type)


@bp.get("/api/status")
def status() -> Any:
    """Per-folder sync state and counters (contains no secrets).
    ---
    get:
      tags: [api]
      summary: Sync status
      description: >
        Needs `Authorization: Bearer <ADMIN_TOKEN>`; without ADMIN_TOKEN it is not
        served. Times are ISO 8601 in UTC.
      security:
        - adminToken: []
      responses:
        '200':
          description: >
            State, last success, failure count, held deletions and last error per
            folder, plus counts by outcome.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Status'
        '401':
          description: Missing or wrong admin token.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
        '404':
          description: Not served (no ADMIN_TOKEN set).
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
        '503':
          description: The sync service is not running.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
    """
    from . import get_service
    from .admin import require_admin

    denied = require_admin("/api/status")
    if denied is not None:
        return denied
    service = get_service()
    if service is None:
        return jsonify(error="service not running"), 503
    return jsonify(service.status())


@bp.get("/openapi.yaml")
def openapi_yaml() -> Any:
    """This API's OpenAPI document as YAML (the repository's `openapi.yaml`).
    ---
    get:
      tags: [docs]
      summary: OpenAPI document (YAML)
      responses:
        '200':
          description: OpenAPI 3 document.
          content:
            application/yaml:
              schema:
                type: object
    """
    from . import get_openapi

    _, text = get_openapi(current_app)
    return Response(text, mimetype="application/yaml")


@bp.get("/openapi.json")
def openapi_json() -> Any:
    """This API's OpenAPI document as JSON (read by the `/docs` page).
    ---
    get:
      tags: [docs]
      summary: OpenAPI document (JSON)
      responses:
        '200':
          description: OpenAPI 3 document.
          content:
            application/json:
              schema:
                type: object
    """
    from . import get_openapi

    spec, _ = get_openapi(current_app)
    return jsonify(spec)
