"""Operator endpoints: health, SSH public key, status, and the OpenAPI document.

All public and read-only. Each documented route has its own view function, because the
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
    """Liveness and startup progress.
    ---
    get:
      tags: [api]
      summary: Health check
      description: >
        Answers as soon as webhooks are accepted, also while the startup full sync is
        still running; `initial_sync` says whether it has finished.
      responses:
        '200':
          description: The web process is up.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Health'
    """
    from . import get_service

    return jsonify(health_answer(get_service()))


def health_answer(service: Any) -> dict[str, Any]:
    """The ``/health`` body (shared with the fast path, ``gitsync.web.fastpath``)."""
    body: dict[str, Any] = {"status": "ok"}
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
      responses:
        '200':
          description: >
            State, last success, failure count, held deletions and last error per
            folder, plus counts by outcome.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Status'
        '503':
          description: The sync service is not running.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
    """
    from . import get_service

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
