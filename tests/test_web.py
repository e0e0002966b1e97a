"""The Flask app (gitsync.web): webhook answers, auth modes, API, OpenAPI, offline docs."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import yaml
from flask import request
from openapi_spec_validator import validate
from standardwebhooks.webhooks import Webhook
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

from gitsync.config import ConfigError, Settings
from gitsync.events import Accepted, AcceptStatus, WebhookEvent
from gitsync.web import attach_service, create_app, get_service
from gitsync.web.auth import decode_signing_secret, sign

REPO_ROOT = Path(__file__).resolve().parent.parent

RELAY = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
DOC = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
MIDDLE = "0c5c2b3e-1f2a-4b7c-9d8e-123456789abc"
COMPOUND = f"{RELAY}-{DOC}"

BEARER_SECRET = "marker-bearer-secret-7f3a9c"
SIGNING_SECRET = "whsec_" + "bWFya2VyLXNpZ25pbmctc2VjcmV0LWtleS0wMTIz"  # unpadded is fine
NOW = 1_700_000_000
ADMIN_TOKEN = "marker-admin-token-5e1d0b7c"


class RecordingService:
    """Stands in for gitsync.service: records what the web layer hands over."""

    def __init__(self, key: tuple[str, str] | None = None):
        self.accepted: list[WebhookEvent] = []
        self.key = key

    def accept(self, event: WebhookEvent) -> Accepted:
        self.accepted.append(event)
        return Accepted(AcceptStatus.QUEUED, event.doc_id)

    def status(self) -> dict[str, Any]:
        return {"folders": [], "counts": {"queued": len(self.accepted)}}

    def health(self) -> dict[str, Any]:
        return {"initial_sync": "done"}

    def public_key(self) -> tuple[str, str] | None:
        return self.key


class FailingService(RecordingService):
    def accept(self, event: WebhookEvent) -> Accepted:
        raise OSError("journal full")


FAST_PATH = True


@pytest.fixture(autouse=True, params=["fast-path", "flask-only"])
def intake_path(request, monkeypatch):
    """Every test here runs twice: webhooks and /health answered by the fast path
    (gitsync.web.fastpath), and by the Flask views alone. Both must answer alike."""
    monkeypatch.setattr(sys.modules[__name__], "FAST_PATH", request.param == "fast-path")
    return request.param


def make_app(secret: str | None = BEARER_SECRET, service: Any = "recording", **overrides: Any):
    if service == "recording":
        service = RecordingService()
    settings = Settings(webhook_secret=secret, **overrides)
    app = create_app(settings, service)
    app.config["WEBHOOK_CLOCK"] = lambda: NOW
    app.config["INTAKE_FAST_PATH"] = FAST_PATH
    return app


@pytest.fixture
def service() -> RecordingService:
    return RecordingService()


@pytest.fixture
def app(service):
    return make_app(BEARER_SECRET, service)


@pytest.fixture
def client(app):
    return app.test_client()


def event(doc_id: Any = COMPOUND, **extra: Any) -> dict[str, Any]:
    return {
        "eventType": "document.updated",
        "eventId": "evt_V1StGXR8_Z5jdHi6B-myT",
        "payload": {
            "doc_id": doc_id,
            "user": None,
            "metadata": {},
            "timestamp": "2026-11-24T08:00:00Z",
        },
        **extra,
    }


def bearer(secret: str = BEARER_SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def post(client, body: Any, headers: dict[str, str] | None = None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        "/webhooks", data=data, headers=headers or {}, content_type="application/json"
    )


def signed_headers(
    body: bytes, *, ts: int = NOW, prefix: str = "webhook", msg_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
) -> dict[str, str]:
    when = datetime.fromtimestamp(ts, tz=UTC)
    sig = Webhook(SIGNING_SECRET).sign(msg_id, when, body.decode("utf-8"))
    return {f"{prefix}-id": msg_id, f"{prefix}-timestamp": str(ts), f"{prefix}-signature": sig}


# --- POST /webhooks with the shared secret ------------------------------------------


def test_valid_bearer_queues_event(client, service):
    response = post(client, event(), bearer())
    assert response.status_code == 202
    assert response.get_json() == {"status": "queued", "doc_id": COMPOUND}
    assert service.accepted == [
        WebhookEvent(COMPOUND, RELAY, DOC, event_id="evt_V1StGXR8_Z5jdHi6B-myT",
                     timestamp="2026-11-24T08:00:00Z", user=None)
    ]


def test_older_form_with_top_level_doc_id(client, service):
    response = post(client, {"doc_id": COMPOUND, "timestamp": "2024-01-01T00:00:00Z"}, bearer())
    assert response.status_code == 202
    assert service.accepted[0].doc_uuid == DOC
    assert service.accepted[0].timestamp == "2024-01-01T00:00:00Z"
    assert service.accepted[0].event_id is None


def test_three_uuid_form_and_upper_case_ids(client, service):
    doc_id = f"{RELAY}-{MIDDLE}-{DOC}".upper()
    response = post(client, event(doc_id, extra_field=[1, 2]), bearer())
    assert response.status_code == 202
    assert service.accepted[0].relay_id == RELAY
    assert service.accepted[0].doc_uuid == DOC
    assert service.accepted[0].doc_id == f"{RELAY}-{MIDDLE}-{DOC}"


def test_user_is_passed_as_hint(client, service):
    body = event()
    body["payload"]["user"] = "alice@example.com"
    assert post(client, body, bearer()).status_code == 202
    assert service.accepted[0].user == "alice@example.com"


@pytest.mark.parametrize("event_type", ["document.deleted", "relay.created"])
def test_other_event_types_are_acknowledged_not_queued(client, service, event_type):
    response = post(client, {"eventType": event_type, "payload": {}}, bearer())
    assert response.status_code == 200
    assert response.get_json()["status"] == "ignored"
    assert service.accepted == []


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{not json", bearer(), 400, "malformed JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b"", bearer(), 400, "malformed JSON: Expecting value at line 1 column 1"),
        (b"\xff\xfe{}", bearer(), 400, "malformed JSON: body is not UTF-8"),
        (b"[1, 2]", bearer(), 400, "malformed event: body must be a JSON object"),
        ({"eventType": 7, "payload": {"doc_id": COMPOUND}}, bearer(), 400, "eventType must be a string"),
        ({"eventType": "document.updated"}, bearer(), 400, "payload has no doc_id"),
        ({"eventType": "document.updated", "payload": {}}, bearer(), 400, "payload has no doc_id"),
        ({"payload": "x"}, bearer(), 400, "payload must be a JSON object"),
        (event(42), bearer(), 400, "payload.doc_id must be a string"),
        (event(None), bearer(), 400, "payload.doc_id must be a string"),
        (event("not-a-compound-id"), bearer(), 400, "doc_id must be '<relay uuid>-<document uuid>' (got 'not-a-compound-id')"),
        (event(RELAY), bearer(), 400, f"doc_id must be '<relay uuid>-<document uuid>' (got '{RELAY}')"),
        (event(), {}, 401, "missing Authorization header (expected 'Bearer <secret>')"),
        (event(), bearer("wrong"), 401, "invalid bearer token"),
        (event(), bearer(BEARER_SECRET + "x"), 401, "invalid bearer token"),
        (event(), {"Authorization": f"Basic {BEARER_SECRET}"}, 401, "Authorization header must use the Bearer scheme"),
        (event(), {"Authorization": BEARER_SECRET}, 401, "Authorization header must use the Bearer scheme"),
        (b"{not json", {}, 401, "missing Authorization header (expected 'Bearer <secret>')"),
    ],
)
def test_bad_webhooks(client, service, body, headers, status, message):
    response = post(client, body, headers)
    assert response.status_code == status
    assert response.is_json
    assert response.get_json() == {"error": message}
    assert service.accepted == []


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


DEEP = 5000  # the JSON decoder's recursion gives up long before this


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEEP + b"]" * DEEP,
        b"[" * DEEP,  # never closed
        b'{"payload": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}",
        json.dumps(event(metadata=_nested(40))).encode(),
    ],
    ids=["array", "unclosed", "object-in-payload", "40-levels"],
)
def test_deeply_nested_json_is_400_not_500(client, service, body):
    assert len(body) < 64 * 1024  # refused for its depth, not its size
    response = post(client, body, bearer())
    assert response.status_code == 400
    assert response.get_json() == {"error": "malformed event: JSON nested deeper than 32 levels"}
    assert service.accepted == []


def test_deeply_nested_signed_json_is_400(signed_client, service):
    body = b"[" * DEEP + b"]" * DEEP
    response = post(signed_client, body, signed_headers(body))
    assert response.status_code == 400
    assert response.get_json() == {"error": "malformed event: JSON nested deeper than 32 levels"}


def test_nesting_up_to_the_limit_and_brackets_in_strings_are_fine(client, service):
    body = event(metadata=_nested(28))  # 32 levels with the event's own
    body["payload"]["user"] = "[{" * DEEP
    assert post(client, body, bearer()).status_code == 202
    escaped = json.dumps(event(note='"\\' + "[" * 100)).encode()  # an escaped quote, then brackets
    assert post(client, escaped, bearer()).status_code == 202
    assert len(service.accepted) == 2


def test_integer_too_long_to_convert_is_400(client, service):
    body = b'{"payload": {"doc_id": "%s", "n": %s}}' % (COMPOUND.encode(), b"7" * 5000)
    response = post(client, body, bearer())
    assert response.status_code == 400
    assert response.get_json() == {"error": "malformed JSON: a number has too many digits"}
    assert service.accepted == []


def test_lower_case_bearer_scheme(client, service):
    response = post(client, event(), {"Authorization": f"bearer {BEARER_SECRET}"})
    assert response.status_code == 202


def test_no_secret_configured_refuses_everything(caplog):
    caplog.set_level(logging.WARNING, logger="gitsync")
    service = RecordingService()
    client = make_app(None, service).test_client()
    assert "webhook secret not configured" in caplog.text
    for headers in ({}, bearer(""), bearer("anything"), bearer("None")):
        response = post(client, event(), headers)
        assert response.status_code == 401
        assert response.get_json() == {"error": "webhook secret not configured; set WEBHOOK_SECRET"}
    assert service.accepted == []


def test_oversize_body_is_413(service):
    client = make_app(BEARER_SECRET, service, max_body_bytes=1024).test_client()
    body = json.dumps(event(padding="x" * 2000)).encode()
    response = post(client, body, bearer())
    assert response.status_code == 413
    assert response.get_json() == {"error": "request body too large (limit 1024 bytes)"}
    assert service.accepted == []


def test_body_at_the_limit_is_read(service):
    body = json.dumps(event()).encode()
    client = make_app(BEARER_SECRET, service, max_body_bytes=len(body)).test_client()
    assert post(client, body, bearer()).status_code == 202


def test_oversize_chunked_body_is_413(service):
    # A streamed body has no Content-Length; gunicorn marks the stream as terminated.
    app = make_app(BEARER_SECRET, service, max_body_bytes=1024)
    body = json.dumps(event(padding="x" * 2000)).encode()
    environ = EnvironBuilder(
        path="/webhooks",
        method="POST",
        headers={**bearer(), "Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        input_stream=io.BytesIO(body),
    ).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    response = Response.from_app(app, environ)
    assert response.status_code == 413
    assert json.loads(response.get_data()) == {"error": "request body too large (limit 1024 bytes)"}
    assert service.accepted == []


def test_default_body_limit_is_64_kib(client, service):
    body = json.dumps(event(padding="x" * (64 * 1024))).encode()
    response = post(client, body, bearer())
    assert response.status_code == 413
    assert response.get_json() == {"error": "request body too large (limit 65536 bytes)"}


def test_no_service_answers_503_after_auth():
    client = make_app(BEARER_SECRET, None).test_client()
    assert post(client, event(), {}).status_code == 401
    response = post(client, event(), bearer())
    assert response.status_code == 503
    assert response.get_json() == {"error": "service not running"}


def test_attach_service_later():
    app = make_app(BEARER_SECRET, None)
    service = RecordingService()
    attach_service(app, service)
    with app.app_context():
        assert get_service() is service
    assert post(app.test_client(), event(), bearer()).status_code == 202
    assert len(service.accepted) == 1


def test_service_failure_is_json_500_without_details(caplog):
    client = make_app(BEARER_SECRET, FailingService()).test_client()
    response = post(client, event(), bearer())
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal server error"}
    assert "unhandled error" in caplog.text


def test_fast_path_answers_the_plain_cases_and_leaves_the_rest_to_flask(intake_path):
    app = make_app()
    seen: list[str] = []
    app.before_request(lambda: seen.append(request.path) and None)
    client = app.test_client()
    assert post(client, event(), bearer()).status_code == 202
    assert client.get("/health").status_code == 200
    assert post(client, b"x" * 70_000, bearer()).status_code == 413  # too large: Flask's message
    assert client.get("/api/status").status_code == 404  # no admin token: not served, by Flask
    if intake_path == "fast-path":
        assert seen == ["/webhooks", "/api/status"]
    else:
        assert seen == ["/webhooks", "/health", "/webhooks", "/api/status"]


def test_body_cut_short_is_400(service):
    app = make_app(BEARER_SECRET, service)
    body = json.dumps(event()).encode()
    environ = EnvironBuilder(path="/webhooks", method="POST", headers=bearer(),
                             content_type="application/json", input_stream=io.BytesIO(body[:-10])).get_environ()
    environ["CONTENT_LENGTH"] = str(len(body))
    response = Response.from_app(app, environ)
    assert response.status_code == 400
    assert json.loads(response.get_data()) == {"error": "bad request"}
    assert service.accepted == []


# --- Flask's own errors as JSON ------------------------------------------------------


def test_get_webhooks_is_json_405(client):
    response = client.get("/webhooks")
    assert response.status_code == 405
    assert response.is_json
    assert "POST" in response.headers["Allow"]
    assert response.get_json()["error"].startswith("method GET not allowed on /webhooks")


def test_unknown_path_is_json_404(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.get_json() == {"error": "not found: /nope"}


# --- signed deliveries (whsec_ secret) -----------------------------------------------


@pytest.fixture
def signed_client(service):
    return make_app(SIGNING_SECRET, service).test_client()


@pytest.mark.parametrize("prefix", ["webhook", "svix"])
def test_valid_signature_is_queued(signed_client, service, prefix):
    body = json.dumps(event()).encode()
    response = post(signed_client, body, signed_headers(body, prefix=prefix))
    assert response.status_code == 202
    assert service.accepted[0].doc_uuid == DOC


def test_tech_notes_vector_through_the_app():
    # The reference vector's body has no doc_id, so auth passes and parsing fails.
    app = make_app("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    app.config["WEBHOOK_CLOCK"] = lambda: 1614265330
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    response = post(app.test_client(), b'{"test": 2432232314}', headers)
    assert response.status_code == 400
    assert response.get_json() == {"error": "payload has no doc_id"}


def test_multi_signature_header_second_matches(signed_client, service):
    body = json.dumps(event()).encode()
    headers = signed_headers(body)
    other = sign(decode_signing_secret("whsec_" + "b3RoZXIta2V5LW90aGVyLWtleQ"), "x", NOW, body)
    headers["webhook-signature"] = f"{other} {headers['webhook-signature']}"
    assert post(signed_client, body, headers).status_code == 202


def _with_sig(body: bytes, sig: str) -> dict[str, str]:
    return {**signed_headers(body), "webhook-signature": sig}


BODY = json.dumps(event()).encode()


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (BODY + b" ", signed_headers(BODY), "no matching webhook signature"),
        (BODY, signed_headers(BODY, ts=NOW - 301), "webhook timestamp too old (more than 300 s)"),
        (BODY, signed_headers(BODY, ts=NOW + 301), "webhook timestamp too new (more than 300 s ahead)"),
        (BODY, _with_sig(BODY, "garbage"), "no matching webhook signature"),
        (BODY, _with_sig(BODY, "v1,***not-base64***"), "no matching webhook signature"),
        (BODY, _with_sig(BODY, "v1,abc, v1 v1,"), "no matching webhook signature"),
        (BODY, {**signed_headers(BODY), "webhook-timestamp": "soon"}, "webhook timestamp must be unix seconds"),
        (BODY, {}, "missing webhook signature headers (webhook-id, webhook-timestamp, webhook-signature)"),
        (BODY, bearer(SIGNING_SECRET), "missing webhook signature headers (webhook-id, webhook-timestamp, webhook-signature)"),
        (BODY, {"svix-signature": "v1,x", "svix-id": "m"}, "missing webhook signature header(s): svix-timestamp"),
    ],
)
def test_bad_signatures_are_401(signed_client, service, body, headers, message):
    response = post(signed_client, body, headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": message}
    assert service.accepted == []


def test_stale_and_future_within_tolerance_pass(signed_client, service):
    for ts in (NOW - 300, NOW + 300):
        assert post(signed_client, BODY, signed_headers(BODY, ts=ts)).status_code == 202
    assert len(service.accepted) == 2


def test_non_utf8_body_with_valid_signature_is_400(signed_client, service):
    body = b'{"payload": "\xff"}'
    key = decode_signing_secret(SIGNING_SECRET)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(NOW)}
    headers["webhook-signature"] = sign(key, "msg_1", NOW, body)
    response = post(signed_client, body, headers)
    assert response.status_code == 400
    assert response.get_json() == {"error": "malformed JSON: body is not UTF-8"}


def test_bad_whsec_secret_is_a_config_error():
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET") as info:
        make_app("whsec_%%%%secret-marker%%%%")
    assert "secret-marker" not in str(info.value)


# --- create_app ----------------------------------------------------------------------


def test_create_app_reads_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WEBHOOK_SECRET", BEARER_SECRET)
    monkeypatch.setenv("RELAY_GIT_DATA_DIR", str(tmp_path))
    app = create_app(service=RecordingService())
    assert app.extensions["gitsync"]["settings"].data_dir == tmp_path
    assert post(app.test_client(), event(), bearer()).status_code == 202


def test_apps_are_independent(service):
    one = make_app("secret-one", service)
    two = make_app("secret-two", service)
    assert post(one.test_client(), event(), bearer("secret-two")).status_code == 401
    assert post(two.test_client(), event(), bearer("secret-two")).status_code == 202


FORWARDED = {
    "X-Forwarded-Prefix": "/sync",
    "X-Forwarded-Host": "example.org",
    "X-Forwarded-For": "203.0.113.9",
}


def test_forwarded_headers_are_ignored_without_a_configured_proxy(client, caplog):
    # Without a proxy, anyone can send these headers: they must not steer redirects or
    # the client address in the logs.
    response = client.get("/docs", headers=FORWARDED)
    assert response.status_code == 308
    assert response.headers["Location"] in ("/docs/", "http://localhost/docs/")
    caplog.set_level(logging.WARNING, logger="gitsync")
    assert post(client, event(), {**FORWARDED, **bearer("wrong")}).status_code == 401
    assert "remote=127.0.0.1" in caplog.text and "203.0.113.9" not in caplog.text


@pytest.mark.parametrize("hops", [1, 2])
def test_proxy_prefix_is_respected_when_proxy_hops_are_set(service, caplog, hops):
    client = make_app(BEARER_SECRET, service, proxy_hops=hops).test_client()
    # The outermost proxy sets the public values; each inner one appends its own.
    headers = {name: ", ".join([value] + ["10.0.0.2"] * (hops - 1)) for name, value in FORWARDED.items()}
    response = client.get("/docs", headers=headers)
    assert response.status_code == 308
    assert response.headers["Location"] in ("/sync/docs/", "http://example.org/sync/docs/")
    caplog.set_level(logging.WARNING, logger="gitsync")
    assert post(client, event(), {**headers, **bearer("wrong")}).status_code == 401
    assert "remote=203.0.113.9" in caplog.text


# --- API -----------------------------------------------------------------------------


def test_health_with_service(client):
    from gitsync import __version__

    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "version": __version__, "initial_sync": "done"}


def test_health_without_service():
    response = make_app(BEARER_SECRET, None).test_client().get("/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


@pytest.mark.parametrize("service", [None, RecordingService(key=None)])
def test_pubkey_without_key_is_400(service):
    response = make_app(BEARER_SECRET, service).test_client().get("/api/pubkey")
    assert response.status_code == 400
    assert response.get_json() == {"error": "no SSH key configured; set SSH_PRIVATE_KEY"}


def test_pubkey_with_key():
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB6 relay-git-sync"
    app = make_app(BEARER_SECRET, RecordingService(key=(line, "ssh-ed25519")))
    response = app.test_client().get("/api/pubkey")
    assert response.status_code == 200
    assert response.get_json() == {"public_key": line, "key_type": "ssh-ed25519"}


def test_status(service):
    client = make_app(BEARER_SECRET, service, admin_token=ADMIN_TOKEN).test_client()
    response = client.get("/api/status", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 200
    assert response.get_json() == {"folders": [], "counts": {"queued": 0}}


def test_status_without_service():
    client = make_app(BEARER_SECRET, None, admin_token=ADMIN_TOKEN).test_client()
    response = client.get("/api/status", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 503
    assert response.get_json() == {"error": "service not running"}


# --- OpenAPI -------------------------------------------------------------------------


def test_openapi_yaml_matches_committed_file(client):
    response = client.get("/openapi.yaml")
    assert response.status_code == 200
    assert response.mimetype == "application/yaml"
    committed = (REPO_ROOT / "openapi.yaml").read_bytes()
    assert response.get_data() == committed, (
        "openapi.yaml is stale: run `python -m gitsync.web.openapi > openapi.yaml`"
    )


def test_openapi_is_valid_and_json_equals_yaml(client):
    from_yaml = yaml.safe_load(client.get("/openapi.yaml").get_data())
    validate(from_yaml)
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.get_json() == from_yaml


def test_openapi_does_not_depend_on_settings(client):
    other = make_app(SIGNING_SECRET, None, max_body_bytes=10).test_client()
    assert other.get("/openapi.yaml").get_data() == client.get("/openapi.yaml").get_data()


def test_openapi_documents_every_status_code(client):
    spec = client.get("/openapi.json").get_json()
    codes = {
        (path, method): set(op["responses"])
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }
    assert codes == {
        ("/webhooks", "post"): {"200", "202", "400", "401", "413", "500", "503"},
        ("/health", "get"): {"200", "503"},
        ("/api/pubkey", "get"): {"200", "400"},
        ("/api/status", "get"): {"200", "401", "404", "503"},
        ("/api/sync", "post"): {"202", "400", "401", "404", "503"},
        ("/metrics", "get"): {"200", "401", "404"},
        ("/openapi.yaml", "get"): {"200"},
        ("/openapi.json", "get"): {"200"},
    }
    assert set(spec["components"]["schemas"]) >= {"WebhookEvent", "Error"}
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearerAuth"]["description"],
    }
    assert {schemes[n]["name"] for n in ("webhookId", "webhookTimestamp", "webhookSignature")} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }


def test_openapi_compound_id_pattern_matches_parser():
    from gitsync.ids import InvalidId, parse_compound_id
    from gitsync.web.openapi import COMPOUND_ID_PATTERN

    for value in (COMPOUND, f"{RELAY}-{MIDDLE}-{DOC}", RELAY, "x", f"{COMPOUND}-"):
        try:
            parse_compound_id(value)
            parsed = True
        except InvalidId:
            parsed = False
        assert bool(re.match(COMPOUND_ID_PATTERN, value)) == parsed, value


# --- /docs works offline -------------------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.refs.append(value)


LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme or parts.scheme in ("data",) or parts.hostname in LOCAL_HOSTS


def test_docs_page_is_offline(client):
    redirect = client.get("/docs")
    assert redirect.status_code == 308
    assert urlsplit(redirect.headers["Location"]).path == "/docs/"

    page = client.get("/docs/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    parser = _Refs()
    parser.feed(html)
    assert len(parser.refs) >= 4  # css, favicons, scripts
    for url in re.findall(r"https?://[^\s\"'<>)]+", html):
        assert _is_local(url), url

    config = json.loads(re.search(r"var user_config = (\{.*?\});", html).group(1))
    assert config["validatorUrl"] is None
    spec_url = urljoin("http://localhost/docs/", config["url"])
    assert urlsplit(spec_url).path == "/openapi.json"
    assert client.get(urlsplit(spec_url).path).status_code == 200

    for ref in parser.refs:
        url = urljoin("http://localhost/docs/", ref)
        assert _is_local(url), ref
        asset = client.get(urlsplit(url).path)
        assert asset.status_code == 200, ref
        assert asset.get_data(), ref
        if url.endswith(".css"):
            css = asset.get_data(as_text=True)
            for target in re.findall(r"url\(\s*['\"]?([^'\")]+)", css):
                assert target.startswith("data:") or _is_local(target), target
        asset.close()


# --- secrets never leave ------------------------------------------------------------


def test_secrets_never_in_responses_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    bodies: list[bytes] = []
    marker_sig = SIGNING_SECRET.removeprefix("whsec_")

    bearer_client = make_app(BEARER_SECRET, RecordingService()).test_client()
    signed = make_app(SIGNING_SECRET, RecordingService()).test_client()
    failing = make_app(BEARER_SECRET, FailingService()).test_client()
    for client, body, headers in (
        (bearer_client, event(), bearer()),
        (bearer_client, event(), bearer(BEARER_SECRET[:-1])),
        (bearer_client, event("bad"), bearer()),
        (bearer_client, b"{", bearer()),
        (signed, BODY, signed_headers(BODY)),
        (signed, BODY + b" ", signed_headers(BODY)),
        (signed, BODY, bearer(SIGNING_SECRET)),
        (failing, event(), bearer()),
    ):
        bodies.append(post(client, body, headers).get_data())
    for client in (bearer_client, signed):
        for path in ("/health", "/api/status", "/api/pubkey", "/openapi.json", "/docs/", "/nope"):
            bodies.append(client.get(path).get_data())
    leaked_sig = signed_headers(BODY)["webhook-signature"].removeprefix("v1,")
    for data in bodies:
        for secret in (BEARER_SECRET, marker_sig, leaked_sig):
            assert secret.encode() not in data
    for secret in (BEARER_SECRET, marker_sig, leaked_sig):
        assert secret not in caplog.text
