"""``POST /webhooks`` and ``GET /health`` without Flask's per-request machinery.

Why: these two are what the Relay Server and health checkers call, often and in bursts,
and Flask's request and app contexts, URL matching, request object and response object
cost about as much CPU as the work itself (parse, authenticate, journal). Measured with
py-spy under ``wrk`` (see bench/bench_intake.py), that halved the requests per second
one worker process can take.

:class:`FastPath` is WSGI middleware in front of the Flask app. It answers only the
plain case: the exact path and method, and for webhooks a ``Content-Length`` body within
the limit (no chunked body, nothing to refuse for its size). The decisions are made by
the same functions the Flask views use (``webhooks.handle_webhook``,
``api.health_answer``) and the answer is the same JSON, byte for byte. Every other
request, including each one the fast path is unsure about, goes to Flask untouched.
Setting ``app.config["INTAKE_FAST_PATH"] = False`` sends everything to Flask (tests
compare both).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from .admin import metrics_for, webhook_result
from .api import health_answer, health_status
from .webhooks import handle_webhook

__all__ = ["FastPath"]

log = logging.getLogger("gitsync.web")

StartResponse = Callable[..., Any]
_JSON = "application/json"
_STATUS = {
    200: "200 OK",
    202: "202 ACCEPTED",
    400: "400 BAD REQUEST",
    401: "401 UNAUTHORIZED",
    500: "500 INTERNAL SERVER ERROR",
    503: "503 SERVICE UNAVAILABLE",
}


class FastPath:
    """WSGI middleware: answer the hot endpoints directly, pass everything else on."""

    def __init__(self, app: Flask, wrapped: Callable[[dict, StartResponse], Iterable[bytes]]):
        self._app = app
        self._wrapped = wrapped

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        method = environ.get("REQUEST_METHOD")
        if self._app.config.get("INTAKE_FAST_PATH", True):
            if path == "/webhooks" and method == "POST":
                try:
                    body = self._body(environ)
                except _CutShort:  # the client went away mid-body, as Flask says it
                    return self._answer(start_response, 400, {"error": "bad request"})
                if body is not None:
                    status, answer = self._webhook(environ, body)
                    metrics_for(self._app.extensions["gitsync"]).webhook(webhook_result(status, answer))
                    return self._answer(start_response, status, answer)
            elif path == "/health" and method == "GET":
                state = self._app.extensions["gitsync"]
                try:
                    answer = health_answer(state["service"])
                except Exception as exc:  # a bug: the same bare 500 as Flask's handler
                    return self._answer(start_response, *_internal_error(environ, exc))
                return self._answer(start_response, health_status(answer), answer)
        return self._wrapped(environ, start_response)

    def _body(self, environ: dict[str, Any]) -> bytes | None:
        """The request body, or None when Flask should handle the request.

        Raises:
            _CutShort: fewer bytes arrived than ``Content-Length`` announced.
        """
        length = environ.get("CONTENT_LENGTH")
        if not length or not length.isdigit() or environ.get("HTTP_TRANSFER_ENCODING"):
            return None
        size = int(length)
        limit = self._app.config.get("MAX_CONTENT_LENGTH")
        if limit is not None and size > limit:
            return None  # Flask answers 413 with its message
        try:
            body = environ["wsgi.input"].read(size) if size else b""
        except (OSError, ValueError):
            body = b""
        if len(body) != size:
            raise _CutShort()
        return body

    def _webhook(self, environ: dict[str, Any], body: bytes) -> tuple[int, dict[str, Any]]:
        state = self._app.extensions["gitsync"]
        try:
            return handle_webhook(
                _headers(environ),
                body,
                auth=state["webhook_auth"],
                service=state["service"],
                now=self._app.config["WEBHOOK_CLOCK"](),
                remote_addr=environ.get("REMOTE_ADDR"),
            )
        except Exception as exc:  # a bug: the same bare 500 as Flask's handler
            return _internal_error(environ, exc)

    @staticmethod
    def _answer(start_response: StartResponse, status: int, answer: dict[str, Any]) -> list[bytes]:
        data = (json.dumps(answer, separators=(",", ":")) + "\n").encode()
        start_response(
            _STATUS[status],
            [("Content-Type", _JSON), ("Content-Length", str(len(data)))],
        )
        return [data]


class _CutShort(Exception):
    """The body ended before its announced length."""


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    """Request headers by lower-case name, as WSGI hands them over (latin-1 text)."""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if "CONTENT_TYPE" in environ:
        headers["content-type"] = environ["CONTENT_TYPE"]
    return headers


def _internal_error(environ: dict[str, Any], exc: Exception) -> tuple[int, dict[str, Any]]:
    log.error(
        "unhandled error method=%s path=%s error=%s",
        environ.get("REQUEST_METHOD"),
        environ.get("PATH_INFO"),
        type(exc).__name__,
        exc_info=exc,
    )
    return 500, {"error": "internal server error"}
