"""The Flask application: webhooks in, status and documentation out.

``create_app`` builds a fresh app per call (tests make several with different settings);
no module holds an app object. The app starts no threads: the service object handed in
owns the queue and workers, and gunicorn's hooks (or ``cli.py``) start and stop it.

Per-app state lives in ``app.extensions["gitsync"]``, a dict with ``settings``,
``service`` and ``webhook_auth``. Views reach it through :func:`get_settings`,
:func:`get_service` and friends. The OpenAPI document is built on its first request
(:func:`get_openapi`): apispec and the YAML dump are not on the way to the first
``/health`` answer after a start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.middleware.proxy_fix import ProxyFix

from ..config import ConfigError, Settings, settings_from_env
from .auth import WebhookAuth

__all__ = [
    "EXTENSION_KEY",
    "attach_service",
    "create_app",
    "get_openapi",
    "get_service",
    "get_settings",
    "get_webhook_auth",
]

log = logging.getLogger(__name__)

EXTENSION_KEY = "gitsync"
DOCS_URL = "/docs"


def create_app(settings: Settings | None = None, service: Any = None) -> Flask:
    """Build the WSGI app.

    Args:
        settings: validated settings; ``None`` reads them from the environment (the
            ``wsgi.py`` path).
        service: the running sync service (``accept``, ``status``, ``health``,
            ``public_key``); ``None`` makes ``POST /webhooks`` answer 503 after auth.

    Returns:
        The Flask app; wrapped in ``ProxyFix`` for ``settings.proxy_hops`` reverse proxy
        hops when that is not 0.

    Raises:
        ConfigError: the settings do not parse, or a ``whsec_`` webhook secret is not
            base64.
    """
    from flask_swagger_ui import get_swaggerui_blueprint

    from . import admin, api, webhooks
    from .fastpath import FastPath

    if settings is None:
        settings = settings_from_env()
    try:
        webhook_auth = WebhookAuth(settings.webhook_secret)
    except ValueError as exc:
        raise ConfigError(f"invalid setting: WEBHOOK_SECRET {exc}", key="webhook_secret") from None

    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        # Unix-time source for the signature timestamp check; tests replace it.
        WEBHOOK_CLOCK=time.time,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION_KEY] = {
        "settings": settings,
        "service": service,
        "webhook_auth": webhook_auth,
        "openapi_lock": threading.Lock(),
    }

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(admin.bp)
    # Swagger UI from the flask-swagger-ui wheel: no CDN. The page's asset and spec URLs
    # are relative ("./swagger-ui.css", "../openapi.json" from /docs/), so they stay
    # right behind a proxy that mounts the app under a path prefix.
    docs = get_swaggerui_blueprint(
        ".",
        "../openapi.json",
        config={"app_name": "relay-git-sync API", "validatorUrl": None},
        blueprint_name="docs",
    )
    app.register_blueprint(docs, url_prefix=DOCS_URL)

    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unhandled_error)

    # The hot endpoints (webhooks, health) skip Flask's per-request machinery.
    app.wsgi_app = FastPath(app, app.wsgi_app)  # type: ignore[method-assign]

    # Behind reverse proxies: trust their X-Forwarded-For/-Proto/-Host/-Prefix so that
    # redirects (/docs -> /docs/), generated URLs and logged client addresses are the
    # public ones. Only as many hops as configured: without a proxy, a client could set
    # these headers itself.
    hops = settings.proxy_hops
    if hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops
        )

    if webhook_auth.mode == "none":
        log.warning(
            "webhook secret not configured, every webhook will be refused with 401; "
            "set WEBHOOK_SECRET"
        )
    else:
        log.info("webhook authentication ready mode=%s", webhook_auth.mode)
    log.debug("app created pid=%s settings=%s", os.getpid(), settings.log_safe())
    return app


def attach_service(app: Flask, service: Any) -> None:
    """Hand the app its service after creation (e.g. started lazily after a fork)."""
    app.extensions[EXTENSION_KEY]["service"] = service


def get_openapi(app: Flask) -> tuple[dict[str, Any], str]:
    """The app's OpenAPI document as a dict and as YAML text, built once on first use."""
    state = app.extensions[EXTENSION_KEY]
    with state["openapi_lock"]:
        if "openapi" not in state:
            from .openapi import build_spec, spec_documents

            state["openapi"], state["openapi_yaml"] = spec_documents(build_spec(app))
    return state["openapi"], state["openapi_yaml"]


def _state() -> dict[str, Any]:
    return current_app.extensions[EXTENSION_KEY]


def get_settings() -> Settings:
    """The Settings of the current app."""
    return _state()["settings"]


def get_service() -> Any:
    """The sync service of the current app, or None when none is running."""
    return _state()["service"]


def get_webhook_auth() -> WebhookAuth:
    """The webhook authenticator built from the current app's secret."""
    return _state()["webhook_auth"]


def _http_error(exc: HTTPException) -> Any:
    """Every HTTP error as JSON ``{"error": ...}``, keeping headers such as ``Allow``."""
    response = exc.get_response()
    message = _MESSAGES.get(exc.code or 500)
    if exc.code == 405:
        allowed = response.headers.get("Allow", "")
        message = f"method {request.method} not allowed on {request.path} (allowed: {allowed})"
    elif exc.code == 404:
        message = f"not found: {request.path}"
    elif exc.code == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        message = f"request body too large (limit {limit} bytes)"
    if message is None:
        message = (exc.name or "error").lower()
    body = jsonify(error=message)
    response.set_data(body.get_data())
    response.content_type = "application/json"
    return response


def _unhandled_error(exc: Exception) -> Any:
    """Log the traceback, answer a bare JSON 500 (no exception text leaves the server)."""
    log.error(
        "unhandled error method=%s path=%s error=%s",
        request.method,
        request.path,
        type(exc).__name__,
        exc_info=exc,
    )
    return _http_error(InternalServerError())


_MESSAGES = {500: "internal server error"}
