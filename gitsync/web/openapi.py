"""The OpenAPI document, built by apispec from the views' docstrings.

``build_spec(app)`` runs once per app, on the first request for the document
(``gitsync.web.get_openapi``); the app serves the result at ``/openapi.yaml`` and
``/openapi.json``. The repository's
``openapi.yaml`` is the same text, regenerated with::

    python -m gitsync.web.openapi > openapi.yaml

and a test fails when the two drift. The document depends on no setting, so every app
serves the same text.
"""

from __future__ import annotations

import sys
from typing import Any

from apispec import APISpec
from apispec.yaml_utils import dict_to_yaml
from apispec_webframeworks.flask import FlaskPlugin
from flask import Flask

from .. import __version__

__all__ = ["DOCUMENTED_BLUEPRINTS", "build_spec", "render_openapi_yaml", "spec_documents"]

DOCUMENTED_BLUEPRINTS = ("webhooks", "api", "admin")

_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# The same shape gitsync.ids.parse_compound_id accepts.
COMPOUND_ID_PATTERN = rf"^{_UUID}-(?:{_UUID}-)?{_UUID}$"

DESCRIPTION = (
    "Mirrors Relay Server shared folders into Git repositories.\n\n"
    "The Relay Server posts a webhook for every document update; the service queues it "
    "durably, answers at once, and applies and commits the change in the background.\n\n"
    "`POST /webhooks` is authenticated with the shared secret (`Authorization: Bearer "
    "<WEBHOOK_SECRET>`) or, for a `whsec_` secret, with Standard Webhooks / Svix "
    "signatures. `/api/status`, `POST /api/sync` and `/metrics` need the admin token "
    "(`Authorization: Bearer <ADMIN_TOKEN>`) and are not served without one (`/metrics` "
    "may be made public). The other endpoints are public and read-only."
)

_ERROR = {
    "type": "object",
    "description": "Every error answer (400, 401, 404, 405, 413, 500, 503).",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "string",
            "description": "What went wrong, naming the field at fault.",
            "example": "payload has no doc_id",
        }
    },
}

_WEBHOOK_EVENT = {
    "type": "object",
    "description": (
        "A Relay Server webhook. Unknown fields are ignored; the older form with "
        "`doc_id` and `timestamp` at the top level is accepted too."
    ),
    "properties": {
        "eventType": {
            "type": "string",
            "description": "Only `document.updated` is acted upon; others are acknowledged.",
            "example": "document.updated",
        },
        "eventId": {"type": "string", "example": "evt_V1StGXR8_Z5jdHi6B-myT"},
        "payload": {
            "type": "object",
            "required": ["doc_id"],
            "properties": {
                "doc_id": {
                    "type": "string",
                    "description": "Compound id `<relay uuid>-<document uuid>` "
                    "(or `<relay>-<middle>-<document>`).",
                    "pattern": COMPOUND_ID_PATTERN,
                    "example": "6ba7b810-9dad-11d1-80b4-00c04fd430c8-"
                    "f47ac10b-58cc-4372-a567-0e02b2c3d479",
                },
                "user": {
                    "type": "string",
                    "nullable": True,
                    "description": "Who first loaded the document into the server; "
                    "not necessarily the editor.",
                },
                "metadata": {"type": "object", "additionalProperties": True},
                "timestamp": {"type": "string", "format": "date-time"},
            },
            "additionalProperties": True,
        },
    },
    "additionalProperties": True,
}

_WEBHOOK_RESULT = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "example": "queued"},
        "doc_id": {"type": "string"},
        "reason": {"type": "string"},
    },
    "additionalProperties": True,
}

_HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded", "unhealthy"]},
        "version": {"type": "string", "example": __version__},
        "initial_sync": {"type": "string", "enum": ["running", "done"]},
        "reasons": {
            "type": "array",
            "description": "Why the status is not ok, one entry per folder and kind of failure.",
            "items": {
                "type": "object",
                "properties": {
                    "relay_id": {"type": "string", "nullable": True},
                    "folder_id": {"type": "string", "nullable": True},
                    "kind": {"type": "string", "example": "read"},
                    "message": {"type": "string"},
                    "since": {"type": "string", "format": "date-time", "nullable": True},
                    "permanent": {"type": "boolean"},
                },
            },
        },
    },
    "additionalProperties": True,
}

_SYNC_REQUEST = {
    "type": "object",
    "properties": {
        "relay_id": {"type": "string", "format": "uuid"},
        "folder_id": {"type": "string", "format": "uuid"},
        "confirm_deletions": {"type": "boolean", "default": False},
    },
}

_SYNC_QUEUED = {
    "type": "object",
    "required": ["status", "folders"],
    "properties": {
        "status": {"type": "string", "example": "queued"},
        "confirm_deletions": {"type": "boolean"},
        "folders": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"relay_id": {"type": "string"}, "folder_id": {"type": "string"}},
            },
        },
    },
}

_PUBLIC_KEY = {
    "type": "object",
    "required": ["public_key", "key_type"],
    "properties": {
        "public_key": {
            "type": "string",
            "description": "One OpenSSH public key line.",
            "example": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... relay-git-sync",
        },
        "key_type": {"type": "string", "example": "ssh-ed25519"},
    },
}

_STATUS = {
    "type": "object",
    "description": "Version, health, per-folder state, last success, failure count, last "
    "error, held deletions, unpushed commits, push and transport, plus counts by outcome "
    "and the state of each background thread (`loops`). "
    "Times are ISO 8601 in UTC. Never contains a secret.",
    "additionalProperties": True,
}


def _header_key(name: str, description: str) -> dict[str, str]:
    return {"type": "apiKey", "in": "header", "name": name, "description": description}


def build_spec(app: Flask) -> APISpec:
    """Build the OpenAPI 3.0.3 document from the app's documented views.

    Only endpoints of the ``webhooks`` and ``api`` blueprints are included (not the
    docs page or static files). Call after all blueprints are registered.
    """
    spec = APISpec(
        title="relay-git-sync",
        version=__version__,
        openapi_version="3.0.3",
        info={
            "description": DESCRIPTION,
            "license": {"name": "MIT"},
        },
        plugins=[FlaskPlugin()],
    )
    spec.tag({"name": "webhooks", "description": "Notifications from the Relay Server"})
    spec.tag({"name": "api", "description": "Health, status and SSH key"})
    spec.tag({"name": "admin", "description": "Operator endpoints behind the admin token"})
    spec.tag({"name": "docs", "description": "This document"})
    spec.components.schema("Error", _ERROR)
    spec.components.schema("WebhookEvent", _WEBHOOK_EVENT)
    spec.components.schema("WebhookResult", _WEBHOOK_RESULT)
    spec.components.schema("Health", _HEALTH)
    spec.components.schema("PublicKey", _PUBLIC_KEY)
    spec.components.schema("Status", _STATUS)
    spec.components.schema("SyncRequest", _SYNC_REQUEST)
    spec.components.schema("SyncQueued", _SYNC_QUEUED)
    spec.components.security_scheme(
        "adminToken",
        {"type": "http", "scheme": "bearer", "description": "The service's `ADMIN_TOKEN`."},
    )
    spec.components.security_scheme(
        "bearerAuth",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "The shared `WEBHOOK_SECRET` (the Relay Server's `auth_token`).",
        },
    )
    spec.components.security_scheme(
        "webhookId",
        _header_key("webhook-id", "Standard Webhooks message id (or `svix-id`)."),
    )
    spec.components.security_scheme(
        "webhookTimestamp",
        _header_key(
            "webhook-timestamp",
            "Unix seconds, at most 300 s from the server's clock (or `svix-timestamp`).",
        ),
    )
    spec.components.security_scheme(
        "webhookSignature",
        _header_key(
            "webhook-signature",
            "Space-separated `v1,<base64 HMAC-SHA256>` entries over "
            "`<id>.<timestamp>.<body>`, keyed by the base64 part of a `whsec_` secret "
            "(or `svix-signature`).",
        ),
    )
    with app.test_request_context():
        for endpoint, view in app.view_functions.items():
            if endpoint.partition(".")[0] in DOCUMENTED_BLUEPRINTS:
                spec.path(view=view, app=app)
    return spec


_TOP_ORDER = ("openapi", "info", "tags", "paths", "components")


def spec_documents(spec: APISpec) -> tuple[dict[str, Any], str]:
    """The spec as a dict and as YAML text, top-level keys in reading order."""
    raw = spec.to_dict()
    ordered = {key: raw[key] for key in _TOP_ORDER if key in raw}
    ordered.update((key, value) for key, value in raw.items() if key not in ordered)
    return ordered, dict_to_yaml(ordered, {"allow_unicode": True})


def render_openapi_yaml() -> str:
    """The YAML document every app serves at ``/openapi.yaml``."""
    from ..config import Settings
    from . import create_app, get_openapi

    app = create_app(Settings(webhook_secret="unused-placeholder"))
    return get_openapi(app)[1]


def main() -> None:
    """Print the OpenAPI YAML (``python -m gitsync.web.openapi > openapi.yaml``)."""
    sys.stdout.write(render_openapi_yaml())


if __name__ == "__main__":
    main()
